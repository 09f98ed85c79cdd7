"""The names other code imported from stages.ingest still import from there after its readers
moved to stages/lib (issue 15's size limits, now checked repo-wide in tests/test_code_limits.py)."""

from __future__ import annotations


def test_names_other_code_imports_from_ingest() -> None:
    from stages import ingest
    from stages.lib import readers, record_ids, sources

    assert ingest.read_batches is readers.read_batches
    assert ingest.add_lineage is record_ids.add_lineage
    for name in ("FORMATS", "GZIP_MAGIC", "batch_id", "check_columns", "check_content",
                 "file_format", "find_batch_files", "not_data"):  # fmt: skip
        assert getattr(ingest, name) is getattr(sources, name)
    assert {"IngestConfig", "IoConfig", "OUT_DIR", "main"} <= set(ingest.__all__)
