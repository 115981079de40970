"""Start the real `auditkeep serve` process for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(database_url: str, *args: str) -> str:
    """Run the real `auditkeep` command; its stdout."""
    env = {**os.environ, "AUDITKEEP_DATABASE_URL": database_url}
    done = subprocess.run([BIN / "auditkeep", *args], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


class Server:
    """`auditkeep serve` in a subprocess, on a free loopback port.

    Its stderr (JSON log lines, an access line per request) is read as it comes into `log`: left unread,
    the pipe fills (64 KiB, a few hundred requests) and the server's next log write blocks its event loop,
    so every request hangs, /healthz included, which would be the harness failing, not the server.
    """

    def __init__(self, database_url: str, *, workers: int = 1, env: dict[str, str] | None = None,
                 wrapper: Sequence[str] = ()) -> None:
        self.database_url = database_url
        self.workers = workers
        self.wrapper = list(wrapper)  # a command that runs the server, such as setpriv with its options
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "AUDITKEEP_DATABASE_URL": database_url, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = bytearray()
        self._drainer: threading.Thread | None = None

    def start(self) -> Server:
        self.proc = subprocess.Popen(
            [*self.wrapper, BIN / "auditkeep", "serve", "--port", str(self.port), "--workers", str(self.workers)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        assert self.proc.stderr is not None
        self._drainer = threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True)
        self._drainer.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.kill()
                raise RuntimeError(f"server exited: {self.log.decode(errors='replace')}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not become ready in 30 s: {self.log.decode(errors='replace')[-2000:]}")

    def _drain(self, pipe: IO[bytes]) -> None:
        with contextlib.suppress(ValueError, OSError):  # kill() closes the pipe under this thread
            while chunk := pipe.read1(65536):  # type: ignore[attr-defined]
                self.log += chunk

    def wait_log_closed(self, timeout: float = 20) -> None:
        """Wait until the server closed its stderr (it exited), so `log` holds every line it wrote."""
        if self._drainer is not None:
            self._drainer.join(timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group: no graceful shutdown, no flush."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self._drainer is not None:
            self._drainer.join(5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        self.kill()
