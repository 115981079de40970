"""Wire models of `GET /api/v1/audit_logs/stats` and `/api/v1/saved_searches` (issue #13)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class StatsBucket(BaseModel):
    start: str = Field(description="The bucket's first instant (UTC); it spans one `interval`")
    count: int = Field(description="Events matching the filters in the bucket")
    failures: int = Field(description="Of those, events whose `status` is exactly `failure`")


class StatsTopValue(BaseModel):
    value: str
    count: int


class AuditLogStats(BaseModel):
    buckets: list[StatsBucket] = Field(description="Oldest first; buckets without events are left out")
    top: list[StatsTopValue] = Field(description="The 10 most frequent values of `group_by`, most frequent first")


class SavedSearchCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")
    query: str = Field(max_length=2000, pattern=r"^[^\x00-\x1f]*$",
                       description="The filters as a URL query string, e.g. `action=user.login&status=failure`")


class SavedSearchPublic(BaseModel):
    id: str
    name: str
    query: str
    created_by: str
    created_at: datetime


class SavedSearchList(BaseModel):
    saved_searches: list[SavedSearchPublic]
