"""The filter options `auditkeep logs` and `auditkeep evidence` share (cli/_filters.py)."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from auditkeep.cli import app
from auditkeep.cli._filters import FilterOptions
from auditkeep.storage.queries import LogFilters

FILTER_OPTIONS = [
    ("action", ["--action"], []), ("user_email", ["--user-email"], []), ("user_id", ["--user-id"], []),
    ("object_type", ["--object-type"], []), ("object_id", ["--object-id"], []), ("source", ["--source"], []),
    ("status", ["--status"], []), ("request_type", ["--request-type"], []),
    ("is_support_user", ["--support-user"], ["--no-support-user"]), ("client_ip", ["--client-ip"], []),
    ("q", ["--q"], []),
]


def _filter_params(name: str) -> list[dict[str, Any]]:
    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    names = {n for n, _, _ in FILTER_OPTIONS}
    return [{"name": p.name, "opts": p.opts, "secondary": p.secondary_opts, "type": p.type_descriptor.annotation,
             "help": getattr(p, "help", None), "default": p.default}
            for p in command.params if p.name in names]


def test_logs_and_evidence_take_the_same_filter_options() -> None:
    """The same eleven options, in the same order, with the same types and help."""
    logs, evidence = _filter_params("logs"), _filter_params("evidence")
    assert [(p["name"], p["opts"], p["secondary"]) for p in logs] == FILTER_OPTIONS
    assert [p["type"] for p in logs] == [str, str, int, str, int, str, str, str, bool, str, str]
    assert evidence == logs
    assert {p["default"] for p in logs} == {None}


def test_the_options_become_the_apis_names_and_storage_filters() -> None:
    """A prefix action, a boolean and an address range, as the SDK, a bundle's manifest and storage want them."""
    options = FilterOptions(action="api_key.*", is_support_user=False, client_ip="10.0.0.0/8", user_id=7)
    assert options.given() == {"action": "api_key.*", "user_id": 7, "is_support_user": False,
                               "client_ip": "10.0.0.0/8"}
    assert options.as_sent() == {"action": "api_key.*", "user_id": "7", "is_support_user": "false",
                                 "client_ip": "10.0.0.0/8"}
    assert options.log_filters() == LogFilters(action_prefix="api_key.", user_id=7, is_support_user=False,
                                               client_ip=ip_network("10.0.0.0/8"))
    assert FilterOptions(action="user.login").log_filters() == LogFilters(action="user.login")


@pytest.mark.parametrize("command", [["evidence", "--org", "nobody", "--output", "x.zip"],
                                     ["logs", "--url", "http://127.0.0.1:9"]])
def test_an_unknown_filter_option_is_refused_by_both(command: list[str]) -> None:
    """Neither command grew an option of its own beside the shared ones."""
    result = CliRunner().invoke(app, [*command, "--colour", "blue"])
    assert result.exit_code == 2
    assert "No such option: --colour" in result.stderr


def test_evidence_refuses_a_client_ip_that_is_no_address_in_one_line(cli: CliRunner) -> None:
    result = cli.invoke(app, ["evidence", "--org", "nobody", "--output", "x.zip", "--client-ip", "nope"])
    assert result.exit_code == 2
    assert result.stderr == "error: --client-ip 'nope' is not an address or CIDR range\n"
