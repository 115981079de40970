"""Read events.ndjson once and have its lines checked, in worker processes for a large bundle.

The parent inflates the entry (hashing it for the manifest on the way: one pass, where the file check and
the event check each inflated it before), cuts it into runs of whole lines and hands them out in turn to
`python -m auditkeep.evidence.lines` workers, as `auditkeep verify` does with seq ranges (ingest/
verification.py): plain subprocesses, so a worker imports orjson and hashlib, not the CLI. Results are
joined in file order, so the failures and the ledger are exactly those of one process checking every line
(tests/evidence/test_fast_paths.py compares the two).
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any

import orjson

from auditkeep.evidence.ledger import Ledger
from auditkeep.evidence.lines import EVENTS, LinesResult, check_lines
from auditkeep.schemas.audit_logs import LOG_FIELDS

BLOCK = 1 << 20  # inflated bytes read at a time
RUN = 4 << 20  # bytes of whole lines a worker is given at a time (~6,000 events)
# Below this many events one process is quicker than starting workers (~0.1 s each, and a second
# process only pays off with a second core to run it).
PARALLEL_MIN_EVENTS = 50_000


def runs(raw: IO[bytes], sha: Any, size: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(first line number, whole lines) of the stream, about `size` (RUN) bytes each; `sha` sees every byte."""
    size = size or RUN
    blocks: list[bytes] = []  # joined once a run's worth is in: `pending += block` copied each byte ~2.5 times
    held = 0
    number = 1
    while block := raw.read(BLOCK):
        sha.update(block)
        blocks.append(block)
        held += len(block)
        if held >= size:
            pending = b"".join(blocks)
            end = pending.rfind(b"\n") + 1
            if end:
                yield number, pending[:end]
                number += pending.count(b"\n", 0, end)
                pending = pending[end:]
            blocks, held = [pending], len(pending)
    if held:
        yield number, b"".join(blocks)


class Joiner:
    """Joins the results of consecutive runs into one ledger and one list of failures, in file order."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.failures: list[str] = []
        self.statement = False
        self._last: tuple[str, int] | None = None

    def add(self, result: LinesResult) -> None:
        failures = result.failures
        first, last = result.first, result.last
        if first is not None and self._last is not None and (first[0], first[1]) <= self._last:
            failures = list(failures)
            failures.insert(result.cut, f"seq {first[1]} ({EVENTS} line {first[2]}): out of order, after seq "
                            f"{self._last[1]} (events are in (timestamp, seq) order: a reordered event)")
        self.failures += failures
        self.statement = self.statement or result.statement
        if last is not None:
            self._last = last
        self.ledger.extend(result.seqs, result.prevs, result.hashes)


def check_events(raw: IO[bytes], query: Any, *, workers: int, sha: Any | None = None) -> Joiner:
    """Check every line of `raw` (events.ndjson, open), with `workers` processes (1: in this one)."""
    sha = sha if sha is not None else hashlib.sha256()
    joiner = Joiner()
    if workers <= 1:
        for number, run in runs(raw, sha):
            joiner.add(check_lines(run, number, LOG_FIELDS, query))
        return joiner
    with _Pool(workers, query) as pool:
        for number, run in runs(raw, sha):
            pool.submit(number, run)
            while (ready := pool.next_ready(block=False)) is not None:
                joiner.add(ready)
        while (ready := pool.next_ready(block=True)) is not None:
            joiner.add(ready)
    return joiner


class _Pool:
    """Worker processes given runs in turn; results come back per worker in order, read by one thread each
    (so a worker never blocks writing while the parent blocks feeding it)."""

    def __init__(self, workers: int, query: Any) -> None:
        setup = orjson.dumps({"names": list(LOG_FIELDS), "query": query})
        self._procs: list[subprocess.Popen[bytes]] = []
        self._results: list[queue.Queue[LinesResult | BaseException]] = []
        self._threads: list[threading.Thread] = []
        self._sent = self._taken = 0
        for _ in range(workers):
            proc = subprocess.Popen([sys.executable, "-m", "auditkeep.evidence.lines"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE)
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(struct.pack("<Q", len(setup)) + setup)
            results: queue.Queue[LinesResult | BaseException] = queue.Queue()
            thread = threading.Thread(target=_collect, args=(proc.stdout, results), daemon=True)
            thread.start()
            self._procs.append(proc)
            self._results.append(results)
            self._threads.append(thread)

    def submit(self, number: int, run: bytes) -> None:
        proc = self._procs[self._sent % len(self._procs)]
        assert proc.stdin is not None
        proc.stdin.write(struct.pack("<QQ", number, len(run)))
        proc.stdin.write(run)
        self._sent += 1

    def next_ready(self, *, block: bool) -> LinesResult | None:
        """The next run's result in submission order; None when none is ready (or none is left)."""
        if self._taken == self._sent:
            return None
        if block:
            for proc in self._procs:  # every run is sent: let the workers finish
                if proc.stdin is not None and not proc.stdin.closed:
                    proc.stdin.write(struct.pack("<QQ", 0, 0))
                    proc.stdin.close()
        try:
            item = self._results[self._taken % len(self._procs)].get(block=block)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            raise RuntimeError(f"a verify-bundle worker failed: {item}") from item
        self._taken += 1
        return item

    def __enter__(self) -> _Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            if proc.stdin is not None and not proc.stdin.closed:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            if exc[0] is not None:
                proc.kill()
            proc.wait()
        for thread in self._threads:
            thread.join()
        for proc in self._procs:
            if proc.stdout is not None:
                proc.stdout.close()


def _collect(stdout: IO[bytes], results: queue.Queue[LinesResult | BaseException]) -> None:
    """Read one worker's result frames until it exits."""
    try:
        while header := stdout.read(16):
            head_size, body_size = struct.unpack("<QQ", header)
            results.put(LinesResult.from_frame(stdout.read(head_size), stdout.read(body_size)))
        results.put(EOFError("the worker exited before answering every run"))
    except BaseException as exc:  # handed to the parent's thread
        results.put(exc)
