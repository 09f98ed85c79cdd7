"""init: describe a user's table in params.yaml (and its source in dvc.yaml) in one command.

    pipeline init FILE [--label COL] [--columns a,b,...] [--format csv|tsv|jsonl|parquet] [--force]

Reads the file (the first `--rows` rows of a large one), profiles it (stages/lib/profile.py),
and writes params.yaml: the schema, anonymize policies, class-share bounds, evaluate's positive
class and gate, and `ingest` (sources, format, header). Every inferred line carries a comment
saying why. The other sections stay as they are; settings that named the old schema's columns
are dropped. dvc.yaml's ingest deps become the new source (DVC cannot take them from params,
treeverse/dvc#8171). Without a key, a random local demo key is created (never for real data).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from stages.lib import profile as prof
from stages.lib.config import PipelineParams, pipeline_params
from stages.lib.delimited import first_record
from stages.lib.errors import InputError
from stages.lib.io import file_hash, write_text_atomic
from stages.lib.keys import DEMO_KEY_FILE, KEY_ENV, create_demo_key, is_sample
from stages.lib.paths import DVC_YAML as DVC_FILE
from stages.lib.paths import PARAMS_FILE as PARAMS
from stages.lib.profile import ColumnProfile
from stages.lib.readers import read_batches
from stages.lib.sources import FORMATS, check_content, file_format, norm_name

SOURCES_MARKER = "# The sources:"
SAMPLE_ROWS = 50_000
# A header name this long is a row of data (a header-less file read as if it had one).
MAX_HEADER_CHARS = 40
YAML_SPECIAL = re.compile(r"[:#{}\[\],&*?|<>=!%@`'\"]|^\s|\s$")


# ---------------------------------------------------------------------------------------------
# Reading


def source_format(path: Path, fmt: str | None) -> str:
    """The file's format: --format, else its extension (a trailing .gz allowed)."""
    if fmt:
        if fmt not in set(FORMATS.values()):
            raise InputError(f"--format {fmt}: expected one of csv, tsv, jsonl, parquet")
        return fmt
    try:
        return file_format(path)
    except InputError as e:
        raise InputError(f"{e}; or name the format with --format csv|tsv|jsonl|parquet") from e


def read_sample(
    path: Path, fmt: str, names: list[str] | None, rows: int
) -> tuple[pd.DataFrame, bool]:
    """The first `rows` rows as strings ('' for missing), and whether the file holds more.

    Read by ingest's own reader (stages/lib/readers.py), so init sees the file as ingest will:
    the same dialect (an Excel `sep=` line; in TSV a quote is data), encoding checks, header
    names (NFKC, stripped) and errors for malformed rows.
    """
    if names and fmt in ("jsonl", "parquet"):
        raise InputError(f"--columns: {fmt} files name their own columns; leave it out")
    if names and len(names) != len(first := first_record(path, fmt)):
        raise InputError(
            f"{path}: --columns names {len(names)} columns ({','.join(names)}) but line 1 "
            f"has {len(first)} fields; name every column, in order"
        )
    batches = [
        b
        for b in read_batches(path, fmt, rows + 1, names, names is None, max_rows=rows + 1)
        if b.num_rows
    ]
    if not batches:
        raise InputError(f"{path}: no data rows")
    table = pa.Table.from_batches(batches).slice(0, rows + 1)
    df = table.rename_columns([norm_name(n) for n in table.column_names]).to_pandas()
    df = df.astype(object).where(df.notna(), "").astype(str)
    if not names and fmt in ("csv", "tsv"):
        _check_header(path, df)
    return df.head(rows), len(df) > rows


def _check_header(path: Path, df: pd.DataFrame) -> None:
    """Fail when the first line looks like data (the file has no header): a name that is long
    or a sentence, all names numbers, or a name that is also a value of its own column."""
    header = [str(c) for c in df.columns]
    numeric = sum(bool(re.fullmatch(r"[+-]?\d+(\.\d+)?", h)) for h in header)
    long = [h for h in header if len(h) > MAX_HEADER_CHARS or len(h.split()) >= 4]
    long += [h for h in header if (df[h].astype(str).str.strip() == h.strip()).mean() >= 0.01]
    if long or numeric == len(header) or any(h.startswith("Unnamed:") for h in header):
        raise InputError(
            f"{path}: the first line looks like data, not a header "
            f"({(long or header)[0][:30]!r}...): name the columns with --columns a,b,..."
        )


# ---------------------------------------------------------------------------------------------
# Params


def yaml_rt() -> YAML:
    """ruamel.yaml round-trip: comments and layout of params.yaml are kept."""
    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    y.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return y


