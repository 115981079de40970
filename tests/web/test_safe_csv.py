"""The console's CSV download is the API's bytes, apostrophed cells included (issue #11), on both backends."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from auditkeep.storage.types import format_timestamp
from tests.api.test_hostile_input import HOSTILE_CELLS
from tests.conftest import Tenant
from tests.web.conftest import Browser, People


def test_console_csv_download_is_the_apis_bytes_with_apostrophed_cells(
    tenant: Tenant, people: People, browser: Browser, app_client: TestClient
) -> None:
    now = datetime.now(UTC)
    body = [{"client_ip": "10.0.0.1", "url": "https://app.test/x", "action": "csv.cell",
             "timestamp": format_timestamp(now - timedelta(seconds=len(HOSTILE_CELLS) - n)), **cells}
            for n, cells in enumerate(HOSTILE_CELLS)]
    assert app_client.post("/api/v1/audit_logs", json=body, headers=tenant.headers).status_code == 201
    browser.sign_in(people.admin.name)
    html = browser.get("/audit-logs?action=csv.cell&range=1h").text
    link = re.search(r'href="([^"]+)" download data-export="csv"', html)
    assert link is not None
    r = browser.get(link.group(1).replace("&amp;", "&"))
    assert r.status_code == 200
    api = app_client.get("/api/v1/audit_logs?action=csv.cell&format=csv&order=desc", headers=tenant.headers)
    assert r.content == api.content
    assert r.content.count(b'"\'=HYPERLINK(""http://evil.example"",""click"")"') == 1
    assert r.content.count(b'"\'-1"') == 1 and r.content.count(b'"\'\'quoted already"') == 1
