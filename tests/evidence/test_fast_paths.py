"""The speed-ups of evidence bundles (issue #12's targets) change no verdict: the event check's fast path
against the reference verifier, the parallel reading against one process, the batched range proof and the
C link check against their definitions."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditkeep.evidence import lines as lines_module
from auditkeep.evidence import workers
from auditkeep.evidence.ledger import Ledger, link_failures
from auditkeep.evidence.lines import check_lines
from auditkeep.evidence.proofs import range_root
from auditkeep.integrity.canonical import ERASED_VALUES, personal_commitment
from auditkeep.integrity.merkle import cover, leaf_hash, root
from auditkeep.integrity.verify import event_hash
from auditkeep.schemas.audit_logs import LOG_FIELDS


def _event(i: int, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "action": "document.read", "client_ip": "203.0.113.7", "event_uuid": f"00000000-0000-4000-8000-{i:012d}",
        "is_support_user": False, "log_entry": f"entry {i} ✓", "object_id": i, "object_type": "document",
        "payload": {"n": i, "tags": ["a", "é"]}, "referer": None, "request_type": "api", "source": "api",
        "status": "success", "timestamp": f"2024-05-01T12:00:{i % 60:02d}.000000Z", "url": f"https://x/{i}",
        "user_agent": None, "user_email": "ann@example.com", "user_id": 7,
    }
    return {**base, **changes}


def _chain(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Seq, prev_hash and hash by the reference definition (integrity/verify.py)."""
    prev = bytes(32)
    out = []
    for seq, given in enumerate(events, start=1):
        event = {**given, "seq": seq, "prev_hash": prev.hex(), "timestamp": f"2024-05-01T12:00:{seq:02d}.000000Z"}
        digest = event_hash(event, prev)
        out.append({**event, "hash": digest.hex()})
        prev = digest
    return out


def _tricky() -> list[dict[str, Any]]:
    salt = "ab" * 16
    erased = _event(5, **ERASED_VALUES)
    commitment = personal_commitment(bytes.fromhex(salt), _event(5)).hex()
    return _chain([
        _event(1),                                              # version 1, plain
        _event(2, personal_salt=salt),                          # version 2, values present
        {**erased, "personal_commitment": commitment},          # version 2, erased
        _event(4, payload={"ratio": 1.0, "small": 1e-7}),      # floats: JCS's own forms
        _event(5, payload={"clé": "non-ASCII key"}),            # non-ASCII key: UTF-16 order
        _event(6, personal_salt=salt, payload={"x": 0.5}),      # version 2 with a float inside the commitment
        _event(7),
    ])


def _text(events: list[dict[str, Any]], query: Any = None) -> bytes:
    return orjson.dumps({"query": query}) + b"\n" + b"".join(orjson.dumps(e) + b"\n" for e in events)


def _both(data: bytes) -> tuple[Any, Any]:
    """(fast path's result, reference-only result) of the same lines."""
    fast = check_lines(data, 1, LOG_FIELDS, None)
    original = lines_module._fast
    lines_module._fast = lambda *args: None  # every event through the reference verifier
    try:
        reference = check_lines(data, 1, LOG_FIELDS, None)
    finally:
        lines_module._fast = original
    return fast, reference


def _same(a: Any, b: Any) -> None:
    assert a.failures == b.failures
    assert (a.seqs, a.prevs, a.hashes, a.first, a.last, a.cut, a.statement) == (
        b.seqs, b.prevs, b.hashes, b.first, b.last, b.cut, b.statement)


def test_the_fast_path_accepts_exactly_what_the_reference_verifier_accepts() -> None:
    events = _tricky()
    fast, reference = _both(_text(events))
    assert fast.failures == [] and list(fast.seqs) == list(range(1, len(events) + 1))
    _same(fast, reference)


@pytest.mark.parametrize("edit", [
    lambda e: e.update(log_entry="changed"),
    lambda e: e.update(payload={"ratio": 2.0}),
    lambda e: e.update(payload={"big": 2**60}),  # beyond I-JSON: no canonical form
    lambda e: e.update(personal_salt="cd" * 16),
    lambda e: e.update(personal_commitment="00" * 32),
    lambda e: e.update(hash=e["hash"].upper()),
    lambda e: e.update(seq=0),
    lambda e: e.pop("url"),
    lambda e: e.update(note="an extra member, which the canonical form ignores"),
])
def test_the_fast_path_and_the_reference_verifier_name_the_same_failures(edit: Any) -> None:
    events = _tricky()
    for index in range(len(events)):
        changed = [dict(e) for e in events]
        edit(changed[index])
        fast, reference = _both(_text(changed))
        _same(fast, reference)


def test_a_renamed_field_hashed_by_a_forger_fails_on_the_fast_path_too() -> None:
    """The fast path hashes the event's own members, so it must refuse any set but the 17 fields and seq."""
    event = _event(1)
    event["urk"] = event.pop("url")
    forged = {**event, "seq": 1, "prev_hash": "00" * 32}
    canonical = orjson.dumps({k: v for k, v in forged.items() if k != "prev_hash"}, option=orjson.OPT_SORT_KEYS)
    forged["hash"] = hashlib.sha256(bytes(32) + canonical).hexdigest()
    fast, reference = _both(_text([forged]))
    assert fast.failures == ["seq 1 (events.ndjson line 2): missing field(s) url"]
    _same(fast, reference)


