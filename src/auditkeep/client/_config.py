"""Where the client finds its API key and the service URL."""

from __future__ import annotations

import os
from collections.abc import Mapping

from auditkeep.client._errors import ConfigurationError

__all__ = ["API_KEY_VARS", "URL_VARS", "resolve_credentials"]

# Our own variables first, then the ones Datafold's SDK and docs use, so scripts written for Datafold
# work unchanged against a self-hosted auditkeep (issue #4).
API_KEY_VARS = ("AUDITKEEP_API_KEY", "DATAFOLD_API_KEY")
URL_VARS = ("AUDITKEEP_URL", "DATAFOLD_HOST")


def _first(names: tuple[str, ...], environ: Mapping[str, str]) -> str | None:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


def resolve_credentials(api_key: str | None, base_url: str | None,
                        environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The API key and base URL: the arguments, else AUDITKEEP_*, else DATAFOLD_* variables."""
    env = os.environ if environ is None else environ
    key = api_key or _first(API_KEY_VARS, env)
    url = base_url or _first(URL_VARS, env)
    if not key:
        raise ConfigurationError(
            "no API key: pass api_key=... or set AUDITKEEP_API_KEY (or DATAFOLD_API_KEY)"
        )
    if not url:
        raise ConfigurationError(
            "no service URL: pass base_url=... or set AUDITKEEP_URL (or DATAFOLD_HOST)"
        )
    if "://" not in url:
        # DATAFOLD_HOST is sometimes given as a bare host name.
        url = f"https://{url}"
    return key, url.rstrip("/")
