"""The served /openapi.json matches the spec for everything the spec defines (issue #2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

SPEC = Path(__file__).resolve().parents[3] / "shared" / "spec" / "datafold-audit-logs.openapi.yaml"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    if not SPEC.exists():
        pytest.fail(f"the spec is expected beside the repository at {SPEC}")
    data: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    return data


@pytest.fixture(scope="module")
def served(app_client: TestClient) -> dict[str, Any]:
    r = app_client.get("/openapi.json")
    assert r.status_code == 200
    data: dict[str, Any] = r.json()
    return data


def assert_subset(expected: Any, actual: Any, path: str = "$") -> None:
    """Everything in `expected` is in `actual` with the same value; `actual` may add keys."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{path}: missing {key!r}"
            assert_subset(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_subset(e, a, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def test_get_operation_matches(spec: dict[str, Any], served: dict[str, Any]) -> None:
    want = spec["paths"]["/api/v1/audit_logs"]["get"]
    got = served["paths"]["/api/v1/audit_logs"]["get"]
    for key in ("operationId", "summary", "requestBody", "responses"):
        assert_subset(want[key], got[key], f"get.{key}")
    assert "Audit Logs" in got["tags"]


@pytest.mark.parametrize(
    "name", ["ApiDownloadAuditLogs", "ApiGetAuditLogs", "HTTPValidationError", "AuditLogs", "ValidationError"]
)
def test_component_schema_matches(spec: dict[str, Any], served: dict[str, Any], name: str) -> None:
    assert_subset(spec["components"]["schemas"][name], served["components"]["schemas"][name], name)


def test_audit_logs_schema_has_exactly_the_17_properties(spec: dict[str, Any], served: dict[str, Any]) -> None:
    assert set(served["components"]["schemas"]["AuditLogs"]["properties"]) == set(
        spec["components"]["schemas"]["AuditLogs"]["properties"]
    )


def test_api_key_security_scheme_matches(spec: dict[str, Any], served: dict[str, Any]) -> None:
    assert_subset(spec["components"]["securitySchemes"], served["components"]["securitySchemes"])
    assert {"ApiKeyAuth": []} in served["security"]
