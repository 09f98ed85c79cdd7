"""Split: train / validation / test by a hash of each row's normalised features.

Rows whose feature columns are identical after the normalisation the model applies (text NFKC,
lower-cased, whitespace collapsed; numbers as numbers; nulls marked) share one hash and so one
split: the test split never holds a copy of a training row. A row's split depends only on its
features and the params seed (a table without any feature column falls back to its record_id),
so it keeps its split across reruns and when new batches arrive. Reads data/anon/, writes
data/split/{train,val,test}/ and metrics/split.json (rows, class balance, feature duplicates).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stages.lib.config import SplitConfig, pipeline_params
from stages.lib.errors import run_stage
from stages.lib.features import FeatureSpec, column_policies, feature_spec
from stages.lib.io import AtomicDir, file_hash, partition_names, write_parquet
from stages.lib.normalise import model_text
from stages.lib.params import ParamsError
from stages.lib.partitions import Link, Partition, PartitionRun
from stages.lib.paths import ANON_DIR as INPUT
from stages.lib.schema import RECORD_ID, Schema
from stages.lib.summaries import SplitFields
from stages.lib.summary import StageSummary

OUTPUT = Path("data/split")
SPLITS = ("train", "val", "test")


class SplitOverlapError(RuntimeError):
    """A record, or rows with identical features, landed in more than one split."""


NULL_MARK = "\x00"  # a null number or category: distinct from every value and from ""
FIELD_SEP = "\x1f"


def _normalised(column: pa.ChunkedArray, kind: str) -> pa.ChunkedArray:
    """One feature column as the strings the content hash reads: text exactly as the model
    sees it (stages.lib.normalise.model_text), null as ""; numbers as float64 (so 3 and 3.0
    agree), dates and booleans as text; null numbers and categories marked."""
    if kind == "text":
        return pa.chunked_array([model_text(column)])
    if kind == "numeric" and (
        pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
    ):
        column = pc.cast(column, pa.float64())  # dates, timestamps, booleans: as their text
    return pc.fill_null(pc.cast(column, pa.string()), NULL_MARK)


def content_keys(table: pa.Table, spec: FeatureSpec) -> list[str]:
    """Per row, its normalised feature values joined: equal keys, equal features. Without any
    feature column in the table, the record_id (every row its own group)."""
    kinds = [(c, "numeric") for c in spec.numeric] + [(c, "categorical") for c in spec.categorical]
    kinds += [(c, "text") for c in spec.text]
    parts = [_normalised(table.column(c), k) for c, k in kinds if c in table.column_names]
    if not parts:
        return table.column(RECORD_ID).to_pylist()
    return pc.binary_join_element_wise(*parts, FIELD_SEP).to_pylist()


def check_fractions(fractions: dict[str, float]) -> None:
    """Fractions must name train, val and test, be non-negative and sum to 1."""
    if set(fractions) != set(SPLITS):
        raise ParamsError(f"split.fractions: need exactly {list(SPLITS)}, got {sorted(fractions)}")
    if any(v < 0 for v in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-9:
        raise ParamsError(f"split.fractions must be >= 0 and sum to 1, got {dict(fractions)}")


def hash64(record_ids: list[str], seed: str) -> np.ndarray:
    """The first 64 bits of SHA-256 of seed and id, per record id."""
    prefix = seed.encode() + b"\x00"
    return np.array(
        [
            int.from_bytes(hashlib.sha256(prefix + r.encode()).digest()[:8], "big")
            for r in record_ids
        ],
        dtype=np.uint64,
    )


def assign(record_ids: list[str], fractions: dict[str, float], seed: str) -> np.ndarray:
    """The split name of each record id."""
    return split_of(hash64(record_ids, seed), fractions)


def split_of(hashes: np.ndarray, fractions: dict[str, float]) -> np.ndarray:
    """The split name of each record from its hash64 (a uniform number in [0, 1))."""
    check_fractions(fractions)
    u = hashes.astype(np.float64) / float(1 << 64)
    edges = np.cumsum([fractions[s] for s in SPLITS])
    idx = np.searchsorted(edges, u, side="right").clip(0, len(SPLITS) - 1)
    return np.array(SPLITS, dtype=object)[idx]


def class_balance(counts: dict[str, dict[str, int]], classes: list[str]) -> dict[str, Any]:
    """Rows and share of each class per split."""
    out = {}
    for s in SPLITS:
        total = sum(counts[s].values())
        out[s] = {
            "rows": total,
            "classes": {
                c: {"rows": counts[s].get(c, 0),
                    "share": round(counts[s].get(c, 0) / total, 6) if total else 0.0}
                for c in classes
            },
        }  # fmt: skip
    return out


def split_partition(
    path: str, config: SplitConfig, spec: FeatureSpec, out_dir: Path
) -> dict[str, Any]:
    """Task: split one partition file into out_dir/{split}.parquet; return rows per class.

    Also stores each split's record-id hashes and content hashes (ids.npz) for the
    cross-partition overlap checks.
    """
    table = pq.read_table(path)
    content = hash64(content_keys(table, spec), config.seed)
    records = hash64(table.column(RECORD_ID).to_pylist(), config.seed)
    labels = split_of(content, dict(config.fractions))
    rows: dict[str, dict[str, int]] = {}
    ids = {}
    for s in SPLITS:
        mask = labels == s
        part = table.filter(pa.array(mask))
        write_parquet(part, out_dir / f"{s}.parquet")
        ids[s], ids[f"content_{s}"] = records[mask], content[mask]
        rows[s] = {
            str(item["values"]): item["counts"]
            for item in pc.value_counts(part.column(spec.label)).to_pylist()
        }
    np.savez(out_dir / "ids.npz", **ids)
    return {"rows_in": table.num_rows, "rows": rows}


def check_overlap(hashes: dict[str, np.ndarray], what: str) -> None:
    """Raise SplitOverlapError when a hash (a record, or a row's features) is in two splits."""
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            both = np.intersect1d(hashes[a], hashes[b]).size
            if both:
                raise SplitOverlapError(f"split: {both} {what} in both {a} and {b}")


def run(
    input_dir: Path,
    output_dir: Path,
    config: SplitConfig,
    schema: Schema,
    spec: FeatureSpec | None = None,
) -> StageSummary:
    """Split every partition; check no record id and no feature content is in two splits.

    `spec`: the features the model sees (main passes anonymize's policies); None: the features
    under the schema's role defaults.
    """
    spec = spec or feature_spec(schema, column_policies(schema, {}))
    summary = StageSummary("split")
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    keys = (*SPLITS, *(f"content_{s}" for s in SPLITS))
    ids: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    partitions = [
        Partition(name, (str(file), config, spec), file_hash(file))
        for name, file in partition_names(input_dir)
    ]
    # One atomic directory for all splits: a killed run never leaves train/ without test/.
    with PartitionRun("split", config, spec) as work, AtomicDir(output_dir) as out:
        links = [Link(out, f"{s}/{{name}}", f"{s}.parquet") for s in SPLITS]
        for done in work.run(split_partition, partitions, links):
            summary.rows_in += done.result["rows_in"]
            with np.load(done.file("ids.npz")) as stored:
                for k in keys:
                    ids[k].append(stored[k])
            for s in SPLITS:
                for cls, n in done.result["rows"][s].items():
                    counts[s][cls] = counts[s].get(cls, 0) + n
                    summary.rows_out += n
        merged = {k: np.concatenate(ids[k]) if ids[k] else np.empty(0, np.uint64) for k in keys}
        check_overlap({s: merged[s] for s in SPLITS}, "record(s)")
        check_overlap({s: merged[f"content_{s}"] for s in SPLITS}, "feature content(s)")
    summary.fields = SplitFields(
        fractions=dict(config.fractions),
        seed=config.seed,
        actual_fractions={s: round(merged[s].size / max(summary.rows_out, 1), 6) for s in SPLITS},
        overlap_checked=True,
        # Rows that share their normalised features with another row (kept in one split).
        feature_duplicates={
            s: int(merged[f"content_{s}"].size - np.unique(merged[f"content_{s}"]).size)
            for s in SPLITS
        },
        class_balance=class_balance(counts, list(schema.classes)),
    )
    return summary


def main() -> int:
    """Run the stage from params.yaml."""
    p = pipeline_params()
    config, schema = p.split, p.schema
    check_fractions(dict(config.fractions))
    spec = feature_spec(schema, column_policies(schema, p.anonymize.policies))
    summary = run(INPUT, OUTPUT, config, schema, spec)
    data = summary.write()
    sizes = {s: data.class_balance[s].rows for s in SPLITS}
    print(f"split: {data.rows_in} rows -> {sizes}")
    return 0


if __name__ == "__main__":
    run_stage(main)
