"""The evaluator (issue #13): thresholds, windows, groups, cooldown, its own firings, and restarts, on
both backends; each firing is an `alert.fired` event in the organization's log."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from auditkeep.alerts import notify
from auditkeep.alerts.evaluator import Evaluator
from auditkeep.storage import Storage
from auditkeep.storage import alerts as store
from auditkeep.storage.tables import alert_firings
from tests.alerts.conftest import RULES, fired, ingest, make_rule, settle
from tests.conftest import Tenant


def test_fires_when_count_events_match_within_the_window(app_client: TestClient, tenant: Tenant,
                                                          evaluator: Evaluator) -> None:
    """Two matching events do not fire a rule of three; the third does, naming the first and last seq."""
    make_rule(app_client, tenant, name="exports", filter={"action": "report.*"},
              threshold={"count": 3, "window_seconds": 60})
    first = ingest(app_client, tenant, 2, action="report.export")
    ingest(app_client, tenant, 5, action="user.login")  # not matched
    settle(evaluator)
    assert fired(app_client, tenant) == []
    third = ingest(app_client, tenant, 1, action="report.export")
    settle(evaluator)
    (alert,) = fired(app_client, tenant)
    assert alert["count"] == 3 and alert["last_seq"] == third[0]
    assert alert["first_seq"] == first[0] and alert["group"] == {}
    assert alert["rule"]["name"] == "exports"


def test_events_further_apart_than_the_window_do_not_fire(app_client: TestClient, tenant: Tenant,
                                                          evaluator: Evaluator) -> None:
    """With a 1 s window, two events 1.3 s apart are not a pair; the next one, a moment later, is."""
    make_rule(app_client, tenant, threshold={"count": 2, "window_seconds": 1})
    ingest(app_client, tenant)
    settle(evaluator, 1)
    time.sleep(1.3)
    second = ingest(app_client, tenant)
    settle(evaluator, 1)
    assert fired(app_client, tenant) == []
    third = ingest(app_client, tenant)
    settle(evaluator)
    (alert,) = fired(app_client, tenant)
    assert (alert["first_seq"], alert["last_seq"]) == (second[0], third[0])


def test_group_by_counts_each_group_apart(app_client: TestClient, tenant: Tenant, evaluator: Evaluator) -> None:
    """Grouped by user_email, two events of ann and one of bob fire once, for ann."""
    make_rule(app_client, tenant, threshold={"count": 2, "window_seconds": 60}, group_by=["user_email"])
    ingest(app_client, tenant, user_email="ann@example.com")
    ingest(app_client, tenant, user_email="bob@example.com")
    settle(evaluator)
    assert fired(app_client, tenant) == []
    ingest(app_client, tenant, user_email="ann@example.com")
    settle(evaluator)
    (alert,) = fired(app_client, tenant)
    assert alert["group"] == {"user_email": "ann@example.com"} and alert["count"] == 2


def test_count_one_fires_for_every_event_and_never_for_its_own_firings(
        app_client: TestClient, tenant: Tenant, evaluator: Evaluator) -> None:
    """A rule with count 1 fires once per event, and not for the alert.fired events it recorded, though they
    match its filter too (they come from 127.0.0.1), nor for another rule's."""
    make_rule(app_client, tenant, name="local", filter={"client_ip": "127.0.0.1"})
    make_rule(app_client, tenant, name="fired", filter={"action": "alert.fired"})
    seqs = ingest(app_client, tenant, 3, client_ip="127.0.0.1")
    for _ in range(4):
        settle(evaluator)
    alerts = fired(app_client, tenant)
    assert sorted(a["last_seq"] for a in alerts) == seqs
    assert {a["rule"]["name"] for a in alerts} == {"local"}


