"""`auditkeep backup`: an online copy of a SQLite database that `auditkeep verify` accepts; PostgreSQL refused."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditkeep.cli import app
from auditkeep.cli.backup import POSTGRES_REFUSAL
from auditkeep.settings import Settings, get_settings
from auditkeep.storage import Storage
from auditkeep.storage.events import get_head, iter_chain
from tests.conftest import make_tenant
from tests.integrity_db._tamper import seed


@pytest.fixture
def cli(storage: Storage, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("AUDITKEEP_DATABASE_URL", storage.url)
    monkeypatch.setenv("AUDITKEEP_SIGNING_KEY_PATH", str(settings.signing_key_path))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def _use(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("AUDITKEEP_DATABASE_URL", url)
    get_settings.cache_clear()


@pytest.mark.sqlite_only
def test_backup_while_ingesting_is_a_verifiable_snapshot(cli: CliRunner, storage: Storage, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread ingests throughout; the copy verifies for every organization, and each organization's events
    in it are exactly the source's seq 1..N with the source's hash at N (N printed by the command)."""
    busy, quiet = make_tenant(storage), make_tenant(storage)
    seed(storage, quiet.org.id, 7)
    stop = threading.Event()
    errors: list[BaseException] = []
    batches = [0]

    def ingest() -> None:
        try:
            while not stop.is_set():
                seed(storage, busy.org.id, 25, start=batches[0] * 25)
                batches[0] += 1
        except BaseException as exc:  # handed to the test thread, which fails with it
            errors.append(exc)

    writer = threading.Thread(target=ingest)
    writer.start()
    try:
        while batches[0] < 3 and writer.is_alive():
            stop.wait(0.01)
        before = batches[0]
        result = cli.invoke(app, ["backup", str(tmp_path / "copy.db")])
        while batches[0] < before + 3 and writer.is_alive():
            stop.wait(0.01)
    finally:
        stop.set()
        writer.join()
    assert errors == []
    assert result.exit_code == 0, (result.stdout, result.stderr)

    printed = {line.split("\t")[0]: line.split("\t")[1:] for line in result.stdout.splitlines()[:-1]}
    size = (tmp_path / "copy.db").stat().st_size
    assert result.stdout.splitlines()[-1] == f"wrote {tmp_path / 'copy.db'} ({size} bytes)"
    with closing(sqlite3.connect(tmp_path / "copy.db")) as copy:
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        for tenant in (busy, quiet):
            seq = int(printed[tenant.org.name][0].removeprefix("seq "))
            source = [(e["seq"], e["hash"]) for e in iter_chain(storage, tenant.org.id, upto_seq=seq)]
            copied = copy.execute("SELECT seq, hash FROM events WHERE org_id = ? ORDER BY seq",
                                  (tenant.org.id,)).fetchall()
            assert copied == source and len(copied) == seq
            assert printed[tenant.org.name][1] == f"chain head {source[-1][1]}"
            assert copy.execute("SELECT seq, hash FROM chain_heads WHERE org_id = ?",
                                (tenant.org.id,)).fetchone() == source[-1]
    copy_seq = int(printed[busy.org.name][0].removeprefix("seq "))
    assert 3 * 25 <= copy_seq < get_head(storage, busy.org.id).seq  # mid-stream: ingest went on past it

    backups = [e for e in iter_chain(storage, quiet.org.id) if e["action"] == "audit_logs.backup"]
    assert [(e["source"], e["payload"]["seq"], e["payload"]["output"]) for e in backups] == [
        ("cli", 7, str(tmp_path / "copy.db"))]

    # Every organization of the session's database is in the copy; other tests tamper with theirs on purpose.
    _use(monkeypatch, f"sqlite:///{tmp_path / 'copy.db'}")
    for name in (busy.org.name, quiet.org.name):
        verified = cli.invoke(app, ["verify", "--org", name])
        assert verified.exit_code == 0, (name, verified.stdout, verified.stderr)
        assert verified.stdout.startswith("OK: the log verifies")


@pytest.mark.sqlite_only
def test_backup_never_overwrites(cli: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "copy.db").write_bytes(b"keep me")
    result = cli.invoke(app, ["backup", str(tmp_path / "copy.db")])
    assert result.exit_code == 1
    assert result.stderr == f"error: {tmp_path / 'copy.db'} already exists: a backup never overwrites a file\n"
    assert (tmp_path / "copy.db").read_bytes() == b"keep me"


def test_backup_refuses_postgresql_pointing_to_pg_dump(postgres_url: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, postgres_url)
    try:
        result = CliRunner().invoke(app, ["backup", str(tmp_path / "copy.db")])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert result.stderr == f"error: {POSTGRES_REFUSAL}\n"
    assert POSTGRES_REFUSAL == ('auditkeep backup copies SQLite databases only; back up PostgreSQL with pg_dump '
                                '(docs/production.md, "Backups")')
    assert not (tmp_path / "copy.db").exists()
