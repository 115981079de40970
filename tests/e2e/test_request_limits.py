"""End to end: oversized heads and bodies are refused unread by the real server, its memory flat (issue #11)."""

from __future__ import annotations

import secrets
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import Server, cli

pytestmark = pytest.mark.e2e

MB = 1 << 20
# Before the bounds, a 300 MB body or a 100 MB header raised the server's RSS by ~300 MB; "flat" is a few MB.
RSS_SLACK_KB = 8 * 1024


@pytest.fixture(scope="module")
def viewonly_key(database_url: str) -> str:
    """A viewonly user's key: the GET is refused (403) once read, so only the bound can stop the body early."""
    org = f"e2e-{secrets.token_hex(4)}"
    cli(database_url, "orgs", "create", org)
    cli(database_url, "users", "create", "--org", org, "--email", "v@e2e.test", "--role", "viewonly")
    return cli(database_url, "keys", "create", "--org", org, "--user", "v@e2e.test").strip()


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module (each test checks it still serves after its flood)."""
    keydir = tmp_path_factory.mktemp("keys")
    keys = {"AUDITKEEP_SIGNING_KEY_PATH": str(keydir / "signing-key.pem"),
            "AUDITKEEP_SECRETS_KEY_PATH": str(keydir / "secrets-key")}
    s = Server(database_url, env=keys).start()  # one worker: the process started is the one serving
    yield s
    s.stop()


def rss_kb(server: Server) -> int:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def flood(server: Server, head: bytes, chunks: Iterator[bytes]) -> bytes:
    """Send `head`, then `chunks` until the server answers or hangs up; the answer's first line."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                if select.select([sock], [], [], 0)[0]:
                    break  # answered: stop sending, as a client reading its answers would
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed after answering; its answer is already on our side
        sock.settimeout(10)
        answer = b""
        try:
            while b"\r\n" not in answer and (data := sock.recv(65536)):
                answer += data
        except ConnectionResetError:
            pass
    return answer.split(b"\r\n", 1)[0]


def assert_refused_flat_and_still_serving(server: Server, key: str, head: bytes, chunks: Iterator[bytes],
                                          status: bytes) -> None:
    httpx.get(f"{server.url}/readyz")  # warm up: the baseline is a server that has answered requests
    baseline = rss_kb(server)
    assert flood(server, head, chunks) == b"HTTP/1.1 " + status
    assert rss_kb(server) - baseline < RSS_SLACK_KB
    r = httpx.get(f"{server.url}/api/v1/audit_logs", headers={"Authorization": f"Key {key}"})
    assert r.status_code == 403  # the next normal request is served as usual


def test_a_100_mb_header_is_431(server: Server, viewonly_key: str) -> None:
    head = b"GET /api/v1/audit_logs HTTP/1.1\r\nHost: t\r\nAuthorization: Key " + viewonly_key.encode()
    assert_refused_flat_and_still_serving(
        server, viewonly_key, head, (b"a" * MB for _ in range(100)), b"431 Request Header Fields Too Large"
    )


def test_a_300_mb_get_body_is_413(server: Server, viewonly_key: str) -> None:
    head = (f"GET /api/v1/audit_logs HTTP/1.1\r\nHost: t\r\nAuthorization: Key {viewonly_key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {300 * MB}\r\n\r\n").encode()
    assert_refused_flat_and_still_serving(
        server, viewonly_key, head, (b" " * MB for _ in range(300)), b"413 Request Entity Too Large"
    )


def test_a_300_mb_chunked_get_body_is_413(server: Server, viewonly_key: str) -> None:
    """No Content-Length to go by: the body is counted as it arrives and refused past the bound."""
    head = (f"GET /api/v1/audit_logs HTTP/1.1\r\nHost: t\r\nAuthorization: Key {viewonly_key}\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n").encode()
    chunk = f"{MB:x}\r\n".encode() + b" " * MB + b"\r\n"
    assert_refused_flat_and_still_serving(
        server, viewonly_key, head, (chunk for _ in range(300)), b"413 Request Entity Too Large"
    )


def test_heads_and_bodies_within_the_bounds_are_served(server: Server, viewonly_key: str) -> None:
    """A 15 KB header and a date range in a GET body still reach the route (403 for this key)."""
    h = {"Authorization": f"Key {viewonly_key}", "X-Padding": "p" * 15_000}
    r = httpx.request("GET", f"{server.url}/api/v1/audit_logs", headers=h,
                      content=b'{"start_date": "2024-01-01T00:00:00Z"}')
    assert r.status_code == 403
