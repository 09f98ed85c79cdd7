"""The report stage: renders from any subset of inputs, leaks no identifier, shows changes."""

from __future__ import annotations

import dataclasses
import html
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from stages import anonymize, clean, ingest, report, validate
from stages.anonymize import AnonymizeConfig
from stages.lib import summaries as sm
from stages.lib.anon_policies import describe_policy
from stages.lib.anon_risk import risk_report
from stages.lib.anon_scan import scan_report
from stages.lib.features import column_policies
from stages.lib.keys import key_id
from stages.lib.params import section
from stages.lib.schema import load_schema
from stages.lib.summary import StageSummary
from tests.conftest import TEST_KEY, params, source_frame, write_project

SECTION_IDS = [sid for sid, _ in report.SECTIONS]
FIRST = ["Ottoline", "Bartholomew", "Wilhelmina", "Cassius", "Perpetua", "Ignatius", "Marisol"]
LAST = ["Quackenbush", "Vanderslice", "Okonkwo-Hale", "Szczepanski", "Featherstonehaugh"]


# ---------------------------------------------------------------------------------------------
# Summaries built from the stages' models (stages/lib/summaries.py): a fixture that drifts from
# what a stage writes fails validation here instead of testing a shape no stage produces.


def summary(
    stage: str,
    rows_in: int,
    rows_out: int | None = None,
    fields: sm.Model | None = None,
    *,
    added: int = 0,
    duplicates: int = 0,
    quarantined: dict[str, int] | None = None,
) -> sm.Summary:
    """A stage's summary as StageSummary.write makes it: row accounting and the stage's fields
    (not checked: a test may want rows that do not add up)."""
    rows_out = rows_in if rows_out is None else rows_out
    counts = Counter(quarantined or {})
    s = StageSummary(stage, rows_in, rows_out, duplicates, added, counts, fields)
    return s.model()


def scores(n: int, **given: Any) -> dict[str, Any]:
    """A model's or baseline's headline scores (evaluate's Scores); unset ones are null."""
    none = dict.fromkeys(("accuracy", "macro_precision", "macro_recall", "macro_f1"))
    auc = dict.fromkeys(("roc_auc", "pr_auc", "log_loss"))
    macro = {"present": 2, "total": 2, "absent": []}
    return {"n": n, **none, **auc, "macro_classes": macro, **given}


def no_gaps() -> dict[str, Any]:
    """Fairness with no column sliced."""
    return {"demographic_parity_diff": {}, "equal_opportunity_diff": {}}


def train_fields(**given: Any) -> sm.TrainFields:
    """train's fields: a short CPU run without DP, changed by `given`."""
    fields: dict[str, Any] = {
        "val_rows": 100,
        "augmented_rows": 0,
        "distinct_records": None,
        "features": {
            "numeric": ["age"],
            "categorical": [],
            "text": [],
            "label": "income",
            "classes": ["<=50K", ">50K"],
        },
        "schema_digest": "0" * 16,
        "device": "cpu",
        "device_name": "cpu",
        "precision": "fp32",
        "world_size": 1,
        "data_resident": True,
        "batch_size": 512,
        "lr": 0.002,
        "warmup_steps": 0,
        "patience_epochs": 7,
        "epochs_run": 1,
        "steps": 1,
        "best_val_loss": 0.5,
        "best_val_accuracy": 0.8,
        "train_time_s": 1.0,
        "samples_per_s": 100.0,
        "resumed_from": None,
        "torch": "2.0",
        "seed": 20240601,
        "dp": {
            "enabled": False,
            "epsilon": None,
            "delta": None,
            "max_grad_norm": None,
            "noise_multiplier": None,
        },
    }
    return sm.TrainFields.model_validate({**fields, **given})


def augment_fields(before: dict[str, int], after: dict[str, int], **given: Any) -> sm.AugmentFields:
    """augment's fields for class counts before and after oversampling."""
    return sm.AugmentFields.model_validate(
        {
            "balance": "oversample",
            "seed": 7,
            "class_counts_before": before,
            "class_counts_after": after,
            "augmented_by_class": {c: after[c] - before.get(c, 0) for c in after},
            "distinct_sources": sum(after.values()) - sum(before.values()),
            "max_copies_per_row": 5,
            "most_copies_of_one_row": 1,
            **given,
        }
    )


def split_fields(balance: dict[str, Any], duplicates: dict[str, int]) -> sm.SplitFields:
    """split's fields for a class balance per split."""
    total = sum(b["rows"] for b in balance.values()) or 1
    return sm.SplitFields.model_validate(
        {
            "fractions": {"train": 0.6, "val": 0.2, "test": 0.2},
            "seed": "split-v1",
            "actual_fractions": {s: round(b["rows"] / total, 6) for s, b in balance.items()},
            "overlap_checked": True,
            "feature_duplicates": duplicates,
            "class_balance": balance,
        }
    )


# ---------------------------------------------------------------------------------------------
# Inputs: a source table with realistic identifiers, and synthetic downstream results


