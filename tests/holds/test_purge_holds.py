"""Retention with legal holds and per-action rules (issue #12): purge deletes a prefix of the chain that
ends before the first held event and before the first event its action's rule keeps; verify still holds."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from typer.testing import CliRunner

from auditkeep.cli import app
from auditkeep.holds import create
from auditkeep.ingest.selfaudit import Origin
from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.schemas.holds import HoldCreate
from auditkeep.storage import Storage
from auditkeep.storage.events import iter_chain
from auditkeep.storage.retention import cutoff_for, purge_org
from tests.conftest import Tenant, make_tenant

pytest_plugins = ["tests.cli.conftest"]

NOW = datetime.now(UTC)


def run(cli: CliRunner, *args: str, code: int = 0) -> str:
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout + result.stderr


def store(storage: Storage, tenant: Tenant, actions: list[str], *, received_days_ago: float,
          email: str = "ann@example.com") -> None:
    events = [{"client_ip": "10.0.0.1", "url": f"/{i}", "action": a, "user_email": email}
              for i, a in enumerate(actions)]
    received = NOW - timedelta(days=received_days_ago)
    record_events(storage, tenant.org.id, parse_events(orjson.dumps(events), received), received_at=received)


def seqs(storage: Storage, tenant: Tenant) -> list[int]:
    return [e["seq"] for e in iter_chain(storage, tenant.org.id)]


def purge_line(cli: CliRunner, tenant: Tenant) -> str:
    out = run(cli, "purge", "--org", tenant.org.name)
    (line,) = [ln for ln in out.splitlines() if ln.startswith(f"{tenant.org.name}: ")]
    return line.removeprefix(f"{tenant.org.name}: ")


def purges(storage: Storage, tenant: Tenant) -> list[dict[str, Any]]:
    return [e["payload"] for e in iter_chain(storage, tenant.org.id) if e["action"] == "retention.purge"]


def test_purge_stops_before_the_first_held_event_until_the_hold_is_released(
    cli: CliRunner, storage: Storage, tenant: Tenant
) -> None:
    store(storage, tenant, ["a.x", "a.x"], received_days_ago=200, email="bob@example.com")  # seq 1-2
    store(storage, tenant, ["a.x"], received_days_ago=190, email="Ann@Example.com")  # seq 3: held
    store(storage, tenant, ["a.x"], received_days_ago=180, email="bob@example.com")  # seq 4
    hold_id = run(cli, "holds", "create", "--org", tenant.org.name, "--reason", "Case 7",
                  "--user-email", "ann@EXAMPLE.com").strip()  # seq 5
    run(cli, "orgs", "set-retention", tenant.org.name, "100")  # seq 6
    line = purge_line(cli, tenant)
    assert re.fullmatch(rf"deleted 2 events \(seq 1-2\) received before \S+; kept 4 events from seq 3: kept "
                        rf"because hold {hold_id} \(Case 7\) covers seq 3", line), line
    assert seqs(storage, tenant)[:2] == [3, 4]
    (first,) = purges(storage, tenant)
    assert first["stopped_by"] == {"kind": "hold", "seq": 3, "hold_id": hold_id, "hold_reason": "Case 7"}
    assert "verifies" in run(cli, "verify", "--org", tenant.org.name)
    # Nothing more goes while the hold stands; released, the rest of the old prefix goes.
    assert purge_line(cli, tenant).startswith("deleted no events (none received before ")
    assert seqs(storage, tenant)[0] == 3
    run(cli, "holds", "release", hold_id, "--reason", "Case closed")
    assert purge_line(cli, tenant).startswith("deleted 2 events (seq 3-4) received before ")
    assert seqs(storage, tenant)[0] == 5
    assert "verifies" in run(cli, "verify", "--org", tenant.org.name)


def test_a_hold_by_time_range_and_object_and_another_organizations_hold(
    cli: CliRunner, storage: Storage, tenant: Tenant
) -> None:
    """A hold stops only its own organization's purge, and only at events matching all its criteria."""
    events = [{"client_ip": "10.0.0.1", "url": f"/{i}", "action": "report.view", "object_type": "report",
               "object_id": i, "timestamp": f"2025-0{i}-15T00:00:00Z"} for i in (1, 2, 3, 4)]
    received = NOW - timedelta(days=300)
    record_events(storage, tenant.org.id, parse_events(orjson.dumps(events), received), received_at=received)
    other = make_tenant(storage)
    run(cli, "holds", "create", "--org", other.org.name, "--reason", "theirs")
    # object 2 is outside the range, object 3 inside: the hold covers seq 3 only.
    hold_id = run(cli, "holds", "create", "--org", tenant.org.name, "--reason", "Audit 2025",
                  "--object-type", "report", "--start", "2025-02-20", "--end", "2025-04-01").strip()
    run(cli, "holds", "create", "--org", tenant.org.name, "--reason", "other type", "--object-type", "dataset")
    run(cli, "orgs", "set-retention", tenant.org.name, "30")
    assert purge_line(cli, tenant).endswith(f"kept because hold {hold_id} (Audit 2025) covers seq 3")
    assert seqs(storage, tenant)[0] == 3


