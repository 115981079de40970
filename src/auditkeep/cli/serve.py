"""`auditkeep serve` and `auditkeep migrate`."""

from __future__ import annotations

from typing import Annotated

import typer

from auditkeep.cli._common import one_line_errors, store

WORKER_HEALTHCHECK_S = 60


def register(app: typer.Typer) -> None:
    """Add the commands to the root app."""

    @app.command("migrate")
    @one_line_errors
    def migrate() -> None:
        """Bring the database schema up to date (every command also does this first)."""
        with store() as storage:
            typer.echo(f"schema up to date ({storage.dialect})")

    @app.command("serve")
    @one_line_errors
    def serve(
        host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
        workers: Annotated[int, typer.Option(help="Worker processes.", min=1)] = 1,
    ) -> None:
        """Serve the API (and console) with uvicorn.  Example: auditkeep serve --workers 2"""
        import uvicorn

        from auditkeep.api.request_limits import BoundedHttpToolsProtocol
        from auditkeep.logs import uvicorn_log_config
        from auditkeep.settings import Settings

        with store():  # migrate once here, before any worker starts
            pass
        settings = Settings()
        uvicorn.run(
            "auditkeep.api.app:create_server_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            proxy_headers=False,  # X-Forwarded-For is judged by AUDITKEEP_TRUSTED_PROXIES instead
            server_header=False,
            # httptools, with the request line and headers bounded (AUDITKEEP_MAX_HEADER_BYTES → 431): uvicorn's
            # own httptools protocol bounds neither, and h11's bound answers 400 (api/request_limits.py).
            http=BoundedHttpToolsProtocol,
            log_config=uvicorn_log_config(settings.log_level),
            timeout_graceful_shutdown=settings.shutdown_grace,
            # uvicorn kills a worker that does not answer its supervisor's ping within this many seconds,
            # from the moment it is spawned. Its default, 5, is less than a spawned worker takes to import
            # before it can answer on a busy 2-core machine (load ~15: every worker of `--workers 2` was
            # killed and respawned forever, so the server never started; tests/e2e/test_faults.py).
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
        )
