"""The stats rollup's background job (issue #13): the roller that keeps storage/rollup.py's counts up with ingest."""
