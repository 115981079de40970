"""Content-Encoding of streamed read bodies: which coding a client gets (zstd, gzip or none), and a
pipeline that compresses on one thread while the query and the encoding run on another (issue #14).

zlib's deflate and zstandard's compressor release the GIL on large buffers, as SQLite's step and
psycopg's reads do, so with the query in its own thread the two overlap on two cores instead of taking
turns on one: with gzip on the query's thread an export through httpx ran at 125k events/s, ~2/3 of
what the same server sends uncompressed (docs/benchmarks.md, "Exports").
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Literal, Protocol

import zstandard
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from auditkeep.threads import read_ahead

Coding = Literal["zstd", "gzip"]
# Ties in q go to zstd: at level 1 it compresses an export's JSON as well as gzip does and about three
# times as fast (docs/benchmarks.md). `*` counts for gzip only: every HTTP client decodes gzip.
PREFERENCE: tuple[Coding, ...] = ("zstd", "gzip")
# zlib level 1: about 4x smaller JSON at several times level 6's speed.
GZIP_LEVEL = 1
ZSTD_LEVEL = 1
# Below this a body goes out as it is (GZipMiddleware's minimum_size is 500): a coding's header and
# trailer and a compressor's setup would cost more than they save.
MINIMUM_SIZE = 1024
PIPELINE_DEPTH = 2  # chunks (each up to 2,000 logs) queued between the query's thread and the compressor's


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self) -> bytes: ...


def negotiate(accept_encoding: str | None) -> Coding | None:
    """The coding for a client's Accept-Encoding (RFC 9110 §12.5.3), or None for the body as it is.

    The highest non-zero q wins; between equal q, zstd, then gzip. No header, or one naming neither
    (`identity`, `br`, ...), gets the body as it is.
    """
    if not accept_encoding:
        return None
    quality: dict[str, float] = {}
    for item in accept_encoding.split(","):
        name, *options = (part.strip() for part in item.split(";"))
        q = 1.0
        for option in options:
            key, _, value = option.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        name = name.lower()
        quality[{"x-gzip": "gzip"}.get(name, name)] = q
    star = quality.get("*", 0.0)
    ranked = [(-quality.get(c, star if c == "gzip" else 0.0), i, c) for i, c in enumerate(PREFERENCE)]
    best = min(ranked)
    return best[2] if best[0] < 0 else None


def compressor(coding: Coding) -> _Compressor:
    """A streaming compressor: gzip (RFC 1952) or one zstd frame (RFC 8878)."""
    if coding == "gzip":
        return zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()


def compress(chunks: Iterable[bytes], coding: Coding) -> Iterator[bytes]:
    """The concatenated chunks compressed with `coding`, emitted as they are produced, in this thread."""
    c = compressor(coding)
    for chunk in chunks:
        if out := c.compress(chunk):
            yield out
    yield c.flush()


def produce_ahead(items: Iterator[bytes], depth: int = PIPELINE_DEPTH) -> Iterator[bytes]:
    """Iterate `items` (the query and its encoding) in a thread of its own, up to `depth` chunks ahead.

    Memory stays `depth` chunks however long the export. An error in that thread is raised here. If the
    caller stops early (a client that hung up), the thread stops at its next chunk and closes `items`
    there, in the thread that was using its database connection; it is not waited for, because a
    generator may be finalized on the event loop's thread.
    """
    return read_ahead(items, depth, name="auditkeep-export-query", wait=False)


def encoded_response(body: Iterator[bytes], coding: Coding | None, *, media_type: str,
                     headers: dict[str, str], in_memory: bool = False) -> StreamingResponse:
    """A streamed response of `body` in `coding`; call it in a worker thread (it may read the database).

    `in_memory`: the body is a page read already (at most storage.pages.PREFETCH_BYTES), so it is
    encoded here and replayed from the event loop: Starlette iterates a sync body in the thread pool,
    one hop per chunk and one more to learn it ended, which cost more than the page's query on a busy
    machine (docs/benchmarks.md). Otherwise the body's first chunks are read here until they pass
    MINIMUM_SIZE: a body that ends before is sent as it is, in one piece; a longer one streams through
    produce_ahead → compress, the compressor running in the thread Starlette iterates the body in.
    """
    headers = {**headers, "Vary": _vary(headers.get("Vary"))}
    first: list[bytes] = []
    size = 0
    ended = in_memory
    if in_memory:
        first = list(body)
        size = sum(map(len, first))
    else:
        for chunk in body:
            first.append(chunk)
            size += len(chunk)
            if size >= MINIMUM_SIZE:
                break
        else:
            ended = True
    if ended:
        if coding is not None and size >= MINIMUM_SIZE:
            first = list(compress(first, coding))
            headers["Content-Encoding"] = coding
        return _ReadyResponse(_replay(first), media_type=media_type, headers=headers)
    if coding is None:
        return StreamingResponse(_chain(first, body), media_type=media_type, headers=headers)
    headers["Content-Encoding"] = coding
    return StreamingResponse(compress(_chain(first, produce_ahead(body)), coding), media_type=media_type,
                             headers=headers)


def _vary(vary: str | None) -> str:
    """The body depends on Accept-Encoding, whatever else it varies with."""
    names = [v.strip() for v in vary.split(",")] if vary else []
    if not any(n.lower() == "accept-encoding" for n in names):
        names.append("Accept-Encoding")
    return ", ".join(names)


def _chain(first: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    yield from first
    yield from rest


async def _replay(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


class _ReadyResponse(StreamingResponse):
    """A StreamingResponse of a body already in memory: the same messages, so the same bytes and headers
    (chunked, no Content-Length), sent without the task StreamingResponse runs beside them to notice a
    client that hangs up (for uvicorn's ASGI 2.3), which has nothing to cut short here: creating and
    cancelling that task group was ~7% of a `limit=100` read's CPU (docs/benchmarks.md, "CPU per read")."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        try:
            await self.stream_response(send)
        except OSError:
            raise ClientDisconnect() from None
        if self.background is not None:
            await self.background()
