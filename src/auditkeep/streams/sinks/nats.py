"""`nats`: each event published to a NATS JetStream subject, one message per event (issue #10).

Every message carries `Nats-Msg-Id: <event_uuid>`, so JetStream drops a redelivered event inside the
stream's duplicate window (2 minutes by default). A batch is published as a pipeline: all its messages
are written in seq order with their own reply inbox, then the publish acks are awaited together, so a
batch costs one round trip rather than one per event (the 30,000 events/s backfill target of issue #10).
The batch is acknowledged once JetStream acked every message; the cursor moves only then.

A message JetStream refuses for good (larger than the stream's `max_msg_size` or the server's
`max_payload`) refuses the batch permanently, so the forwarder finds and parks on that event; no stream
capturing the subject, a lost connection and missing acks are retried. The JetStream stream is the
operator's to create (`nats stream add`), with the subject it should capture.

nats-py is asyncio; the forwarder is threads. Each sink runs its own event loop in a thread of its own,
and `deliver` hands it the batch and waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import nats
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from auditkeep.streams.sinks import Batch, DeliveryError

T = TypeVar("T")

# JetStream API error codes (`err_code`) that no retry can cure for this message.
REFUSED_FOR_GOOD = {
    10054,  # message size exceeds maximum allowed
}


class NatsSink:
    leaves_cycles = True  # not measured otherwise: collected after each batch, as before

    def __init__(self, stream_id: str, config: dict[str, Any]) -> None:
        self.stream_id = stream_id
        self.url = str(config["url"])
        self.subject = str(config["subject"])
        self.timeout = float(config.get("timeout_seconds", 10.0))
        self.auth = {k: config[k] for k in ("user", "password", "token") if config.get(k)}
        self.duplicates = 0  # events JetStream had already stored (redeliveries after a crash or retry)
        self._nc: Client | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"auditkeep-nats-{stream_id[:8]}",
                                        daemon=True)
        self._thread.start()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def deliver(self, batch: Batch) -> None:
        self._run(self._bounded(batch))

    async def _bounded(self, batch: Batch) -> None:
        # Connect, publish and ack each have their own timeout; this bounds the whole, so a connection
        # that dies half-way (a broker gone, a proxy cut) can never hold the forwarder's thread.
        try:
            await asyncio.wait_for(self._deliver(batch), 3 * self.timeout)
        except TimeoutError:
            await self._drop()
            raise DeliveryError(f"{self.url}: no answer within {3 * self.timeout:g} s") from None

    async def _connection(self) -> Client:
        if self._nc is not None and self._nc.is_connected:
            return self._nc
        await self._drop()
        try:
            # No automatic reconnect: a batch is either acked on this connection or retried whole by the
            # forwarder, never flushed later from a buffer behind a retry's back.
            # One attempt (nats-py's default retries the first connect for two minutes inside this call,
            # and 0 means "no limit"); the forwarder's backoff does the retrying.
            self._nc = await nats.connect(self.url, allow_reconnect=False, max_reconnect_attempts=1,
                                          connect_timeout=int(max(1, self.timeout)), error_cb=self._quiet,
                                          name=f"auditkeep stream {self.stream_id}", **self.auth)
        except (TimeoutError, OSError, NatsError) as exc:
            raise DeliveryError(f"{self.url}: cannot connect: {type(exc).__name__}: {exc}") from None
        return self._nc

    async def _quiet(self, exc: Exception) -> None:
        """nats-py's error callback: the failure reaches the stream as a DeliveryError, not a log traceback."""

    async def _deliver(self, batch: Batch) -> None:
        nc = await self._connection()
        acks: dict[int, Msg] = {}
        done = asyncio.Event()
        n = len(batch.records)

        async def on_ack(msg: Msg) -> None:
            acks[int(msg.subject.rsplit(".", 1)[1])] = msg
            if len(acks) == n:
                done.set()

        inbox = nc.new_inbox()
        frames = self._frames(batch, inbox, nc.max_payload)
        sub = await nc.subscribe(f"{inbox}.*", cb=on_ack)
        try:
            # The whole batch goes to the connection's buffer as one write. nats-py's `publish` costs
            # ~6 us a message in Python (subject and header checks, a bytearray per header, a flusher
            # wake-up per call); the frames built here cost well under 1 (bench: docs/benchmarks.md
            # "Streams"). `_send_command` is nats-py's own buffer for every protocol line; the flush's
            # PING/PONG then proves the server has read them all.
            await nc._send_command(frames)
            await nc.flush(timeout=int(max(1, self.timeout)))
            await asyncio.wait_for(done.wait(), self.timeout)
        except (TimeoutError, NatsError, OSError) as exc:
            await self._drop()
            raise DeliveryError(f"{self.url}: {len(acks)} of {n} publishes acked before "
                                f"{type(exc).__name__}: {exc}") from None
        finally:
            if not nc.is_closed:
                with contextlib.suppress(NatsError, OSError):
                    await sub.unsubscribe()
        self._check(batch, [acks[i] for i in range(n)])

    def _frames(self, batch: Batch, inbox: str, max_payload: int) -> bytes:
        """The batch as NATS protocol: one `HPUB <subject> <inbox>.<i> <header bytes> <total bytes>` frame
        per record, in seq order, each with its `Nats-Msg-Id` header and its own reply subject."""
        head = f"HPUB {self.subject} {inbox}."
        parts: list[bytes] = []
        for i, (record, uuid) in enumerate(zip(batch.records, batch.event_uuids, strict=True)):
            payload = record.encode()
            header = f"NATS/1.0\r\nNats-Msg-Id: {uuid}\r\n\r\n".encode()
            size = len(header) + len(payload)
            if size > max_payload:
                # The server would close the connection on it (a protocol error), so the batch would
                # fail forever: refuse it for good, so the forwarder parks on this event instead.
                raise DeliveryError(f"{self.url}: event_uuid {uuid}: {size} bytes is over the server's "
                                    f"max_payload of {max_payload}", permanent=True)
            parts += (f"{head}{i} {len(header)} {size}\r\n".encode(), header, payload, b"\r\n")
        return b"".join(parts)

    def _check(self, batch: Batch, acks: list[Msg]) -> None:
        """Raise for the first message JetStream did not store (in seq order); count duplicates."""
        duplicates = 0
        for ack, uuid in zip(acks, batch.event_uuids, strict=True):
            status = (ack.headers or {}).get("Status")
            if status == "503":
                raise DeliveryError(f"{self.url}: no JetStream stream captures subject {self.subject!r} "
                                    "(create one: docs/streams.md)")
            if status:
                raise DeliveryError(f"{self.url}: status {status} for event_uuid {uuid}")
            answer = orjson.loads(ack.data)
            error = answer.get("error")
            if error:
                text = (f"{self.url}: JetStream refused event_uuid {uuid}: {error.get('description')} "
                        f"(err_code {error.get('err_code')})")
                raise DeliveryError(text, permanent=error.get("err_code") in REFUSED_FOR_GOOD)
            duplicates += bool(answer.get("duplicate"))
        self.duplicates += duplicates

    async def _drop(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            # Closing a broken connection: nothing to save, and no reason to wait for it long.
            with contextlib.suppress(NatsError, OSError, TimeoutError):
                await asyncio.wait_for(nc.close(), self.timeout)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._drop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
