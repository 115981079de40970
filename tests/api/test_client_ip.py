"""client_ip of self-audit events: X-Forwarded-For is honoured only from trusted proxies (issue #2)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from auditkeep.api.app import create_app
from auditkeep.settings import Settings
from auditkeep.storage import Storage
from tests.conftest import Tenant

URL = "/api/v1/audit_logs"


def last_read_ip(storage: Storage, settings: Settings, tenant: Tenant, peer: str, xff: str | None) -> str:
    app = create_app(settings.model_copy(update={"database_url": storage.url}), storage=storage)
    headers = {**tenant.headers, **({"X-Forwarded-For": xff} if xff else {})}
    with TestClient(app, client=(peer, 40000)) as client:
        assert client.get(URL, headers=headers).status_code == 200
        logs = client.get(URL, headers=tenant.headers).json()["logs"]
    reads = [log for log in logs if log["action"] == "audit_logs.read"]
    return str(reads[-2]["client_ip"])


@pytest.mark.parametrize(
    ("trusted", "peer", "xff", "expected"),
    [
        ([], "198.51.100.7", "203.0.113.9", "198.51.100.7"),  # no trusted proxies: the header is ignored
        (["10.0.0.0/8"], "10.1.2.3", "203.0.113.9", "203.0.113.9"),  # one trusted hop
        (["10.0.0.0/8"], "10.1.2.3", "203.0.113.9, 10.9.9.9", "203.0.113.9"),  # two trusted hops
        (["10.0.0.0/8"], "10.1.2.3", "6.6.6.6, 203.0.113.9", "203.0.113.9"),  # a forged left part is not believed
        (["10.0.0.0/8"], "198.51.100.7", "203.0.113.9", "198.51.100.7"),  # untrusted peer
        (["10.0.0.0/8"], "10.1.2.3", "not-an-ip", "0.0.0.0"),
    ],
)
def test_forwarded_for_is_believed_only_hop_by_hop_from_trusted_proxies(
    storage: Storage, settings: Settings, tenant: Tenant, trusted: list[str], peer: str, xff: str, expected: str
) -> None:
    networks = Settings(trusted_proxies=",".join(trusted)).trusted_proxies  # parsed as from the environment
    configured = settings.model_copy(update={"trusted_proxies": networks})
    assert last_read_ip(storage, configured, tenant, peer, xff) == expected
