"""The evaluator: take the lease of each enabled rule, count the events after its cursor, queue what
fires, and work off the firings' notifications (alerts/notify.py).

Exactly once per event: the cursor (`evaluated_seq`), the window state and the firings it completes are
written in one transaction, and only while this node still holds the lease and nothing changed the rule
meanwhile; a batch counted but not written (a crash between) is counted again from the same state.

A rule never counts the `alert.fired` events the evaluator recorded, whatever its filter says: a rule
matching its own firings (or another rule's) would feed itself forever. They are known by their uuids in
the firings' outbox, not by their action, so an event a client sends with action `alert.fired` still
counts: naming an event so cannot hide it from the rules.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.exc import DatabaseError

from auditkeep.alerts import notify, windows
from auditkeep.background import Loop
from auditkeep.ids import new_event_uuid
from auditkeep.settings import Settings
from auditkeep.storage import Storage, identity
from auditkeep.storage import alerts as store
from auditkeep.storage import streams as stream_rows
from auditkeep.storage.types import format_timestamp
from auditkeep.streams import secrets
from auditkeep.streams.forwarder import BACKOFF_FIRST, default_owner, log_filters

log = logging.getLogger("auditkeep.alerts")

OWN_FIRINGS = "alert.fired"
BATCH = 1000
# How long one rule keeps the evaluator while it has a backlog, before the others get their turn.
TURN_SECONDS = 2.0
# How often done firings are forgotten (store.forget_done_firings), so the outbox does not grow forever.
FORGET_EVERY_SECONDS = 60.0


def unsealed_channels(key: bytes, row: store.RuleRow) -> list[dict[str, Any]]:
    """The rule's channels with their secrets, in order."""
    sealed = secrets.unseal(key, row.id, row.sealed_secrets)
    return [{**channel, **sealed.get(str(i), {})} for i, channel in enumerate(row.notify)]