def test_cooldown_stops_a_flood(app_client: TestClient, tenant: Tenant, evaluator: Evaluator) -> None:
    """With a cooldown, five events in a row fire once; the next firing after it says how many it held."""
    rule = make_rule(app_client, tenant, cooldown_seconds=1)
    ingest(app_client, tenant, 5)
    settle(evaluator)
    assert len(fired(app_client, tenant)) == 1
    time.sleep(1.1)
    last = ingest(app_client, tenant)
    settle(evaluator)
    alerts = fired(app_client, tenant)
    assert len(alerts) == 2 and alerts[1]["last_seq"] == last[0] and alerts[1]["suppressed"] == 4
    shown = app_client.get(f"{RULES}/{rule['id']}", headers=tenant.headers).json()
    assert shown["last_fired_at"] is not None and shown["evaluated_seq"] >= last[0]


def test_a_restart_in_the_middle_of_a_window_neither_misses_nor_double_counts(
        app_client: TestClient, tenant: Tenant, storage: Storage, evaluator: Evaluator) -> None:
    """Two events counted by one evaluator, which then stops; a new one counts the third and fires once,
    from the first event's seq: the window state survived the restart."""
    make_rule(app_client, tenant, threshold={"count": 3, "window_seconds": 60})
    first = ingest(app_client, tenant, 2)
    settle(evaluator)
    evaluator.stop()
    after = Evaluator(storage, storage.settings)
    try:
        third = ingest(app_client, tenant)
        settle(after)
        settle(after)
    finally:
        after.stop()
    (alert,) = fired(app_client, tenant)
    assert (alert["first_seq"], alert["last_seq"]) == (first[0], third[0])