def _bundle_like(tmp_path: Path, events: list[dict[str, Any]], junk: bytes = b"") -> Path:
    path = tmp_path / "events.ndjson"
    path.write_bytes(_text(events) + junk)
    return path


@pytest.mark.parametrize("tamper", ["none", "reorder", "change", "junk", "statement"])
def test_workers_report_exactly_what_one_process_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         tamper: str) -> None:
    """Runs of ~300 bytes across 3 worker processes (so a run's first event follows another worker's last):
    the same failures in the same order, the same ledger."""
    events = _chain([_event(i) for i in range(1, 41)])
    if tamper == "reorder":
        events[9], events[10] = events[10], events[9]
        events[30], events[31] = events[31], events[30]
    elif tamper == "change":
        events[20]["log_entry"] = "changed"
    junk = {"junk": b"not json\n\n[1]\n", "statement": b'{"query": null}\n'}.get(tamper, b"")
    path = _bundle_like(tmp_path, events, junk)
    monkeypatch.setattr(workers, "RUN", 300)
    with path.open("rb") as raw:
        one = workers.check_events(raw, None, workers=1)
    with path.open("rb") as raw:
        three = workers.check_events(raw, None, workers=3)
    assert three.failures == one.failures
    assert (three.ledger.seqs, three.ledger.prevs, three.ledger.hashes) == (
        one.ledger.seqs, one.ledger.prevs, one.ledger.hashes)
    assert three.statement and one.statement
    expected = {"none": 0, "reorder": 2, "change": 1, "junk": 2, "statement": 1}[tamper]
    assert len(one.failures) == expected, one.failures


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 100, 1000])
def test_the_batched_range_root_is_the_trees_root(size: int) -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    rng = random.Random(size)
    for _ in range(20):
        first = rng.randint(1, size)
        last = rng.randint(first, size)

        def roots(begin: int, end: int) -> list[bytes]:
            return [root(leaves[i << h:(i + 1) << h]) for h, i in cover(begin, end)]

        batch = rng.choice([1, 3, 64])
        inside = leaves[first - 1:last]
        batches = [inside[k:k + batch] for k in range(0, len(inside), batch)]
        found = range_root(roots(0, first - 1), batches, roots(last, size), first_seq=first,
                           count=last - first + 1, tree_size=size)
        assert found == root(leaves)


def test_the_link_check_in_c_agrees_with_the_loop() -> None:
    ledger = Ledger()
    prev = bytes(32)
    for seq in range(1, 50):
        digest = hashlib.sha256(seq.to_bytes(4, "big")).digest()
        ledger.add(seq, prev, digest)
        prev = digest
    order = ledger.ordered()
    assert ledger.linked_run(order) and link_failures(ledger, order, filtered=False) == []
    ledger.prevs[32 * 20] ^= 1  # seq 21's prev_hash
    assert not ledger.linked_run(order)
    assert link_failures(ledger, order, filtered=False) == ["seq 21: prev_hash is not the hash of seq 20"]


def test_the_link_check_in_c_takes_events_out_of_file_order() -> None:
    """Back-dated events put file order out of seq order; the check gathers them in seq order first."""
    ledger = Ledger()
    prev = bytes(32)
    facts = []
    for seq in range(1, 30):
        digest = hashlib.sha256(seq.to_bytes(4, "big")).digest()
        facts.append((seq, prev, digest))
        prev = digest
    for seq, prev_hash, digest in facts[10:] + facts[:10]:  # seq 1..10 last in the file
        ledger.add(seq, prev_hash, digest)
    order = ledger.ordered()
    assert not isinstance(order, range) and ledger.linked_run(order) and ledger.linked_run(order, block=4)
    ledger.hashes[32 * 23] ^= 1  # the hash of seq 5, at file position 23
    assert not ledger.linked_run(order) and not ledger.linked_run(order, block=4)
    ledger.hashes[32 * 23] ^= 1
    ledger.hashes[32 * 22] ^= 1  # seq 4: its successor starts the second block of 4 (seq 5..8)
    assert not ledger.linked_run(order, block=4)
    assert link_failures(ledger, order, filtered=False) == ["seq 5: prev_hash is not the hash of seq 4"]


def test_ordered_places_a_shuffled_run_and_sorts_anything_else() -> None:
    """Positions in seq order: a shuffled run of seqs is placed, one with a gap or a duplicate is sorted."""
    for seqs in ([5, 3, 4, 7, 6], [5, 3, 9, 7, 6], [3, 3, 5, 6, 7], [7, 5, 5, 6, 3, 4]):
        ledger = Ledger()
        for seq in seqs:
            ledger.add(seq, bytes(32), hashlib.sha256(bytes([seq])).digest())
        order = ledger.ordered()
        assert list(order) == sorted(range(len(seqs)), key=seqs.__getitem__)
        leaves = [leaf for batch in ledger.leaves(order, batch=2) for leaf in batch]
        assert leaves == [hashlib.sha256(b"\x00" + hashlib.sha256(bytes([seqs[i]])).digest()).digest() for i in order]
