"""verify_chain: a walk in seq order names the first broken seq and why, and checks checkpoints."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import rfc8785
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from auditkeep.integrity import merkle
from auditkeep.integrity.checkpoints import sign_checkpoint
from auditkeep.integrity.verify import BreakKind, ChainVerifier, verify_chain
from auditkeep.schemas.audit_logs import LOG_FIELDS

from ._events import chain, fixed_key, logs_of, make_events, make_log


def _root(events: list[dict[str, Any]]) -> str:
    return merkle.root([merkle.leaf_hash(bytes.fromhex(e["hash"])) for e in events]).hex()


def _checkpoint(events: list[dict[str, Any]], size: int) -> Any:
    return sign_checkpoint(
        fixed_key(), org="acme", tree_size=size, root_hash=_root(events[:size]),
        chain_head=events[size - 1]["hash"] if size else "0" * 64,
    )


def test_intact_chain_verifies_and_reports_its_head() -> None:
    events = make_events(25)
    report = verify_chain(events)
    assert report.ok
    assert report.broken is None
    assert report.events == 25
    assert report.head.tree_size == 25
    assert report.head.chain_head == events[-1]["hash"]
    assert report.head.root_hash == _root(events)


def test_empty_log_verifies() -> None:
    report = verify_chain([])
    assert report.ok
    assert report.head.tree_size == 0
    assert report.head.root_hash == hashlib.sha256(b"").hexdigest()
    assert report.head.chain_head == "0" * 64


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("action", "user.logout"),
        ("payload", {"n": 0}),
        ("user_id", None),
        ("timestamp", "2024-05-01T00:00:00.000000Z"),
    ],
)
def test_a_field_changed_in_place_is_named(field: str, value: object) -> None:
    events = make_events(10)
    events[6][field] = value
    report = verify_chain(events)
    assert report.broken is not None
    assert (report.broken.seq, report.broken.kind) == (7, BreakKind.HASH_MISMATCH)
    assert report.events == 6
    assert report.head.chain_head == events[5]["hash"]


def test_a_changed_hash_is_named() -> None:
    events = make_events(10)
    events[3]["hash"] = "ab" * 32
    report = verify_chain(events)
    assert report.broken is not None
    assert (report.broken.seq, report.broken.kind) == (4, BreakKind.HASH_MISMATCH)


def test_a_deleted_middle_event_is_named_as_the_missing_seq() -> None:
    events = make_events(10)
    del events[4]
    report = verify_chain(events)
    assert report.broken is not None
    assert (report.broken.seq, report.broken.kind) == (5, BreakKind.SEQ_GAP)
    assert str(report.broken) == "seq 5: seq 5 missing (next stored is 6)"


def test_two_events_with_their_seqs_swapped_are_named() -> None:
    events = make_events(10)
    events[4]["seq"], events[5]["seq"] = 6, 5
    events.sort(key=lambda e: e["seq"])
    report = verify_chain(events)
    assert report.broken is not None
    assert (report.broken.seq, report.broken.kind) == (5, BreakKind.PREV_HASH_MISMATCH)


def test_duplicate_and_out_of_order_seqs_are_named() -> None:
    events = make_events(5)
    duplicated = verify_chain([*events[:3], events[2], *events[3:]])
    assert duplicated.broken is not None
    assert (duplicated.broken.seq, duplicated.broken.kind) == (3, BreakKind.DUPLICATE_SEQ)
    backwards = verify_chain([*events[:3], events[0]])
    assert backwards.broken is not None
    assert (backwards.broken.seq, backwards.broken.kind) == (1, BreakKind.SEQ_OUT_OF_ORDER)


def test_first_event_must_follow_the_zero_hash() -> None:
    events = chain([make_log(1), make_log(2)], prev_hash="11" * 32)
    report = verify_chain(events)
    assert report.broken is not None
    assert (report.broken.seq, report.broken.kind) == (1, BreakKind.PREV_HASH_MISMATCH)


@pytest.mark.parametrize(
    "patch",
    [{"hash": "AB" * 32}, {"prev_hash": "00"}, {"hash": 5}, {"seq": "3"}, {"seq": True}],
)
def test_malformed_events_are_named(patch: dict[str, object]) -> None:
    events = make_events(5)
    events[2].update(patch)
    report = verify_chain(events)
    assert report.broken is not None
    assert (report.broken.seq, report.broken.kind) == (3, BreakKind.MALFORMED)


def test_missing_field_is_malformed() -> None:
    events = make_events(3)
    del events[1]["user_agent"]
    report = verify_chain(events)
    assert report.broken is not None
    assert report.broken.kind == BreakKind.MALFORMED
    assert "user_agent" in report.broken.reason


def test_forged_event_with_recomputed_chain_passes_alone_but_not_against_a_checkpoint() -> None:
    """Recomputing every later hash hides an edit from the chain; a signed checkpoint still shows it."""
    original = make_events(12)
    checkpoint = _checkpoint(original, 10)
    logs = logs_of(original)
    logs.insert(4, make_log(999))  # a forged event, then the whole chain recomputed
    forged = chain(logs)
    assert verify_chain(forged).ok
    report = verify_chain(forged, checkpoints=[checkpoint])
    assert report.broken is not None
    assert (report.broken.seq, report.broken.kind) == (10, BreakKind.CHECKPOINT_MISMATCH)


def test_checkpoint_root_is_compared_too() -> None:
    events = make_events(8)
    honest = _checkpoint(events, 6)
    assert verify_chain(events, checkpoints=[honest]).ok
    wrong_root = honest.model_copy(update={"root_hash": "0" * 64})
    report = verify_chain(events, checkpoints=[wrong_root])
    assert report.broken is not None
    assert (report.broken.seq, report.broken.kind) == (6, BreakKind.CHECKPOINT_MISMATCH)
    assert "Merkle root" in report.broken.reason


def test_newest_events_deleted_are_caught_against_an_earlier_checkpoint() -> None:
    events = make_events(20)
    checkpoint = _checkpoint(events, 18)
    report = verify_chain(events[:15], checkpoints=[checkpoint])
    assert report.broken is not None
    assert (report.broken.seq, report.broken.kind) == (16, BreakKind.TRUNCATED)
    assert report.events == 15


def test_checkpoints_are_checked_in_walk_order() -> None:
    events = make_events(10)
    cps = [_checkpoint(events, size) for size in (0, 3, 10)]
    assert verify_chain(events, checkpoints=cps).ok
    tampered = [dict(e) for e in events]
    tampered[1]["hash"] = "cd" * 32
    report = verify_chain(tampered, checkpoints=cps)
    assert report.broken is not None
    assert (report.broken.seq, report.broken.kind) == (2, BreakKind.HASH_MISMATCH)


def test_walk_can_start_after_a_purge_with_the_stored_frontier() -> None:
    events = make_events(12)
    frontier = merkle.CompactRange()
    frontier.extend(merkle.leaf_hash(bytes.fromhex(e["hash"])) for e in events[:5])
    report = verify_chain(
        events[5:], start_seq=6, prev_hash=events[4]["hash"], frontier=frontier,
        checkpoints=[_checkpoint(events, 5), _checkpoint(events, 9), _checkpoint(events, 2)],
    )
    assert report.ok
    assert report.head.root_hash == _root(events)
    without = verify_chain(events[5:], start_seq=6, prev_hash=None)
    assert without.ok
    assert without.head.root_hash is None
    assert without.head.chain_head == events[-1]["hash"]
    bad_start = verify_chain(events[5:], start_seq=6, prev_hash=events[3]["hash"])
    assert bad_start.broken is not None
    assert (bad_start.broken.seq, bad_start.broken.kind) == (6, BreakKind.PREV_HASH_MISMATCH)


def test_frontier_must_match_the_start() -> None:
    with pytest.raises(ValueError, match="frontier"):
        ChainVerifier(start_seq=3, frontier=merkle.CompactRange())


def test_verifier_keeps_the_first_break() -> None:
    events = make_events(4)
    verifier = ChainVerifier()
    assert verifier.feed(events[0]) is None
    first = verifier.feed(events[2])
    assert first is not None
    assert first.seq == 2
    assert verifier.feed(events[1]) is first
    assert verifier.finish().broken is first


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.text(max_size=20),
    st.dictionaries(st.text(max_size=5), st.integers(min_value=0, max_value=9), max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(
    index=st.integers(min_value=0, max_value=7),
    field=st.sampled_from([*LOG_FIELDS, "seq", "prev_hash", "hash"]),
    value=_VALUES,
)
def test_any_change_to_any_stored_field_is_detected(index: int, field: str, value: object) -> None:
    """Changing any one stored field of any one event breaks the walk at that event's seq or before."""
    events = make_events(8)
    old = events[index][field]
    assume(type(value) is not type(old) or rfc8785.dumps([value]) != rfc8785.dumps([old]))
    events[index][field] = value
    report = verify_chain(events)
    assert report.broken is not None
    assert report.broken.seq <= index + 1
