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



class _Recorded(threading.Event):
    """A stop event whose waits are recorded, not slept; it is set once the loop's script has run out."""

    def __init__(self, loop: _Timed) -> None:
        super().__init__()
        self.loop = loop

    def wait(self, timeout: float | None = None) -> bool:
        self.loop.rests.append(round(timeout or 0.0, 2))
        if not self.loop.backlogs:
            self.set()
        return self.is_set()


class _Timed(_Scripted):
    """A `_Scripted` loop whose passes each take `work` seconds, with a share of the time while behind."""

    def __init__(self, backlogs: list[bool], busy_share: float, work: float) -> None:
        super().__init__(backlogs)
        self.busy_share = busy_share  # type: ignore[misc]
        self.work = work
        self.rests: list[float] = []
        self._stop = _Recorded(self)

    def run_once(self) -> int:
        self.passes += 1
        self._backlog = self.backlogs.pop(0) if self.backlogs else False
        time.sleep(self.work)
        return 1


def test_a_job_with_a_share_rests_in_proportion_while_it_has_a_backlog() -> None:
    """A job given a quarter of the time (the self-watch, the roller: Python work that takes the GIL from
    ingest in the same process) rests three times as long as each pass with work left took, and its poll
    interval after the pass that caught up; a job with the whole share goes on at once."""
    paced = _Timed([True, True, False], busy_share=0.25, work=0.05)
    paced.run_forever()
    assert paced.passes == 3
    assert len(paced.rests) == 3 and paced.rests[2] == 60.0
    assert all(0.14 <= rest < 0.6 for rest in paced.rests[:2]), paced.rests
    whole = _Timed([True, True, False], busy_share=1.0, work=0.05)
    whole.run_forever()
    assert whole.passes == 3 and whole.rests == [60.0]


def test_a_job_far_behind_works_all_the_time_again() -> None:
    """A load that does not end must not leave a paced job behind for good: FAR_BEHIND events behind, it goes
    on at once after a pass with work left, as a job with the whole share does."""
    from auditkeep.background import FAR_BEHIND

    far = _Timed([True, True, False], busy_share=0.25, work=0.01)
    far._behind = FAR_BEHIND
    far.run_forever()
    assert far.passes == 3 and far.rests == [60.0]
