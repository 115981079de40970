"""Wire models of `/api/v1/alert_rules` (issue #13): what a rule counts, when it fires, whom it tells.

A rule's `filter` is a stream's (the GET's filters as an object). Channel secrets (a webhook's HMAC
secret, a Slack incoming-webhook URL, which is itself the credential) are write-only: sealed at rest and
never shown.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from auditkeep.schemas.streams import StreamFilter

GroupField = Literal["action", "user_email", "user_id", "object_type", "object_id", "source", "status",
                     "request_type", "client_ip", "is_support_user"]
Email = Annotated[str, Field(min_length=3, max_length=254, pattern=r"^[^@\s,<>]+@[^@\s,<>]+$")]
# A day: the evaluator keeps at most `count` events a group in its durable state, so both stay bounded.
MAX_WINDOW_SECONDS = 7 * 86400
MAX_COUNT = 10_000


class Threshold(BaseModel):
    """Fire when `count` matching events fall within `window_seconds` (count 1: every matching event)."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=MAX_COUNT)
    window_seconds: int = Field(ge=1, le=MAX_WINDOW_SECONDS)


class WebhookChannel(BaseModel):
    """POST `{"alert": {...}}`, signed like a stream's webhook (`Auditkeep-Signature: t=...,v1=...`)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["webhook"]
    url: AnyHttpUrl
    secret: str = Field(min_length=16, max_length=512)


class SlackChannel(BaseModel):
    """Slack's incoming webhook: POST `{"text": "..."}` to its URL (the URL is the secret)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["slack"]
    url: AnyHttpUrl


class EmailChannel(BaseModel):
    """A plain-text email to `to`, sent through AUDITKEEP_SMTP_URL."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["email"]
    to: list[Email] = Field(min_length=1, max_length=20)


Channel = Annotated[WebhookChannel | SlackChannel | EmailChannel, Field(discriminator="kind")]
SECRET_FIELDS: dict[str, frozenset[str]] = {"webhook": frozenset({"secret"}), "slack": frozenset({"url"}),
                                            "email": frozenset()}


class AlertRuleCreate(BaseModel):
    """`POST /api/v1/alert_rules`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    filter: StreamFilter = Field(default_factory=StreamFilter)
    threshold: Threshold
    group_by: list[GroupField] = Field(default_factory=list, max_length=3)
    notify: list[Channel] = Field(default_factory=list, max_length=10)
    cooldown_seconds: int = Field(default=0, ge=0, le=MAX_WINDOW_SECONDS,
                                  description="After a firing, the same group does not fire again for this long")
    enabled: bool = True


class TemplateCreate(BaseModel):
    """`POST /api/v1/alert_rules/templates/{name}`: a built-in rule, with channels and a name of your own."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    notify: list[Channel] = Field(default_factory=list, max_length=10)


class AlertRuleUpdate(BaseModel):
    """`PATCH /api/v1/alert_rules/{id}`: any of these. `notify` replaces the channels (secrets included)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    enabled: bool | None = None
    filter: StreamFilter | None = None
    threshold: Threshold | None = None
    group_by: list[GroupField] | None = Field(default=None, max_length=3)
    notify: list[Channel] | None = Field(default=None, max_length=10)
    cooldown_seconds: int | None = Field(default=None, ge=0, le=MAX_WINDOW_SECONDS)


class AlertRulePublic(BaseModel):
    """A rule as the API shows it: never a channel's secret."""

    id: str
    name: str
    template: str | None
    filter: dict[str, Any]
    threshold: Threshold
    group_by: list[str]
    notify: list[dict[str, Any]] = Field(description="Channels without their secrets")
    cooldown_seconds: int
    enabled: bool
    state: Literal["enabled", "disabled", "failing"] = Field(
        description="failing: the last notification attempt failed (it is retried)")
    evaluated_seq: int = Field(description="The last seq the rule has counted")
    last_fired_at: str | None
    last_error: str | None
    pending_notifications: int = Field(description="Firings whose notifications are still being retried")
    created_at: str
    updated_at: str


class AlertTemplate(BaseModel):
    """A built-in rule (`GET /api/v1/alert_rules/templates`)."""

    name: str
    title: str
    description: str
    rule: dict[str, Any]
