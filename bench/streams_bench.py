"""Stream benchmarks (issue #10): commit -> receiver latency, backfill speed and memory, ingest with streams.

Runs the real server (`auditkeep serve`, its forwarder in the worker) on a fresh database and a fast
receiver on loopback in its own process: a raw asyncio HTTP/1.1 server (uvloop) that only parses each
batch, counts it per stream (events, duplicates, seqs out of order) and records each event's arrival
time. `receiver-ceiling` measures what that receiver takes from one httpx client sending batches one
after another, as the webhook sink does, so the figures below can be told apart from its own limit.

    .venv/bin/python bench/streams_bench.py receiver-ceiling
    .venv/bin/python bench/streams_bench.py latency  [--seconds 60 --rate 1000] [--database-url URL]
    .venv/bin/python bench/streams_bench.py backfill [--n 1000000] [--nats [--no-webhook]] [--database-url URL]
    .venv/bin/python bench/streams_bench.py ingest   [--n 200000 --runs 3] [--database-url URL]

- latency: events POSTed at a steady rate (batches of `--per-request`, from a small thread pool so a slow
  commit does not hold the pace back) to a server with one webhook stream; latency = the receiver's
  arrival time - the time the 201 for that event came back, matched by event_uuid.
- backfill: N events ingested with the forwarder off, then a fresh server (fresh processes, so VmHWM is
  the backfill's own) and a stream with start_seq=1; events/s until the receiver holds the last one, and
  the peak RSS (VmHWM) of every process of the server. `--nats` repeats it to a local nats-server
  (JetStream), counting what the JetStream stream holds.
- ingest: batched ingest of N events (as bench/ingest_export.py) with no stream, two active webhook
  streams, and one stream whose receiver answers 503; interleaved, each on a fresh database.

Results: a table on stdout and JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from ingest_export import (
    RESULTS,
    VENV_BIN,
    RssSampler,
    Server,
    _cli,
    _free_port,
    fresh_database,
    ingest,
    machine,
    make_bodies,
    make_event,
    tree_cpu_seconds,
)

ORG = "bench"
ADMIN = "admin@bench.example"
SECRET = "bench-secret-0123456789"

# --- the receiver (its own process) --------------------------------------------------------------------


_SEQ = re.compile(rb'"seq":(\d+)')
_UUID = re.compile(rb'"event_uuid":"([0-9a-f-]{36})"')


class Tally:
    """What the receiver saw, per stream: batches with their arrival times, events, duplicates, disorder."""

    def __init__(self, record: bool) -> None:
        self.record = record
        self.streams: dict[str, dict[str, Any]] = {}
        self.arrivals: dict[str, float] = {}  # event_uuid -> first arrival (with --record)

    def take(self, body: bytes, now: float) -> None:
        # A full parse costs ~8 CPU us an event (orjson, 860-byte records): more than the forwarder spends
        # on one. Each record has one top-level seq and event_uuid, so pull those; parse only when a
        # payload happens to hold keys of the same name. uuids only when their arrival times are wanted.
        stream_id = body[body.index(b'"stream_id":"') + 13 : body.index(b'"', 13 + body.index(b'"stream_id":"'))]
        seqs = _SEQ.findall(body)
        uuids = _UUID.findall(body) if self.record else [b""] * len(seqs)
        if len(seqs) != len(uuids) or len(seqs) != body.count(b'"hash":'):
            events = orjson.loads(body)["events"]
            seqs, uuids = [e["seq"] for e in events], [e["event_uuid"] for e in events]
        key = stream_id.decode()
        s = self.streams.get(key)
        if s is None:
            s = self.streams[key] = {"events": 0, "distinct": 0, "duplicates": 0, "gaps": 0,
                                     "last_seq": 0, "batches": []}
        last = s["last_seq"]
        for raw_seq, uuid in zip(seqs, uuids, strict=True):
            seq = int(raw_seq)
            if seq <= last:
                s["duplicates"] += 1  # resent after a failure: at least once
                continue
            if last and seq != last + 1:
                s["gaps"] += 1  # no filter on these streams, so every seq must arrive
            last = seq
            s["distinct"] += 1
            if self.record:
                self.arrivals.setdefault(uuid.decode() if isinstance(uuid, bytes) else uuid, now)
        s["events"] += len(seqs)
        s["last_seq"] = last
        s["batches"].append((now, last, len(seqs)))

    def stats(self) -> dict[str, Any]:
        out = {k: {**v, "batches": len(v["batches"])} for k, v in self.streams.items()}
        return {**out, "_cpu_s": time.process_time()}


async def _serve_receiver(port: int, record: bool) -> None:
    tally = Tally(record)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, _, headers = head.partition(b"\r\n")
                method, target, _ = request_line.split(b" ", 2)
                length = 0
                for h in headers.split(b"\r\n"):
                    if h[:15].lower() == b"content-length:":
                        length = int(h[15:])
                body = await reader.readexactly(length) if length else b""
                now = time.time()
                status, out = 200, b"{}"
                if method == b"POST" and target == b"/ok":
                    tally.take(body, now)
                elif method == b"POST":
                    status = 503  # a destination that is down: the stream fails and backs off
                elif target == b"/stats":
                    out = orjson.dumps(tally.stats())
                elif target == b"/dump":
                    out = orjson.dumps({"streams": tally.streams, "arrivals": tally.arrivals})
                writer.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (status, len(out), out))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=256, limit=32 * 2**20)
    async with server:
        await server.serve_forever()


def receiver_main(port: int, record: bool) -> None:
    import uvloop

    uvloop.run(_serve_receiver(port, record))


@contextlib.contextmanager
def running_receiver(record: bool = False) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, __file__, "receiver", "--port", str(port)] + (["--record"] * record))
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{base}/stats", timeout=1)
                break
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def receiver_stats(base: str) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"{base}/stats", timeout=60).json()
    return result


def receiver_dump(base: str) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(httpx.get(f"{base}/dump", timeout=300).content)
    return result


# --- the server -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def serve(database_url: str, tmp: Path, *, workers: int = 1, forwarder: bool = True,
          setup: bool = True, src: str | None = None) -> Iterator[Server]:
    """`auditkeep serve` on `database_url`; `setup` makes the organization, its admin and a key first;
    `src`, another checkout's src/ for the server to import auditkeep from (a before/after comparison)."""
    env = {**os.environ, "AUDITKEEP_DATABASE_URL": database_url, "AUDITKEEP_LOG_LEVEL": "WARNING",
           "AUDITKEEP_SIGNING_KEY_PATH": str(tmp / "signing-key.pem"),
           "AUDITKEEP_SECRETS_KEY_PATH": str(tmp / "secrets-key"),
           "AUDITKEEP_FORWARDER": "true" if forwarder else "false"}
    if src:
        env["PYTHONPATH"] = src
    key_file = tmp / "admin-key"
    if setup:
        _cli(env, "orgs", "create", ORG)
        _cli(env, "users", "create", "--org", ORG, "--email", ADMIN, "--role", "admin")
        key_file.write_text(_cli(env, "keys", "create", "--org", ORG, "--user", ADMIN))
    port = _free_port()
    log_path = tmp / f"server-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(VENV_BIN / "auditkeep"), "serve", "--port", str(port), "--workers",
                                 str(workers)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become ready in 60 s")
            time.sleep(0.1)
        yield Server(proc, base, key_file.read_text().strip(), log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def api(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Key {server.key}"}, timeout=60)


def create_stream(server: Server, name: str, kind: str, config: dict[str, Any], start_seq: int | None) -> str:
    with api(server) as http:
        r = http.post("/api/v1/streams", json={"name": name, "kind": kind, "config": config, "start_seq": start_seq})
        if r.status_code != 201:
            raise RuntimeError(f"stream create: {r.status_code} {r.text[:300]}")
        stream_id: str = r.json()["id"]
        return stream_id


def head_seq(server: Server) -> int:
    """The newest seq stored now (the GET's own read record comes after it)."""
    with api(server) as http:
        r = http.get("/api/v1/audit_logs", params={"order": "desc", "limit": 1, "include": "integrity"})
        r.raise_for_status()
        return int(r.json()["logs"][0]["seq"])


def webhook(receiver: str, path: str = "/ok", batch_size: int = 500) -> dict[str, Any]:
    return {"url": f"{receiver}{path}", "secret": SECRET, "batch_size": batch_size}


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(interval)


def load() -> float:
    return round(os.getloadavg()[0], 2)


# --- the receiver's own ceiling ---------------------------------------------------------------------------


def receiver_ceiling(args: argparse.Namespace) -> dict[str, Any]:
    """Batches of realistic records (the datafold format with integrity fields) from one httpx client."""
    base = datetime.now(UTC) - timedelta(days=1)
    out: dict[str, Any] = {}
    for batch in (500, 5000):
        records = []
        for i in range(batch):
            ev = make_event(i, base)
            ev.update(seq=0, prev_hash="0" * 64, hash="f" * 64)
            records.append(orjson.dumps(ev))
        n_batches = max(1, args.ceiling_events // batch)
        with running_receiver() as rx, httpx.Client(timeout=60) as http:
            bodies = []
            for b in range(n_batches):
                events = b",".join(r.replace(b'"seq":0', b'"seq":%d' % (b * batch + i + 1), 1)
                                   for i, r in enumerate(records))
                bodies.append(b'{"stream_id":"ceiling","events":[' + events + b"]}")
            cpu = receiver_stats(rx)["_cpu_s"]
            start = time.perf_counter()
            for body in bodies:
                http.post(f"{rx}/ok", content=body, headers={"Content-Type": "application/json"}).raise_for_status()
            secs = time.perf_counter() - start
            stats = receiver_stats(rx)
            got, cpu = stats["ceiling"]["distinct"], stats["_cpu_s"] - cpu
        out[f"batch_{batch}"] = {"events": got, "seconds": secs, "events_per_s": got / secs,
                                 "receiver_cpu_us_per_event": cpu / got * 1e6,
                                 "bytes_per_event": len(bodies[0]) // batch, "load": load()}
        print(f"receiver ceiling, batches of {batch}: {got / secs:,.0f} events/s ({got} in {secs:.2f} s), "
              f"receiver {cpu / got * 1e6:.2f} CPU us/event, load {load()}")
    return out


# --- (a) commit -> receiver latency ----------------------------------------------------------------------


def latency(args: argparse.Namespace, url: str, tmp: Path) -> dict[str, Any]:
    with running_receiver(record=True) as rx, serve(url, tmp) as server:
        stream_id = create_stream(server, "latency", "webhook", webhook(rx), None)
        per = args.per_request
        interval = per / args.rate
        total = int(args.seconds * args.rate) // per
        base = datetime.now(UTC) - timedelta(minutes=1)
        bodies = [[make_event(i * per + j, base) for j in range(per)] for i in range(total)]
        for batch in bodies:
            for ev in batch:
                del ev["timestamp"]  # stamped by the server on arrival (the made-up ones run ahead of the clock)
        committed: dict[str, float] = {}
        errors: list[str] = []
        lock = threading.Lock()
        http = api(server)

        def post(batch: list[dict[str, Any]]) -> None:
            r = http.post("/api/v1/audit_logs", content=orjson.dumps(batch),
                          headers={"Content-Type": "application/json"})
            now = time.time()
            if r.status_code != 201:
                errors.append(f"{r.status_code} {r.text[:200]}")
                return
            with lock:
                for u in r.json()["event_uuids"]:
                    committed[u] = now

        load_start = load()
        start = time.perf_counter()
        behind = 0
        with ThreadPoolExecutor(8) as pool:
            for i, batch in enumerate(bodies):
                due = start + i * interval
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                else:
                    behind += 1
                pool.submit(post, batch)
            submit_secs = time.perf_counter() - start
        sent_secs = time.perf_counter() - start
        http.close()
        if errors:
            raise RuntimeError(f"ingest failed: {errors[0]}")
        wait_for(lambda: all(u in arrived for u in committed) if (arrived := receiver_dump(rx)["arrivals"]) else False,
                 120, "every event at the receiver", interval=2)
        dump = receiver_dump(rx)
    arrivals = dump["arrivals"]
    lat = sorted(arrivals[u] - t for u, t in committed.items())
    s = dump["streams"][stream_id]
    q = statistics.quantiles(lat, n=100)
    result = {"events": len(committed), "achieved_rate": len(committed) / sent_secs, "per_request": per,
              "submit_seconds": submit_secs, "last_201_seconds": sent_secs,
              "sends_behind_schedule": behind, "p50_s": q[49], "p95_s": q[94], "p99_s": q[98], "max_s": lat[-1],
              "min_s": lat[0], "duplicates": s["duplicates"], "gaps": s["gaps"], "batches": len(s["batches"]),
              "load_start": load_start, "load_end": load()}
    print(f"latency: {result['events']} events at {result['achieved_rate']:.0f}/s: p50 {q[49] * 1000:.0f} ms, "
          f"p95 {q[94] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms "
          f"(load {load_start} -> {result['load_end']})")
    return result


# --- (b) backfill ----------------------------------------------------------------------------------------


def seed(url: str, tmp: Path, n: int) -> float:
    """N events through the API with the forwarder off; the ingest's events/s."""
    bodies = make_bodies(n, 5000)
    with serve(url, tmp, forwarder=False) as server:
        secs = ingest(server, bodies, 2)
    return n / secs


def variants(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """(label, src) to run, interleaved: this checkout alone, or with `--baseline-src` before it, the
    order alternating run by run so neither always runs first."""
    if not args.baseline_src:
        return [("this", None)] * args.runs
    pairs = [("before", args.baseline_src), ("after", None)]
    return [v for i in range(args.runs) for v in (pairs if i % 2 == 0 else pairs[::-1])]


def backfill(args: argparse.Namespace, url: str, tmp: Path) -> dict[str, Any]:
    eps = seed(url, tmp, args.n)
    print(f"seeded {args.n} events at {eps:,.0f}/s")
    results: dict[str, Any] = {"seed_events_per_s": eps, "webhook": [], "nats": []}
    for label, src in variants(args):
        if not args.no_webhook:
            results["webhook"].append({"variant": label, **backfill_webhook(args, url, tmp, src)})
        if args.nats:
            results["nats"].append({"variant": label, **backfill_nats(args, url, tmp, src)})
    for kind in ("webhook", "nats"):
        by: dict[str, list[float]] = {}
        for run in results[kind]:
            by.setdefault(run["variant"], []).append(run["events_per_s"])
        for label, values in by.items():
            print(f"{kind} {label}: median {statistics.median(values):,.0f} events/s of {len(values)} runs")
    return results


def delete_stream(server: Server, stream_id: str) -> None:
    """So the next variant's backfill, on the same database, is the only stream delivering."""
    with api(server) as http:
        http.delete(f"/api/v1/streams/{stream_id}").raise_for_status()


def backfill_webhook(args: argparse.Namespace, url: str, tmp: Path, src: str | None) -> dict[str, Any]:
    with running_receiver() as rx, serve(url, tmp, setup=False, workers=args.workers, src=src) as server:
        sampler = RssSampler(server.proc.pid)
        time.sleep(3)  # what the server holds before any stream, to tell the forwarder's share apart
        before = sampler.hwm()
        sampler.phase("backfill")
        load_start = load()
        cpu = tree_cpu_seconds(server.proc.pid)
        t0 = time.time()
        stream_id = create_stream(server, f"backfill-{time.time_ns()}", "webhook",
                                  webhook(rx, batch_size=args.batch_size), 1)
        target = head_seq(server)
        wait_for(lambda: receiver_stats(rx).get(stream_id, {}).get("last_seq", 0) >= target,
                 1800, "the backfill", interval=0.5)
        cpu = tree_cpu_seconds(server.proc.pid) - cpu
        hwm = sampler.hwm()
        sampler.stop()
        s = receiver_dump(rx)["streams"][stream_id]
        delete_stream(server, stream_id)
    t_end = next(t for t, last, _ in s["batches"] if last >= target)
    secs = t_end - t0
    w = {
        "events": target, "seconds": secs, "events_per_s": target / secs, "batch_size": args.batch_size,
        "server_cpu_s": cpu, "server_cpu_us_per_event": cpu / target * 1e6,
        "vmhwm_mb": {str(p): round(v / 2**20, 1) for p, v in hwm.items()},
        "vmhwm_before_stream_mb": {str(p): round(v / 2**20, 1) for p, v in before.items()},
        "tree_rss_peak_mb": round(sampler.peaks.get("backfill", 0) / 2**20, 1),
        "duplicates": s["duplicates"], "gaps": s["gaps"], "load_start": load_start, "load_end": load()}
    print(f"backfill to webhook ({src or 'this checkout'}): {target} events in {secs:.1f} s = "
          f"{w['events_per_s']:,.0f}/s, "
          f"{w['server_cpu_us_per_event']:.1f} CPU us/event, VmHWM {w['vmhwm_mb']} MB "
          f"({w['vmhwm_before_stream_mb']} before the stream), load {load_start}->{load()}")
    return w


def backfill_nats(args: argparse.Namespace, url: str, tmp: Path, src: str | None) -> dict[str, Any]:
    """The same backfill to a local nats-server with JetStream; done when the JetStream stream holds N."""
    import nats

    if shutil.which("nats-server") is None:
        raise RuntimeError("nats-server is not installed")
    port = _free_port()
    store_dir = Path(tempfile.mkdtemp(dir=tmp)) / "jetstream"
    nats_proc = subprocess.Popen(["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store_dir)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nats_url = f"nats://127.0.0.1:{port}"

    async def js_call(fn: Any) -> Any:
        nc = await nats.connect(nats_url)
        try:
            return await fn(nc.jetstream())
        finally:
            await nc.close()

    async def make_stream(js: Any) -> None:
        await js.add_stream(name="AUDIT", subjects=["audit.>"], max_bytes=8 * 2**30)

    async def stored(js: Any) -> int:
        info = await js.stream_info("AUDIT")
        return int(info.state.messages)

    try:
        wait_for(lambda: _port_open(port), 10, "nats-server", 0.05)
        asyncio.run(js_call(make_stream))
        with serve(url, tmp, setup=False, workers=args.workers, src=src) as server:
            sampler = RssSampler(server.proc.pid)
            sampler.phase("backfill")
            load_start = load()
            cpu = tree_cpu_seconds(server.proc.pid)
            t0 = time.time()
            stream_id = create_stream(server, f"nats-backfill-{port}", "nats",
                                      {"url": nats_url, "subject": "audit.events"}, 1)
            target = head_seq(server)
            done: list[float] = []

            def caught_up() -> bool:
                if asyncio.run(js_call(stored)) >= target:
                    done.append(time.time())
                    return True
                return False

            wait_for(caught_up, 1800, "the NATS backfill", interval=0.25)
            cpu = tree_cpu_seconds(server.proc.pid) - cpu
            hwm = sampler.hwm()
            sampler.stop()
            delete_stream(server, stream_id)
    finally:
        nats_proc.send_signal(signal.SIGTERM)
        nats_proc.wait(10)
    secs = done[0] - t0
    result = {"events": target, "seconds": secs, "events_per_s": target / secs, "server_cpu_s": cpu,
              "server_cpu_us_per_event": cpu / target * 1e6,
              "vmhwm_mb": {str(p): round(v / 2**20, 1) for p, v in hwm.items()},
              "load_start": load_start, "load_end": load()}
    print(f"backfill to NATS ({src or 'this checkout'}): {target} events in {secs:.1f} s = "
          f"{result['events_per_s']:,.0f}/s, "
          f"VmHWM {result['vmhwm_mb']} MB, load {load_start}->{load()}")
    return result


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- (c) ingest with and without streams -----------------------------------------------------------------

VARIANTS = ("none", "two_active", "one_failing")


def ingest_runs(args: argparse.Namespace, url_base: str | None, tmp: Path) -> dict[str, Any]:
    bodies = make_bodies(args.n, 5000)
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    with running_receiver() as rx:
        for rep in range(args.runs):
            order = VARIANTS[rep % 3:] + VARIANTS[: rep % 3]  # rotate, so no variant always runs first
            for variant in order:
                with fresh_database(url_base, tmp) as url:
                    run_tmp = Path(tempfile.mkdtemp(dir=tmp))
                    with serve(url, run_tmp, workers=args.workers) as server:
                        ids = []
                        if variant == "two_active":
                            ids = [create_stream(server, f"s{i}", "webhook", webhook(rx), None) for i in (1, 2)]
                        elif variant == "one_failing":
                            create_stream(server, "down", "webhook", webhook(rx, "/down"), None)
                        load_start = load()
                        cpu = tree_cpu_seconds(server.proc.pid)
                        secs = ingest(server, bodies, 2)
                        cpu = tree_cpu_seconds(server.proc.pid) - cpu
                        run = {"events_per_s": args.n / secs, "cpu_us_per_event": cpu / args.n * 1e6,
                               "load_start": load_start, "load_end": load()}
                        if ids:
                            stats = receiver_stats(rx)
                            run["delivered_when_ingest_ended"] = [stats.get(i, {}).get("distinct", 0) for i in ids]
                    runs[variant].append(run)
                    print(f"ingest, {variant}: {run['events_per_s']:,.0f} events/s, "
                          f"{run['cpu_us_per_event']:.1f} CPU us/event, load {load_start}->{run['load_end']}",
                          flush=True)
    medians = {v: statistics.median(r["events_per_s"] for r in runs[v]) for v in VARIANTS}
    result = {"runs": runs, "median_events_per_s": medians,
              "ratio_two_active": medians["two_active"] / medians["none"],
              "ratio_one_failing": medians["one_failing"] / medians["none"]}
    print(f"medians: {medians}; two active / none = {result['ratio_two_active']:.3f}, "
          f"one failing / none = {result['ratio_one_failing']:.3f}")
    return result


# --- main ------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("receiver", "receiver-ceiling", "latency", "backfill", "ingest"))
    parser.add_argument("--database-url", default=None, help="PostgreSQL server URL (default: SQLite under /tmp)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", action="store_true", help="receiver: keep each event_uuid's arrival time")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--per-request", type=int, default=100)
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=500, help="backfill: the webhook stream's batch_size")
    parser.add_argument("--nats", action="store_true", help="backfill: also to a local nats-server")
    parser.add_argument("--no-webhook", action="store_true",
                        help="backfill: skip the webhook runs (with --nats: measure NATS alone)")
    parser.add_argument("--ceiling-events", type=int, default=200_000)
    parser.add_argument("--baseline-src", default=None,
                        help="backfill: also run each backfill with the server importing auditkeep from this src/ "
                             "(e.g. `git archive <commit> src`), interleaved, on the same seeded database")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress shows while it runs
    if args.what == "receiver":
        receiver_main(args.port, args.record)
        return
    backend = "postgresql" if args.database_url and args.database_url.startswith("postgres") else "sqlite"
    tmp = Path(tempfile.mkdtemp(prefix="auditkeep-streams-bench-"))
    try:
        if args.what == "receiver-ceiling":
            result = receiver_ceiling(args)
        elif args.what == "ingest":
            args.n = args.n or 200_000
            result = ingest_runs(args, args.database_url, tmp)
        else:
            args.n = args.n or 1_000_000
            with fresh_database(args.database_url, tmp) as url:
                result = latency(args, url, tmp) if args.what == "latency" else backfill(args, url, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"streams-{args.what}-{backend}-{stamp}.json"
    out.write_text(json.dumps({"what": args.what, "backend": backend, "args": vars(args), "machine": machine(),
                               "result": result}, indent=2, default=str))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
