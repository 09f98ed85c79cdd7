"""Small helpers shared by the stages: typed params, Parquet I/O, summaries, schema, keys."""
