"""Fixtures for the capture tests: a switchable service and shippers that are always closed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from capture_fakes import ToggleService

from auditkeep.capture import Shipper


@pytest.fixture
def service() -> ToggleService:
    """The audit service the shippers talk to; flip `service.mode` to take it down."""
    return ToggleService()


@pytest.fixture
def make_shipper(service: ToggleService) -> Iterator[Callable[..., Shipper]]:
    """make_shipper(**options): a fast-cycling Shipper on `service`, closed after the test."""
    made: list[Shipper] = []

    def make(**options: Any) -> Shipper:
        options.setdefault("flush_interval", 0.01)
        options.setdefault("retry_interval", 0.02)
        options.setdefault("max_retry_interval", 0.05)
        shipper = Shipper(service.client(), **options)
        made.append(shipper)
        return shipper

    yield make
    service.gate.set()
    for shipper in made:
        shipper.close(timeout=5)


@pytest.fixture
def anyio_backend() -> str:
    """The middleware is tested under asyncio."""
    return "asyncio"