def _group(row: store.RuleRow, log_: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    group = {f: log_.get(f) for f in row.group_by}
    return orjson.dumps(group, option=orjson.OPT_SORT_KEYS).decode(), group


class Evaluator(Loop):
    """Evaluates every enabled rule of every organization in this database; several may run at once."""

    thread_name = "auditkeep-alerts"
    log = log

    def __init__(self, storage: Storage, settings: Settings, owner: str | None = None) -> None:
        self.storage = storage
        self.settings = settings
        self.owner = owner or default_owner()
        self.backoff_first = BACKOFF_FIRST  # tests shorten it
        self._key: bytes | None = None
        self._org_names: dict[int, str] = {}
        self._held: set[str] = set()
        self._forget_at = 0.0  # time.monotonic() of the next forget_done_firings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """One pass over the enabled rules; the number of events counted."""
        if time.monotonic() >= self._forget_at:
            with self.storage.write() as conn:
                store.forget_done_firings(conn)
            self._forget_at = time.monotonic() + FORGET_EVERY_SECONDS
        with self.storage.read() as conn:
            rules = store.due(conn, datetime.now(UTC), self.owner)
        counted = 0
        for row in rules:
            if self._stop.is_set():
                break
            try:
                counted += self._serve(row.id, row.org_id)
            except (DatabaseError, OSError):
                raise  # the database or the machine: the pass stops and run_forever retries it
            except Exception as exc:  # one rule that cannot be served must not stop the others
                log.exception("alert rule cannot be evaluated", extra={"rule_id": row.id, "org_id": row.org_id})
                with self.storage.write() as conn:
                    store.update(conn, row.org_id, row.id, last_error=f"cannot evaluate: {type(exc).__name__}: {exc}")
        return counted

    def _serve(self, rule_id: str, org_id: int) -> int:
        now = datetime.now(UTC)
        with self.storage.write() as conn:
            if not store.acquire(conn, rule_id, self.owner, now, self.settings.alert_lease_seconds):
                return 0
        self._held.add(rule_id)
        counted = 0
        turn_ends = now + timedelta(seconds=TURN_SECONDS)
        with self.storage.read() as conn:
            start = row = store.get(conn, org_id, rule_id)
        # The row (and its window state, which can be large: up to count - 1 events a group) is read once a
        # turn, carried from batch to batch, and written once at the turn's end with the firings found,
        # in one transaction that lands only if nothing changed the rule meanwhile; a crash before it
        # counts the turn's events again from the state before it. Reading and writing it every batch of
        # 1,000 took 80% of the time of a rule with 20,000 groups (bench/alerts_bench.py).
        firings: list[store.Firing] = []
        while row.enabled and not self._stop.is_set():
            step = self._count(row)
            if step is None:
                break
            counted, row = counted + step[0], step[1]
            firings += step[2]
            if datetime.now(UTC) >= turn_ends or len(firings) >= BATCH:
                self._backlog = True  # stopped before catching up: the next pass goes on at once (background.py)
                break
        if row.evaluated_seq > start.evaluated_seq:
            with self.storage.write() as conn:
                if not store.advance(conn, start, self.owner, row.evaluated_seq, state=row.window_state,
                                     firings=firings):
                    return 0  # changed or re-leased meanwhile: the next pass starts afresh
            for f in firings:
                log.info("alert fired", extra={"rule_id": row.id, "org_id": row.org_id, "count": f.body["count"],
                                               "first_seq": f.body["first_seq"], "last_seq": f.body["last_seq"]})
        with self.storage.read() as conn:
            row = store.get(conn, org_id, rule_id, with_state=False)
        if row.enabled and row.lease_owner == self.owner:  # disabling a rule stops its retries too
            if self._key is None:
                self._key = secrets.load_key(self.settings.secrets_key_path)
            notify.work_off(self.storage, self.settings, row, unsealed_channels(self._key, row),
                            backoff_first=self.backoff_first)
        return counted

    def _count(self, row: store.RuleRow) -> tuple[int, store.RuleRow, list[store.Firing]] | None:
        """Count the next batch after the cursor (nothing written): the number of matching events, the rule
        with its cursor and state moved, and what fired; None when caught up."""
        found = stream_rows.next_batch(self.storage, row.org_id, row.evaluated_seq, log_filters(row.filter), BATCH)
        if found.through_seq <= row.evaluated_seq:
            return None
        with self.storage.read() as conn:
            received = stream_rows.received_at(conn, row.org_id, [seq for _, seq, _ in found.rows])
        parsed = [(orjson.loads(text), seq, uuid) for text, seq, uuid in found.rows]
        with self.storage.read() as conn:
            own = store.recorded_firings(conn, row.org_id, [u for e, _, u in parsed if e.get("action") == OWN_FIRINGS])
        state: dict[str, Any] = row.window_state  # changed in place: this copy is dropped if advance fails
        fired: list[windows.Fired] = []
        counted = 0
        at = 0.0
        for event, seq, uuid in parsed:
            if uuid in own:
                continue
            counted += 1
            key, group = _group(row, event)
            at = received[seq].timestamp()
            hit = windows.observe(state, count=row.threshold_count, window=row.window_seconds,
                                  cooldown=row.cooldown_seconds, key=key, group=group, seq=seq, at=at)
            if hit is not None:
                fired.append(hit)
        if at:
            windows.prune(state, at=at, window=row.window_seconds)
        return (counted, replace(row, evaluated_seq=found.through_seq, window_state=state),
                [self._firing(row, hit) for hit in fired])

    def _firing(self, row: store.RuleRow, hit: windows.Fired) -> store.Firing:
        org_name = self._org_names.get(row.org_id)
        if org_name is None:
            with self.storage.read() as conn:
                org_name = self._org_names[row.org_id] = identity.get_org_by_id(conn, row.org_id).name
        now = datetime.now(UTC)
        firing_id, event_uuid = new_event_uuid(), new_event_uuid()
        body = {
            "id": firing_id, "organization": org_name, "rule": {"id": row.id, "name": row.name},
            "count": hit.count, "first_seq": hit.first_seq, "last_seq": hit.last_seq, "group": hit.group,
            "suppressed": hit.suppressed, "event_uuid": event_uuid, "fired_at": format_timestamp(now),
            "window": {"start": format_timestamp(datetime.fromtimestamp(hit.first_at, UTC)),
                       "end": format_timestamp(datetime.fromtimestamp(hit.last_at, UTC))},
        }
        return store.Firing(id=firing_id, org_id=row.org_id, rule_id=row.id, event_uuid=event_uuid, body=body,
                            recorded=False, pending=list(range(len(row.notify))), attempts=0,
                            next_attempt_at=None, last_error=None, created_at=now, done_at=None)

    # --- in the background ------------------------------------------------------------------------------

    def rest_seconds(self) -> float:
        return self.settings.alert_poll_seconds

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the rule in hand and give the leases back."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if not self._held:
            return  # nothing to give back: a server with no rules never writes here, even at shutdown
        with self.storage.write() as conn:
            for rule_id in self._held:
                store.release(conn, rule_id, self.owner)
        self._held.clear()
