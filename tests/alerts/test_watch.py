"""`auditkeep alerts watch` (issue #13): the evaluator as its own process, for deployments that keep it
apart from `auditkeep serve`; SIGTERM ends it cleanly, giving its leases back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fastapi.testclient import TestClient

from auditkeep.alerts.evaluator import Evaluator
from auditkeep.storage import Storage
from auditkeep.storage import alerts as store
from tests.alerts.conftest import fired, ingest, make_rule
from tests.conftest import Tenant
from tests.streams.receivers import webhook_receiver

SECRET = "watch-secret-0123456789abcdef"


def test_watch_fires_and_stops_on_sigterm(app_client: TestClient, tenant: Tenant, storage: Storage,
                                          database_url: str, evaluator: Evaluator) -> None:
    settings = storage.settings
    env = {**os.environ, "AUDITKEEP_DATABASE_URL": database_url,
           "AUDITKEEP_SECRETS_KEY_PATH": str(settings.secrets_key_path),
           "AUDITKEEP_SIGNING_KEY_PATH": str(settings.signing_key_path), "AUDITKEEP_ALERT_POLL_SECONDS": "0.05"}
    with webhook_receiver() as receiver:
        rule = make_rule(app_client, tenant, notify=[{"kind": "webhook", "url": receiver.url, "secret": SECRET}])
        proc = subprocess.Popen([Path(sys.executable).parent / "auditkeep", "alerts", "watch"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            (seq,) = ingest(app_client, tenant)
            deadline = time.monotonic() + 60
            while not receiver.received:
                assert time.monotonic() < deadline and proc.poll() is None, "the watcher never fired"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    assert receiver.received[0].json["alert"]["last_seq"] == seq
    assert [a["last_seq"] for a in fired(app_client, tenant)] == [seq]
    with storage.read() as conn:
        assert store.get(conn, tenant.org.id, rule["id"]).lease_owner is None
