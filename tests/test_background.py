"""The pass loop the background jobs share (background.py): at once again only while work was left."""

from __future__ import annotations

import logging
import threading
import time
from typing import ClassVar

from auditkeep.background import Loop


class _Scripted(Loop):
    """Each pass does some work; whether it left a backlog comes from a script, then none."""

    thread_name: ClassVar[str] = "auditkeep-test-loop"
    log: ClassVar[logging.Logger] = logging.getLogger("tests.background")

    def __init__(self, backlogs: list[bool]) -> None:
        self._stop = threading.Event()
        self._thread = None
        self.backlogs = backlogs
        self.passes = 0

    def run_once(self) -> int:
        self.passes += 1
        self._backlog = self.backlogs.pop(0) if self.backlogs else False
        return 1

    def rest_seconds(self) -> float:
        return 60.0

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def test_passes_follow_at_once_while_work_is_left_and_rest_after_one_that_caught_up() -> None:
    """Two passes that left a backlog are followed at once; the third found work but caught up, so the loop
    rests its poll interval rather than passing again for the next commit's few events (issue #11)."""
    loop = _Scripted([True, True, False])
    loop.start()
    try:
        deadline = time.monotonic() + 10
        while loop.passes < 3:
            assert time.monotonic() < deadline, "the loop rested with work left"
            time.sleep(0.01)
        time.sleep(0.3)
        assert loop.passes == 3
    finally:
        loop.stop()
    assert loop._thread is not None and not loop._thread.is_alive()
