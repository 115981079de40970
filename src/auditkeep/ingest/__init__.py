"""Ingest: validation, sequencing and chaining of incoming events, and the service's self-audit."""
