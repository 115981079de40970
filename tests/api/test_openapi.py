"""The served /openapi.json equals the spec wherever the spec speaks (issues #2 and #9).

The spec is the repository's own copy (spec/, with a note on where it comes from): nothing here reads a
file outside the repository. Schemas are compared key for key, nothing ignored; the operation's only
differences are auditkeep's extensions, each named below.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from tests.conftest import Tenant

SPEC = Path(__file__).resolve().parents[2] / "spec" / "datafold-audit-logs.openapi.yaml"
SEED_SCHEMAS = ["ApiDownloadAuditLogs", "ApiGetAuditLogs", "HTTPValidationError", "AuditLogs", "ValidationError"]
# Formats the GET also serves (format=ndjson|csv or Accept); the spec's application/json stays as it is.
EXTRA_MEDIA_TYPES = {"application/x-ndjson", "text/csv"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    return data


@pytest.fixture(scope="module")
def served(app_client: TestClient) -> dict[str, Any]:
    r = app_client.get("/openapi.json")
    assert r.status_code == 200
    data: dict[str, Any] = r.json()
    return data


def test_get_operation_matches(spec: dict[str, Any], served: dict[str, Any]) -> None:
    """operationId, summary, tags and the request body equal the spec's; responses equal it but for the
    extra media types of the 200."""
    want = spec["paths"]["/api/v1/audit_logs"]["get"]
    got = served["paths"]["/api/v1/audit_logs"]["get"]
    for key in ("operationId", "summary", "tags", "requestBody"):
        assert got[key] == want[key], key
    got_responses = copy.deepcopy(got["responses"])
    extra = {t: got_responses["200"]["content"].pop(t) for t in EXTRA_MEDIA_TYPES}
    assert extra == {t: {} for t in EXTRA_MEDIA_TYPES}
    assert got_responses == want["responses"]


@pytest.mark.parametrize("name", SEED_SCHEMAS)
def test_component_schema_equals_the_spec(spec: dict[str, Any], served: dict[str, Any], name: str) -> None:
    """Each of the spec's schemas is served exactly: no key added (not even `"default": null`), none missing."""
    assert served["components"]["schemas"][name] == spec["components"]["schemas"][name]


def test_api_key_security_scheme_matches(spec: dict[str, Any], served: dict[str, Any]) -> None:
    assert served["components"]["securitySchemes"] == spec["components"]["securitySchemes"]
    assert served["security"] == spec["security"]


def test_every_other_operation_declares_its_auth_and_not_found_errors(served: dict[str, Any]) -> None:
    """Every /api/v1 operation but the spec's GET declares 401 and 403, those naming a resource in their path
    404, with FastAPI's error shape (`HTTPError`); the spec's GET declares only what the spec does."""
    assert served["components"]["schemas"]["HTTPError"] == {
        "description": "What went wrong, in words.", "properties": {"detail": {"title": "Detail", "type": "string"}},
        "required": ["detail"], "title": "HTTPError", "type": "object"}
    shape = {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPError"}}}
    operations = [(method, path, operation) for path, item in served["paths"].items() if path.startswith("/api/v1/")
                  for method, operation in item.items() if (method, path) != ("get", "/api/v1/audit_logs")]
    assert len(operations) >= 25
    for method, path, operation in operations:
        for code in ["401", "403", *(["404"] if "{" in path else [])]:
            assert operation["responses"][code]["content"] == shape, (method, path, code)
    assert sorted(served["paths"]["/api/v1/audit_logs"]["get"]["responses"]) == ["200", "422"]


def test_the_declared_errors_are_what_is_answered(app_client: TestClient, tenant: Tenant) -> None:
    """A stream route's 401 (no key) and 404 (no such stream) bodies are `{"detail": "..."}`."""
    missing = app_client.get("/api/v1/streams/00000000-0000-0000-0000-000000000000", headers=tenant.headers)
    unauthenticated = app_client.get("/api/v1/streams")
    for r, status in ((missing, 404), (unauthenticated, 401)):
        assert r.status_code == status and list(r.json()) == ["detail"] and isinstance(r.json()["detail"], str)