def _flow(value: Any) -> Any:
    """Values as flow-style YAML; a string that YAML 1.1 readers (PyYAML, which the stages use)
    would take for something else (no, yes, on, null, 1e3) is quoted."""
    if isinstance(value, str):
        return _str(value)
    if isinstance(value, dict):
        m = CommentedMap({_str(k): _flow(v) for k, v in value.items()})
        m.fa.set_flow_style()
        return m
    if isinstance(value, list):
        s = CommentedSeq([_flow(v) for v in value])
        s.fa.set_flow_style()
        return s
    return value


def _str(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        plain = yaml.safe_load(value) == value
    except yaml.YAMLError:
        plain = False
    return value if plain else DoubleQuotedScalarString(value)


def _set(node: CommentedMap, key: str, value: Any, why: str | None = None) -> None:
    key = _str(key)
    node[key] = _flow(value)
    if why:
        node.yaml_add_eol_comment(f"init: {why}", key)


def tidy(text: str) -> str:
    """Two spaces before every init comment, and a blank line before each top-level section
    (a replaced value drops the blank line that ruamel kept in its old comment)."""
    text = re.sub(r"(?m)(\S) ?# init:", r"\1  # init:", text)
    return re.sub(r"(?m)^((?!\s*#)\S.*|\s+\S.*)\n(?=[A-Za-z_][\w-]*:)", "\\1\n\n", text)


def schema_map(profiles: dict[str, ColumnProfile]) -> CommentedMap:
    """schema.columns with a comment per column."""
    cols = CommentedMap()
    for name, p in profiles.items():
        _set(cols, name, p.spec(), "; ".join(p.why) or None)
    return cols


def policies_map(profiles: dict[str, ColumnProfile]) -> CommentedMap:
    """anonymize.policies: every column whose policy is not its role's default, with why."""
    out = CommentedMap()
    for name, p in profiles.items():
        if p.policy is not None:
            _set(out, name, p.policy, p.policy_why or None)
    return out


def update_params(doc: CommentedMap, fit: dict[str, Any]) -> list[str]:
    """Write the inferred settings into the loaded params; return warnings."""
    profiles: dict[str, ColumnProfile] = fit["profiles"]
    columns = set(profiles)
    old = set((doc.get("schema") or {}).get("columns") or {})
    schema = doc.setdefault("schema", CommentedMap())
    schema["columns"] = schema_map(profiles)
    schema.yaml_set_comment_before_after_key("columns", before=fit["header"], indent=2)
    ingest = doc.setdefault("ingest", CommentedMap())
    _set(ingest, "sources", [fit["source"]], "the file `pipeline init` described")
    _set(ingest, "format", fit["format"], fit["format_why"])
    _set(ingest, "header", fit["header_row"], fit["header_why"])
    _update_clean(doc.setdefault("clean", CommentedMap()), fit, columns)
    validate = doc.setdefault("validate", CommentedMap())
    b = fit["bounds"]
    _set(validate, "min_class_share", b["min_class_share"],
         f"half the rarest class's share ({b['rarest']:.1%})")  # fmt: skip
    _set(validate, "max_class_share", b["max_class_share"],
         f"halfway from the commonest class's share ({b['commonest']:.1%}) to 1")  # fmt: skip
    anonymize = doc.setdefault("anonymize", CommentedMap())
    anonymize["policies"] = policies_map(profiles)
    _update_evaluate(doc.setdefault("evaluate", CommentedMap()), fit, columns)
    return stale_references(doc, old - columns)


def _update_clean(clean: CommentedMap, fit: dict[str, Any], columns: set[str]) -> None:
    labels = set(fit["profiles"][fit["label"]].values or [])
    aliases = {k: v for k, v in (clean.get("label_aliases") or {}).items() if v in labels}
    _set(clean, "label_aliases", aliases, "only aliases of this label's values kept")
    formats = list(clean.get("date_formats") or [])
    added = [f for f in fit["date_formats"] if f not in formats]
    if added:
        _set(clean, "date_formats", formats + added, f"added {added}, seen in the data")
    reject = [c for c in clean.get("reject_bad_format_in") or [] if c in columns]
    clean["reject_bad_format_in"] = _flow(reject)


def _update_evaluate(ev: CommentedMap, fit: dict[str, Any], columns: set[str]) -> None:
    slices = [c for c in ev.get("slices") or [] if c in columns]
    _set(ev, "slices", slices, "empty: the schema's sensitive columns")
    b, classes = fit["bounds"], fit["profiles"][fit["label"]].values or []
    positive = str(b["minority"]) if len(classes) == 2 else None
    why = "the rarer class" if positive else "many classes: the last of the label's values"
    _set(ev, "positive_class", positive, why)
    gate = ev.setdefault("gate", CommentedMap())
    for key, (value, why) in fit_gate(fit, gate).items():
        _set(gate, key, value, why)


def fit_gate(fit: dict[str, Any], gate: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """Evaluate's thresholds for this data (the defaults were measured on UCI Adult)."""
    b, n_test = fit["bounds"], fit["n_test"]
    out: dict[str, tuple[Any, str]] = {
        "min_accuracy": (
            round(min(0.99, b["commonest"] + 0.01), 3),
            f"beat always predicting '{b['majority']}' ({b['commonest']:.1%} of rows)",
        ),
        "min_roc_auc": (0.6, "clearly above chance (0.5); Adult's 0.88 does not carry over"),
    }
    # A perfectly calibrated model's ECE from sampling noise alone: about
    # sqrt(2/pi) * 0.5 * sqrt(bins / n) on n test rows; allow twice that.
    noise = math.sqrt(2 / math.pi) * 0.5 * math.sqrt(10 / max(n_test, 1))
    if gate.get("max_ece") is not None and 2 * noise > gate["max_ece"]:
        out["max_ece"] = (
            round(2 * noise, 2),
            f"~{n_test} test rows: calibration noise alone gives an ECE near {noise:.2f}",
        )
    gap, where = fit["base_gap"]
    limit = gate.get("max_demographic_parity_diff")
    if limit is not None and gap > limit:
        why = (
            f"not gated: in the data itself {where} differ by {gap:.2f} in the rate of "
            f"'{b['minority']}', above the bound {limit}; measured and reported, decide a bound"
        )
        out["max_demographic_parity_diff"] = (None, why)
        out["max_equal_opportunity_diff"] = (None, why)
    return out


def stale_references(doc: CommentedMap, gone: set[str]) -> list[str]:
    """Warnings for settings outside schema that still name a column no longer in the schema."""
    found = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if where == "" and k == "schema":
                    continue
                if str(k) in gone:
                    found.append(f"{where}{k}")
                walk(v, f"{where}{k}.")
        elif isinstance(node, list):
            for v in node:
                if isinstance(v, str) and v in gone:
                    found.append(f"{where.rstrip('.')} names '{v}'")
        elif isinstance(node, str) and node in gone:
            found.append(f"{where.rstrip('.')} = '{node}'")

    walk(doc, "")
    return [f"params.yaml: {f}, a column of the old schema; check it" for f in found]


# ---------------------------------------------------------------------------------------------
# dvc.yaml and the key


def rewrite_sources(text: str, sources: list[str]) -> str:
    """dvc.yaml with the list items after the `# The sources:` comment block replaced by
    `sources`; every other byte as it was."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip().startswith(SOURCES_MARKER)]
    if len(starts) != 1:
        raise InputError(
            f"{DVC_FILE}: expected one '{SOURCES_MARKER}' comment in the ingest stage's deps; "
            f"add {sources} to stages.ingest.deps yourself"
        )
    j = starts[0] + 1
    while j < len(lines) and lines[j].lstrip().startswith("#"):
        j += 1
    indent = lines[starts[0]][: len(lines[starts[0]]) - len(lines[starts[0]].lstrip())]
    k = j
    while k < len(lines) and lines[k].startswith(indent + "- "):
        k += 1
    new = [f"{indent}- {json.dumps(s) if YAML_SPECIAL.search(s) else s}\n" for s in sources]
    return "".join(lines[:j] + new + lines[k:])


def ensure_key(path: Path) -> str | None:
    """Create a random local demo key when none is set and the data is not the bundled sample;
    the warning to print, else None."""
    if os.environ.get(KEY_ENV) or DEMO_KEY_FILE.exists() or is_sample([file_hash(path)]):
        return None
    made = create_demo_key()
    return (
        f"WARNING: {KEY_ENV} is not set, so init created a random local DEMO key in {made} "
        "(git-ignored). It is for trying the pipeline, NOT for real data: anyone with this "
        f"machine's files can recompute the pseudonyms. For real data set {KEY_ENV} from your "
        "secret store (and keep it: record_ids cannot be rebuilt without it)."
    )


def committed_unchanged(path: Path) -> bool:
    """Whether `path` is byte-identical to git's HEAD version (overwriting loses nothing)."""
    try:
        head = subprocess.run(
            ["git", "show", f"HEAD:{path.as_posix()}"], capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return False
    return head == path.read_bytes()


# ---------------------------------------------------------------------------------------------
# The command


def profile_source(df: pd.DataFrame, label: str | None, params: PipelineParams) -> dict[str, Any]:
    """Everything init infers from the sample (pure), with the project's current params."""
    missing, formats = list(params.clean.missing_values), list(params.clean.date_formats)
    miss = {m.strip().lower() for m in missing}
    if label is None:
        try:
            label, why = prof.guess_label(df, miss)
        except ValueError as e:
            raise InputError(str(e)) from e
    elif label not in df.columns:
        raise InputError(f"--label {label}: no such column; the columns are {list(df.columns)}")
    else:
        why = "chosen with --label"
    try:
        profiles = prof.profile_frame(df, label, missing, formats)
        bounds = prof.class_share_bounds(profiles[label], df[label], miss)
    except ValueError as e:
        raise InputError(str(e)) from e
    profiles[label].why.append(why)
    k = params.anonymize.k or 1  # null (measure only): the smallest class that still counts
    suppressed = prof.choose_policies(df, profiles, k, miss)
    prof.guard_check(df, profiles, miss)
    return {
        "label": label,
        "profiles": profiles,
        "bounds": bounds,
        "suppressed": suppressed,
        "n_test": int(len(df) * params.split.fractions["test"]),
        "base_gap": prof.base_rate_gap(
            df, profiles, label, bounds["minority"], miss, params.evaluate.min_slice_size
        ),
        "date_formats": [p.date_format for p in profiles.values() if p.date_format],
    }


def run_init(
    file: str,
    label: str | None = None,
    columns: str | None = None,
    fmt: str | None = None,
    force: bool = False,
    rows: int = SAMPLE_ROWS,
) -> None:
    """The `pipeline init` command: profile FILE, write params.yaml and dvc.yaml."""
    path = Path(file)
    if not path.is_file():
        raise InputError(f"{file}: no such file")
    if PARAMS.exists() and not force and not committed_unchanged(PARAMS):
        raise InputError(
            f"{PARAMS} exists and differs from the committed one: init would overwrite it. "
            "Rerun with --force (git diff / git stash keep your version), or edit it by hand"
        )
    fmt = source_format(path, fmt)
    check_content(path, fmt)
    names = [c.strip() for c in columns.split(",")] if columns else None
    df, more = read_sample(path, fmt, names, rows)
    y = yaml_rt()
    doc = y.load(PARAMS.read_text(encoding="utf-8")) if PARAMS.exists() else CommentedMap()
    fit = profile_source(df, label, pipeline_params(PARAMS))
    source = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else str(path)
    how = f"all {len(df):,} rows"
    if more:
        how = f"the first {len(df):,} rows (the file holds more: a sample)"
    by_ext = _ext_format(path)
    fit.update(
        source=Path(source).as_posix(),
        format=None if fmt == by_ext else fmt,
        format_why=f"from the extension ({fmt})" if fmt == by_ext else "named with --format",
        header_row=names is None,
        header_why="no header: columns named with --columns" if names else "a header line",
        header=f"Written by `pipeline init {source}` from {how}; check every line.",
    )
    warnings = update_params(doc, fit)
    buf = io.StringIO()
    y.dump(doc, buf)
    text = tidy(buf.getvalue())
    dag = rewrite_sources(DVC_FILE.read_text(encoding="utf-8"), [fit["source"]])
    write_text_atomic(PARAMS, text)
    write_text_atomic(DVC_FILE, dag)
    print_summary(fit, path, how, warnings, ensure_key(path))


def print_summary(
    fit: dict[str, Any], path: Path, how: str, warnings: list[str], key_warning: str | None
) -> None:
    """The inferred schema as a table (column, type, role, flags, policy, why) and what next."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(100, Console().width))
    table = Table(title=f"pipeline init {fit['source']}: read {how}")
    for head in ("column", "type", "role", "flags", "policy", "why"):
        table.add_column(head, overflow="fold")
    for name, p in fit["profiles"].items():
        flags = [f for f in ("quasi", "sensitive") if getattr(p, f)]
        flags += [f"pii={p.pii}"] if p.pii else []
        policy = p.policy if p.policy is not None else "(role default)"
        if isinstance(policy, dict):
            policy = ", ".join(f"{k}={v}" for k, v in policy.items() if k != "action")
        table.add_row(name, p.type, p.role, " ".join(flags), str(policy), "; ".join(p.why))
    console.print(table)
    key = next((n for n, p in fit["profiles"].items() if p.role == "key"), None)
    console.print(
        f"key: {key or 'none: record_id is a keyed hash of each row (plus its occurrence)'}; "
        f"k-anonymity: {fit['suppressed']:.1%} of sampled rows in classes smaller than k"
    )
    for w in warnings:
        console.print(f"[yellow]{w}[/yellow]")
    if key_warning:
        console.print(f"[bold red]{key_warning}[/bold red]")
    console.print(f"Wrote {PARAMS} and {DVC_FILE} (ingest deps): check them, then `make run`.")


def _ext_format(path: Path) -> str | None:
    try:
        return file_format(path)
    except InputError:
        return None
