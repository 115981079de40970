"""The console's red banner while the organization's log does not verify (self-watch, issue #13)."""

from __future__ import annotations

from auditkeep.auth.principals import Role
from auditkeep.selfwatch.watcher import Watcher
from auditkeep.storage import Storage
from tests.conftest import Tenant, make_tenant
from tests.integrity_db._tamper import seed, stored_row, tampering, update_columns
from tests.web.conftest import BrowserFactory, People

PAGES = ("/audit-logs", "/api-keys", "/streams")


def test_every_page_shows_the_banner_to_the_organizations_users_until_the_log_verifies(
    storage: Storage, tenant: Tenant, people: People, new_browser: BrowserFactory, password_hash: str
) -> None:
    """A failure puts the banner on every page for every user of that organization (not another's), with
    the seq and kind; once a full verify passes again, it goes."""
    org_id = tenant.org.id
    seed(storage, org_id, 6)
    watcher = Watcher(storage, storage.settings.model_copy(update={"verify_interval": 0.001}), owner="web-test")
    watcher.watch(org_id)
    admin, viewer = new_browser(), new_browser()
    assert admin.sign_in(people.admin.user_email or "").status_code == 303
    assert viewer.sign_in(people.add(Role.VIEWONLY).user_email or "").status_code == 303
    other = People(make_tenant(storage), password_hash)
    outsider = new_browser()
    assert outsider.sign_in(other.admin.user_email or "").status_code == 303
    assert 'id="integrity-banner"' not in admin.get("/audit-logs").text

    with storage.read() as conn:
        original = stored_row(conn, storage, org_id, 3)["action"]
    with tampering(storage) as conn:
        update_columns(conn, storage, org_id, 3, {"action": "document.nothing"})
    watcher.watch(org_id)
    for page in PAGES:
        html = admin.get(page).text
        assert 'id="integrity-banner"' in html, page
        assert "does not verify at seq 3 (hash_mismatch)" in html
    assert 'id="integrity-banner"' in viewer.get("/api-keys").text
    assert 'id="integrity-banner"' not in outsider.get("/audit-logs").text

    with tampering(storage) as conn:
        update_columns(conn, storage, org_id, 3, {"action": original})
    watcher.watch(org_id)
    assert 'id="integrity-banner"' not in admin.get("/audit-logs").text
