"""PostgreSQL clusters of a test's own (initdb and pg_ctl on a free loopback port in a temporary directory),
never the shared server: a primary, and hot standbys streaming from it (issue #14's read replicas)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.e2e.server import free_port

PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), default=None, key=lambda p: int(p.parent.name))


class Cluster:
    """A PostgreSQL cluster of this test's own, in a temporary directory, on a free loopback port."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        """`settings`: server settings (`-c name=value`) given at every start."""
        assert PG_BIN is not None, "PostgreSQL's initdb and pg_ctl are not in /usr/lib/postgresql/*/bin"
        self.settings = dict(settings or {})
        self.root = Path(tempfile.mkdtemp(prefix="auditkeep-pg-"))
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to the postgres user
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str) -> None:
        as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*as_owner, *args], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr

    def init(self) -> Cluster:
        self._run(str(PG_BIN / "initdb"), "-D", str(self.root / "data"), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")
        return self

    def standby_of(self, primary: Cluster) -> Cluster:
        """Make this cluster a streaming hot standby of `primary` (running): `pg_basebackup -R` copies its
        data directory and writes the primary_conninfo and standby.signal that make it follow."""
        self._run(str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                  "-D", str(self.root / "data"), "-R", "-X", "stream", "--no-sync", "-c", "fast")
        return self

    def start(self) -> None:
        options = " ".join([f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1",
                            *(f"-c {name}={value}" for name, value in self.settings.items())])
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.root / "data"), "-l", str(self.root / "log"),
                  "-w", "-t", "30", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.root / "data"), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
