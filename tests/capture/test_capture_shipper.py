"""The shipper: background publishing, the bounded buffer, the spool, replay, and clean shutdown."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from capture_fakes import ToggleService, wait_for

from auditkeep.capture import Shipper

MakeShipper = Callable[..., Shipper]


def ev(n: int) -> dict[str, Any]:
    return {"event_uuid": str(uuid.uuid4()), "client_ip": "10.0.0.1", "url": f"/r/{n}", "action": "GET /r"}


def spooled_lines(directory: Path) -> list[dict[str, Any]]:
    """The events waiting in a spool directory (a file replayed meanwhile counts as empty)."""
    lines: list[dict[str, Any]] = []
    for path in sorted(directory.glob("[0-9]*.ndjson")):
        try:
            lines += [json.loads(line) for line in path.read_text().splitlines()]
        except FileNotFoundError:
            continue
    return lines


def test_events_are_published_in_the_background(make_shipper: MakeShipper, service: ToggleService) -> None:
    shipper = make_shipper(batch_size=4)
    events = [ev(n) for n in range(10)]
    for event in events:
        shipper.submit(event)
    assert shipper.flush()
    assert set(service.stored) == {e["event_uuid"] for e in events}
    assert shipper.stats.as_dict() == {"captured": 10, "published": 10, "spooled": 0, "replayed": 0,
                                       "rejected": 0, "dropped": 0}


def test_a_down_service_spools_and_the_spool_is_replayed_when_it_returns(
        make_shipper: MakeShipper, service: ToggleService, tmp_path: Path) -> None:
    service.mode = "down"
    shipper = make_shipper(spool_dir=tmp_path, batch_size=3)
    events = [ev(n) for n in range(10)]
    for event in events:
        shipper.submit(event)
    assert shipper.flush()
    assert [e["event_uuid"] for e in spooled_lines(tmp_path)] == [e["event_uuid"] for e in events]
    assert service.stored == {}

    service.mode = "up"
    wait_for(lambda: shipper.stats.replayed == 10)
    assert set(service.stored) == {e["event_uuid"] for e in events}
    assert spooled_lines(tmp_path) == []  # the file goes before the replay is counted
    assert shipper.stats.spooled == 10


def test_events_captured_while_down_keep_their_order_and_none_are_lost(
        make_shipper: MakeShipper, service: ToggleService, tmp_path: Path) -> None:
    shipper = make_shipper(spool_dir=tmp_path, batch_size=5)
    first = [ev(n) for n in range(5)]
    for event in first:
        shipper.submit(event)
    assert shipper.flush()
    service.mode = "503"
    second = [ev(n) for n in range(5, 25)]
    for event in second:
        shipper.submit(event)
    assert shipper.flush()
    service.mode = "up"
    third = [ev(n) for n in range(25, 30)]
    for event in third:
        shipper.submit(event)
    wait_for(lambda: len(service.stored) == 30 and spooled_lines(tmp_path) == [])
    assert set(service.stored) == {e["event_uuid"] for e in first + second + third}


def test_a_refused_key_is_not_a_reason_to_lose_events(make_shipper: MakeShipper, service: ToggleService,
                                                      tmp_path: Path) -> None:
    service.mode = "401"
    shipper = make_shipper(spool_dir=tmp_path)
    shipper.submit(ev(1))
    assert shipper.flush()
    assert len(spooled_lines(tmp_path)) == 1
    assert shipper.stats.rejected == 0


def test_the_spool_left_by_an_earlier_process_is_replayed_on_start(
        make_shipper: MakeShipper, service: ToggleService, tmp_path: Path) -> None:
    service.mode = "down"
    earlier = make_shipper(spool_dir=tmp_path)
    events = [ev(n) for n in range(4)]
    for event in events:
        earlier.submit(event)
    earlier.close()
    assert len(spooled_lines(tmp_path)) == 4

    service.mode = "up"
    later = make_shipper(spool_dir=tmp_path)
    later.start()
    wait_for(lambda: later.stats.replayed == 4)
    assert set(service.stored) == {e["event_uuid"] for e in events}


def test_replaying_the_same_spool_twice_stores_each_event_once(
        make_shipper: MakeShipper, service: ToggleService, tmp_path: Path) -> None:
    """A process that dies after sending a spool file but before deleting it sends it again: harmless."""
    service.mode = "down"
    shipper = make_shipper(spool_dir=tmp_path)
    for n in range(6):
        shipper.submit(ev(n))
    shipper.close()
    [spool_file] = tmp_path.glob("[0-9]*.ndjson")
    shutil.copy(spool_file, tmp_path / ("1" + spool_file.name))  # the "undeleted" copy, replayed later

    service.mode = "up"
    replayer = make_shipper(spool_dir=tmp_path)
    replayer.start()
    wait_for(lambda: replayer.stats.replayed == 12)
    assert len(service.stored) == 6


def test_a_torn_last_line_is_skipped(make_shipper: MakeShipper, service: ToggleService, tmp_path: Path) -> None:
    good = ev(1)
    (tmp_path / "00000000000000000001-1-aaaa.ndjson").write_text(json.dumps(good) + '\n{"event_uuid": "to')
    shipper = make_shipper(spool_dir=tmp_path)
    shipper.start()
    wait_for(lambda: shipper.stats.replayed == 1)
    assert list(service.stored) == [good["event_uuid"]]


def test_the_buffer_is_bounded_and_overflow_goes_to_the_spool(
        make_shipper: MakeShipper, service: ToggleService, tmp_path: Path) -> None:
    service.mode = "gated"  # the shipper's first request hangs until the gate opens
    shipper = make_shipper(spool_dir=tmp_path, max_buffer=5, batch_size=2)
    shipper.submit(ev(0))
    wait_for(lambda: len(shipper._buffer) == 0)  # the thread took it and is stuck sending it
    events = [ev(n) for n in range(1, 9)]
    for event in events:
        shipper.submit(event)
    assert len(shipper._buffer) == 5
    assert [e["event_uuid"] for e in spooled_lines(tmp_path)] == [e["event_uuid"] for e in events[5:]]
    service.mode = "up"
    service.gate.set()
    wait_for(lambda: len(service.stored) == 9)


def test_without_a_spool_a_full_buffer_drops_and_counts(make_shipper: MakeShipper,
                                                        service: ToggleService) -> None:
    service.mode = "gated"
    shipper = make_shipper(max_buffer=3)
    shipper.submit(ev(0))
    wait_for(lambda: len(shipper._buffer) == 0)
    for n in range(1, 6):
        shipper.submit(ev(n))
    assert shipper.stats.dropped == 2
    service.mode = "up"
    service.gate.set()
    wait_for(lambda: len(service.stored) == 4)


def test_without_a_spool_events_wait_in_memory_while_the_service_is_down(
        make_shipper: MakeShipper, service: ToggleService) -> None:
    service.mode = "down"
    shipper = make_shipper()
    for n in range(3):
        shipper.submit(ev(n))
    assert not shipper.flush(timeout=0.2)  # they cannot go anywhere yet
    service.mode = "up"
    wait_for(lambda: len(service.stored) == 3)
    assert shipper.stats.dropped == 0


def test_refused_events_are_set_aside_and_the_rest_stored(make_shipper: MakeShipper, service: ToggleService,
                                                          tmp_path: Path) -> None:
    service.refuse = {"/r/3"}
    shipper = make_shipper(spool_dir=tmp_path, batch_size=10)
    events = [ev(n) for n in range(6)]
    for event in events:
        shipper.submit(event)
    assert shipper.flush()
    assert set(service.stored) == {e["event_uuid"] for i, e in enumerate(events) if i != 3}
    [rejected_file] = tmp_path.glob("rejected-*.ndjson")
    [rejected] = [json.loads(line) for line in rejected_file.read_text().splitlines()]
    assert rejected["event"]["event_uuid"] == events[3]["event_uuid"]
    assert rejected["reason"].startswith("422")
    assert shipper.stats.rejected == 1
    assert spooled_lines(tmp_path) == []


def test_close_ships_what_is_buffered(make_shipper: MakeShipper, service: ToggleService) -> None:
    shipper = make_shipper(flush_interval=60)  # the thread would otherwise sleep for a minute
    events = [ev(n) for n in range(7)]
    for event in events:
        shipper.submit(event)
    shipper.close()
    assert set(service.stored) == {e["event_uuid"] for e in events}


def test_close_spools_what_cannot_be_shipped(make_shipper: MakeShipper, service: ToggleService,
                                             tmp_path: Path) -> None:
    service.mode = "down"
    shipper = make_shipper(spool_dir=tmp_path, flush_interval=60)
    for n in range(3):
        shipper.submit(ev(n))
    shipper.close()
    assert len(spooled_lines(tmp_path)) == 3


def test_events_submitted_after_close_are_spooled(make_shipper: MakeShipper, tmp_path: Path) -> None:
    shipper = make_shipper(spool_dir=tmp_path)
    shipper.close()
    shipper.submit(ev(1))
    assert len(spooled_lines(tmp_path)) == 1


def test_the_spool_size_is_bounded(make_shipper: MakeShipper, service: ToggleService, tmp_path: Path) -> None:
    service.mode = "down"
    shipper = make_shipper(spool_dir=tmp_path, spool_max_bytes=300)
    for n in range(10):
        shipper.submit(ev(n))
    assert shipper.flush()
    assert shipper.stats.spooled + shipper.stats.dropped == 10
    assert shipper.stats.dropped > 0
    assert sum(p.stat().st_size for p in tmp_path.glob("*.ndjson")) <= 300


@pytest.mark.parametrize("variable", ["AUDITKEEP_SPOOL_DIR"])
def test_the_spool_directory_may_come_from_the_environment(variable: str, service: ToggleService,
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, str(tmp_path / "spool"))
    shipper = Shipper(service.client())
    assert shipper.spool is not None
    assert shipper.spool.directory == tmp_path / "spool"
    shipper.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (pre-fork servers are a POSIX thing)")
def test_a_forked_worker_ships_its_own_events_only(make_shipper: MakeShipper, service: ToggleService) -> None:
    """Like a gunicorn worker forked after the app (and its shipper) was made."""
    service.mode = "gated"  # the parent's thread is stuck mid-send when the fork happens
    shipper = make_shipper()
    shipper.submit(ev(0))
    wait_for(lambda: len(shipper._buffer) == 0)
    shipper.submit(ev(1))  # buffered in the parent at fork time
    pid = os.fork()
    if pid == 0:  # the child: a fresh thread, an empty buffer
        code = 1
        try:
            service.mode = "up"
            mine = ev(2)
            shipper.submit(mine)
            code = 0 if shipper.flush(5) and list(service.stored) == [mine["event_uuid"]] else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    service.mode = "up"
    service.gate.set()
    wait_for(lambda: len(service.stored) == 2)


def test_an_event_that_cannot_be_encoded_is_set_aside_alone(make_shipper: MakeShipper, service: ToggleService,
                                                            tmp_path: Path) -> None:
    shipper = make_shipper(spool_dir=tmp_path, batch_size=8)
    events = [ev(n) for n in range(8)]
    events[6]["payload"] = {"handle": object()}  # an application put something odd in an annotation
    for event in events:
        shipper.submit(event)
    assert shipper.flush()
    assert len(service.stored) == 7
    assert shipper.stats.rejected == 1
    [rejected_file] = tmp_path.glob("rejected-*.ndjson")
    assert "TypeError" in rejected_file.read_text()
