"""Destinations: each kind turns a batch of records into what its receiver takes, and says whether the
receiver acknowledged it (return), refused it for now (DeliveryError, retried) or for good
(DeliveryError(permanent=True): a record the receiver will never take)."""

from __future__ import annotations

from typing import Any, Protocol


class DeliveryError(Exception):
    """A batch the destination did not acknowledge."""

    def __init__(self, message: str, *, retry_after: float | None = None, permanent: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent


class Sink(Protocol):
    def deliver(self, records: list[str]) -> None:
        """Send `records` (JSON texts, in seq order) as one batch; return only once they are acknowledged."""
        ...

    def close(self) -> None: ...


def open_sink(kind: str, stream_id: str, config: dict[str, Any]) -> Sink:
    """The sink for `kind`, configured (secrets included)."""
    if kind == "webhook":
        from auditkeep.streams.sinks.webhook import WebhookSink

        return WebhookSink(stream_id, config)
    raise ValueError(f"unknown stream kind {kind!r}")
