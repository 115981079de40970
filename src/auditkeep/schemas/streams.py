"""Wire models of `/api/v1/streams` (issue #10): what a stream is made of, and how it is shown.

A destination's settings are validated by its kind's model (`KIND_CONFIGS`); the fields each kind marks
as secret (`SECRET_FIELDS`) are write-only: accepted on create and update, sealed at rest, never shown.
"""

from __future__ import annotations

from ipaddress import ip_network
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails

StreamFormat = Literal["datafold", "ocsf"]
StreamState = Literal["active", "paused", "failing"]
Text = Annotated[str | None, Field(max_length=1024)]
SafeId = Annotated[int | None, Field(ge=-(2**53 - 1), le=2**53 - 1)]


class StreamFilter(BaseModel):
    """The GET's filters, as an object: which of the organization's events the stream carries."""

    model_config = ConfigDict(extra="forbid")

    action: Annotated[str | None, Field(max_length=256, description="Exact action, or a prefix ending in `*`")] = None
    user_email: Text = None
    user_id: SafeId = None
    object_type: Text = None
    object_id: SafeId = None
    source: Text = None
    status: Text = None
    request_type: Text = None
    is_support_user: bool | None = None
    client_ip: Annotated[str | None, Field(max_length=64, description="An address or CIDR range")] = None
    q: Annotated[str | None, Field(min_length=1, max_length=1024)] = None

    @field_validator("client_ip")
    @classmethod
    def _network(cls, value: str | None) -> str | None:
        if value is not None:
            ip_network(value.strip(), strict=False)  # ValueError -> 422 naming filter.client_ip
        return value

    @field_validator("action", "user_email", "object_type", "source", "status", "request_type", "q")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class WebhookConfig(BaseModel):
    """`webhook`: POST `{"stream_id", "events": [...]}`, signed with HMAC-SHA256 (docs/streams.md)."""

    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl
    # Shared with the receiver, which checks Auditkeep-Signature with it; 16+ characters so it cannot be
    # guessed from a few signed bodies.
    secret: str = Field(min_length=16, max_length=512)
    batch_size: int = Field(default=500, ge=1, le=10_000)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)


class SplunkHecConfig(BaseModel):
    """`splunk_hec`: Splunk's HTTP Event Collector, optionally waiting for indexer acknowledgement."""

    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl = Field(description="The collector, e.g. https://splunk.example:8088")
    token: str = Field(min_length=1, max_length=512, pattern=r"^[!-~]+$")  # one header value: no spaces
    index: str | None = Field(default=None, min_length=1, max_length=256)
    sourcetype: str = Field(default="auditkeep:audit_log", min_length=1, max_length=256)
    source: str | None = Field(default=None, min_length=1, max_length=256,
                               description='null: "auditkeep:<organization name>"')
    host: str | None = Field(default=None, min_length=1, max_length=256,
                             description="null: the name of the machine that forwards")
    use_ack: bool = False
    batch_size: int = Field(default=500, ge=1, le=10_000)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Below the stream lease (30 s by default), so a forwarder waiting for an ack keeps its stream.
    ack_timeout_seconds: float = Field(default=20.0, gt=0, le=600)


