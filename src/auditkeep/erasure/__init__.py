"""Erasure of a person's personal fields with the chain kept provable (issue #12, docs/integrity.md §13).

Every event of the person (by user_email, ASCII-case-insensitively, or by user_id) loses client_ip, url
(both become "[erased]"), log_entry, payload, referer, user_agent, user_email and user_id, and its
per-event salt; it keeps the salted commitment to them that its canonical form (version 2) holds, so
its hash, the chain, the Merkle tree and every checkpoint still verify. Events under a legal hold are
refused, naming the hold; version 1 events (written before version 2) cannot be erased without breaking
their hash and are refused too. The erasure is recorded as `erasure.performed`, without the values.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from auditkeep.auth.principals import Principal
from auditkeep.errors import ChainBrokenError, ConflictError, NotFoundError
from auditkeep.holds import holds_covering
from auditkeep.ingest.selfaudit import Origin, audit
from auditkeep.integrity.canonical import PERSONAL_FIELDS, canonical_json, commitment_of, core_fields
from auditkeep.schemas.audit_logs import LOG_FIELDS
from auditkeep.storage import Storage
from auditkeep.storage import erasure as store
from auditkeep.storage.events import row_to_log

__all__ = ["Erasure", "erase_person"]


@dataclass(frozen=True, slots=True)
class Erasure:
    """What one erasure did: how many events, which seqs, which fields; `scrubbed` is False when SQLite's
    WAL could not be truncated at once (readers held it; a later checkpoint does it)."""

    events: int
    first_seq: int | None
    last_seq: int | None
    fields: tuple[str, ...]
    event_uuid: str  # the erasure.performed event
    scrubbed: bool


def _describe(seqs: list[int]) -> str:
    shown = ", ".join(str(s) for s in seqs[:10])
    return shown + (f" and {len(seqs) - 10} more" if len(seqs) > 10 else "")


def erase_person(storage: Storage, org_id: int, *, user_email: str | None = None, user_id: int | None = None,
                 reason: str, origin: Origin, actor: Principal | None = None) -> Erasure:
    """Erase the personal fields of every event of one person in `org_id`'s log, all or nothing.

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
    with storage.event_writer(org_id) as writer:  # the head lock: no purge, hold or ingest meanwhile
        conn = writer.conn
        rows = store.person_rows(conn, org_id, user_email=user_email, user_id=user_id)
        if not rows:
            raise NotFoundError("no events of that person are left to erase")
        n = len(LOG_FIELDS)
        seqs = [row[n] for row in rows]
        held = holds_covering(conn, storage, org_id, seqs)
        if held:
            ids = sorted({hold for found in held.values() for hold in found})
            raise ConflictError(f"{len(held)} of the person's events are under legal hold {', '.join(ids)} "
                                f"(seq {_describe(sorted(held))}); release the hold first")
        old = [row[n] for row in rows if row[n + 3] is None]
        if old:
            raise ConflictError(f"{len(old)} of the person's events (seq {_describe(old)}) were written in "
                                "canonical form version 1, whose hash needs the values: nothing was erased")
        erased: list[tuple[int, object, str]] = []
        for row in rows:
            log = row_to_log(row[:n], payload_fragment=True)
            log["personal_salt"] = row[n + 3]
            commitment = commitment_of(log)
            assert commitment is not None
            # Check the event before its values go: afterwards nobody could tell a tampered one.
            fields = core_fields({k: log[k] for k in LOG_FIELDS}, commitment)
            fields["seq"] = row[n]
            digest = hashlib.sha256(bytes.fromhex(row[n + 1]) + canonical_json(fields)).hexdigest()
            if digest != row[n + 2]:
                raise ChainBrokenError(row[n], "hash does not match the event's content; nothing was erased "
                                       "(run auditkeep verify)")
            erased.append((row[n], row[LOG_FIELDS.index("timestamp")], commitment))
        store.overwrite(conn, org_id, erased)
    scrubbed = store.scrub_after(storage.engine)
    selector = "user_email" if user_email is not None else "user_id"
    uuid = audit(
        storage, org_id, "erasure.performed", origin, actor=actor, object_type="erasure",
        log_entry=f"Erased the personal fields of {len(erased)} events selected by {selector}: {reason}",
        payload={"reason": reason, "selector": selector, "events": len(erased), "fields": list(PERSONAL_FIELDS),
                 "first_seq": seqs[0], "last_seq": seqs[-1]},
    )
    return Erasure(len(erased), seqs[0], seqs[-1], PERSONAL_FIELDS, uuid, scrubbed)