def identified_frame(n: int = 60) -> pd.DataFrame:
    """A valid source table whose identifiers look like real ones, also repeated in free text."""
    frame = source_frame(n)
    cols = params()["schema"]["columns"]
    for name, col in cols.items():
        if col["role"] != "identifier":
            continue
        kind = col.get("pii")
        if kind == "name":
            values = [
                f"{FIRST[r % 7]} {LAST[(r // 7) % 5]}{'' if r < 35 else f' {r}'}" for r in range(n)
            ]
        elif kind == "address":
            values = [f"{r + 11} Larkspur Crescent, Flat {r % 9 + 1}" for r in range(n)]
        elif kind == "national_id":
            values = [
                f"{r + 123:03d}-{r % 89 + 10:02d}-{(r * 37) % 9000 + 1000:04d}" for r in range(n)
            ]
        else:
            continue
        frame[name] = values
    text = [n for n, c in cols.items() if c["role"] == "text"]
    ident = [n for n, c in cols.items() if c["role"] == "identifier"]
    for t in text:
        frame[t] = [
            f"Called {frame.at[r, ident[0]]} back on {frame.at[r, ident[-1]]}, see notes"
            for r in range(n)
        ]
    return frame


def write_downstream(root: Path, seed: int = 0, shift: float = 0.0) -> None:
    """Plausible split/augment/train/evaluate outputs, derived from the real anonymize metrics.

    They stand in for stages the report only reads (each summary through its model, as the
    stages write it); `shift` moves the model's scores, so two calls give two runs to compare.
    """
    rng = np.random.default_rng(seed)
    p = yaml.safe_load((root / "params.yaml").read_text())
    schema = load_schema(p)
    classes, sensitive = schema.classes, schema.sensitive
    (root / "metrics").mkdir(exist_ok=True)
    (root / "plots").mkdir(exist_ok=True)
    # anonymize ran for real (full_project): the stages after it start from its output.
    anon_rows = sm.read_summary(root / "metrics/anonymize.json").rows_out
    m: dict[str, sm.Summary] = {}
    n_test = anon_rows // 5
    n_val = anon_rows // 5
    n_train = anon_rows - n_test - n_val
    pos_share = 0.5

    def counts(n: int) -> dict[str, int]:
        pos = round(n * pos_share)
        return {classes[0]: n - pos, classes[-1]: pos}

    def balance(n: int) -> dict:
        return {
            "rows": n,
            "classes": {c: {"rows": k, "share": round(k / n, 6)} for c, k in counts(n).items()},
        }

    m["split"] = summary(
        "split",
        anon_rows,
        anon_rows,
        split_fields(
            {"train": balance(n_train), "val": balance(n_val), "test": balance(n_test)},
            {"train": 0, "val": 0, "test": 0},
        ),
    )
    before = counts(n_train)
    before[classes[-1]] -= 3
    before[classes[0]] += 3
    after = {c: max(before.values()) for c in classes}
    added = sum(after.values()) - sum(before.values())
    m["augment"] = summary(
        "augment", n_train, n_train + added, augment_fields(before, after), added=added
    )
    epochs = 12
    ep = np.arange(1, epochs + 1)
    train_loss = 0.65 * np.exp(-ep / 5) + 0.3 + rng.normal(0, 0.005, epochs)
    val_loss = 0.6 * np.exp(-ep / 4) + 0.34 + 0.004 * np.maximum(ep - 8, 0)
    val_acc = 0.86 - 0.3 * np.exp(-ep / 3)
    pd.DataFrame(
        {"epoch": ep, "train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_acc}
    ).to_csv(root / "plots/train_curve.csv", index=False)
    m["train"] = summary(
        "train",
        n_train + added,
        n_train + added,
        train_fields(
            epochs_run=epochs,
            steps=epochs * 3,
            best_val_loss=round(float(val_loss.min()), 6),
            best_val_accuracy=round(float(val_acc.max()), 6),
            train_time_s=4.2,
            samples_per_s=1834.5,
            dp={
                "enabled": True,
                "epsilon": 2.97,
                "delta": 1e-5,
                "max_grad_norm": 1.0,
                "noise_multiplier": 0.93,
            },
        ),
    )

    # Scores of a synthetic model on a synthetic test set of realistic size for the curves.
    from sklearn import metrics as skm

    n = n_test
    logit = rng.normal(-1.6, 2.0, n)
    y = rng.random(n) < 1 / (1 + np.exp(-logit))  # calibrated when shift is 0
    score = 1 / (1 + np.exp(-(logit + shift)))
    group = {c: rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1]) for c in sensitive}
    pred = score >= 0.5
    fpr, tpr, _ = skm.roc_curve(y, score)
    pr, rc, _ = skm.precision_recall_curve(y, score)
    names = np.array(classes)
    pd.DataFrame({"actual": names[y.astype(int)], "predicted": names[pred.astype(int)]}).to_csv(
        root / "plots/confusion.csv", index=False
    )
    pd.DataFrame({"fpr": fpr, "tpr": tpr}).to_csv(root / "plots/roc.csv", index=False)
    pd.DataFrame({"recall": rc[::-1], "precision": pr[::-1]}).to_csv(
        root / "plots/pr.csv", index=False
    )
    bins = np.minimum((score * 10).astype(int), 9)
    cal = pd.DataFrame({"bin": bins, "p": score, "y": y}).groupby("bin")
    ece = float((cal.size() / n * (cal["y"].mean() - cal["p"].mean()).abs()).sum())
    pd.DataFrame(
        {
            "bin": cal.size().index,
            "mean_predicted": cal["p"].mean().to_numpy(),
            "fraction_positive": cal["y"].mean().to_numpy(),
            "count": cal.size().to_numpy(),
        }
    ).to_csv(root / "plots/calibration.csv", index=False)
    slice_rows, dp, eo = [], {}, {}
    for col, g in group.items():
        sel, tprs = [], []
        for v in sorted(set(g)):
            mk = g == v
            slice_rows.append(
                {
                    "slice": f"{col}={v}",
                    "column": col,
                    "group": v,
                    "n": int(mk.sum()),
                    "share": mk.mean(),
                    "base_rate": y[mk].mean(),
                    "accuracy": (pred[mk] == y[mk]).mean(),
                    "selection_rate": pred[mk].mean(),
                    "tpr": pred[mk & y].mean(),
                    "fpr": pred[mk & ~y].mean(),
                }
            )
            sel.append(pred[mk].mean())
            tprs.append(pred[mk & y].mean())
        dp[col] = {"value": float(np.ptp(sel)), "groups": len(sel), "reason": None}
        eo[col] = {"value": float(np.ptp(tprs)), "groups": len(tprs), "reason": None}
    pd.DataFrame(slice_rows).to_csv(root / "plots/slices.csv", index=False)
    p_, r_, f_, s_ = skm.precision_recall_fscore_support(y, pred, labels=[False, True])
    acc = float((pred == y).mean())
    fields = sm.EvaluateFields.model_validate(
        {
            **scores(
                n,
                accuracy=round(acc, 6),
                macro_precision=round(float(p_.mean()), 6),
                macro_recall=round(float(r_.mean()), 6),
                macro_f1=round(float(f_.mean()), 6),
                roc_auc=round(float(skm.roc_auc_score(y, score)), 6),
                pr_auc=round(float(skm.average_precision_score(y, score)), 6),
                log_loss=round(float(skm.log_loss(y, score)), 6),
            ),
            "per_class": {
                c: {"precision": p_[i], "recall": r_[i], "f1": f_[i], "support": int(s_[i])}
                for i, c in enumerate(classes)
            },
            "positive_class": classes[-1],
            "calibration": "positive_class",
            "membership": {
                "attack": "loss threshold",
                "auc": 0.512,
                "advantage": 0.031,
                "members": n,
                "non_members": n,
            },
            "lift_over_logistic_regression": {
                "accuracy": round(acc - 0.83, 6),
                "accuracy_points": round(100 * (acc - 0.83), 4),
            },
            "ece": round(ece, 6),
            "fairness": {"demographic_parity_diff": dp, "equal_opportunity_diff": eo},
            "baselines": {
                "majority": scores(
                    n, accuracy=0.76, macro_f1=0.43, roc_auc=0.5, pr_auc=0.24, **{"class": "<=50K"}
                ),
                "logistic_regression": scores(
                    n, accuracy=0.83, macro_f1=0.74, roc_auc=0.88, fairness=no_gaps()
                ),
            },
            "gate": {
                "passed": True,
                "failures": [],
                "skipped": [],
                "thresholds": {
                    "min_accuracy": 0.8,
                    "min_roc_auc": 0.85,
                    "max_demographic_parity_diff": 0.3,
                    "max_equal_opportunity_diff": 0.3,
                },
            },
        }
    )
    m["evaluate"] = summary("evaluate", n, n, fields)
    for stage, data in m.items():
        (root / f"metrics/{stage}.json").write_text(json.dumps(sm.dump(data), indent=2))
    write_lock(root)


