"""What the CLI tests share: a CliRunner whose commands open the session's database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from auditkeep.settings import get_settings
from auditkeep.storage import Storage


@pytest.fixture
def cli(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """A CliRunner; AUDITKEEP_DATABASE_URL points at the test storage, settings read afresh."""
    monkeypatch.setenv("AUDITKEEP_DATABASE_URL", storage.url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()