def test_a_crash_before_the_cursor_is_written_counts_the_batch_again_once(
        app_client: TestClient, tenant: Tenant, storage: Storage, evaluator: Evaluator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An evaluator that dies between counting and writing leaves no trace: the next one (after the lease
    expires) counts the same events from the same state and fires exactly once."""
    make_rule(app_client, tenant, threshold={"count": 2, "window_seconds": 60})
    ingest(app_client, tenant, 2)
    real_advance = store.advance

    class Died(BaseException):
        """The process dying, which no `except Exception` catches."""

    def die(*args: object, **kwargs: object) -> bool:
        raise Died

    monkeypatch.setattr(store, "advance", die)
    with pytest.raises(Died):
        evaluator.run_once()
    monkeypatch.setattr(store, "advance", real_advance)
    assert fired(app_client, tenant) == []
    short = storage.settings.model_copy(update={"alert_lease_seconds": 1.0})
    evaluator.settings = short  # the dead one's lease, taken at 1 s, runs out
    with storage.write() as conn:
        for row in store.list_for_org(conn, tenant.org.id):
            store.update(conn, tenant.org.id, row.id, lease_until=row.created_at)
    after = Evaluator(storage, short)
    try:
        settle(after)
    finally:
        after.stop()
    assert len(fired(app_client, tenant)) == 1


def test_alert_fired_is_recorded_once_however_often_it_is_retried(
        app_client: TestClient, tenant: Tenant, storage: Storage, evaluator: Evaluator) -> None:
    """A firing whose record was written but not marked (a crash between) is not recorded again."""
    make_rule(app_client, tenant)
    ingest(app_client, tenant)
    settle(evaluator)
    with storage.read() as conn:
        (row,) = store.list_for_org(conn, tenant.org.id)
        firing = next(iter(conn.execute(alert_firings.select().where(alert_firings.c.rule_id == row.id))))
    done = store._firing(firing)
    notify.record_fired(storage, [done])
    notify.record_fired(storage, [done])
    assert len(fired(app_client, tenant)) == 1


def test_a_disabled_rule_does_not_count_and_enabling_does_not_alert_on_the_past(
        app_client: TestClient, tenant: Tenant, evaluator: Evaluator) -> None:
    rule = make_rule(app_client, tenant)
    r = app_client.patch(f"{RULES}/{rule['id']}", json={"enabled": False}, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["state"] == "disabled"
    ingest(app_client, tenant, 2)
    settle(evaluator)
    r = app_client.patch(f"{RULES}/{rule['id']}", json={"enabled": True}, headers=tenant.headers)
    assert r.json()["state"] == "enabled"
    settle(evaluator)
    assert fired(app_client, tenant) == []
    seq = ingest(app_client, tenant)
    settle(evaluator)
    assert [a["last_seq"] for a in fired(app_client, tenant)] == seq


def test_changing_what_a_rule_counts_starts_its_window_afresh(app_client: TestClient, tenant: Tenant,
                                                              evaluator: Evaluator) -> None:
    """Events counted under the old threshold do not count toward the new one."""
    rule = make_rule(app_client, tenant, threshold={"count": 2, "window_seconds": 60})
    ingest(app_client, tenant)
    settle(evaluator)
    r = app_client.patch(f"{RULES}/{rule['id']}", json={"threshold": {"count": 2, "window_seconds": 120}},
                         headers=tenant.headers)
    assert r.status_code == 200, r.text
    second = ingest(app_client, tenant)
    settle(evaluator)
    assert fired(app_client, tenant) == []
    third = ingest(app_client, tenant)
    settle(evaluator)
    (alert,) = fired(app_client, tenant)
    assert (alert["first_seq"], alert["last_seq"]) == (second[0], third[0])


def test_an_event_a_client_names_alert_fired_still_counts(app_client: TestClient, tenant: Tenant,
                                                          evaluator: Evaluator) -> None:
    """Only the evaluator's own records are left out (known by uuid): naming an event alert.fired does not
    hide it from a rule."""
    make_rule(app_client, tenant, filter={"client_ip": "198.51.100.7"})
    (seq,) = ingest(app_client, tenant, action="alert.fired", client_ip="198.51.100.7")
    for _ in range(3):
        settle(evaluator)
    alerts = [a for a in fired(app_client, tenant) if a is not None]
    assert [a["last_seq"] for a in alerts] == [seq]


def test_the_built_in_rules_fire_on_what_they_name(app_client: TestClient, tenant: Tenant,
                                                   evaluator: Evaluator) -> None:
    """Support staff access, API key changes and integrity failures each fire on one matching event; five
    failed sign-ins of one account fire the burst rule, four do not."""
    for name in ("support_access", "api_key_changes", "integrity_failed", "failed_signins"):
        assert app_client.post(f"{RULES}/templates/{name}", headers=tenant.headers).status_code == 201
    support = ingest(app_client, tenant, action="datasource.view", is_support_user=True, user_email="s@vendor.test")
    key = ingest(app_client, tenant, action="api_key.revoke")
    broken = ingest(app_client, tenant, action="integrity.verify_failed")
    ingest(app_client, tenant, 4, action="user.login", status="failure", user_email="bob@example.com")
    logins = ingest(app_client, tenant, 5, action="user.login", status="failure", user_email="ann@example.com")
    for _ in range(2):
        settle(evaluator)
    got = {(a["rule"]["name"], a["last_seq"]) for a in fired(app_client, tenant)}
    assert got == {("Support staff access", support[0]), ("API key created or revoked", key[0]),
                   ("Integrity verification failed", broken[0]), ("A burst of failed sign-ins", logins[-1])}


def test_done_firings_are_forgotten_once_every_rule_counted_past_them(
        app_client: TestClient, tenant: Tenant, storage: Storage, evaluator: Evaluator) -> None:
    """The outbox does not grow forever, and forgetting a firing never lets its alert.fired count."""
    make_rule(app_client, tenant, name="a")
    make_rule(app_client, tenant, name="b", filter={"action": "alert.*"})
    ingest(app_client, tenant, 2)
    evaluator.run_once()  # counts them, fires twice, records both alert.fired events after its cursor
    with storage.write() as conn:
        assert store.forget_done_firings(conn) == 0  # their alert.fired events are not counted past yet
    settle(evaluator)  # counts past them (leaving them out as its own)
    with storage.write() as conn:
        assert store.forget_done_firings(conn) == 2
    ingest(app_client, tenant)
    settle(evaluator)
    settle(evaluator)
    assert [a["rule"]["name"] for a in fired(app_client, tenant)] == ["a", "a", "a"]
