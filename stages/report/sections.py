"""The report's sections other than evaluation: pure functions of the loaded inputs."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pandas as pd

from stages.lib.dvclock import entry_hash, hash_name, param_leaves, shown_params
from stages.lib.summaries import (
    AnonymizeSummary,
    AugmentSummary,
    DPReport,
    Risk,
    ScanReport,
    ScanSummary,
    SplitSummary,
    Summary,
    TrainSummary,
    ValidationReport,
)
from stages.report.common import (
    PIPELINE,
    RUN_DEFAULTS,
    VOLATILE,
    Inputs,
    _dict,
    _missing,
    _num,
    digest,
    fmt,
    pct,
)
from stages.report.evaluation import HEADLINE
from stages.report.plots import (
    plot_class_sizes,
    plot_grouped_bars,
    plot_row_flow,
    plot_training,
)


def identity_section(inputs: Inputs) -> dict[str, Any]:
    """When, which commit (and whether the tree was dirty), versions, device, seeds, params."""
    run = {**RUN_DEFAULTS, **inputs.run}
    train = inputs.summary(TrainSummary)
    leaves = param_leaves(inputs.params)
    seeds = {k: v for k, v in leaves.items() if k.endswith("seed") and _num(v) is not None}
    for stage, m in inputs.metrics.items():  # seeds a stage recorded that params do not hold
        seed = getattr(m, "seed", None)  # split's (a string), augment's and train's
        if _num(seed) is not None and not any(k.startswith(f"{stage}.") for k in seeds):
            seeds[f"{stage}.seed"] = seed
    device = _device(train) if train else None
    rows = [
        ("Generated", run.get("generated_at", "—")),
        ("Git commit", run.get("commit") or "not a git repository"),
        ("Working tree", run.get("tree", "—")),
        ("Prefect flow run", run.get("prefect_flow_run") or "— (not run by Prefect)"),
        (
            "Training device",
            f"{device} ({train.precision})" if train and device else "— (train not run yet)",
        ),
        ("Report host", run.get("host", "—")),
        ("Seeds", ", ".join(f"{k} = {int(v)}" for k, v in sorted(seeds.items())) or "—"),
        ("Params digest", f"sha256:{digest(inputs.params, 16)} (params.yaml, canonical JSON)"),
    ]
    anon = inputs.summary(AnonymizeSummary)
    if anon and anon.key_id:
        rows.append(("Pseudonymisation key id", anon.key_id))
    return {
        "available": True,
        "rows": rows,
        "dirty_paths": run.get("dirty_paths", []),
        "packages": run.get("packages", {}),
    }


def accounting_section(metrics: dict[str, Summary]) -> dict[str, Any]:
    """Rows in/out/quarantined/duplicates/added per stage, reasons, and the flow picture."""
    rows = []
    for stage in [s for s in PIPELINE if s in metrics] + sorted(set(metrics) - set(PIPELINE)):
        m = metrics[stage]
        accounted = m.rows_out + m.rows_quarantined + m.duplicates - m.rows_added
        rows.append(
            {
                "stage": stage,
                "rows_in": m.rows_in,
                "rows_out": m.rows_out,
                "rows_quarantined": m.rows_quarantined,
                "duplicates": m.duplicates,
                "rows_added": m.rows_added,
                "duration_s": _num(m.duration_s),
                "peak_memory_mb": _num(m.peak_memory_mb),
                "reasons": dict(m.quarantined_by_reason),
                "balanced": accounted == m.rows_in,
            }
        )
    missing = [s for s in PIPELINE if s not in metrics]
    if not rows:
        return {"available": False, "note": "No stage has run yet.", "missing": missing}
    return {
        "available": True,
        "rows": rows,
        "missing": missing,
        "figure": plot_row_flow(rows),
        "total_quarantined": sum(r["rows_quarantined"] for r in rows),
        "total_duplicates": sum(r["duplicates"] for r in rows),
    }


def validation_section(
    validation: ValidationReport | None, docs_link: str | None, error: str | None = None
) -> dict[str, Any]:
    """Every expectation's outcome, grouped by severity, failures first (`error`: why
    reports/validation/results.json could not be read)."""
    if validation is None:
        return _missing("validate", error=error)
    results = [
        {
            "expectation": r.expectation,
            "family": r.family,
            "severity": r.severity or "unknown",
            "column": r.column or "(table)",
            "success": r.success,
            "unexpected_count": r.unexpected_count,
            "unexpected_percent": r.unexpected_percent,
            "element_count": r.element_count,
            # Aggregates only (GX's observed value is a dtype name, a count or a share).
            "observed": r.observed,
            "args": _describe_args(r.kwargs),
        }
        for r in validation.results
    ]
    order = {"critical": 0, "warning": 1}
    severities = sorted({r["severity"] for r in results}, key=lambda s: (order.get(s, 2), s))
    groups = []
    for sev in severities:
        items = sorted(
            (r for r in results if r["severity"] == sev),
            key=lambda r: (r["success"], r["family"], r["column"]),
        )
        passed = sum(r["success"] for r in items)
        groups.append(
            {"severity": sev, "items": items, "passed": passed, "failed": len(items) - passed}
        )
    failed_critical = sum(g["failed"] for g in groups if g["severity"] == "critical")
    return {
        "available": True,
        "rows": validation.rows,
        "groups": groups,
        "total": len(results),
        "passed": sum(r["success"] for r in results),
        "failed_critical": failed_critical,
        "docs_link": docs_link,
    }


def _describe_args(kwargs: dict[str, Any]) -> str:
    """The rule an expectation checks, in a few words (value sets are summarised by size)."""
    parts = []
    for k, v in kwargs.items():
        if k in ("result_format", "catch_exceptions", "meta"):
            continue
        if isinstance(v, list | tuple):
            shown = ", ".join(map(str, v[:6])) + (f", … ({len(v)} values)" if len(v) > 6 else "")
            parts.append(f"{k}=[{shown}]")
        elif v is not None:
            parts.append(f"{k}={v}")
    return "; ".join(parts)


def privacy_section(
    anon: AnonymizeSummary | None, scan: ScanReport | None, params: dict[str, Any]
) -> dict[str, Any]:
    """Identifier columns and their policies, entities replaced, the scan, k and unique share.

    `anon` is metrics/anonymize.json and `scan` reports/privacy/scan.json (anon_scan.scan_report;
    without it, the verdict anonymize recorded).
    """
    columns = _dict(_dict(params.get("schema")).get("columns"))
    configured = _dict(_dict(params.get("anonymize")).get("policies"))
    section: dict[str, Any] = {
        "policies": _policy_rows(columns, configured, anon.policies if anon else {}),
        "available": anon is not None,
        "scan": scan_summary(scan or (anon.scan if anon else None)),
    }
    if anon is None:
        section["note"] = (
            "Stage 'anonymize' has no summary: it did not finish (see its scan above)."
            if section["scan"]["available"]
            else "Stage 'anonymize' not run yet: the policies shown are those configured."
        )
        return section
    entity_rows, totals = _entity_rows(anon.entity_counts)
    before, after = anon.risk_before_suppression, anon.risk_after_suppression
    hist = after.histogram or before.histogram
    section.update(
        {
            "key_id": anon.key_id,
            "entities": entity_rows,
            "entity_totals": dict(sorted(totals.items(), key=lambda kv: -kv[1])),
            "entity_figure": plot_grouped_bars(
                list(totals),
                {"replaced": [float(v) for v in totals.values()]},
                "Identifiers found and replaced in free text, by type",
                "entity type",
                "occurrences",
            )
            if totals
            else None,
            "quasi_identifiers": list(anon.quasi_identifiers),
            "k_threshold": anon.k_threshold,
            "risk": _risk_rows(before, after),
            "suppressed": anon.rows_quarantined,
            "class_size_figure": plot_class_sizes(hist, anon.k_threshold or None) if hist else None,
        }
    )
    return section


def _policy_rows(
    columns: dict[str, Any], configured: dict[str, Any], recorded: dict[str, Any]
) -> list[dict[str, Any]]:
    """One row per key, identifier, text, quasi-identifier or PII column: the policy anonymize
    recorded, else the one configured, else the role's default."""
    rows = []
    for name, col in columns.items():
        col = _dict(col)
        role = col.get("role")
        if not (role in ("key", "identifier", "text") or col.get("quasi") or col.get("pii")):
            continue
        policy = recorded.get(name, configured.get(name))
        if policy is None:
            policy = "drop (role default)" if role in ("key", "identifier") else "keep"
        if role == "text":
            policy = f"{_policy_text(policy)}; text scrubbed of identifiers"
        rows.append(
            {
                "column": name,
                "role": role,
                "pii": col.get("pii") or "",
                "quasi": bool(col.get("quasi")),
                "policy": _policy_text(policy),
            }
        )
    return rows


