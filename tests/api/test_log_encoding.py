"""GET /api/v1/audit_logs compressed: zstd and gzip for every format, streamed and in one piece, and the
choice between them (issue #14, api/encoding.py)."""

from __future__ import annotations

import gzip
from typing import Any

import httpx
import pytest
import zstandard
from fastapi.testclient import TestClient

from auditkeep.api.encoding import MINIMUM_SIZE, negotiate, produce_ahead
from tests.conftest import Tenant

URL = "/api/v1/audit_logs"
ACTION = "enc.test"
FORMATS = ["json", "ndjson", "csv", "ocsf"]


@pytest.fixture
def seeded(app_client: TestClient, tenant: Tenant) -> None:
    events = [{"client_ip": "10.0.0.1", "url": f"https://app.test/{n}", "action": ACTION,
               "log_entry": f"entry {n} ✓", "payload": {"n": n}, "timestamp": f"2024-05-01T12:00:{n:02d}Z"}
              for n in range(12)]
    r = app_client.post(URL, json=events, headers=tenant.headers)
    assert r.status_code == 201, r.text


class Sent:
    """A response's headers and its body as sent (not decoded)."""

    def __init__(self, response: httpx.Response, body: bytes) -> None:
        self.headers = response.headers
        self.body = body


def raw(client: TestClient, tenant: Tenant, encoding: str | None, **params: Any) -> Sent:
    """The response with its body as sent; no Accept-Encoding at all when `encoding` is None."""
    headers = {**tenant.headers, "Accept-Encoding": encoding or ""}
    request = client.build_request("GET", URL, params={"action": ACTION, **params}, headers=headers)
    if encoding is None:
        del request.headers["Accept-Encoding"]
    response = client.send(request, stream=True)
    try:
        assert response.status_code == 200
        return Sent(response, b"".join(response.iter_raw()))
    finally:
        response.close()


def body(sent: Sent) -> bytes:
    return sent.body


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("limit", [None, 8], ids=["streamed", "page"])
def test_zstd_and_gzip_decode_to_the_identity_bytes(app_client: TestClient, tenant: Tenant, seeded: None,
                                                    fmt: str, limit: int | None) -> None:
    """Every format, an unlimited (streamed through the two-thread pipeline) and a limited (in-memory) read:
    the zstd and gzip bodies decompress to exactly the bytes sent without compression."""
    params: dict[str, Any] = {"format": fmt} if limit is None else {"format": fmt, "limit": limit}
    plain = raw(app_client, tenant, "identity", **params)
    assert "content-encoding" not in plain.headers
    assert len(body(plain)) >= MINIMUM_SIZE
    zstd = raw(app_client, tenant, "zstd", **params)
    assert zstd.headers["content-encoding"] == "zstd"
    assert zstandard.ZstdDecompressor().decompressobj().decompress(body(zstd)) == body(plain)
    gz = raw(app_client, tenant, "gzip", **params)
    assert gz.headers["content-encoding"] == "gzip"
    assert gzip.decompress(body(gz)) == body(plain)
    for r in (plain, zstd, gz):
        assert [v.strip() for v in r.headers["vary"].split(",")] == ["Accept", "Accept-Encoding"]
        assert r.headers["content-type"] == plain.headers["content-type"]
    assert len(body(zstd)) < len(body(plain)) and len(body(gz)) < len(body(plain))


def test_a_client_that_does_not_ask_gets_identity(app_client: TestClient, tenant: Tenant, seeded: None) -> None:
    """No Accept-Encoding header: the body as it is."""
    r = raw(app_client, tenant, None, format="ndjson")
    assert "content-encoding" not in r.headers
    assert body(r).count(b"\n") == 12


def test_httpx_default_headers_get_zstd_and_decode(app_client: TestClient, tenant: Tenant, seeded: None) -> None:
    """httpx with zstandard installed asks for `gzip, deflate, zstd` and decodes what it gets."""
    assert "zstd" in httpx.Client().headers["accept-encoding"]
    r = app_client.get(URL, params={"action": ACTION, "format": "ndjson"}, headers=tenant.headers)
    assert r.headers["content-encoding"] == "zstd"
    assert r.content == body(raw(app_client, tenant, "identity", format="ndjson"))


def test_small_bodies_are_not_compressed(app_client: TestClient, tenant: Tenant, seeded: None) -> None:
    """A body under MINIMUM_SIZE goes out as it is, streamed read or page alike."""
    for params in ({"action": "enc.none"}, {"action": "enc.none", "limit": 5}, {"limit": 1, "format": "csv"}):
        r = raw(app_client, tenant, "zstd, gzip", **params)
        assert "content-encoding" not in r.headers and len(body(r)) < MINIMUM_SIZE
        assert "Accept-Encoding" in r.headers["vary"]


@pytest.mark.parametrize(
    ("accept_encoding", "coding"),
    [
        (None, None),
        ("", None),
        ("identity", None),
        ("br", None),
        ("gzip", "gzip"),
        ("x-gzip", "gzip"),
        ("zstd", "zstd"),
        ("gzip, deflate, zstd", "zstd"),  # httpx's default with zstandard installed: tie, zstd first
        ("gzip, deflate, br, zstd", "zstd"),  # Chromium's
        ("gzip, deflate", "gzip"),  # httpx's without zstandard
        ("zstd;q=0.5, gzip", "gzip"),
        ("zstd, gzip;q=0.9", "zstd"),
        ("gzip;q=0, identity", None),
        ("zstd;q=0, gzip;q=0", None),
        ("*", "gzip"),  # `*` counts for gzip only
        ("*, gzip;q=0", None),
        ("ZSTD;Q=1", "zstd"),
        ("zstd;q=x, gzip", "gzip"),
    ],
)
def test_negotiate(accept_encoding: str | None, coding: str | None) -> None:
    assert negotiate(accept_encoding) == coding


def test_produce_ahead_raises_the_producers_error_and_closes_it() -> None:
    """An error in the query's thread is raised in the consumer's; the source is closed in its thread."""
    closed: list[bool] = []

    def source() -> Any:
        try:
            yield b"a"
            raise RuntimeError("the database went away")
        finally:
            closed.append(True)

    got: list[bytes] = []
    with pytest.raises(RuntimeError, match="went away"):
        for chunk in produce_ahead(source()):
            got.append(chunk)
    assert got == [b"a"] and closed == [True]


def test_the_pipeline_holds_a_few_chunks_however_long_the_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """100 MB through produce_ahead → compress, with a reader that stalls: Python's peak allocation stays
    within a few 1 MB chunks (the queue is bounded; nothing is gathered)."""
    import time
    import tracemalloc

    from auditkeep.api import encoding

    seed = bytes(range(256)) * 4096  # 1 MiB, fresh bytes objects made per chunk below

    def body() -> Any:
        for n in range(100):
            yield seed[n:] + seed[:n]

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        stream = encoding.compress(produce_ahead(body()), "zstd")
        out = next(stream)
        time.sleep(0.5)  # the query's thread runs ahead meanwhile, as far as the queue lets it
        total = len(out) + sum(len(chunk) for chunk in stream)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > 0
    assert peak < (encoding.PIPELINE_DEPTH + 6) * len(seed)  # unbounded, it would be ~100 MiB