def write_lock(root: Path) -> None:
    """A dvc.lock in DVC's format over the project's actual files (hashes are real md5s)."""
    import hashlib

    def entry(path: str) -> dict:
        target = root / path
        files = sorted(target.rglob("*")) if target.is_dir() else [target]
        files = [f for f in files if f.is_file()]
        h = hashlib.md5()
        for f in files:
            h.update(f.read_bytes())
        e = {
            "path": path,
            "hash": "md5",
            "md5": h.hexdigest() + (".dir" if target.is_dir() else ""),
        }
        e["size"] = sum(f.stat().st_size for f in files)
        if target.is_dir():
            e["nfiles"] = len(files)
        return e

    p = yaml.safe_load((root / "params.yaml").read_text())
    stages = {
        "ingest": (["params.yaml"], ["data/raw"], ["schema", "ingest"]),
        "clean": (["data/raw"], ["data/clean", "data/quarantine"], ["schema", "clean"]),
        "validate": (["data/clean"], ["reports/validation"], ["validate"]),
    }
    lock = {"schema": "2.0", "stages": {}}
    for name, (deps, outs, keys) in stages.items():
        lock["stages"][name] = {
            "cmd": f"python -m stages.{name}",
            "deps": [entry(d) for d in deps if (root / d).exists()],
            "params": {"params.yaml": {k: p[k] for k in keys if k in p}},
            "outs": [entry(o) for o in outs if (root / o).exists()],
        }
    (root / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


def dvc_metrics_project(root: Path, stages: tuple[str, ...]) -> None:
    """`dvc init` and a dvc.yaml declaring metrics/<stage>.json, for `dvc metrics diff`."""
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    dvc_yaml = {
        "stages": {
            s: {"cmd": "true", "metrics": [{f"metrics/{s}.json": {"cache": False}}]} for s in stages
        }
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))


