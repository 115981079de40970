"""The server's app factory (`auditkeep serve`) tunes the garbage collector for batched ingest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from auditkeep.api.app import GC_THRESHOLD


def _collector_after(factory: str, tmp_path: Path) -> str:
    """`(threshold) frozen-count` in a fresh process after calling `factory`: freezing is process-wide and
    must not leak into the test run."""
    script = (
        "import gc\n"
        f"from auditkeep.api.app import {factory}\n"
        f"{factory}()\n"
        "print(gc.get_threshold(), gc.get_freeze_count())\n"
    )
    env = {**os.environ, "AUDITKEEP_DATABASE_URL": f"sqlite:///{tmp_path}/a.db",
           "AUDITKEEP_SIGNING_KEY_PATH": str(tmp_path / "key.pem")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0]


def test_a_server_process_freezes_startup_objects_and_raises_the_collection_threshold(tmp_path: Path) -> None:
    threshold, _, frozen = _collector_after("create_server_app", tmp_path).rpartition(" ")
    assert threshold == str(GC_THRESHOLD)
    assert int(frozen) > 10_000  # the modules and the app built at startup


def test_the_plain_factory_leaves_the_collector_alone(tmp_path: Path) -> None:
    assert _collector_after("create_app", tmp_path) == "(700, 10, 10) 0"
