"""Read replica settings and the ways a replica is passed over (storage/replicas.py, issue #14), against the
test session's PostgreSQL: nothing listening on a port, and a server that is not a standby. The streaming
pair itself is tests/e2e/test_replicas.py."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from auditkeep.settings import Settings
from auditkeep.storage import Storage
from auditkeep.storage.base import UnsupportedDatabaseError
from tests.e2e.server import free_port


def test_read_database_url_needs_a_postgresql_primary() -> None:
    """A SQLite database has no replicas: the setting is refused, not ignored."""
    with pytest.raises(UnsupportedDatabaseError, match="AUDITKEEP_READ_DATABASE_URL"):
        Storage("sqlite:///:memory:", Settings(read_database_url="postgresql://x@127.0.0.1/y"))


@pytest.mark.postgres
def test_without_replicas_reads_stay_on_the_database(postgres_url: str) -> None:
    storage = Storage(postgres_url, Settings())
    try:
        assert storage.replicas is None and storage.for_read() is storage
    finally:
        storage.dispose()


@pytest.mark.postgres
def test_unreachable_replicas_are_skipped_then_asked_again(postgres_url: str) -> None:
    """Two replicas (comma-separated) with nothing listening: the primary serves the read, each failure is
    counted, and the next read within RETRY_AFTER_S does not ask them again."""
    down = [f"postgresql://postgres@127.0.0.1:{free_port()}/postgres" for _ in range(2)]
    storage = Storage(postgres_url, Settings(read_database_url=" , ".join(down)))
    try:
        replicas = storage.replicas
        assert replicas is not None and [r.url for r in replicas.replicas] == down
        assert storage.for_read() is storage
        assert replicas.counts == {"failed:0": 1, "failed:1": 1, "primary": 1}
        assert storage.for_read() is storage
        assert replicas.counts == {"failed:0": 1, "failed:1": 1, "skipped:0": 1, "skipped:1": 1, "primary": 2}
        for i in range(2):
            replicas._skip_until[i] = 0.0  # RETRY_AFTER_S passed
        assert storage.for_read() is storage
        assert replicas.counts["failed:0"] == 2 and replicas.counts["failed:1"] == 2
    finally:
        storage.dispose()


@pytest.mark.postgres
def test_a_server_not_in_recovery_is_not_taken_for_a_replica(postgres_url: str) -> None:
    """Pointed at a primary (say, a promoted standby), reads go to the primary: a server that is not a standby
    cannot say what it has replayed."""
    storage = Storage(postgres_url, Settings(read_database_url=postgres_url))
    try:
        with storage.lookup() as conn:
            assert conn.execute(sa.text("SELECT pg_is_in_recovery()")).scalar_one() is False
        assert storage.for_read() is storage
        assert storage.replicas is not None and storage.replicas.counts == {"not_standby:0": 1, "primary": 1}
    finally:
        storage.dispose()