def full_project(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project that ran ingest/clean/validate/anonymize for real, with downstream results,
    committed once (the previous run) and then rerun with other scores (the current run)."""
    write_project(root, identified_frame(2500))
    monkeypatch.chdir(root)
    ingest.main()
    clean.main()
    validate.main()
    anonymize.main([])  # its own argv, not pytest's
    write_downstream(root, seed=1, shift=-0.3)
    git(root, "init", "-q")
    dvc_metrics_project(root, report.PIPELINE)
    git(root, "add", "params.yaml", "metrics", "dvc.lock", "dvc.yaml", ".dvc")
    git(root, "commit", "-qm", "previous run")
    write_downstream(root, seed=2)
    return root


# ---------------------------------------------------------------------------------------------
# Unit tests of the pure renderer


def minimal_inputs() -> report.Inputs:
    """Just what ingest and clean would have written."""
    return report.Inputs(
        params=params(),
        metrics={
            "ingest": summary(
                "ingest",
                10,
                fields=sm.IngestFields(
                    batches=[], key_id="k", record_id="key column", skipped_files=[]
                ),
            ),
            "clean": summary(
                "clean",
                10,
                7,
                sm.CleanFields(rows_replaced=0, values_nulled={}, batches_without_labels=[]),
                duplicates=1,
                quarantined={"age out of range": 2},
            ),
        },
        run={"generated_at": "2026-01-01T00:00:00+00:00", "commit": None, "tree": "unknown"},
    )


def test_renders_with_only_early_stages_and_says_what_is_missing():
    ctx = report.build_context(minimal_inputs())
    page = report.render_html(ctx)
    assert ctx["errors"] == []
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in page
    for stage in ("validate", "augment", "train", "evaluate"):
        assert f"Stage &#39;{stage}&#39; not run yet" in page
    assert "age out of range" in page and page.count("<img ") == 1  # the row flow only
    md = report.render_summary(ctx)
    assert "Evaluation gate: not run yet" in md and "| clean | 10 | 7 | 2 | 1 | 0 |" in md


def test_renders_from_nothing_at_all():
    ctx = report.build_context(report.Inputs())
    page = report.render_html(ctx)
    assert ctx["errors"] == [] and "No stage has run yet" in page and "<img " not in page


def test_malformed_input_costs_only_its_section(tmp_path):
    bad = tmp_path / "evaluate.json"
    bad.write_text('{"per_class": "not a mapping", "gate": ["odd"], "baselines": 3}')
    assert sm.load_summary(bad)[0] is None
    _, why = sm.load_summary(bad)
    assert "does not match its model" in why and "per_class" in why
    inputs = minimal_inputs()
    inputs.metrics_errors["evaluate"] = why
    inputs.plots["roc"] = pd.DataFrame({"fpr": ["x", "y"], "tpr": [0.1, None]})
    ctx = report.build_context(inputs)
    page = report.render_html(ctx)
    assert all(f'<section id="{sid}">' in page for sid in SECTION_IDS)
    assert '<section id="lineage">' in page and "age out of range" in page
    assert ctx["errors"] == [why] and html.escape(why) in page


def test_a_summary_with_a_misspelt_key_is_reported_not_guessed(tmp_path):
    good = summary("train", 5, fields=train_fields())
    data = sm.dump(good)
    data["epochs"] = data.pop("epochs_run")
    (tmp_path / "train.json").write_text(json.dumps(data))
    found, why = sm.load_summary(tmp_path / "train.json")
    assert found is None and "epochs_run: Field required" in why and "epochs: Extra" in why
    inputs = dataclasses.replace(minimal_inputs(), metrics_errors={"train": why})
    section = report.build_context(inputs)["training"]
    assert not section["available"] and why in section["note"]


def test_accounting_flags_rows_that_do_not_add_up():
    clean_fields = sm.CleanFields(rows_replaced=0, values_nulled={}, batches_without_labels=[])
    unbalanced = summary("clean", 10, 7, clean_fields, duplicates=1, quarantined={"x": 1})
    section = report.accounting_section({"clean": unbalanced})
    assert section["rows"][0]["balanced"] is False


def test_changes_read_dvc_metrics_diff():
    # The shape `dvc metrics diff --all --json` prints: {file: {dotted key: {old, new, diff}}}.
    diff = {
        "metrics/evaluate.json": {
            "accuracy": {"old": 0.80, "new": 0.85, "diff": 0.05},
            "gate.passed": {"old": True, "new": True, "diff": 0},
            "duration_s": {"old": 2.0, "new": 3.0, "diff": 1.0},
            "n": {"old": 100, "new": 100, "diff": 0},
            "policy": {"old": "a", "new": "b"},
        },
        "metrics/train.json": {"loss": {"old": None, "new": 0.3}},
    }
    section = report.changes_section(diff, "HEAD")
    (row,) = [r for r in section["changed"] if r["stage"] == "evaluate"]
    assert row["metric"] == "accuracy" and row["delta"] == pytest.approx(0.05)
    assert [r["metric"] for r in section["volatile"]] == ["duration_s"]
    assert section["unchanged"] == 1 and section["new_stages"] == ["train"]
    first = report.changes_section(
        {"metrics/evaluate.json": {"n": {"old": None, "new": 1}}}, "HEAD"
    )
    assert not first["available"] and "first run" in first["note"]
    gone = report.changes_section(None, "HEAD", "ERROR: not a DVC repository")
    assert not gone["available"] and "not a DVC repository" in gone["note"]


def test_changes_come_from_dvc_metrics_diff_in_a_dvc_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    git(tmp_path, "init", "-q")
    dvc_metrics_project(tmp_path, ("evaluate",))
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/evaluate.json").write_text('{"accuracy": 0.8, "n": 10}')
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "previous run")
    (tmp_path / "metrics/evaluate.json").write_text('{"accuracy": 0.9, "n": 10}')
    diff, why = report.metrics_diff("HEAD")
    assert why is None
    section = report.changes_section(diff, "HEAD")
    assert [(r["metric"], r["old"], r["new"]) for r in section["changed"]] == [
        ("accuracy", 0.8, 0.9)
    ]
    assert section["unchanged"] == 1


def test_lineage_reads_every_stage_of_dvc_lock():
    lock = {
        "schema": "2.0",
        "stages": {
            "clean": {
                "cmd": "python -m stages.clean",
                "deps": [{"path": "data/raw", "hash": "md5", "md5": "ab.dir", "size": 5}],
                "params": {"params.yaml": {"clean": {"a": 1}, "io.partition_rows": 100}},
                "outs": [{"path": "data/clean", "hash": "md5", "md5": "cd.dir", "nfiles": 2}],
            },
            "ingest": {"cmd": "python -m stages.ingest", "outs": [{"path": "data/raw"}]},
        },
    }
    section = report.lineage_section(lock)
    assert [s["stage"] for s in section["stages"]] == ["ingest", "clean"]
    clean_stage = section["stages"][1]
    assert clean_stage["deps"][0]["hash"] == "ab.dir"
    assert clean_stage["outs"][0]["nfiles"] == 2
    assert {p["key"]: p["value"] for p in clean_stage["params"]}["io.partition_rows"] == "100"


def anonymize_summary(
    p: dict, findings: list[dict[str, str]]
) -> tuple[sm.AnonymizeSummary, sm.ScanReport]:
    """metrics/anonymize.json and reports/privacy/scan.json, built by the functions
    stages/anonymize.py builds them with (policies, risk, scan, key id), through its model."""
    config, schema = section(AnonymizeConfig, "anonymize", p), load_schema(p)
    policies = column_policies(schema, dict(config.policies))
    scan = scan_report(findings)
    fields = sm.AnonymizeFields.model_validate(
        {
            "key_id": key_id(TEST_KEY.encode()),
            "policies": {n: describe_policy(x) for n, x in policies.items()},
            "entity_counts": {"notes": {"EMAIL": 4, "PERSON": 2}},
            "scan": scan.verdict(),
            "quasi_identifiers": schema.quasi_identifiers,
            "k_threshold": config.k,
            "risk_before_suppression": risk_report(pd.Series([1, 2, 2, 3, 3, 3, 4, 4, 4, 4])),
            "risk_after_suppression": risk_report(pd.Series([3, 3, 3, 4, 4, 4, 4])),
        }
    )
    anon = summary("anonymize", 10, 7, fields, quarantined={"k_anonymity": 3})
    assert isinstance(anon, sm.AnonymizeSummary)
    return anon, scan


def test_privacy_section_shows_counts_never_scan_details():
    finding = {"record_id": "rec-7f3a", "column": "notes", "entity": "EMAIL", "check": "gx_regex"}
    anon, scan = anonymize_summary(params(), [finding])
    section = report.privacy_section(anon, scan, params())
    page = report.render_html(
        {**report.build_context(report.Inputs(params=params())), "privacy": section}
    )
    assert "rec-7f3a" not in page and "FAILED" in page
    assert section["scan"]["by_column"] == [{"column": "notes", "entity": "EMAIL", "count": 1}]
    policies = {p["column"]: p["policy"] for p in section["policies"]}
    assert policies["email"] == "pseudonymize" and policies["full_name"] == "drop"
    assert section["entity_totals"] == {"EMAIL": 4, "PERSON": 2}
    assert [r["k"] for r in section["risk"]] == [1, 3]


def expectation(name: str, severity: str, success: bool, **given: Any) -> sm.ExpectationResult:
    """One result of reports/validation/results.json, as validate writes it (through its model)."""
    fields = {
        "expectation": name,
        "family": name.removeprefix("expect_column_"),
        "severity": severity,
        "column": "age",
        "kwargs": {"column": "age", "min_value": 0, "max_value": 120, "mostly": 0.99},
        "success": success,
        "element_count": 10,
        "unexpected_count": 0 if success else 3,
        "unexpected_percent": 0.0 if success else 30.0,
        "observed": None,
        "error": None,
    }
    return sm.ExpectationResult.model_validate({**fields, **given})


def test_validation_section_reads_the_results_through_their_model():
    results = [
        expectation("expect_column_values_to_be_between", "warning", True),
        expectation("expect_column_values_to_not_be_null", "critical", False),
        expectation("expect_table_row_count", "critical", True, column=None, observed=10),
    ]
    validation = sm.ValidationReport(rows=10, partitions=2, results=results)
    section = report.validation_section(validation, "validation/docs/index.html")
    assert section["available"] and section["rows"] == 10 and section["total"] == 3
    assert [g["severity"] for g in section["groups"]] == ["critical", "warning"]
    critical = section["groups"][0]["items"]
    assert [r["success"] for r in critical] == [False, True]  # failures first
    assert critical[1]["column"] == "(table)" and critical[1]["observed"] == 10
    assert section["failed_critical"] == 1 and section["passed"] == 2
    assert "min_value=0; max_value=120; mostly=0.99" in section["groups"][1]["items"][0]["args"]


def test_an_unreadable_validation_or_scan_file_is_reported_not_guessed(tmp_path):
    """A results.json or scan.json that does not match its model: the section's 'not available'
    note (validation) or anonymize's own verdict (scan), and the validation message on top."""
    good = sm.ValidationReport(rows=10, partitions=1, results=[expectation("e", "warning", True)])
    data = sm.dump(good)
    data["results"][0]["succes"] = data["results"][0].pop("success")  # a misspelt key
    (tmp_path / "results.json").write_text(json.dumps(data))
    anon, scan = anonymize_summary(params(), [])
    (tmp_path / "scan.json").write_text(json.dumps({**sm.dump(scan), "findings": "none"}))
    validation, v_why = report.read_report(tmp_path / "results.json", sm.ValidationReport)
    found, s_why = report.read_report(tmp_path / "scan.json", sm.ScanReport)
    assert validation is None and "results.0.succes" in v_why and "success" in v_why
    assert found is None and "findings" in s_why
    assert report.read_report(tmp_path / "absent.json", sm.ScanReport) == (None, None)
    inputs = dataclasses.replace(minimal_inputs(), validation_error=v_why, privacy_scan_error=s_why)
    inputs.metrics["anonymize"] = anon
    ctx = report.build_context(inputs)
    assert ctx["errors"] == [v_why, s_why]
    assert not ctx["validation"]["available"] and v_why in ctx["validation"]["note"]
    assert ctx["privacy"]["scan"]["available"] and ctx["privacy"]["scan"]["details_listed"] == 0
    page = report.render_html(ctx)
    assert html.escape(v_why) in page and html.escape(s_why) in page


# ---------------------------------------------------------------------------------------------
# The stage on real data


def test_report_stage_on_real_data_path_holds_no_identifier(tmp_path, monkeypatch, key):
    write_project(tmp_path, identified_frame(60))
    monkeypatch.chdir(tmp_path)
    ingest.main()
    clean.main()
    validate.main()
    report.main()
    page = (tmp_path / "reports/report.html").read_text(encoding="utf-8")
    md = (tmp_path / "reports/summary.md").read_text(encoding="utf-8")
    assert_no_identifiers(tmp_path, page, md)
    assert "Validation:" in md
    assert "validation/docs/index.html" in page  # the link to the Data Docs


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> tuple[Path, report.Inputs]:
    """One complete project with its report rendered, and the inputs the report read."""
    root = tmp_path_factory.mktemp("full")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINE_HMAC_KEY", TEST_KEY)
        full_project(root, mp)
        report.main()
        inputs = report.load_inputs()
    return root, inputs


def test_privacy_section_reads_what_anonymize_wrote(full_run):
    """The report's privacy section from a real anonymize run: every part it shows is filled,
    and the unit tests' summary has the keys the stage writes."""
    _, inputs = full_run
    anon, scan = inputs.summary(sm.AnonymizeSummary), inputs.privacy_scan
    assert anon is not None and inputs.metrics_errors == {}
    section = report.privacy_section(anon, scan, inputs.params)
    assert section["entities"] and section["entity_figure"] is not None
    assert [r["when"] for r in section["risk"]] == ["before suppression", "after suppression"]
    assert section["k_threshold"] == inputs.params["anonymize"]["k"]
    assert section["class_size_figure"] is not None and section["key_id"] == anon.key_id
    assert isinstance(scan, sm.ScanReport) and inputs.privacy_scan_error is None
    assert section["scan"]["passed"] and section["scan"]["checks"] == scan.checks
    made, made_scan = anonymize_summary(inputs.params, [])
    assert made_scan == scan and made.scan == anon.scan
    assert made.policies == anon.policies


def test_full_report_holds_no_identifier_and_every_section(full_run):
    root, _ = full_run
    page = (root / "reports/report.html").read_text(encoding="utf-8")
    md = (root / "reports/summary.md").read_text(encoding="utf-8")
    assert_no_identifiers(root, page, md)
    assert "not run yet" not in page and "could not be rendered" not in page
    assert page.count("<img ") >= 9
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing external
    assert "Evaluation gate: PASSED" in md and "evaluate `accuracy`" in md


def test_the_identifier_check_would_catch_a_leak(full_run):
    root, _ = full_run
    column = load_schema(params()).with_role("identifier")[0]
    name = pd.read_parquet(root / "data/clean")[column].iloc[7]
    with pytest.raises(AssertionError, match="identifier values"):
        assert_no_identifiers(root, f"<td>{html.escape(name)}</td>")


def without(inputs: report.Inputs, name: str) -> report.Inputs:
    """A copy of the inputs lacking one of them ('metrics:<stage>', 'plots:<name>' or a field)."""
    kind, _, item = name.partition(":")
    changes = {
        "metrics": {"metrics": {k: v for k, v in inputs.metrics.items() if k != item}},
        "metrics_diff": {"metrics_diff": None},
        "plots": {"plots": {k: v for k, v in inputs.plots.items() if k != item}},
        "validation": {"validation": None, "data_docs": None},
        "privacy_scan": {"privacy_scan": None},
        "lock": {"lock": None},
        "run": {"run": {}},
        "params": {"params": {}},
    }[kind]
    return dataclasses.replace(inputs, **changes)


def plt_close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


MISSING = [
    *(f"metrics:{s}" for s in report.PIPELINE),
    *(f"plots:{p}" for p in report.PLOTS),
    "metrics_diff",
    "validation",
    "privacy_scan",
    "lock",
    "run",
    "params",
]


@pytest.mark.parametrize("missing", MISSING)
def test_any_one_missing_input_still_renders_every_section(full_run, missing, monkeypatch):
    _, inputs = full_run
    # Figures are still drawn; only their PNG encoding (most of the time) is skipped here.
    monkeypatch.setattr(report.plots, "figure_uri", lambda fig: plt_close(fig) or "data:,")
    ctx = report.build_context(without(inputs, missing))
    page, md = report.render_html(ctx), report.render_summary(ctx)
    assert ctx["errors"] == []
    assert all(f'<section id="{sid}">' in page for sid in SECTION_IDS)
    assert "Full report" in md
    if missing.startswith("metrics:") and missing != "metrics:split":
        assert "not run yet" in page.lower() or "did not finish" in page


def assert_no_identifiers(root: Path, *texts: str) -> None:
    """No value of an identifier (or key) column of data/clean occurs in any of `texts`."""
    schema = load_schema(yaml.safe_load((root / "params.yaml").read_text()))
    columns = schema.with_role("identifier", "key")
    clean_df = pd.read_parquet(root / "data/clean", columns=columns)
    values = {str(v) for c in columns for v in clean_df[c].dropna()}
    assert len(values) > 100  # the test means something
    pattern = re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True)))
    for text in texts:
        # Image data is base64 PNG: no readable substring; dropping it makes the search quick.
        text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
        leaked = set(pattern.findall(text)) | set(pattern.findall(html.unescape(text)))
        assert not leaked, f"identifier values in the report: {sorted(leaked)[:5]}"


