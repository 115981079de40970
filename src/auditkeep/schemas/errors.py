"""The body of every 4xx but 422: FastAPI's error shape, `{"detail": "..."}` (api/errors.py)."""

from __future__ import annotations

from pydantic import BaseModel


class HTTPError(BaseModel):
    """What went wrong, in words."""

    detail: str
