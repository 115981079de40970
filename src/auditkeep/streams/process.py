"""The forwarder as a child process of `auditkeep serve` (issue #10).

In a worker, the forwarder's threads share the worker's one GIL with ingest: reading each batch back,
building and signing its body and sending it held the interpreter that validates and stores events, and
with two webhook streams PostgreSQL ingest ran at ~0.7x its speed without (docs/benchmarks.md, "Ingest
with streams (c)"). As its own process it has its own interpreter, and the machine's other core.

- `auditkeep serve` starts one child, `auditkeep forward`, before its workers (which then run no
  forwarder), and starts it again, after 1 s doubling to 30 s, whenever it dies (a crash, SIGKILL, the
  out-of-memory killer). It exits 0 only when asked to stop (SIGTERM, SIGINT, serve gone): not restarted.
- The child watches serve: when serve is gone, however it ended (SIGKILL included), the child stops as
  SIGTERM stops it: it finishes the batch in flight and gives its leases back, so the next server takes
  its streams over at once instead of after the lease expires.
- Leases are unchanged: each stream is delivered by one forwarder at a time, across servers and nodes.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

from auditkeep.background import Loop

log = logging.getLogger("auditkeep.streams")

# Set in the child's environment: the pid of the `auditkeep serve` it belongs to.
PARENT_ENV = "AUDITKEEP_FORWARDER_PARENT_PID"
RESTART_FIRST = 1.0
RESTART_CAP = 30.0
# A child that ran this long before it died is restarted after RESTART_FIRST again.
HEALTHY_AFTER = 60.0


class ForwarderProcess:
    """Runs `auditkeep forward` as a child of this process, and runs it again whenever it dies."""

    def __init__(self, argv: list[str] | None = None) -> None:
        self.argv = argv or [sys.executable, "-c", "from auditkeep.cli import main; main()", "forward"]
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._spawn()
        self._thread = threading.Thread(target=self._supervise, name="auditkeep-forwarder-supervisor", daemon=True)
        self._thread.start()

    def _spawn(self) -> None:
        env = {**os.environ, PARENT_ENV: str(os.getpid())}
        self.proc = subprocess.Popen(self.argv, env=env)  # noqa: S603 - our own command line

    def _supervise(self) -> None:
        delay = RESTART_FIRST
        while not self._stopping.is_set():
            assert self.proc is not None
            started = time.monotonic()
            code = self.proc.wait()
            if self._stopping.is_set() or code == 0:
                return  # stopped on purpose (a signal, or serve shutting down)
            if time.monotonic() - started >= HEALTHY_AFTER:
                delay = RESTART_FIRST
            log.error("the forwarder process died; starting it again",
                      extra={"exit_code": code, "restart_in_seconds": delay})
            if self._stopping.wait(delay):
                return
            delay = min(RESTART_CAP, delay * 2)
            self._spawn()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the child (it finishes its batch and gives its leases back), SIGKILL after `timeout`."""
        self._stopping.set()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def stop_with_parent(loop: Loop, interval: float = 0.5) -> None:
    """In a child started by ForwarderProcess: stop `loop` soon after the serve that started it is gone."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return

    def watch() -> None:
        # Once serve is gone, this process is someone else's child (init or a subreaper).
        while os.getppid() == int(parent):
            time.sleep(interval)
        log.warning("auditkeep serve is gone: the forwarder stops")
        loop.stop_soon()

    threading.Thread(target=watch, name="auditkeep-forwarder-parent-watch", daemon=True).start()
