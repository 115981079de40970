"""Where the client finds its key and URL: arguments, else AUDITKEEP_*, else DATAFOLD_*."""

from __future__ import annotations

import httpx
import pytest

from auditkeep.client import AsyncClient, Client, ConfigurationError

ENV = ("AUDITKEEP_API_KEY", "AUDITKEEP_URL", "DATAFOLD_API_KEY", "DATAFOLD_HOST")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def seen_by_service(api_key: str | None = None, base_url: str | None = None) -> tuple[str, str]:
    """(Authorization header, URL) of the request a Client built with these arguments sends."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"logs": []})

    with Client(api_key, base_url, transport=httpx.MockTransport(handler)) as client:
        client.get_audit_logs()
    return seen[0].headers["Authorization"], str(seen[0].url)


def test_arguments_win_over_every_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        is_url = "URL" in name or "HOST" in name
        monkeypatch.setenv(name, f"http://from-{name.lower()}.test" if is_url else name)
    assert seen_by_service("arg-key", "http://arg.test") == ("Key arg-key", "http://arg.test/api/v1/audit_logs")


def test_auditkeep_variables_win_over_datafold_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDITKEEP_API_KEY", "ak-key")
    monkeypatch.setenv("AUDITKEEP_URL", "http://ak.test/")
    monkeypatch.setenv("DATAFOLD_API_KEY", "df-key")
    monkeypatch.setenv("DATAFOLD_HOST", "http://df.test")
    assert seen_by_service() == ("Key ak-key", "http://ak.test/api/v1/audit_logs")


def test_datafold_variables_are_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAFOLD_API_KEY", "df-key")
    monkeypatch.setenv("DATAFOLD_HOST", "app.datafold.test")  # a bare host means https
    assert seen_by_service() == ("Key df-key", "https://app.datafold.test/api/v1/audit_logs")


def test_key_and_url_may_come_from_different_places(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAFOLD_API_KEY", "df-key")
    assert seen_by_service(base_url="http://arg.test") == ("Key df-key", "http://arg.test/api/v1/audit_logs")


def test_a_base_url_with_a_path_prefix_is_kept() -> None:
    assert seen_by_service("k", "http://proxy.test/audit")[1] == "http://proxy.test/audit/api/v1/audit_logs"


@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_no_key_is_a_clear_error(cls: type[Client | AsyncClient], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDITKEEP_URL", "http://ak.test")
    with pytest.raises(ConfigurationError, match="AUDITKEEP_API_KEY"):
        cls()


def test_no_url_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDITKEEP_API_KEY", "k")
    with pytest.raises(ConfigurationError, match="AUDITKEEP_URL"):
        Client()


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDITKEEP_API_KEY", "")
    monkeypatch.setenv("DATAFOLD_API_KEY", "df-key")
    monkeypatch.setenv("AUDITKEEP_URL", "http://ak.test")
    assert seen_by_service()[0] == "Key df-key"


def test_the_key_never_appears_in_repr() -> None:
    with Client("secret-key-123", "http://ak.test") as client:
        assert "secret-key-123" not in repr(client)
