"""Wire models of POST /api/v1/erasures (issue #12)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ErasureCreate(BaseModel):
    """Whose events to erase (exactly one of user_email and user_id) and why."""

    model_config = ConfigDict(extra="forbid")

    user_email: str | None = Field(default=None, min_length=1, max_length=320)
    user_id: int | None = None
    reason: str = Field(min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _one_person(self) -> ErasureCreate:
        if (self.user_email is None) == (self.user_id is None):
            raise ValueError("give exactly one of user_email and user_id")
        return self


class ErasurePublic(BaseModel):
    """What an erasure did: `events` of the person, `mentions` other events whose personal fields named
    them (erased too); `event_uuid` is its erasure.performed event."""

    events: int
    mentions: int
    first_seq: int | None
    last_seq: int | None
    fields: list[str]
    event_uuid: str
