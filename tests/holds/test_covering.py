"""`holds_covering` (issue #12): which active holds cover which seqs, by every criterion, per organization."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from auditkeep.holds import create, holds_covering, release
from auditkeep.ingest.selfaudit import Origin
from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.schemas.holds import HoldCreate
from auditkeep.storage import Storage
from tests.conftest import Tenant, make_tenant

ORIGIN = Origin(source="api", client_ip="127.0.0.1", url="http://test/api/v1/holds")


def seed(storage: Storage, tenant: Tenant) -> None:
    """seq 1-4: Ann (any case) and Bob, on two reports and a dataset, in 2025 and 2026."""
    events = [
        {"client_ip": "10.0.0.1", "url": "/1", "action": "report.view", "user_email": "ann@example.com",
         "user_id": 7, "object_type": "report", "object_id": 1, "timestamp": "2025-03-01T00:00:00Z"},
        {"client_ip": "10.0.0.1", "url": "/2", "action": "report.view", "user_email": "ANN@Example.com",
         "user_id": 7, "object_type": "report", "object_id": 2, "timestamp": "2026-01-01T00:00:00Z"},
        {"client_ip": "10.0.0.1", "url": "/3", "action": "dataset.edit", "user_email": "bob@example.com",
         "user_id": 8, "object_type": "dataset", "object_id": 1, "timestamp": "2026-02-01T00:00:00Z"},
        {"client_ip": "10.0.0.1", "url": "/4", "action": "report.view", "user_email": "bob@example.com",
         "user_id": 8, "object_type": "report", "object_id": 1, "timestamp": "2026-03-01T00:00:00Z"},
    ]
    record_events(storage, tenant.org.id, parse_events(orjson.dumps(events), datetime.now(UTC)))


def covering(storage: Storage, tenant: Tenant) -> dict[int, list[str]]:
    with storage.read() as conn:
        return holds_covering(conn, storage, tenant.org.id, [1, 2, 3, 4, 99])


def hold(storage: Storage, tenant: Tenant, **criteria: object) -> str:
    return create(storage, tenant.org.id, HoldCreate.model_validate({"reason": "case 1", **criteria}),
                  origin=ORIGIN, actor=tenant.admin).id


def test_each_criterion_alone_and_together(storage: Storage, tenant: Tenant) -> None:
    """An event is covered when it matches every criterion given; user_email in any case."""
    seed(storage, tenant)
    ann = hold(storage, tenant, user_email="Ann@EXAMPLE.com")
    report1 = hold(storage, tenant, object_type="report", object_id=1)
    bob_2026 = hold(storage, tenant, user_id=8, start="2026-02-01T00:00:00Z", end="2026-03-01T00:00:00Z")
    assert covering(storage, tenant) == {1: [ann, report1], 2: [ann], 3: [bob_2026], 4: [report1]}


def test_a_hold_without_criteria_covers_everything_and_release_ends_it(storage: Storage, tenant: Tenant) -> None:
    seed(storage, tenant)
    everything = hold(storage, tenant)
    # The hold's own `hold.create` event is seq 5: covered too, but not asked about.
    assert covering(storage, tenant) == {1: [everything], 2: [everything], 3: [everything], 4: [everything]}
    release(storage, tenant.org.id, everything, "case closed", origin=ORIGIN, actor=tenant.admin)
    assert covering(storage, tenant) == {}


def test_another_organizations_hold_covers_nothing_here(storage: Storage, tenant: Tenant) -> None:
    seed(storage, tenant)
    other = make_tenant(storage)
    seed(storage, other)
    hold(storage, other)
    assert covering(storage, tenant) == {}
    assert set(covering(storage, other)) == {1, 2, 3, 4}