def test_per_action_rules_the_most_specific_wins_and_stops_the_prefix(
    cli: CliRunner, storage: Storage, tenant: Tenant
) -> None:
    name = tenant.org.name
    store(storage, tenant, ["debug.trace", "debug.trace"], received_days_ago=20)  # seq 1-2: past 7 days
    store(storage, tenant, ["debug.keep"], received_days_ago=20)  # seq 3: exact rule keeps it forever
    store(storage, tenant, ["debug.trace"], received_days_ago=20)  # seq 4
    run(cli, "orgs", "set-retention", name, "365")  # seq 5 (the default)
    assert run(cli, "orgs", "set-retention", name, "7", "--action", "debug.*") == (
        f"retention of {name} for debug.*: 7 days\n")  # seq 6
    run(cli, "orgs", "set-retention", name, "forever", "--action", "debug.keep")  # seq 7
    assert run(cli, "orgs", "retention", name) == "*\t365 days\ndebug.*\t7 days\ndebug.keep\tforever\n"
    line = purge_line(cli, tenant)
    assert line == ("deleted 2 events (seq 1-2), each past its retention rule; kept 5 events from seq 3: seq 3 "
                    "(action 'debug.keep') is kept forever by rule 'debug.keep' (forever)")
    (payload,) = purges(storage, tenant)
    assert payload["stopped_by"]["rule"] == "debug.keep" and payload["rules"][0] == {
        "action": "*", "retention_days": 365, "min_days": None}
    # Without the exact rule, the prefix runs on through seq 4 and stops at the default rule's event.
    assert run(cli, "orgs", "set-retention", name, "-", "--action", "debug.keep", "--remove") == (
        f"retention of {name} for debug.keep: rule removed\n")
    line = purge_line(cli, tenant)
    assert re.fullmatch(r"deleted 2 events \(seq 3-4\), each past its retention rule; kept \d+ events from seq 5: "
                        r"seq 5 \(action 'organization.retention_change'\) is received \S+, kept by the rule "
                        r"'\*' \(365 days\)", line), line
    assert "verifies" in run(cli, "verify", "--org", name)
    changes = [e for e in iter_chain(storage, tenant.org.id) if e["action"] == "organization.retention_change"]
    assert {k: changes[1]["payload"][k] for k in ("action", "retention_days", "min_days", "previous")} == {
        "action": "debug.*", "retention_days": 7, "min_days": None, "previous": None}
    assert changes[-1]["payload"]["removed"] is True


