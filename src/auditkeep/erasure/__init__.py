"""Erasure of a person's personal fields with the chain kept provable (issue #12, docs/integrity.md §13).

Every event of the person (by user_email, ASCII-case-insensitively, or by user_id) loses client_ip, url
(both become "[erased]"), log_entry, payload, referer, user_agent, user_email and user_id, and its
per-event salt; it keeps the salted commitment to them that its canonical form (version 2) holds, so
its hash, the chain, the Merkle tree and every checkpoint still verify. Events under a legal hold are
refused, naming the hold; version 1 events (written before version 2) cannot be erased without breaking
their hash and are refused too. Other events whose personal fields mention the person (their email, raw or
percent-encoded, or their user_id as a `user_id` member or parameter: an `audit_logs.read` of a query
filtered by them, a url carrying their address) are erased with them, under the same refusals; the
search index's entries of every erased event are rewritten and the organization's polling sessions
(keyed by query digests) dropped. The erasure is recorded as `erasure.performed`, with counts but without the values.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from auditkeep.auth.principals import Principal
from auditkeep.errors import ChainBrokenError, ConflictError, NotFoundError
from auditkeep.holds import holds_covering
from auditkeep.ingest.selfaudit import Origin, audit
from auditkeep.integrity.canonical import ERASED_MARK, PERSONAL_FIELDS, canonical_json, commitment_of, core_fields
from auditkeep.schemas.audit_logs import LOG_FIELDS
from auditkeep.storage import Storage, rollup, search
from auditkeep.storage import erasure as store
from auditkeep.storage.events import row_to_log
from auditkeep.storage.queries import ascii_lower, escape_like

__all__ = ["Erasure", "erase_person"]


@dataclass(frozen=True, slots=True)
class Erasure:
    """What one erasure did: how many events, which seqs, which fields; `scrubbed` is False when SQLite's
    WAL could not be truncated at once (readers held it; a later checkpoint does it)."""

    events: int  # the person's own events
    first_seq: int | None
    last_seq: int | None
    fields: tuple[str, ...]
    event_uuid: str  # the erasure.performed event
    scrubbed: bool
    mentions: int = 0  # other events whose personal fields mentioned the person, erased with theirs


def _describe(seqs: list[int]) -> str:
    shown = ", ".join(str(s) for s in seqs[:10])
    return shown + (f" and {len(seqs) - 10} more" if len(seqs) > 10 else "")


def _mention_rule(emails: set[str], ids: set[int]) -> tuple[list[str], re.Pattern[str]]:
    """LIKE patterns that find every candidate (a superset) and the pattern that confirms a mention.

    An email is mentioned as itself or percent-encoded (a url's query), in any ASCII case, not inside a
    longer address (`joann@x.com` does not mention `ann@x.com`, nor `ann@x.com.au`). A user id is
    mentioned only as a `user_id` member or query parameter (`"user_id":42`, `"user_id":"42"`,
    `user_id=42`): a bare number is everywhere, so it is no evidence of the person.
    """
    patterns: list[str] = []
    alternatives: list[str] = []
    for email in sorted(emails):
        local, _, domain = email.rpartition("@")
        # One pattern for both spellings ("@" or "%40" between the parts): one scan term, not two.
        patterns.append(f"%{escape_like(local)}%{escape_like(domain)}%")
        for form in dict.fromkeys((email, ascii_lower(quote(email, safe="")))):
            alternatives.append(r"(?<![a-z0-9._%+\-])" + re.escape(form) + r"(?![a-z0-9\-]|\.[a-z0-9])")
    for user_id in sorted(ids):
        patterns.append(f"%user\\_id%{user_id}%")
        for form in (f'"user_id":{user_id}', f'"user_id":"{user_id}"', f"user_id={user_id}"):
            alternatives.append(re.escape(form) + r"(?![0-9])")
    return patterns, re.compile("|".join(alternatives) or r"(?!)")


def _scrub(value: Any, pattern: re.Pattern[str], ids: set[int]) -> Any:
    """`value` (JSON) with every string that mentions the person, and every `user_id` member holding one of
    their ids, replaced by the erased mark."""
    if isinstance(value, dict):
        known = {str(i) for i in ids}
        return {k: ERASED_MARK if k == "user_id" and str(v) in known else _scrub(v, pattern, ids)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, pattern, ids) for v in value]
    if isinstance(value, str) and pattern.search(ascii_lower(value)):
        return ERASED_MARK
    return value


def _personal_text(row: Sequence[Any]) -> str:
    return ascii_lower("\n".join("" if row[i] is None else str(row[i]) for i in _PERSONAL_INDEXES))


_PERSONAL_INDEXES = tuple(LOG_FIELDS.index(name) for name in PERSONAL_FIELDS)


def _checked_commitment(row: Sequence[Any]) -> str:
    """The event's personal commitment, after checking its stored hash against its content: afterwards
    nobody could tell a tampered event."""
    n = len(LOG_FIELDS)
    log = row_to_log(row[:n], payload_fragment=True)
    log["personal_salt"] = row[n + 3]
    commitment = commitment_of(log)
    assert commitment is not None
    fields = core_fields({k: log[k] for k in LOG_FIELDS}, commitment)
    fields["seq"] = row[n]
    digest = hashlib.sha256(bytes.fromhex(row[n + 1]) + canonical_json(fields)).hexdigest()
    if digest != row[n + 2]:
        raise ChainBrokenError(row[n], "hash does not match the event's content; nothing was erased "
                               "(run auditkeep verify)")
    return commitment


def erase_person(storage: Storage, org_id: int, *, user_email: str | None = None, user_id: int | None = None,
                 reason: str, origin: Origin, actor: Principal | None = None) -> Erasure:
    """Erase the personal fields of every event of one person in `org_id`'s log, and of every other event
    whose personal fields mention them (docs/integrity.md §13), all or nothing.

    Example: `erase_person(storage, org.id, user_email="ann@example.com", reason="GDPR art. 17 request 42",
    origin=Origin.cli(argv))`. ConflictError (nothing erased) if a hold covers one of the events or one
    was written in canonical form version 1; ChainBrokenError if one's stored hash does not match its
    content (an erasure must not launder a tampered event); NotFoundError if the person has no events
    left to erase.
    """
    if (user_email is None) == (user_id is None):
        raise ValueError("give exactly one of user_email and user_id")
    if not reason.strip():
        raise ValueError("an erasure needs a reason")
    n = len(LOG_FIELDS)
    with storage.event_writer(org_id) as writer:  # the head lock: no purge, hold or ingest meanwhile
        conn = writer.conn
        rows = store.person_rows(conn, org_id, user_email=user_email, user_id=user_id)
        if not rows:
            raise NotFoundError("no events of that person are left to erase")
        seqs = [row[n] for row in rows]
        # The person's identifiers: the one asked for and those their events carry (an erasure by email
        # also finds mentions of their user_id, and the other way round).
        emails = {ascii_lower(e) for e in (user_email, *(r[_EMAIL] for r in rows)) if e}
        ids = {i for i in (user_id, *(r[_USER_ID] for r in rows)) if i is not None}
        likes, pattern = _mention_rule(emails, ids)
        mentions = [row for row in store.mention_rows(conn, org_id, likes, seqs)
                    if pattern.search(_personal_text(row))]
        everything = sorted([*rows, *mentions], key=lambda row: int(row[n]))
        all_seqs = [row[n] for row in everything]
        held = holds_covering(conn, storage, org_id, all_seqs)
        if held:
            ids_held = sorted({hold for found in held.values() for hold in found})
            raise ConflictError(f"{len(held)} of the events to erase (the person's, or mentioning them) are under "
                                f"legal hold {', '.join(ids_held)} (seq {_describe(sorted(held))}); release the "
                                "hold first")
        old = [row[n] for row in everything if row[n + 3] is None]
        if old:
            raise ConflictError(f"{len(old)} of the events to erase (the person's, or mentioning them; seq "
                                f"{_describe(old)}) were written in canonical form version 1, whose hash needs "
                                "the values: nothing was erased")
        erased = [(row[n], row[_TIMESTAMP], _checked_commitment(row)) for row in everything]
        # The stats counts by user_email and client_ip move with the values (issue #13): out before, back after.
        rollup.recount(conn, storage, org_id, all_seqs, -1)
        store.overwrite(conn, org_id, erased)
        rollup.recount(conn, storage, org_id, all_seqs, 1)
        if search.reindex(conn, storage, org_id, all_seqs):
            # The old entries' terms out of the index, their pages zeroed. SQLite: a merge of the whole
            # index (~0.3 CPU s per 100,000 entries, docs/benchmarks.md), FTS5 3.40's only way to forget.
            search.merge_all(conn, storage)
        firings = 0  # alert firings grouped by the person's values (their body, and so their notification)
        for firing_id, text in store.firing_bodies(conn, org_id, likes):
            if pattern.search(ascii_lower(text)):
                store.set_firing_body(conn, firing_id, orjson.dumps(_scrub(orjson.loads(text), pattern, ids)).decode())
                firings += 1
        store.forget_query_digests(conn, org_id)
        store.done(conn)
    search.settle(storage, org_id)  # SQLite: the search file's entries rewritten and merged (storage/search.py)
    scrubbed = store.scrub_after(storage.engine)
    selector = "user_email" if user_email is not None else "user_id"
    uuid = audit(
        storage, org_id, "erasure.performed", origin, actor=actor, object_type="erasure",
        log_entry=(f"Erased the personal fields of {len(rows)} events selected by {selector}, and of "
                   f"{len(mentions)} other events mentioning the person: {reason}"),
        payload={"reason": reason, "selector": selector, "events": len(rows), "mentions": len(mentions),
                 "alert_firings": firings,
                 "fields": list(PERSONAL_FIELDS), "first_seq": seqs[0], "last_seq": seqs[-1]},
    )
    return Erasure(len(rows), seqs[0], seqs[-1], PERSONAL_FIELDS, uuid, scrubbed, len(mentions))


_EMAIL, _USER_ID, _TIMESTAMP = (LOG_FIELDS.index(name) for name in ("user_email", "user_id", "timestamp"))
