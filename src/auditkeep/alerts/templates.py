"""Built-in rules an admin enables in one click (API, CLI, console): what each watches and why.

`large_export` counts reads, not their size: a read's `audit_logs.read` record is written before the read
is answered (ingest/reads.py), so how many events it will carry is not known yet. Ten reads by one
person within five minutes (a cursor walk records once, however many pages it takes) is what a bulk
export looks like from the log.
"""

from __future__ import annotations

from typing import Any

from auditkeep.schemas.alerts import AlertTemplate

_TEMPLATES: list[dict[str, Any]] = [
    {"name": "support_access", "title": "Support staff access",
     "description": "Any action by a support user (is_support_user=true), at most once an hour per person.",
     "rule": {"filter": {"is_support_user": True}, "threshold": {"count": 1, "window_seconds": 60},
              "group_by": ["user_email"], "cooldown_seconds": 3600}},
    {"name": "api_key_changes", "title": "API key created or revoked",
     "description": "Every api_key.create and api_key.revoke.",
     "rule": {"filter": {"action": "api_key.*"}, "threshold": {"count": 1, "window_seconds": 60}}},
    {"name": "failed_signins", "title": "A burst of failed sign-ins",
     "description": "5 failed sign-ins (user.login, status failure) for one account within 5 minutes.",
     "rule": {"filter": {"action": "user.login", "status": "failure"},
              "threshold": {"count": 5, "window_seconds": 300}, "group_by": ["user_email"],
              "cooldown_seconds": 900}},
    {"name": "large_export", "title": "A large export",
     "description": "10 reads of the log (audit_logs.read) by one person within 5 minutes.",
     "rule": {"filter": {"action": "audit_logs.read"}, "threshold": {"count": 10, "window_seconds": 300},
              "group_by": ["user_email"], "cooldown_seconds": 3600}},
    {"name": "integrity_failed", "title": "Integrity verification failed",
     "description": "Every integrity.verify_failed: the log's chain or tree did not verify.",
     "rule": {"filter": {"action": "integrity.verify_failed"}, "threshold": {"count": 1, "window_seconds": 60}}},
]

TEMPLATES: dict[str, AlertTemplate] = {t["name"]: AlertTemplate.model_validate(t) for t in _TEMPLATES}
