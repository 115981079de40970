"""`auditkeep serve` delivers streams from a child process of its own (streams/process.py, issue #10):
started again when it dies, and ending when serve is gone, even by SIGKILL."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import Server, cli
from tests.streams.receivers import WebhookReceiver, webhook_receiver

pytestmark = pytest.mark.e2e
SECRET = "e2e-webhook-secret-0123456789abcdef"
ENV = {"AUDITKEEP_STREAM_LEASE_SECONDS": "2", "AUDITKEEP_STREAM_POLL_SECONDS": "0.05"}


@pytest.fixture
def org_key(database_url: str) -> str:
    org = f"e2e-{secrets.token_hex(4)}"
    cli(database_url, "orgs", "create", org)
    cli(database_url, "users", "create", "--org", org, "--email", "ops@e2e.test", "--role", "admin")
    return cli(database_url, "keys", "create", "--org", org, "--user", "ops@e2e.test").strip()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie left for a parent that does not reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _forwarders(server_pid: int) -> list[int]:
    """The running `auditkeep forward` children of the serve process."""
    # Each thread lists the children it started (a restart comes from the supervisor's thread).
    children = [int(pid) for task in Path(f"/proc/{server_pid}/task").iterdir()
                for pid in (task / "children").read_text().split()]
    found = []
    for pid in children:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if b"forward" in argv and _alive(pid):
            found.append(pid)
    return found


def _ingest(server: Server, key: str, n: int, start: int) -> None:
    batch = [{"client_ip": "198.51.100.7", "url": f"https://app.test/{start + i}", "action": "doc.view"}
             for i in range(n)]
    r = httpx.post(f"{server.url}/api/v1/audit_logs", json=batch, headers={"Authorization": f"Key {key}"})
    assert r.status_code == 201, r.text


def _make_stream(server: Server, key: str, receiver: WebhookReceiver) -> None:
    r = httpx.post(f"{server.url}/api/v1/streams", headers={"Authorization": f"Key {key}"}, json={
        "name": "siem", "kind": "webhook", "start_seq": 1, "config": {"url": receiver.url, "secret": SECRET}})
    assert r.status_code == 201, r.text


def _delivered(receiver: WebhookReceiver) -> set[str]:
    return {e["url"] for e in receiver.events() if e["action"] == "doc.view"}


def test_serve_delivers_from_a_child_process_and_starts_it_again_when_it_dies(
        database_url: str, org_key: str, receiver: WebhookReceiver) -> None:
    server = Server(database_url, env=ENV).start()
    try:
        assert server.proc is not None
        _wait(lambda: len(_forwarders(server.proc.pid)) == 1, 30, "the forwarder process")  # type: ignore[union-attr]
        first = _forwarders(server.proc.pid)[0]
        _make_stream(server, org_key, receiver)
        _ingest(server, org_key, 50, 0)
        _wait(lambda: len(_delivered(receiver)) == 50, 30, "the first 50 events")

        os.kill(first, signal.SIGKILL)
        _ingest(server, org_key, 50, 50)  # while no forwarder runs
        # Started again after a second; it takes the stream over once the dead one's lease (2 s) expires.
        _wait(lambda: len(_delivered(receiver)) == 100, 60, "the next 50 events, from a new forwarder")
        now = _forwarders(server.proc.pid)
        assert len(now) == 1 and now[0] != first
        assert httpx.get(f"{server.url}/readyz").status_code == 200  # serve itself never stopped
    finally:
        server.stop()


def test_the_forwarder_process_ends_when_serve_is_killed(database_url: str, org_key: str) -> None:
    server = Server(database_url, env=ENV).start()
    try:
        assert server.proc is not None
        _wait(lambda: len(_forwarders(server.proc.pid)) == 1, 30, "the forwarder process")  # type: ignore[union-attr]
        child = _forwarders(server.proc.pid)[0]
        os.kill(server.proc.pid, signal.SIGKILL)  # serve alone, not its process group
        server.proc.wait(10)
        _wait(lambda: not _alive(child), 15, "the forwarder to end after serve")
    finally:
        if server.proc is not None:
            with contextlib.suppress(ProcessLookupError):  # whatever of its process group is left
                os.killpg(server.proc.pid, signal.SIGKILL)
        server.kill()


def test_no_forwarder_process_when_the_forwarder_is_off(database_url: str) -> None:
    server = Server(database_url, env={**ENV, "AUDITKEEP_FORWARDER": "false"}).start()
    try:
        assert server.proc is not None
        time.sleep(1)
        assert _forwarders(server.proc.pid) == []
    finally:
        server.stop()
