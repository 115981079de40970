"""The server's app factory (`auditkeep serve`) tunes the garbage collector for batched ingest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from auditkeep.api.app import GC_THRESHOLD


def test_a_server_process_freezes_startup_objects_and_raises_the_collection_threshold(tmp_path: Path) -> None:
    # In a process of its own: freezing is process-wide and must not leak into the test run.
    script = (
        "import gc\n"
        "from auditkeep.api.app import create_server_app\n"
        "before = gc.get_threshold()\n"
        "create_server_app()\n"
        "print(before, gc.get_threshold(), gc.get_freeze_count() > 10_000)\n"
    )
    env = {**os.environ, "AUDITKEEP_DATABASE_URL": f"sqlite:///{tmp_path}/a.db",
           "AUDITKEEP_SIGNING_KEY_PATH": str(tmp_path / "key.pem")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[0] == f"(700, 10, 10) {GC_THRESHOLD} True"


def test_the_plain_factory_leaves_the_collector_alone(tmp_path: Path) -> None:
    script = (
        "import gc\n"
        "from auditkeep.api.app import create_app\n"
        "create_app()\n"
        "print(gc.get_threshold(), gc.get_freeze_count())\n"
    )
    env = {**os.environ, "AUDITKEEP_DATABASE_URL": f"sqlite:///{tmp_path}/a.db",
           "AUDITKEEP_SIGNING_KEY_PATH": str(tmp_path / "key.pem")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[0] == "(700, 10, 10) 0"
