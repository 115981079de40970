"""End to end: two server workers ingesting concurrently, automatic checkpoints on; `auditkeep verify`
then passes and every checkpoint is signed by the one key both workers share (issue #3)."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path

import httpx
import pytest

from auditkeep.integrity.checkpoints import Checkpoint, load_public_key, verify_checkpoint
from tests.e2e.server import Server, cli

pytestmark = pytest.mark.e2e


def test_two_workers_concurrent_ingest_verifies(database_url: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDITKEEP_SIGNING_KEY_PATH", str(tmp_path / "signing-key.pem"))
    org = f"e2e-{secrets.token_hex(4)}"
    cli(database_url, "orgs", "create", org)
    cli(database_url, "users", "create", "--org", org, "--email", "ops@e2e.test", "--role", "admin")
    key = cli(database_url, "keys", "create", "--org", org, "--user", "ops@e2e.test").strip()
    h = {"Authorization": f"Key {key}"}
    server = Server(database_url, workers=2, env={"AUDITKEEP_CHECKPOINT_EVERY_EVENTS": "25"}).start()
    failures: list[str] = []
    try:
        def client(n: int) -> None:
            with httpx.Client(base_url=server.url, headers=h, timeout=30) as c:
                for b in range(10):
                    body = [{"client_ip": "10.0.0.1", "url": f"https://a/{n}/{b}/{i}", "action": "e2e.write"}
                            for i in range(4)]
                    r = c.post("/api/v1/audit_logs", json=body)
                    if r.status_code != 201:
                        failures.append(r.text)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []
        public = load_public_key(httpx.get(f"{server.url}/api/v1/integrity/public_key", headers=h).content)
        listed = httpx.get(f"{server.url}/api/v1/integrity/checkpoints", params={"min_tree_size": 0}, headers=h)
        checkpoints = [Checkpoint.model_validate(c) for c in listed.json()["checkpoints"]]
        assert len(checkpoints) >= 4
        assert all(verify_checkpoint(c, public) for c in checkpoints)
        verified = httpx.get(f"{server.url}/api/v1/integrity/verify", headers=h, timeout=60).json()
        assert verified["ok"] is True, verified
    finally:
        server.stop()
    out = cli(database_url, "verify", "--org", org)  # asserts exit 0
    assert out.startswith("OK")
