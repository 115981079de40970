"""The filters of GET /api/v1/audit_logs as command-line options, declared once for `auditkeep logs` and
`auditkeep evidence`, so the two take exactly the same ones."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass
from ipaddress import ip_network
from typing import Annotated, Any, TypeVar

import typer

from auditkeep.cli._common import fail
from auditkeep.storage.queries import LogFilters

R = TypeVar("R")

# The API's parameter name -> the option. Typer reads options from a command's signature, so they are
# spliced into it by `filter_options` rather than repeated in each command's parameter list.
_OPTIONS: dict[str, Any] = {
    "action": Annotated[str | None, typer.Option("--action", help="Exact action, or a prefix ending in * "
                                                                  "(api_key.*).")],
    "user_email": Annotated[str | None, typer.Option("--user-email")],
    "user_id": Annotated[int | None, typer.Option("--user-id")],
    "object_type": Annotated[str | None, typer.Option("--object-type")],
    "object_id": Annotated[int | None, typer.Option("--object-id")],
    "source": Annotated[str | None, typer.Option("--source")],
    "status": Annotated[str | None, typer.Option("--status")],
    "request_type": Annotated[str | None, typer.Option("--request-type")],
    "is_support_user": Annotated[bool | None, typer.Option("--support-user/--no-support-user",
                                                           help="Only support staff's events (or only others').")],
    "client_ip": Annotated[str | None, typer.Option("--client-ip", help="An address or a CIDR range.")],
    "q": Annotated[str | None, typer.Option("--q", help="Case-insensitive text in log_entry or url.")],
}


@dataclass(frozen=True, slots=True)
class FilterOptions:
    """The filter options as given (None: not given), under the API's parameter names."""

    action: str | None = None
    user_email: str | None = None
    user_id: int | None = None
    object_type: str | None = None
    object_id: int | None = None
    source: str | None = None
    status: str | None = None
    request_type: str | None = None
    is_support_user: bool | None = None
    client_ip: str | None = None
    q: str | None = None

    def given(self) -> dict[str, Any]:
        """The filters given, by parameter name, as typed values (the SDK's `Filters`)."""
        return {name: value for name, value in asdict(self).items() if value is not None}

    def as_sent(self) -> dict[str, str]:
        """The filters given as the API would see them in a query string (booleans as true/false)."""
        return {name: str(value).lower() if isinstance(value, bool) else str(value)
                for name, value in self.given().items()}

    def log_filters(self) -> LogFilters:
        """The storage filters (exit 2 for a --client-ip that is not an address or CIDR range)."""
        action, prefix = self.action, None
        if self.action is not None and self.action.endswith("*"):
            action, prefix = None, self.action[:-1]
        try:
            network = ip_network(self.client_ip.strip(), strict=False) if self.client_ip is not None else None
        except ValueError:
            raise fail(f"--client-ip {self.client_ip!r} is not an address or CIDR range", 2) from None
        return LogFilters(
            action=action, action_prefix=prefix, user_email=self.user_email, user_id=self.user_id,
            object_type=self.object_type, object_id=self.object_id, source=self.source, status=self.status,
            request_type=self.request_type, is_support_user=self.is_support_user, client_ip=network, q=self.q)


def filter_options(command: Callable[..., R]) -> Callable[..., R]:
    """Give `command` the filter options in place of its keyword-only `filters: FilterOptions` parameter,
    which receives them as one FilterOptions.

    Example:
        @app.command("logs")
        @filter_options
        def logs(*, url: str, filters: FilterOptions) -> None: ...
    """
    signature = inspect.signature(command, eval_str=True)
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        if parameter.name == "filters":
            parameters += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=option)
                           for name, option in _OPTIONS.items()]
        else:
            parameters.append(parameter)

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        filters = FilterOptions(**{name: kwargs.pop(name) for name in _OPTIONS})
        return command(*args, filters=filters, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper
