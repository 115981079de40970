"""auditkeep: a self-hostable, tamper-evident audit log service speaking Datafold's audit log API."""

__version__ = "0.1.0"
