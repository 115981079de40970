"""`auditkeep verify-export` reads an export in constant memory: what grows is its 64 bytes of hashes per event."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import orjson

from auditkeep.integrity.canonical import canonical_json
from auditkeep.integrity.checkpoints import export_public_key
from tests.integrity._events import fixed_key, make_log

EVENTS = 200_000

# Runs the command in a fresh interpreter and reports its peak RSS (KiB) before and after, the "before"
# taken once everything the command imports is loaded.
_MEASURE = """
import resource, sys
from auditkeep.cli import app
import auditkeep.client._files, auditkeep.integrity.export
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    app(sys.argv[1:], prog_name="auditkeep")
except SystemExit as exc:
    code = exc.code
print(code, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def _write_json_export(path: Path, n: int) -> None:
    """`{"logs": [...]}` on one line (the worst case for a line reader), chained; hashed with the service's
    canonical_json because rfc8785 (~54 µs an event) would take 11 s here."""
    prev = bytes(32)
    with path.open("wb") as f:
        f.write(b'{"logs":[')
        for seq in range(1, n + 1):
            log = {**make_log(seq), "seq": seq}
            digest = hashlib.sha256(prev + canonical_json(log)).digest()
            f.write((b"," if seq > 1 else b"") + orjson.dumps({**log, "prev_hash": prev.hex(), "hash": digest.hex()}))
            prev = digest
        f.write(b"]}\n")


def test_a_large_json_export_is_verified_in_far_less_memory_than_its_size(tmp_path: Path) -> None:
    """200,000 events, ~130 MB: the process grows by ~45 MB (the per-event hashes), where parsing the
    document whole grew it by ~1.4 GB; the bound, half the file's size, leaves room for allocator noise."""
    export = tmp_path / "export.json"
    _write_json_export(export, EVENTS)
    key = tmp_path / "key.json"
    key.write_bytes(export_public_key(fixed_key().public_key()))
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, "verify-export", str(export), "--public-key", str(key)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.stdout.splitlines()[:2] == ["OK: every event verifies", f"events: {EVENTS}, seq 1..{EVENTS}"]
    code, before, after = (int(word) for word in done.stderr.split()[-3:])
    size = export.stat().st_size
    assert code == 0
    assert size > 100 << 20
    assert (after - before) * 1024 < size // 2, f"grew {(after - before) // 1024} MiB for a {size >> 20} MiB file"
