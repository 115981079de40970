"""alerts/windows.py, the counting itself: a sliding window per group, exactly `count` events a firing,
cooldown, and state that forgets what no longer matters."""

from __future__ import annotations

from typing import Any

from auditkeep.alerts.windows import Fired, observe, prune


def feed(state: dict[str, Any], times: list[float], *, count: int, window: int, cooldown: int = 0,
         key: str = "g") -> list[Fired]:
    hits = [observe(state, count=count, window=window, cooldown=cooldown, key=key, group={"k": key}, seq=i + 1,
                    at=t) for i, t in enumerate(times)]
    return [h for h in hits if h is not None]


def test_count_events_within_the_window_fire_once_and_the_count_starts_afresh() -> None:
    state: dict[str, Any] = {}
    fired = feed(state, [0, 1, 2, 3, 4, 5], count=3, window=10)
    assert [(f.first_seq, f.last_seq, f.count) for f in fired] == [(1, 3, 3), (4, 6, 3)]


def test_events_that_left_the_window_do_not_count() -> None:
    """At 0, 5, 11, 12 with a 10 s window: the event at 0 has left when 11 comes, so 5, 11, 12 fire."""
    state: dict[str, Any] = {}
    (fired,) = feed(state, [0, 5, 11, 12], count=3, window=10)
    assert (fired.first_seq, fired.last_seq, fired.first_at, fired.last_at) == (2, 4, 5, 12)


def test_the_window_includes_its_edge() -> None:
    state: dict[str, Any] = {}
    assert len(feed(state, [0, 10], count=2, window=10)) == 1


def test_cooldown_holds_back_and_counts_what_it_held() -> None:
    state: dict[str, Any] = {}
    fired = feed(state, [0, 1, 2, 3, 60, 61], count=1, window=10, cooldown=30)
    assert [(f.last_seq, f.suppressed) for f in fired] == [(1, 0), (5, 3)]  # 6 falls in the second cooldown


def test_prune_forgets_quiet_groups_only() -> None:
    state: dict[str, Any] = {}
    feed(state, [0], count=5, window=10, key="old")
    feed(state, [15], count=5, window=10, key="new")
    feed(state, [0], count=1, window=10, cooldown=100, key="cooling")
    prune(state, at=15, window=10)
    assert sorted(state["groups"]) == ["cooling", "new"]
