"""Real brokers for the `nats` and `s3` stream tests: the NATS server of the machine (JetStream on
127.0.0.1:4222, a fresh stream per test), moto's S3 server started on a free port, a TCP relay that can be
taken down and brought back to play an outage, and a sink that crashes the forwarder after an ack."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import nats
from nats.js.api import DiscardPolicy, StreamConfig

from auditkeep.streams.sinks import Batch, Sink

NATS_URL = "nats://127.0.0.1:4222"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class JetStream:
    """One JetStream stream capturing `subject`, made for one test and deleted after it."""

    name: str
    subject: str
    max_msg_size: int = -1
    max_msgs: int = -1  # with discard=new: the stream refuses every message past this many

    def create(self) -> None:
        asyncio.run(self._create())

    async def _create(self, update: bool = False) -> None:
        nc = await nats.connect(NATS_URL)
        try:
            js = nc.jetstream()
            config = StreamConfig(name=self.name, subjects=[self.subject], max_msg_size=self.max_msg_size,
                                  max_msgs=self.max_msgs, discard=DiscardPolicy.NEW)
            await (js.update_stream(config) if update else js.add_stream(config))
        finally:
            await nc.close()

    def update(self, max_msgs: int) -> None:
        """Change the stream's message limit in place (its messages stay)."""
        self.max_msgs = max_msgs
        asyncio.run(self._create(update=True))

    def delete(self) -> None:
        asyncio.run(self._delete())

    async def _delete(self) -> None:
        nc = await nats.connect(NATS_URL)
        try:
            await nc.jetstream().delete_stream(self.name)
        finally:
            await nc.close()

    def messages(self) -> list[tuple[dict[str, str], dict[str, Any]]]:
        """Every message the stream stores, in its order: (headers, the JSON body)."""
        return asyncio.run(self._messages())

    async def _messages(self) -> list[tuple[dict[str, str], dict[str, Any]]]:
        import orjson

        nc = await nats.connect(NATS_URL)
        try:
            js = nc.jetstream()
            info = await js.stream_info(self.name)
            found: list[tuple[dict[str, str], dict[str, Any]]] = []
            if not info.state.messages:
                return found
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(self.name, seq)
                found.append((dict(msg.headers or {}), orjson.loads(msg.data or b"null")))
            return found
        finally:
            await nc.close()


@contextlib.contextmanager
def jetstream(max_msg_size: int = -1, create: bool = True, max_msgs: int = -1) -> Iterator[JetStream]:
    tag = uuid.uuid4().hex[:12]
    js = JetStream(name=f"AUDITKEEP_TEST_{tag}", subject=f"auditkeep.test.{tag}", max_msg_size=max_msg_size,
                   max_msgs=max_msgs)
    if create:
        js.create()
    try:
        yield js
    finally:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            js.delete()


class Relay:
    """A TCP relay on loopback to `target`: `down()` refuses and cuts every connection, `up()` serves
    again on the same port, as a broker that goes away for a while and comes back."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass  # the other side was cut: down() or a closed peer
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


class Crash(BaseException):
    """The forwarder process dying between the destination's ack and the cursor's move. A BaseException,
    like the interpreter's own exits: the forwarder records an ordinary Exception on the stream and goes
    on, where a dying process does not."""


@dataclass
class CrashAfterAck:
    """A sink that delivers through `inner`, then crashes once when `armed`."""

    inner: Sink
    armed: bool = True
    crashed_batch: Batch | None = None

    def deliver(self, batch: Batch) -> None:
        self.inner.deliver(batch)
        if self.armed:
            self.armed, self.crashed_batch = False, batch
            raise Crash(f"crashed after seq {batch.seqs[0]}..{batch.seqs[-1]} was acknowledged")

    def close(self) -> None:
        self.inner.close()
