"""Migration 0006 (issue #9): keys made before it keep working, unnamed; the ones `auditkeep demo` minted
are named "demo (make run)" from their api_key.create events, so demo can tell them from people's keys."""

from __future__ import annotations

from pathlib import Path

from alembic import command

from auditkeep.auth.keys import DEMO_KEY_NAME
from auditkeep.storage import identity, open_storage
from auditkeep.storage.migrations import _config

T = "2026-11-20T10:00:00.000000Z"


def test_0006_names_the_keys_earlier_demos_minted_and_only_those(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'old.db'}", migrate=False)
    cfg = _config()
    with storage.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
        sql = conn.exec_driver_sql
        sql("INSERT INTO organizations (id, name, created_at) VALUES (1, 'demo', ?)", (T,))
        sql("INSERT INTO users (id, org_id, email, role, is_support, created_at) "
            "VALUES (1, 1, 'admin@demo.example', 'admin', 0, ?)", (T,))
        for key_id, prefix in ((1, "ak_aaaaaaaa"), (2, "ak_bbbbbbbb"), (3, "ak_cccccccc")):
            sql("INSERT INTO api_keys (id, org_id, user_id, prefix, digest, created_at) VALUES (?, 1, 1, ?, ?, ?)",
                (key_id, prefix, str(key_id) * 64, T))
        for seq, key_id, source, entry in (
            (1, 1, "cli", "Demo API key ak_aaaaaaaa… created for admin@demo.example"),
            (2, 2, "web", "API key ak_bbbbbbbb… created for user admin@demo.example in the console"),
            (3, 3, "cli", "API key ak_cccccccc… created for user admin@demo.example"),
        ):
            sql("INSERT INTO events (org_id, seq, event_uuid, timestamp, received_at, action, client_ip, log_entry,"
                " object_id, object_type, source, url, prev_hash, hash) VALUES (1, ?, ?, ?, ?, 'api_key.create',"
                " '127.0.0.1', ?, ?, 'api_key', ?, 'cli:auditkeep demo', ?, ?)",
                (seq, f"00000000-0000-7000-8000-00000000000{seq}", T, T, entry, key_id, source, "0" * 64, "1" * 64))
    storage.migrate()
    try:
        with storage.read() as conn:
            keys = identity.list_keys(conn, identity.get_org(conn, "demo"))
        assert [(k.prefix, k.name, k.expires_at, k.state()) for k in keys] == [
            ("ak_aaaaaaaa", DEMO_KEY_NAME, None, "active"),
            ("ak_bbbbbbbb", "", None, "active"),
            ("ak_cccccccc", "", None, "active"),
        ]
    finally:
        storage.dispose()