def _entity_rows(
    counts: dict[str, dict[str, int]],
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """anonymize's `entity_counts` ({column: {entity: n}}) as sorted rows, and totals by
    entity."""
    rows, totals = [], {}
    for col, by_type in counts.items():
        for etype, n in by_type.items():
            rows.append({"column": col, "entity": etype, "count": n})
            totals[etype] = totals.get(etype, 0) + n
    return sorted(rows, key=lambda r: (r["column"], r["entity"])), totals


def _risk_rows(before: Risk, after: Risk) -> list[dict[str, Any]]:
    """k, unique share and classes before and after suppression (anon_risk.risk_report)."""
    return [
        {"when": label, "k": risk.k, "unique_share": risk.unique_share, "classes": risk.classes}
        for label, risk in (("before suppression", before), ("after suppression", after))
    ]


def scan_summary(scan: ScanSummary | None) -> dict[str, Any]:
    """The independent scan's verdict and counts by entity type and column (never a value).

    `scan` is reports/privacy/scan.json (a ScanReport, with the first findings) or, without it,
    the verdict metrics/anonymize.json recorded (a ScanSummary, no details).
    """
    details = scan.details if isinstance(scan, ScanReport) else []
    by_column = Counter((d.column, d.entity) for d in details)
    return {
        "available": scan is not None,
        "passed": scan is not None and scan.passed,
        "findings": scan.findings if scan else None,
        "by_entity": dict(scan.by_entity) if scan else {},
        "by_column": [
            {"column": c, "entity": e, "count": n} for (c, e), n in sorted(by_column.items())
        ],
        "details_listed": len(details),
        "checks": list(scan.checks) if scan else [],
    }


def _policy_text(policy: Any) -> str:
    """A policy (a word or a mapping like {action: generalize, band: 10}) in words."""
    if isinstance(policy, Mapping):
        action = policy.get("action", "?")
        rest = ", ".join(f"{k} {v}" for k, v in policy.items() if k != "action" and v is not None)
        return f"{action} ({rest})" if rest else str(action)
    return str(policy)


def split_balance(split: SplitSummary | None) -> dict[str, Any]:
    """split's class_balance ({split: {rows, classes: {class: {rows, share}}}}) as one row per
    class and one column per split, so that many classes make the table longer, not wider."""
    per_split = split.class_balance if split else {}
    order = {"train": 0, "val": 1, "test": 2}  # metrics JSON has its keys sorted
    names = sorted(per_split, key=lambda s: (order.get(s, 3), s))
    totals = {s: per_split[s].rows for s in names}
    classes: list[str] = []
    for s in names:
        classes += [c for c in per_split[s].classes if c not in classes]
    rows = []
    for c in classes:
        cells = []
        for s in names:
            share = per_split[s].classes.get(c)
            n = share.rows if share else 0
            cells.append({"rows": n, "share": n / totals[s] if totals[s] else None})
        rows.append({"class": c, "cells": cells})
    found = split.feature_duplicates if split else {}
    duplicates = {s: found[s] for s in sorted(found, key=lambda s: (order.get(s, 3), s))}
    return {"names": names, "totals": totals, "rows": rows, "feature_duplicates": duplicates}


def augmentation_section(
    augment: AugmentSummary | None, split: SplitSummary | None
) -> dict[str, Any]:
    """Class balance per split, and before and after augmentation."""
    balance = split_balance(split)
    section: dict[str, Any] = {
        "available": augment is not None,
        "split": balance,
        "split_available": split is not None and bool(balance["rows"]),
    }
    if augment is None:
        section["note"] = "Stage 'augment' not run yet."
        return section
    before, after = augment.class_counts_before, augment.class_counts_after
    classes = list(dict.fromkeys([*before, *after]))
    tb, ta = sum(before.values()), sum(after.values())
    rows = []
    for c in classes:
        b, a = before.get(c, 0), after.get(c, 0)
        rows.append(
            {
                "class": c,
                "before": b,
                "after": a,
                "added": a - b,
                "share_before": b / tb if tb else None,
                "share_after": a / ta if ta else None,
            }
        )
    short = augment.short_of_target
    section.update(
        {
            "rows": rows,
            "method": augment.balance,
            "seed": augment.seed,
            "rows_added": augment.rows_added,
            "weights": dict(augment.class_weights or {}),
            "max_copies_per_row": augment.max_copies_per_row,
            "most_copies_of_one_row": augment.most_copies_of_one_row,
            "short_of_target": {
                "target": short.target if short else None,
                "rows": dict(short.rows) if short else {},
            },
            "figure": plot_grouped_bars(
                [str(c) for c in classes],
                {
                    "before": [float(r["before"]) for r in rows],
                    "after": [float(r["after"]) for r in rows],
                },
                "Training rows per class, before and after augmentation",
                "class",
                "rows",
                annotate=len(classes) <= 8,
            )
            if classes
            else None,
        }
    )
    return section


def _dp_text(dp: DPReport) -> str:
    """train's differential-privacy record (metrics/train.json `dp`) in a few words."""
    if not dp.enabled:
        return "DP off"
    return (
        f"DP-SGD: ε = {fmt(dp.epsilon, 2)} spent, δ = {dp.delta}, "
        f"clipping norm {fmt(dp.max_grad_norm, 2)}, "
        f"noise multiplier {fmt(dp.noise_multiplier, 3)}"
        + (f"; not covered by ε: {dp.not_covered}" if dp.not_covered else "")
    )


def _calibration_text(train: TrainSummary) -> str:
    """The fitted temperature and what it did to the validation loss, or that it is off."""
    c = train.calibration
    if c is None:
        return "off (train.calibrate)"
    return (
        f"temperature {fmt(c.temperature, 3)} fitted on validation; validation loss "
        f"{fmt(c.val_loss_before)} → {fmt(c.val_loss_after)}"
    )


def _train_facts(train: TrainSummary) -> list[tuple[str, str]]:
    """The training run's facts, in the order the section lists them."""
    return [
        ("Device", _device(train)),
        ("Precision", train.precision),
        ("Epochs run", fmt(train.epochs_run)),
        ("Optimizer steps", fmt(train.steps)),
        ("Batch size", fmt(train.batch_size)),
        ("Learning rate", fmt(train.lr, 5)),
        ("Best validation loss", fmt(train.best_val_loss)),
        ("Best validation accuracy", pct(train.best_val_accuracy, 2)),
        ("Calibration", _calibration_text(train)),
        ("Training time", f"{fmt(train.train_time_s, 1)} s"),
        ("Throughput", f"{fmt(train.samples_per_s, 0)} samples/s"),
        ("Rows trained on", fmt(train.rows_in)),
        ("Seed", str(train.seed)),
        ("Differential privacy", _dp_text(train.dp)),
    ]


def training_section(train: TrainSummary | None, curve: pd.DataFrame | None) -> dict[str, Any]:
    """Device, time, throughput, differential privacy and the loss/accuracy curves."""
    if train is None and curve is None:
        return _missing("train")
    facts = _train_facts(train) if train else []
    figure = None
    if curve is not None and len(curve) and {"train_loss", "val_loss"} & set(curve.columns):
        figure = plot_training(curve)
    return {
        "available": True,
        "facts": [(k, v) for k, v in facts if v not in ("—", "— s", "— samples/s")],
        "figure": figure,
        "curve_note": None if figure else "No training curve (plots/train_curve.csv) yet.",
    }


def _device(train: TrainSummary) -> str:
    """The device trained on: its name, and its type where the name does not say it."""
    name, kind = train.device_name, train.device
    if name and kind and kind not in name:
        return f"{name} ({kind})"
    return name or kind or "—"


def changes_section(
    diff: dict[str, dict[str, Any]] | None, baseline_ref: str, note: str | None = None
) -> dict[str, Any]:
    """Numeric metric changes since the previous run, as `dvc metrics diff --all --json` gives
    them ({metrics file: {dotted key: {old, new, diff}}}); None when DVC could not answer."""
    if diff is None:
        why = f": {note}" if note else ""
        return {
            "available": False,
            "note": f"dvc metrics diff against {baseline_ref} gave no answer{why}.",
        }
    rows = [row for file, keys in diff.items() for row in _diff_rows(file, _dict(keys))]
    if not rows or all(r["old"] is None for r in rows):
        return {
            "available": False,
            "note": f"No committed metrics at {baseline_ref} to compare with (first run?).",
        }
    rank = {key: i for i, (key, _, _) in enumerate(HEADLINE)}
    stage_order = {s: i for i, s in enumerate(("evaluate", "train", *PIPELINE))}
    rows.sort(key=lambda r: (stage_order.get(r["stage"], 99), rank.get(r["metric"], len(rank))))
    had_old = {r["stage"] for r in rows if r["old"] is not None}
    return {
        "available": True,
        "baseline": baseline_ref,
        "changed": [r for r in rows if r["changed"] and not r["volatile"]],
        "volatile": [r for r in rows if r["changed"] and r["volatile"]],
        "unchanged": sum(not r["changed"] for r in rows),
        "stages_compared": sorted(had_old),
        "new_stages": sorted({r["stage"] for r in rows} - had_old),
    }


def _diff_rows(file: str, keys: dict[str, Any]) -> list[dict[str, Any]]:
    """The numeric rows of one metrics file's diff (booleans and strings are not measures)."""
    stage = file.rsplit("/", 1)[-1].removesuffix(".json")
    rows = []
    for key, change in keys.items():
        old, new = (_dict(change).get(k) for k in ("old", "new"))
        a, b = _num(old), _num(new)
        if (a is None and old is not None) or (b is None and new is not None) or a is b is None:
            continue  # not a number on one side: a text or flag, shown elsewhere
        delta = None if a is None or b is None else b - a
        rows.append(
            {
                "stage": stage,
                "metric": key,
                "old": old,
                "new": new,
                "delta": delta,
                "relative": delta / abs(a) if delta is not None and a else None,
                "changed": a != b,
                "volatile": key.split(".")[-1] in VOLATILE,
            }
        )
    return rows


def lineage_section(lock: dict[str, Any] | None) -> dict[str, Any]:
    """Every stage of dvc.lock with its command, input and output hashes and params."""
    stages = _dict((lock or {}).get("stages"))
    if not stages:
        return {"available": False, "note": "No dvc.lock yet: run `dvc repro` to record lineage."}
    order = [s for s in PIPELINE if s in stages] + [s for s in stages if s not in PIPELINE]
    out = []
    for name in order:
        st = _dict(stages[name])
        params = []
        for file, values in _dict(st.get("params")).items():
            for key, value in _dict(values).items():
                leaves, summary = shown_params(key, value)
                params += [{"file": file, "key": k, "value": _json(v)} for k, v in leaves.items()]
                if summary:  # big ones (the schema): a digest that changes when any value does
                    params.append({"file": file, "key": key, "value": summary})
        out.append(
            {
                "stage": name,
                "cmd": " && ".join(st["cmd"]) if isinstance(st.get("cmd"), list) else st.get("cmd"),
                "deps": [_lock_entry(d) for d in st.get("deps") or [] if isinstance(d, Mapping)],
                "outs": [_lock_entry(d) for d in st.get("outs") or [] if isinstance(d, Mapping)],
                "params": params,
            }
        )
    return {"available": True, "stages": out}


def _json(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def _lock_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Path, content hash, size and file count of one dvc.lock dep/out."""
    algo = hash_name(entry)
    value = entry.get(algo) if algo else None
    if value is None:
        value = entry_hash(entry) or "—"
    return {
        "path": entry.get("path"),
        "hash": str(value),
        "algo": algo,
        "size": entry.get("size"),
        "nfiles": entry.get("nfiles"),
    }
