"""verify-export semantics (issues #3, #9): order-free, complete unless stated filtered, exit 0/1/2."""

from __future__ import annotations

import io
import random
import re
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditkeep.client import ExportFileError
from auditkeep.client._files import detect_format, iter_records, read_export
from auditkeep.errors import AuditKeepError
from auditkeep.integrity import merkle
from auditkeep.integrity.checkpoints import Checkpoint, export_public_key, load_public_key, sign_checkpoint
from auditkeep.integrity.export import ExportFormatError, verify_export
from auditkeep.integrity.verify import BreakKind

from ._events import chain, fixed_key, logs_of, make_events

PUBLIC = fixed_key().public_key()


def _checkpoint(events: list[dict[str, Any]], size: int) -> Checkpoint:
    leaves = [merkle.leaf_hash(bytes.fromhex(e["hash"])) for e in events[:size]]
    return sign_checkpoint(
        fixed_key(), org="acme", tree_size=size, root_hash=merkle.root(leaves).hex(),
        chain_head=events[size - 1]["hash"],
    )


def _ndjson(events: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def _read(raw: bytes, name: str = "export.json") -> list[dict[str, Any]]:
    """The events of a file's bytes, read the way `auditkeep verify-export` reads them."""
    return list(iter_records(io.BytesIO(raw), detect_format(name, raw[:4096]), bare_array=True))


def test_good_export_with_checkpoint_verifies() -> None:
    events = make_events(30)
    report = verify_export(events, public_key=PUBLIC, checkpoint=_checkpoint(events, 30))
    assert (report.exit_code, report.ok, report.reason, report.first_bad_seq) == (0, True, None, None)
    assert (report.events, report.first_seq, report.last_seq) == (30, 1, 30)
    assert report.signature_valid is True
    assert report.anchored == (1, 30)
    assert report.root_checked
    assert (report.missing, report.gaps, report.unlinked, report.not_yet_anchored) == (0, (), 0, 0)
    assert report.summary()[0] == "OK: every event verifies"


def test_order_of_lines_does_not_matter() -> None:
    events = make_events(30)
    shuffled = events[:]
    random.Random(3).shuffle(shuffled)
    checkpoint = _checkpoint(events, 25)
    report = verify_export(_read(_ndjson(shuffled), "e.ndjson"), public_key=PUBLIC, checkpoint=checkpoint)
    assert report.exit_code == 0
    assert report.anchored == (1, 25)
    assert report.not_yet_anchored == 5


def test_an_edited_field_fails_naming_the_seq() -> None:
    events = make_events(20)
    checkpoint = _checkpoint(events, 20)
    events[11]["log_entry"] = "edited"
    report = verify_export(events, public_key=PUBLIC, checkpoint=checkpoint)
    assert report.exit_code == 1
    assert report.first_bad_seq == 12
    assert report.problems[0].kind == BreakKind.HASH_MISMATCH
    assert report.summary()[0] == "FAILED: seq 12: hash does not match the event's content"


def _stated(filtered: bool) -> dict[str, Any]:
    return {"query": {"start_date": None, "end_date": None, "filters": {"action": "a"} if filtered else {},
                      "order": "asc", "after_seq": None, "cursor": False, "limit": None, "filtered": filtered}}


def test_missing_middle_events_fail_an_export_without_a_statement_naming_the_ranges() -> None:
    events = make_events(20)
    kept = [e for e in events if e["seq"] not in (7, 8, 12)]
    report = verify_export(kept, public_key=PUBLIC, checkpoint=_checkpoint(events, 20))
    assert (report.exit_code, report.first_bad_seq, report.complete) == (1, None, True)
    assert report.reason == "missing seq 7-8, 12 (3 events)"
    assert (report.incomplete, report.incomplete_count) == (((7, 8), (12, 12)), 3)
    assert report.summary()[0] == "FAILED: missing seq 7-8, 12 (3 events)"


@pytest.mark.parametrize(
    ("removed", "message"),
    [
        ({17}, "missing seq 17 (1 event)"),
        (set(range(21, 31)), "missing seq 21-30 (10 events)"),
        (set(range(2, 40, 2)), "missing seq 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, ... 9 more range(s) (19 events)"),
    ],
    ids=["one", "ten", "every-other"],
)
@pytest.mark.parametrize("stated", [None, False], ids=["no-statement", "stated-unfiltered"])
def test_removed_events_below_the_checkpoint_fail(removed: set[int], message: str, stated: bool | None) -> None:
    events = make_events(45)
    kept = [e for e in events if e["seq"] not in removed]
    records = kept if stated is None else [_stated(stated), *kept]
    report = verify_export(records, public_key=PUBLIC, checkpoint=_checkpoint(events, 40))
    assert (report.exit_code, report.reason) == (1, message)
    assert report.not_yet_anchored == 5


def test_a_filtered_export_reports_its_gaps_and_passes() -> None:
    events = make_events(20)
    kept = [e for e in events if e["seq"] not in (7, 8, 12)]
    report = verify_export([_stated(True), *kept], public_key=PUBLIC, checkpoint=_checkpoint(events, 20))
    assert (report.exit_code, report.complete, report.incomplete_count) == (0, False, 0)
    assert report.gaps == ((7, 8), (12, 12))
    assert report.missing == 3
    assert report.anchored == (13, 20)
    assert not report.root_checked
    assert report.unlinked == 9  # seq 1..6 and 9..11 are not hash-linked to the checkpoint
    assert report.query == _stated(True)["query"]
    assert "export states its query: filtered (not signed)" in report.summary()
    assert ("gaps (not a failure: the export states its query is filtered): 3 seq(s) absent: 7..8, 12"
            in report.summary())


def test_no_complete_relaxes_and_complete_insists() -> None:
    events = make_events(20)
    kept = [e for e in events if e["seq"] not in (7, 8, 12)]
    relaxed = verify_export(kept, public_key=PUBLIC, checkpoint=_checkpoint(events, 20), complete=False)
    assert (relaxed.exit_code, relaxed.gaps, relaxed.missing) == (0, ((7, 8), (12, 12)), 3)
    assert "gaps (not a failure: --no-complete): 3 seq(s) absent: 7..8, 12" in relaxed.summary()
    insisted = verify_export([_stated(True), *kept], public_key=PUBLIC, complete=True)
    assert (insisted.exit_code, insisted.reason) == (1, "missing seq 7-8, 12 (3 events)")


def test_a_complete_export_must_reach_the_checkpoint() -> None:
    events = make_events(30)
    report = verify_export(events[:24], public_key=PUBLIC, checkpoint=_checkpoint(events, 27))
    assert (report.exit_code, report.reason) == (1, "missing seq 25-27 (3 events)")


def test_every_statement_must_say_filtered_for_gaps_to_pass() -> None:
    events = make_events(10)
    kept = [e for e in events if e["seq"] != 5]
    assert verify_export([_stated(True), *kept, _stated(True)]).exit_code == 0
    assert verify_export([_stated(True), *kept, _stated(False)]).exit_code == 1
    assert verify_export([{"query": "filtered"}, *kept]).exit_code == 1


def test_events_after_the_checkpoint_are_reported_not_yet_anchored() -> None:
    events = make_events(15)
    report = verify_export(events, public_key=PUBLIC, checkpoint=_checkpoint(events, 10))
    assert report.exit_code == 0
    assert report.anchored == (1, 10)
    assert report.not_yet_anchored == 5
    assert "not yet anchored (after the checkpoint): 5 event(s)" in report.summary()


def test_checkpoint_event_missing_is_inconclusive_when_completeness_is_not_asked() -> None:
    events = make_events(15)
    checkpoint = _checkpoint(events, 10)
    kept = [e for e in events if e["seq"] != 10]
    assert verify_export(kept, public_key=PUBLIC, checkpoint=checkpoint).reason == "missing seq 10 (1 event)"
    report = verify_export(kept, public_key=PUBLIC, checkpoint=checkpoint, complete=False)
    assert report.exit_code == 2
    assert report.reason == "seq 10, the checkpoint's last event, is not in the export"
    assert report.first_bad_seq is None
    assert report.anchored is None


def test_mismatch_outranks_a_missing_checkpoint_event() -> None:
    events = make_events(15)
    checkpoint = _checkpoint(events, 10)
    events[2]["status"] = "failure"
    report = verify_export([e for e in events if e["seq"] != 10], public_key=PUBLIC, checkpoint=checkpoint)
    assert (report.exit_code, report.first_bad_seq) == (1, 3)


def test_bad_checkpoint_signature_fails() -> None:
    events = make_events(10)
    forged = _checkpoint(events, 10).model_copy(update={"org": "someone-else"})
    report = verify_export(events, public_key=PUBLIC, checkpoint=forged)
    assert report.exit_code == 1
    assert report.signature_valid is False
    assert report.reason == "checkpoint signature does not verify with this public key"
    assert "checkpoint signature: INVALID" in report.summary()[-2]


def test_checkpoint_from_another_key_fails() -> None:
    events = make_events(5)
    other = Ed25519PrivateKey.generate().public_key()
    report = verify_export(events, public_key=other, checkpoint=_checkpoint(events, 5))
    assert report.exit_code == 1
    assert report.reason is not None
    assert report.reason.startswith("checkpoint was signed by key ")


def test_rewritten_history_with_recomputed_chain_fails_against_the_checkpoint() -> None:
    events = make_events(12)
    checkpoint = _checkpoint(events, 12)
    logs = logs_of(events)
    logs[3]["user_email"] = "mallory@example.com"
    report = verify_export(chain(logs), public_key=PUBLIC, checkpoint=checkpoint)
    assert report.exit_code == 1
    assert report.first_bad_seq == 12
    assert report.problems[0].kind == BreakKind.CHECKPOINT_MISMATCH


def test_checkpoint_with_a_wrong_root_fails_when_the_export_is_complete() -> None:
    events = make_events(6)
    lying = _checkpoint(events, 6).model_copy(update={"root_hash": "ab" * 32})
    signed = sign_checkpoint(
        fixed_key(), org=lying.org, tree_size=6, root_hash=lying.root_hash, chain_head=lying.chain_head
    )
    report = verify_export(events, public_key=PUBLIC, checkpoint=signed)
    assert (report.exit_code, report.first_bad_seq) == (1, 6)
    assert "Merkle root" in report.problems[0].reason


def test_broken_link_between_present_events_fails() -> None:
    events = make_events(8)
    relinked = chain(logs_of(events[4:]), first_seq=5, prev_hash="77" * 32)
    report = verify_export([*events[:4], *relinked])
    assert (report.exit_code, report.first_bad_seq) == (1, 5)
    assert report.problems[0].kind == BreakKind.PREV_HASH_MISMATCH


def test_without_a_checkpoint_everything_is_unanchored() -> None:
    events = make_events(9)
    report = verify_export(events, public_key=PUBLIC)
    assert report.exit_code == 0
    assert report.not_yet_anchored == 9
    assert report.signature_valid is None


def test_identical_duplicates_are_ignored_but_conflicting_ones_fail() -> None:
    events = make_events(5)
    assert verify_export([*events, events[2]]).duplicates == 1
    conflicting = {**events[2], "hash": events[3]["hash"]}
    report = verify_export([*events, conflicting])
    assert report.exit_code == 1
    assert report.first_bad_seq == 3


def test_first_event_must_follow_the_zero_hash() -> None:
    events = chain(logs_of(make_events(3)), prev_hash="12" * 32)
    report = verify_export(events)
    assert (report.exit_code, report.first_bad_seq) == (1, 1)


@pytest.mark.parametrize("value", [2**60, "\ud800"])
def test_a_value_without_a_canonical_form_is_a_mismatch_at_its_seq(value: object) -> None:
    events = make_events(4)
    events[2]["payload"] = {"n": value}
    report = verify_export(events)
    assert (report.exit_code, report.first_bad_seq) == (1, 3)
    assert report.problems[0].kind == BreakKind.MALFORMED
    assert report.problems[0].reason.startswith("content has no canonical form")


def test_checkpoint_needs_the_public_key() -> None:
    events = make_events(2)
    with pytest.raises(ValueError):
        verify_export(events, checkpoint=_checkpoint(events, 2))


def test_public_key_document_from_the_server_works_as_is() -> None:
    events = make_events(4)
    key = load_public_key(export_public_key(PUBLIC))
    assert verify_export(events, public_key=key, checkpoint=_checkpoint(events, 4)).exit_code == 0


# --- the file, as verify-export reads it (the SDK's export reader, client/_files.py) ---


def test_json_documents_in_any_layout_are_read() -> None:
    events = make_events(3)
    for raw in (
        orjson.dumps({"logs": events}),
        orjson.dumps({"logs": events}, option=orjson.OPT_INDENT_2),
        b'{"logs":[\n' + b",\n".join(orjson.dumps(e) for e in events) + b"\n]}\n",
        b"\n\n" + orjson.dumps(events),
        b"\xef\xbb\xbf" + orjson.dumps({"logs": events}, option=orjson.OPT_INDENT_2),
    ):
        for name in ("export.json", "export"):
            assert _read(raw, name) == events
            assert verify_export(_read(raw, name)).exit_code == 0


def test_ndjson_is_streamed_with_blank_lines_and_a_bom_skipped_whatever_the_suffix() -> None:
    events = make_events(3)
    raw = b"\n" + b"\n\n".join(orjson.dumps(e) for e in events) + b"\r\n"
    for name in ("export.ndjson", "export.jsonl", "export.json", "export"):
        assert _read(raw, name) == events
        assert _read(b"\xef\xbb\xbf" + raw.lstrip(), name) == events


@pytest.mark.parametrize("name", ["export.json", "export.ndjson", "export.csv", "export"])
def test_an_empty_file_has_no_events_and_verifies(name: str) -> None:
    assert _read(b"", name) == []
    report = verify_export(_read(b"", name))
    assert (report.exit_code, report.events) == (0, 0)


@pytest.mark.parametrize(
    ("raw", "name", "message"),
    [
        (b'{"seq": 1}\n{"seq": 2\n', "e.ndjson", "line 2: not JSON"),
        (b'{"seq": 1}\n{"seq": 2\n', "e.json", "line 2: not JSON"),
        (b'{"seq": 1}\n[1]\n', "e.ndjson", "line 2: not a JSON object"),
        (b"{\n  nope", "e.json", "line 1: not JSON"),
        (b'{"logs": 3}', "e.json", 'not a JSON export: expected {"logs": [ or ['),
        (b'{"logs": [1]}', "e.json", "log 0: not a JSON object"),
        (b'{"logs": [{"seq": 1}, {"seq": 2,}]}', "e.json", "log 1: not valid JSON"),
        (b'{"logs": [{"seq": 1}', "e.json", "the logs array ends early (after 1 logs)"),
        (b"seq,action\n1,x\n2\n", "e.csv", "row 3: 1 cells for 2 columns"),
        (b"seq,action\nfirst,x\n", "e.csv", "row 2: seq is not a valid value: 'first'"),
    ],
)
def test_a_broken_file_is_reported_with_where_it_is_broken(raw: bytes, name: str, message: str) -> None:
    with pytest.raises(ExportFileError, match="^" + re.escape(message)):
        _read(raw, name)


@pytest.mark.parametrize("name", ["export.json", "export"])
def test_a_json_export_states_its_query_first_and_readers_skip_it_unless_asked(name: str) -> None:
    events = make_events(3)
    for raw in (orjson.dumps({**_stated(True), "logs": events}),
                orjson.dumps({**_stated(True), "logs": events}, option=orjson.OPT_INDENT_2)):
        assert detect_format(name, raw[:4096]) == "json"
        assert _read(raw, name) == events
        assert list(iter_records(io.BytesIO(raw), "json", statements=True)) == [_stated(True), *events]


@pytest.mark.parametrize("name", ["export.ndjson", "export.json", "export"])
def test_an_ndjson_export_states_its_query_on_its_first_line(name: str) -> None:
    events = make_events(3)
    raw = _ndjson([_stated(False), *events])
    assert detect_format(name, raw[:4096]) == "ndjson"
    assert _read(raw, name) == events
    assert list(iter_records(io.BytesIO(raw), "ndjson", statements=True)) == [_stated(False), *events]
    assert list(read_export(io.BytesIO(raw), "ndjson")) == logs_of(events)


def test_export_without_integrity_fields_is_a_format_error() -> None:
    events = make_events(2)
    plain = logs_of(events)
    with pytest.raises(ExportFormatError, match="include=integrity") as raised:
        verify_export(plain)
    assert isinstance(raised.value, AuditKeepError)
