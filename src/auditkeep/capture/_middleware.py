"""What the ASGI and WSGI middlewares share: their options, made into a `Shipper` and an `EventBuilder`."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Generic, TypeVar

from auditkeep.capture._events import Actions, EventBuilder, GetUser
from auditkeep.capture._shipper import Shipper
from auditkeep.client import Client

App = TypeVar("App")


class AuditMiddleware(Generic[App]):
    """The wrapped application, the shipper (given, or made from `client` and `spool_dir`) and the
    event builder; `ASGIAuditMiddleware` and `WSGIAuditMiddleware` add the protocol."""

    def __init__(self, app: App, *, shipper: Shipper | None = None, client: Client | None = None,
                 spool_dir: str | os.PathLike[str] | None = None, get_user: GetUser | None = None,
                 actions: Actions | None = None, source: str = "capture", trusted_proxies: Iterable[str] = (),
                 exclude_paths: Iterable[str] = (), include_query: bool = True) -> None:
        self.app = app
        self.shipper = shipper if shipper is not None else Shipper(client, spool_dir=spool_dir)
        self.builder = EventBuilder(get_user=get_user, actions=actions, source=source,
                                    trusted_proxies=trusted_proxies, exclude_paths=exclude_paths,
                                    include_query=include_query)
