"""Property: any small table written as CSV, TSV or JSON Lines comes back from ingest's parser
row for row and value for value, or the parser says why (InputError); nothing else escapes."""

from __future__ import annotations

import csv
import gzip
import io
import json
import tempfile
from pathlib import Path

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.lib.errors import InputError
from stages.lib.readers import read_batches

# Any Unicode text but surrogates (not encodable as UTF-8) and NUL (not text).
CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
TRICKY = st.sampled_from(['"', "'", ",", "\t", "\n", "\r\n", "\r", ";", " ", '""', "\ufeff", "é"])
VALUE = st.lists(st.one_of(TRICKY, st.text(CHARS, max_size=6)), max_size=5).map("".join)
# A TSV value cannot hold its delimiter or a line break: TSV has no quoting.
TSV_VALUE = VALUE.map(lambda v: v.replace("\t", " ").replace("\r", " ").replace("\n", " "))


@st.composite
def tables(draw: st.DrawFn) -> tuple:
    fmt = draw(st.sampled_from(["csv", "tsv", "jsonl"]))
    # TSV: one column of empty values would be blank lines; two columns avoid that ambiguity.
    ncols = draw(st.integers(2 if fmt == "tsv" else 1, 5))
    names = [f"c{i}" for i in range(ncols)]
    value = TSV_VALUE if fmt == "tsv" else VALUE
    rows = draw(st.lists(st.lists(value, min_size=ncols, max_size=ncols), max_size=40))
    quote_all = draw(st.booleans())
    return fmt, names, rows, draw(st.booleans()), draw(st.sampled_from([1, 3, 1000])), quote_all


def encode(fmt: str, names: list[str], rows: list[list[str]], quote_all: bool) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(dict(zip(names, r, strict=True))) + "\n" for r in rows).encode()
    if fmt == "tsv":  # as TSV exports write it: no quoting, a quote is data
        return "".join("\t".join(r) + "\n" for r in [names, *rows]).encode()
    buf = io.StringIO(newline="")
    # The csv module quotes a value holding a bare \r only when \r is in its line ending.
    quoting = csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL
    csv.writer(buf, quoting=quoting, lineterminator="\r\n").writerows([names, *rows])
    return buf.getvalue().encode("utf-8")


@settings(max_examples=50, deadline=None)
@given(tables())
def test_rows_out_equal_records_written(table: tuple) -> None:
    fmt, names, rows, compressed, block_rows, quote_all = table
    data = encode(fmt, names, rows, quote_all)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"t.{fmt}{'.gz' if compressed else ''}"
        path.write_bytes(gzip.compress(data, mtime=0) if compressed else data)
        try:
            # A small read block: records with line breaks straddle block boundaries.
            batches = list(read_batches(path, fmt, block_rows, names, block_size=1 << 12))
        except InputError:
            assert fmt == "jsonl" and not rows, "only an empty JSON Lines file may be refused"
            return
    got = pa.Table.from_batches(batches).to_pylist() if batches else []
    assert [[r[n] for n in names] for r in got] == rows