# ---------------------------------------------------------------------------------------------
# Many classes, a failed gate, gaps not measured, the membership audit beside ε


def thirteen_class_inputs(passed: bool = True) -> report.Inputs:
    """The report's inputs from evaluate's own functions on a 13-class synthetic problem (one
    class absent from the test split), with the split and augment summaries of 13 classes."""
    from sklearn.preprocessing import OneHotEncoder  # noqa: F401  (sklearn present: evaluate's dep)

    from stages import evaluate as ev
    from stages.lib import eval_metrics as em

    classes = [f"complaint category {i:02d}" for i in range(13)]
    rng = np.random.default_rng(3)
    y = rng.choice(12, 1500, p=np.r_[np.linspace(3, 1, 12) / np.linspace(3, 1, 12).sum()])
    logits = rng.normal(size=(1500, 13)) + 2.0 * np.eye(13)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    metrics = em.classification_metrics(y, proba, classes)
    metrics["ece"], calibration = em.calibration(y, proba, 10)
    roc, pr = em.multiclass_curves(y, proba, classes)
    metrics["fairness"] = {
        "demographic_parity_diff": {"sex": {"value": 0.04, "groups": 2, "reason": None}},
        "equal_opportunity_diff": {
            "sex": {
                "value": None,
                "groups": 1,
                "reason": "1 group(s) of sex with at least 50 positive rows; a gap needs two",
            }
        },
    }
    failures = (
        []
        if passed
        else [
            "accuracy 0.412 < min_accuracy 0.830",
            "membership_auc 0.640 > max_membership_auc 0.600",
        ]
    )
    metrics["gate"] = {
        "passed": passed,
        "failures": failures,
        "skipped": ["equal_opportunity_diff[sex] not measured: 1 group(s) of sex ..."],
        "thresholds": {"min_accuracy": 0.83, "max_equal_opportunity_diff": 0.35},
    }
    metrics["membership"] = {
        "attack": "loss threshold",
        "auc": 0.64,
        "advantage": 0.2,
        "members": 1500,
        "non_members": 1500,
    }
    metrics["positive_class"], metrics["calibration"] = classes[-1], "top_label"
    metrics["baselines"] = {"majority": scores(1500, **{"class": classes[0]})}
    metrics["lift_over_logistic_regression"] = {}  # no logistic baseline
    counts = {c: int(n) for c, n in zip(classes, np.bincount(y, minlength=13), strict=True)}
    balance = {
        s: {"rows": 1500, "classes": {c: {"rows": n, "share": n / 1500} for c, n in counts.items()}}
        for s in ("train", "val", "test")
    }
    return report.Inputs(
        params=params(),
        metrics={
            "split": summary(
                "split", 4500, fields=split_fields(balance, {"train": 3, "val": 0, "test": 1})
            ),
            "augment": summary(
                "augment",
                1500,
                1510,
                augment_fields(
                    counts,
                    counts,
                    most_copies_of_one_row=5,
                    short_of_target={"target": 300, "rows": {classes[11]: 48}},
                ),
                added=10,
            ),
            "train": summary("train", 1510, fields=train_fields()),
            "evaluate": summary(
                "evaluate", 1500, fields=sm.EvaluateFields.model_validate(ev._rounded(metrics))
            ),
        },
        plots={
            "confusion": em.confusion_frame(y, proba.argmax(axis=1), classes),
            "roc": roc,
            "pr": pr,
            "calibration": calibration,
        },
        run={"generated_at": "2026-01-01T00:00:00+00:00"},
    )


