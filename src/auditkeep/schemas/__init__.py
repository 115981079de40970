"""Pydantic wire models. The seed's models keep the seed's names (AuditLogs, ApiGetAuditLogs, ...)."""
