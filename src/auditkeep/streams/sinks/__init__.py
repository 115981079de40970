"""Destinations: each kind turns a batch of records into what its receiver takes, and says whether the
receiver acknowledged it (return), refused it for now (DeliveryError, retried) or for good
(DeliveryError(permanent=True): a record the receiver will never take)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:
    from auditkeep.storage import Storage


class DeliveryError(Exception):
    """A batch the destination did not acknowledge."""

    def __init__(self, message: str, *, retry_after: float | None = None, permanent: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent


@dataclass
class Batch:
    """What one delivery carries: records (JSON texts in the stream's format) in seq order, with each
    one's seq and event_uuid beside it so sinks that key or deduplicate by them need not parse records."""

    stream_id: str
    org_id: int
    org_name: str
    records: list[str]
    seqs: list[int]
    event_uuids: list[str]
    test: bool = False  # a `POST /streams/{id}/test` record, outside the cursor
    _parsed: list[dict[str, Any]] | None = field(default=None, repr=False)

    def events(self) -> list[dict[str, Any]]:
        """The records parsed (once)."""
        if self._parsed is None:
            self._parsed = [orjson.loads(r) for r in self.records]
        return self._parsed


class Sink(Protocol):
    # True when a delivery leaves garbage in reference cycles (httpx: a response and its stream, holding
    # the request's body), which the forwarder then collects after each batch. A collection of the
    # youngest generation also walks whatever the ingest requests of the same process hold at that
    # moment, so sinks that leave none say so and skip it.
    leaves_cycles: bool

    def deliver(self, batch: Batch) -> None:
        """Send the batch; return only once the destination acknowledged all of it."""
        ...

    def close(self) -> None: ...


def open_sink(kind: str, stream_id: str, config: dict[str, Any], storage: Storage | None = None) -> Sink:
    """The sink for `kind`, configured (secrets included); `storage` for kinds that prove what they write."""
    if kind == "webhook":
        from auditkeep.streams.sinks.webhook import WebhookSink

        return WebhookSink(stream_id, config)
    if kind == "splunk_hec":
        from auditkeep.streams.sinks.splunk_hec import SplunkHecSink

        return SplunkHecSink(stream_id, config)
    if kind == "nats":
        from auditkeep.streams.sinks.nats import NatsSink

        return NatsSink(stream_id, config)
    if kind == "s3":
        from auditkeep.streams.sinks.s3 import S3Sink

        if storage is None:
            raise ValueError("the s3 sink signs its manifests' checkpoints: it needs the storage")
        return S3Sink(stream_id, config, storage)
    if kind == "syslog":
        from auditkeep.streams.sinks.syslog import SyslogSink

        return SyslogSink(stream_id, config)
    raise ValueError(f"unknown stream kind {kind!r}")