def test_thirteen_classes_render_curves_matrix_and_tables_that_fit(monkeypatch):
    drawn = []
    real = report.figure_uri
    monkeypatch.setattr(report.plots, "figure_uri", lambda fig: drawn.append(fig) or real(fig))
    ctx = report.build_context(thirteen_class_inputs())
    page = report.render_html(ctx)
    assert ctx["errors"] == []
    ev = ctx["evaluation"]
    assert set(ev["figures"]) == {"confusion", "roc", "pr", "calibration"}
    macro = "Macro averages are over the 12 classes present in the test split (of 13; absent: "
    assert macro + "complaint category 12)" in page
    # One line per curve: the 10 most frequent classes, micro and macro, and chance.
    roc_fig = next(f for f in drawn if f.axes and f.axes[0].get_xlabel() == "false positive rate")
    labels = [t.get_text() for t in roc_fig.axes[0].get_legend().get_texts()]
    assert len(labels) == 13 and labels[-3].startswith("micro-average (0.")
    # The confusion matrix: 13 x 13, labels rotated, cell text small enough to fit.
    conf = next(f for f in drawn if f.axes and f.axes[0].get_xlabel() == "predicted class")
    ax = conf.axes[0]
    assert len(ax.get_xticklabels()) == 13 and ax.get_xticklabels()[0].get_rotation() == 45
    assert ax.texts and all(t.get_fontsize() < 7.5 for t in ax.texts)
    # Tables grow down, not across: one row per class, three splits as columns, in a scroller.
    balance = page.split("Class balance per split", 1)[1].split("</table>", 1)[0]
    assert balance.count("<tr>") == 1 + 13 + 1 and '<div class="scroll">' in page
    assert 'Per class</h3>\n  <div class="scroll">' in page
    assert "short of target" in page and "complaint category 11 (48)" in page
    assert "train 3, val 0, test 1" in page


