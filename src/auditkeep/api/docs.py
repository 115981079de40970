"""/docs: Swagger UI served from the installed packages, so the API reference renders offline (issue #9).

The assets are swagger-ui-dist 5's `swagger-ui-bundle.js` and `swagger-ui.css` (Apache-2.0) as the
fastapi-offline package ships them. (The swagger-ui-bundle package ships swagger-ui 4.15, which renders
OpenAPI 3.0 only; /openapi.json is 3.1.) The page has no inline script: /static/swagger-init.js starts
Swagger UI, so the page's CSP names only this origin.
"""

from __future__ import annotations

from html import escape
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from starlette.responses import HTMLResponse

from auditkeep.web.security import ConsoleStaticFiles

ASSETS_URL = "/docs/assets"
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))

# Swagger UI fetches /openapi.json (connect-src) and draws its icons as data: SVGs in its CSS (img-src).
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title} · API reference</title>
  <link rel="icon" href="/static/logo.svg" type="image/svg+xml">
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script src="/static/swagger-init.js"></script>
</body>
</html>
"""


def install(app: FastAPI, docs_url: str = "/docs") -> None:
    """Serve Swagger UI at `docs_url` with its assets under ASSETS_URL. Needs `FastAPI(docs_url=None)`."""
    if not (ASSETS_DIR / "swagger-ui-bundle.js").is_file():
        raise RuntimeError(f"Swagger UI's assets are missing from {ASSETS_DIR}: reinstall fastapi-offline")
    page = _PAGE.format(title=escape(app.title), assets=ASSETS_URL, openapi_url=escape(app.openapi_url or ""))
    app.mount(ASSETS_URL, ConsoleStaticFiles(directory=ASSETS_DIR), name="docs-assets")

    @app.get(docs_url, include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                                           "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin"})
