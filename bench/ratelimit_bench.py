"""What rate limiting costs per request (issue #11 target: <= 20 us of CPU with memory storage).

Three measurements, each with and without the limiter:
1. the limiter alone: what deps.admit adds to an authenticated request (the lock-out test, the per-key
   hit with its window stats), `time.process_time` over many calls;
2. in-process: whole requests through the app (httpx.ASGITransport), GET /api/v1/integrity/public_key
   with a key, process CPU per request;
3. the real server: `uvicorn` serving the app on loopback, the server process's own CPU per request
   (utime + stime from /proc/<pid>/stat), requests sent one after another over one connection.

"Without" replaces app.state.rate_limits with a stand-in that counts nothing (`create_unlimited_app`
below; the service has no switch to turn limits off). Runs alternate, and each figure is the median.

    .venv/bin/python bench/ratelimit_bench.py [--requests 3000] [--rounds 5] [--redis redis://127.0.0.1:6379]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from fastapi import FastAPI

from auditkeep.api.app import create_app
from auditkeep.api.ratelimit import RateLimits
from auditkeep.auth.principals import Role
from auditkeep.settings import Settings
from auditkeep.storage import identity, open_storage

URL = "/api/v1/integrity/public_key"
HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")


class _Unlimited:
    """A stand-in for RateLimits that lets everything through and reports nothing."""

    def lockout(self, address: str) -> None:
        return None

    def hit_key(self, key_id: int) -> tuple[None, bool]:
        return None, True


def create_unlimited_app() -> FastAPI:
    """Bench only: the server app with the limiter stubbed out (a uvicorn factory)."""
    app = create_app(Settings())
    app.state.rate_limits = _Unlimited()
    return app


def create_limited_app() -> FastAPI:
    return create_app(Settings())


def limiter_alone(settings: Settings, n: int) -> float:
    limits = RateLimits(settings)
    start = time.process_time()
    for i in range(n):
        limits.lockout("203.0.113.7")
        limits.hit_key(i % 50)
    return (time.process_time() - start) / n * 1e6


def in_process(app: FastAPI, key: str, n: int) -> float:
    async def run() -> float:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            h = {"Authorization": f"Key {key}"}
            for _ in range(50):
                (await client.get(URL, headers=h)).raise_for_status()
            start = time.process_time()
            for _ in range(n):
                (await client.get(URL, headers=h)).raise_for_status()
            return (time.process_time() - start) / n * 1e6

    return asyncio.run(run())


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def real_server(factory: str, env: dict[str, str], key: str, n: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        port = 18000 + secrets.randbelow(2000)
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", f"ratelimit_bench:{factory}", "--app-dir", str(HERE),
             "--port", str(port), "--log-level", "warning", "--no-access-log"],
            env={**os.environ, **env, "PYTHONPATH": str(HERE)}, cwd=d,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    httpx.get(f"{url}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            with httpx.Client(base_url=url, headers={"Authorization": f"Key {key}"}) as client:
                for _ in range(50):
                    client.get(URL).raise_for_status()
                before = _cpu_seconds(proc.pid)
                for _ in range(n):
                    client.get(URL).raise_for_status()
                return (_cpu_seconds(proc.pid) - before) / n * 1e6
        finally:
            proc.terminate()
            proc.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis", default=None, help="also measure the limiter alone on this Redis")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ratelimit-bench-"))
    big = "1000000/second"  # never refuses: every request pays for counting, none is turned away
    env = {"AUDITKEEP_DATABASE_URL": f"sqlite:///{work}/bench.db", "AUDITKEEP_SIGNING_KEY_PATH": str(work / "sk.pem"),
           "AUDITKEEP_SECRETS_KEY_PATH": str(work / "secrets"), "AUDITKEEP_LOG_LEVEL": "WARNING",
           "AUDITKEEP_RATE_LIMIT": f"{big};100000000/minute", "AUDITKEEP_FORWARDER": "false"}
    os.environ.update(env)
    settings = Settings()
    storage = open_storage(settings=settings)
    with storage.write() as conn:
        org = identity.create_org(conn, "bench")
        user = identity.create_user(conn, org, "bench@bench.test", Role.ADMIN)
        key, _ = identity.create_key(conn, user)

    results: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    limited, unlimited = create_limited_app(), create_unlimited_app()
    for _ in range(args.rounds):
        record("limiter alone, memory", limiter_alone(settings, 20_000))
        if args.redis:
            remote = settings.model_copy(update={"rate_limit_storage": args.redis,
                                                 "rate_limit_key_prefix": f"bench-{secrets.token_hex(4)}"})
            record("limiter alone, redis", limiter_alone(remote, 2_000))
        record("in-process, no limiter", in_process(unlimited, key, args.requests))
        record("in-process, limiter (memory)", in_process(limited, key, args.requests))
        record("server, no limiter", real_server("create_unlimited_app", env, key, args.requests))
        record("server, limiter (memory)", real_server("create_limited_app", env, key, args.requests))
    storage.dispose()

    print(f"{'us of CPU per request (median of ' + str(args.rounds) + ')':<40} {'median':>8} {'min':>8} {'max':>8}")
    for name, values in results.items():
        print(f"{name:<40} {statistics.median(values):8.1f} {min(values):8.1f} {max(values):8.1f}")
    for where in ("in-process", "server"):
        with_, without = results[f"{where}, limiter (memory)"], results[f"{where}, no limiter"]
        print(f"added by the limiter, {where}: {statistics.median(with_) - statistics.median(without):.1f} us")


if __name__ == "__main__":
    main()