class NatsConfig(BaseModel):
    """`nats`: each event published to a JetStream subject with `Nats-Msg-Id: <event_uuid>` (the server
    drops redeliveries inside the stream's duplicate window); the operator creates the JetStream stream."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^(nats|tls)://[^/@\s]+$", max_length=512,
                     description="nats://host:port or tls://host:port (credentials go in user/password or token)")
    subject: str = Field(pattern=r"^[^\s*>.]+(\.[^\s*>.]+)*$", max_length=256,
                         description="A subject without wildcards")
    user: str | None = Field(default=None, max_length=256)
    password: str | None = Field(default=None, max_length=512)
    token: str | None = Field(default=None, max_length=512)
    batch_size: int = Field(default=1000, ge=1, le=10_000)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)


class S3Config(BaseModel):
    """`s3`: one gzip NDJSON object per batch and a manifest beside it (docs/streams.md); needs the
    `auditkeep[s3]` extra. Without access keys, boto3 finds credentials as usual (environment, role)."""

    model_config = ConfigDict(extra="forbid")

    endpoint_url: AnyHttpUrl | None = Field(default=None, description="For S3-compatible stores; AWS when absent")
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    prefix: str = Field(default="", max_length=512, pattern=r"^[^\x00]*$")
    region: str | None = Field(default=None, max_length=64)
    access_key_id: str | None = Field(default=None, max_length=256)
    secret_access_key: str | None = Field(default=None, max_length=512)
    session_token: str | None = Field(default=None, max_length=4096)
    batch_size: int = Field(default=5000, ge=1, le=10_000)
    timeout_seconds: float = Field(default=30.0, gt=0, le=300)

    @field_validator("prefix")
    @classmethod
    def _no_edge_slashes(cls, value: str) -> str:
        return value.strip("/")

    @model_validator(mode="after")
    def _keys_in_pairs(self) -> S3Config:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together")
        return self


class SyslogConfig(BaseModel):
    """`syslog`: RFC 5424 messages over TCP, octet-counted (RFC 6587), optionally TLS (RFC 5425)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:_-]+$",
                      description="The receiver's name or address (its certificate must name it, with tls)")
    port: int = Field(ge=1, le=65535, description="514 is usual for TCP, 6514 for TLS")
    tls: bool = False
    ca: str | None = Field(default=None, min_length=1, max_length=65536,
                           description="PEM CA certificate(s), or a PEM file's path on the forwarding machine; "
                                       "null: the system's trust store")
    # 13 is "log audit" (RFC 5424 Table 1); auth (4), authpriv (10) and local0-7 (16-23) are common too.
    facility: int = Field(default=13, ge=0, le=23)
    hostname: str | None = Field(default=None, min_length=1, max_length=255, pattern=r"^[!-~]+$",
                                 description="HOSTNAME; null: the name of the machine that forwards")
    app_name: str = Field(default="auditkeep", min_length=1, max_length=48, pattern=r"^[!-~]+$")
    # RFC 5425 receivers must take 2048 octets and should take 8192 (rsyslog's default limit).
    max_message_bytes: int = Field(default=8192, ge=480, le=16 * 1024 * 1024)
    batch_size: int = Field(default=500, ge=1, le=10_000)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    @model_validator(mode="after")
    def _ca_needs_tls(self) -> SyslogConfig:
        if self.ca is not None and not self.tls:
            raise ValueError("ca is for tls: set tls to true")
        return self


KIND_CONFIGS: dict[str, type[BaseModel]] = {
    "webhook": WebhookConfig,
    "nats": NatsConfig,
    "s3": S3Config,
    "splunk_hec": SplunkHecConfig,
    "syslog": SyslogConfig,
}
SECRET_FIELDS: dict[str, frozenset[str]] = {
    "webhook": frozenset({"secret"}),
    "nats": frozenset({"password", "token"}),
    "s3": frozenset({"access_key_id", "secret_access_key", "session_token"}),
    "splunk_hec": frozenset({"token"}),
    "syslog": frozenset(),
}


def validate_config(kind: str, config: dict[str, Any]) -> BaseModel:
    """`config` parsed by `kind`'s model (pydantic.ValidationError when it does not fit)."""
    return KIND_CONFIGS[kind].model_validate(config)


class StreamCreate(BaseModel):
    """`POST /api/v1/streams`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    kind: str = Field(description="One of: " + ", ".join(KIND_CONFIGS))
    config: dict[str, Any]
    format: StreamFormat = "datafold"
    filter: StreamFilter = Field(default_factory=StreamFilter)
    start_seq: int | None = Field(
        default=None, ge=1, le=2**63 - 1,
        description="null: from the next event stored; 1: everything retained; N: from seq N",
    )

    @model_validator(mode="after")
    def _config_fits_kind(self) -> StreamCreate:
        if self.kind not in KIND_CONFIGS:
            raise ValueError(f"kind must be one of: {', '.join(KIND_CONFIGS)}")
        try:
            validate_config(self.kind, self.config)
        except ValidationError as exc:
            # Raised from here, the kind's errors would be located at the body's top level; put them
            # under `config`, where the client sent the values.
            raise ValidationError.from_exception_data(
                exc.title,
                [InitErrorDetails(type=e["type"], loc=("config", *e["loc"]), input=e["input"],
                                  ctx=e.get("ctx", {})) for e in exc.errors()],
            ) from None
        return self


class StreamUpdate(BaseModel):
    """`PATCH /api/v1/streams/{id}`: any of these; `config` is merged into the stream's (secrets left out
    of it are kept)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    state: Literal["active", "paused"] | None = None
    replay_from_seq: int | None = Field(default=None, ge=1, le=2**63 - 1)
    config: dict[str, Any] | None = None
    format: StreamFormat | None = None
    filter: StreamFilter | None = None


class StreamPublic(BaseModel):
    """A stream as the API shows it: never its secrets."""

    id: str
    name: str
    kind: str
    format: StreamFormat
    config: dict[str, Any] = Field(description="The destination's settings without its secrets")
    secrets_set: list[str] = Field(description="Names of the secret settings that hold a value")
    filter: dict[str, Any]
    state: StreamState
    delivered_seq: int = Field(description="The last seq the destination acknowledged")
    lag_events: int = Field(description="Events stored after delivered_seq (matching or not)")
    lag_seconds: float = Field(description="Age of the oldest event not yet delivered, 0 when caught up")
    last_error: str | None
    last_delivery_at: str | None
    failures: int = Field(description="Failed attempts in a row")
    created_at: str
    updated_at: str