@pytest.fixture
def no_png(monkeypatch):
    """Figures are drawn but not encoded: these tests read the page's text only."""
    monkeypatch.setattr(report.plots, "figure_uri", lambda fig: plt_close(fig) or "data:,")


def test_a_failed_gate_still_renders_with_failed_and_the_reasons_at_the_top(no_png):
    ctx = report.build_context(thirteen_class_inputs(passed=False))
    page, md = report.render_html(ctx), report.render_summary(ctx)
    banner = page.index("FAILED: the evaluation gate did not pass")
    assert banner < page.index('<nav class="toc"')
    assert page.index("accuracy 0.412 &lt; min_accuracy 0.830") < page.index('<nav class="toc"')
    assert "membership_auc 0.640 &gt; max_membership_auc 0.600" in page
    assert "**Evaluation gate: FAILED** (accuracy 0.412 < min_accuracy 0.830; membership_auc" in md
    passed = report.render_html(report.build_context(thirteen_class_inputs(passed=True)))
    assert "FAILED: the evaluation gate" not in passed


def test_a_gap_not_measured_never_reads_within_limit(no_png):
    ctx = report.build_context(thirteen_class_inputs())
    eo = next(g for g in ctx["evaluation"]["gaps"] if g["gap"] == "equal opportunity diff")
    assert eo["value"] is None and eo["ok"] is None
    page = report.render_html(ctx)
    row = page.split("equal opportunity diff", 1)[1].split("</tr>", 1)[0]
    assert "not measured" in row and "1 group(s) of sex" in row and "yes" not in row
    assert "0.0000" not in row
    assert "Not checked (not measured)" in page


def test_membership_audit_shown_beside_epsilon_or_dp_off(no_png):
    inputs = thirteen_class_inputs()
    page = report.render_html(report.build_context(inputs))
    assert "ROC-AUC <strong>0.640</strong>" in page and "DP off" in page
    dp = sm.DPReport(
        enabled=True, epsilon=2.97, delta=1e-05, max_grad_norm=1.0, noise_multiplier=0.93
    )
    inputs.metrics["train"] = inputs.metrics["train"].model_copy(update={"dp": dp})
    page = report.render_html(report.build_context(inputs))
    assert "ε = 2.97" in page and "DP off" not in page
    md = report.render_summary(report.build_context(inputs))
    assert "Membership inference (loss threshold): ROC-AUC 0.640" in md and "DP ε = 2.97" in md
