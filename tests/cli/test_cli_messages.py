"""The CLI speaks in one line: usage errors, connection failures, --version; the server logs JSON (issue #9).

These run the real `auditkeep` executable, as a user's shell does (the entry point is what formats
usage errors).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import orjson

from auditkeep import __version__
from tests.e2e.server import Server, free_port

BIN = Path(sys.executable).parent / "auditkeep"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN, *args], env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=60, check=False)


def test_an_unknown_option_is_one_line_naming_the_help_to_try() -> None:
    done = run("logs", "--foo")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "error: no such option --foo (did you mean --format?) (try auditkeep logs --help)\n"


def test_other_usage_errors_are_one_line_too() -> None:
    done = run("nosuch")
    assert (done.returncode, done.stderr) == (2, "error: no such command 'nosuch' (try auditkeep --help)\n")
    done = run("serve", "--port", "abc")
    assert done.returncode == 2
    assert done.stderr == ("error: invalid value for '--port': Input should be a valid integer, unable to parse string "
                           "as an integer (try auditkeep serve --help)\n")


def test_version_prints_the_version() -> None:
    done = run("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"auditkeep {__version__}\n", "")


def test_a_server_that_refuses_the_connection_is_one_plain_line(tmp_path: Path) -> None:
    """No httpx repr: the URL and the reason, in words, for every command that talks to a server."""
    url = f"http://127.0.0.1:{free_port()}"
    events = tmp_path / "events.json"
    events.write_text('[{"client_ip": "10.0.0.1", "url": "https://x/1"}]')
    for args in (("logs", "--url", url), ("ingest", str(events), "--url", url)):
        done = run(*args, env={"AUDITKEEP_API_KEY": "ak_unused"})
        assert (done.returncode, done.stderr) == (1, f"error: cannot reach {url} (connection refused)\n"), args


def test_an_unknown_host_is_named(tmp_path: Path) -> None:
    done = run("logs", "--url", "http://no-such-host.invalid:8000", env={"AUDITKEEP_API_KEY": "ak_unused"})
    expected = "error: cannot reach http://no-such-host.invalid:8000 (no such host)\n"
    assert (done.returncode, done.stderr) == (1, expected)


def test_the_servers_start_up_and_access_lines_are_json(tmp_path: Path) -> None:
    """Every line `auditkeep serve` writes is a JSON object; uvicorn's access line carries its fields."""
    server = Server(f"sqlite:///{tmp_path / 'served.db'}", env={"AUDITKEEP_LOG_LEVEL": "INFO"}).start()
    assert server.proc is not None
    try:
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
        os.killpg(server.proc.pid, signal.SIGTERM)
        server.proc.wait(20)
        server.wait_log_closed()
        stderr = server.log.decode()
    finally:
        server.kill()
    lines = stderr.splitlines()
    assert lines
    entries = [orjson.loads(line) for line in lines]
    messages = {(e["logger"], e["message"]) for e in entries}
    assert ("uvicorn.error", f"Uvicorn running on {server.url} (Press CTRL+C to quit)") in messages
    access = [e for e in entries if e["logger"] == "uvicorn.access" and e.get("path") == "/healthz"]
    assert [(a["method"], a["status"], a["http_version"], a["level"]) for a in access] == [("GET", 200, "1.1", "info")]
    assert all("color_message" not in e for e in entries)