def test_a_broad_minimum_is_a_floor_no_specific_rule_goes_under(
    cli: CliRunner, storage: Storage, tenant: Tenant
) -> None:
    name = tenant.org.name
    store(storage, tenant, ["debug.trace"], received_days_ago=40)  # seq 1: past 7 and the 30-day floor
    store(storage, tenant, ["debug.trace"], received_days_ago=20)  # seq 2: past 7 days, within the floor
    assert run(cli, "orgs", "set-retention", name, "365", "--min-days", "30") == (
        f"retention of {name}: 365 days, at least 30 days\n")
    run(cli, "orgs", "set-retention", name, "7", "--action", "debug.*")
    line = purge_line(cli, tenant)
    assert re.fullmatch(r"deleted 1 events \(seq 1-1\), each past its retention rule; kept \d+ events from seq 2: "
                        r"seq 2 \(action 'debug.trace'\) is received \S+, kept by the minimum of rule '\*' "
                        r"\(365 days, at least 30 days\)", line), line
    assert purges(storage, tenant)[0]["stopped_by"]["by_minimum"] is True
    assert "verifies" in run(cli, "verify", "--org", name)


def test_set_retention_refuses_incoherent_rules(cli: CliRunner, tenant: Tenant) -> None:
    name = tenant.org.name
    assert "more than DAYS" in run(cli, "orgs", "set-retention", name, "30", "--min-days", "90", code=2)
    assert "prefix ending in '*'" in run(cli, "orgs", "set-retention", name, "30", "--action", "a*b*", code=2)
    assert "needs --action" in run(cli, "orgs", "set-retention", name, "-", "--remove", code=2)
    assert "no retention rule" in run(cli, "orgs", "set-retention", name, "-", "--action", "x.*", "--remove", code=1)
    assert "keeps its events forever" in run(cli, "purge", "--org", name, code=1)


def test_remove_goes_without_days_and_everything_else_needs_them(cli: CliRunner, tenant: Tenant) -> None:
    """`--remove` needs no DAYS (a `-` in its place still works, a number is refused rather than ignored);
    without --remove a missing DAYS is a one-line usage error (exit 2) that changes nothing."""
    name = tenant.org.name
    run(cli, "orgs", "set-retention", name, "7", "--action", "debug.*")
    assert run(cli, "orgs", "set-retention", name, "--action", "debug.*", "--remove") == (
        f"retention of {name} for debug.*: rule removed\n")
    run(cli, "orgs", "set-retention", name, "7", "--action", "debug.*")
    assert run(cli, "orgs", "set-retention", name, "-", "--action", "debug.*", "--remove") == (
        f"retention of {name} for debug.*: rule removed\n")
    run(cli, "orgs", "set-retention", name, "7", "--action", "debug.*")
    assert run(cli, "orgs", "set-retention", name, "30", "--action", "debug.*", "--remove", code=2) == (
        "error: --remove takes no DAYS (got '30'): it removes the --action rule\n")
    missing = "error: missing DAYS: how many days to keep the events (or 'forever'); only --remove goes without it\n"
    assert run(cli, "orgs", "set-retention", name, code=2) == missing
    assert run(cli, "orgs", "set-retention", name, "--action", "debug.*", code=2) == missing
    assert run(cli, "orgs", "retention", name) == "*\tforever\ndebug.*\t7 days\n"


def test_a_hold_placed_while_a_purge_runs_keeps_what_it_covers(storage: Storage, tenant: Tenant) -> None:
    """The delete batches check holds again (under the head lock): a hold committed after the purge planned
    its prefix still keeps its events."""
    store(storage, tenant, ["a.x", "a.x"], received_days_ago=200)
    store(storage, tenant, ["a.x", "a.x"], received_days_ago=200, email="late@example.com")  # seq 3-4

    def place_hold(last_seq: int) -> None:
        assert last_seq == 4  # the plan covered all four
        create(storage, tenant.org.id, HoldCreate(reason="late", user_email="late@example.com"),
               origin=Origin(source="api", client_ip="127.0.0.1", url="/"), actor=tenant.admin)

    result = purge_org(storage, tenant.org.id, cutoff_for(100), before_delete=place_hold)
    assert (result.count, result.first_seq, result.last_seq) == (2, 1, 2)
    assert seqs(storage, tenant)[:2] == [3, 4]
