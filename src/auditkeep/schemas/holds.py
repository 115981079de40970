"""Wire models of `/api/v1/holds` (issue #12): a legal hold's criteria, and how a hold is shown."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

Text = Annotated[str | None, Field(min_length=1, max_length=1024)]
SafeId = Annotated[int | None, Field(ge=-(2**53 - 1), le=2**53 - 1)]
Reason = Annotated[str, Field(min_length=1, max_length=2000)]


class HoldCreate(BaseModel):
    """A new hold: why, and which events it covers (those matching every criterion given; none = all)."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason
    user_email: Text = None
    user_id: SafeId = None
    object_type: Text = None
    object_id: SafeId = None
    start: Annotated[AwareDatetime | None, Field(description="Events whose timestamp is at or after this")] = None
    end: Annotated[AwareDatetime | None, Field(description="Events whose timestamp is before this")] = None

    @field_validator("reason", "user_email", "object_type")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        if value is not None and not value.strip():
            raise ValueError("must not be blank")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> HoldCreate:
        if self.object_id is not None and self.object_type is None:
            raise ValueError("object_id needs object_type (an object id means something only within its type)")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class HoldRelease(BaseModel):
    """Why a hold ends."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason


class HoldPublic(BaseModel):
    """A hold as the API shows it; `active` until it is released."""

    id: str
    active: bool
    reason: str
    user_email: str | None
    user_id: int | None
    object_type: str | None
    object_id: int | None
    start: datetime | None
    end: datetime | None
    created_at: datetime
    created_by: str
    released_at: datetime | None
    released_by: str | None
    release_reason: str | None
