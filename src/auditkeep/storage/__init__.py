"""Persistence: one schema (tables.py, migrations/), two backends chosen by URL scheme."""

from auditkeep.storage.base import Storage, open_storage

__all__ = ["Storage", "open_storage"]
