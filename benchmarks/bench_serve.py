"""Load benchmark of `naics-pipeline serve`: concurrent clients on loopback for a bounded time.

    python benchmarks/bench_serve.py --root DIR [--stage stage_N] [--concurrency 1,4,16] [--texts 1,32]
    python benchmarks/bench_serve.py --url http://127.0.0.1:8000 [...]

With --root it starts `naics-pipeline serve` on a free loopback port (the model loaded once, as a user
runs it), measures, and stops it; with --url it measures a server already running on this machine
(loopback addresses only). For each (concurrency, texts per request) cell, C client threads, each with
its own keep-alive connection, POST /classify back to back until the cell has run --seconds or sent
--max-requests, after --warmup requests that are not counted. Texts are drawn (seeded) from the root's
held-out index entries, or from a built-in list of business descriptions (a root with fewer than
100 entries). Prints one row per cell:
requests, p50 / p99 latency, requests/s and texts/s, and the non-2xx and 5xx counts. Exits 1 on any
5xx or failed connection. The clients run on the same cores as the server: on a 2-core machine they
take part of its CPU, so the figures are a bound from below.
"""
from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
TEXTS = [
    "soybean farm", "custom software programming", "soft drink bottling plant", "cattle feedlot",
    "family dentist office", "commercial bakery making bread for supermarkets", "used car dealer",
    "residential roofing contractor", "hair salon and nail spa", "trucking company hauling freight long distance",
    "wholesale distributor of plumbing supplies", "pizza restaurant with delivery", "hotel", "veterinary clinic",
    "machine shop making precision parts", "credit union", "accounting and tax preparation services",
    "child day care center", "landscaping services", "manufacturer of corrugated cardboard boxes",
]


def loopback_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    if parts.scheme != "http" or not local:
        raise SystemExit(f"bench_serve: --url must be http:// on a loopback address (127.0.0.0/8, ::1, "
                         f"localhost), not {url!r}")
    return host, parts.port or 80


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, stage: str | None, timeout_s: float = 300) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    cmd = [sys.executable, "-m", "naics_pipeline.cli", "serve", "--root", str(root), "--port", str(port),
           "--log-level", "warning"] + (["--stage", stage] if stage else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    while time.perf_counter() - t0 < timeout_s:
        if proc.poll() is not None:
            raise SystemExit(f"bench_serve: the server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return proc, url, time.perf_counter() - t0
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"bench_serve: no answer from {url}/healthz in {timeout_s:.0f} s")


def load_texts(root: Path | None, least: int = 100) -> list[str]:
    """The root's held-out index entries (real short descriptions), or the built-in list where the root
    has fewer than `least` (a generated test tree)."""
    if root is not None and (root / "naics_index_holdout.parquet").is_file():
        import pyarrow.parquet as pq

        entries = pq.read_table(root / "naics_index_holdout.parquet", columns=["entry"]).column("entry")
        if len(entries) >= least:
            return entries.to_pylist()
    return TEXTS


def run_cell(host: str, port: int, texts: list[str], concurrency: int, per_request: int, seconds: float,
             max_requests: int, warmup: int, k: int, min_precision: float | None, seed: int) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    failures: list[str] = []
    lock = threading.Lock()
    budget = [max_requests]
    start = threading.Barrier(concurrency + 1)
    stop_at = [0.0]

    def client(i: int) -> None:
        rng = random.Random(seed + i)
        conn = http.client.HTTPConnection(host, port, timeout=120)

        def one() -> tuple[int, float]:
            body = {"texts": rng.sample(texts, per_request) if per_request <= len(texts)
                    else rng.choices(texts, k=per_request), "k": k}
            if min_precision is not None:
                body["min_precision"] = min_precision
            data = json.dumps(body).encode()
            t0 = time.perf_counter()
            conn.request("POST", "/classify", data, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            return r.status, time.perf_counter() - t0

        try:
            for _ in range(warmup):
                one()
        except (OSError, http.client.HTTPException) as exc:
            with lock:
                failures.append(f"warm-up: {exc!r}")
        start.wait()
        conn.close()   # a fresh connection: the server drops keep-alive connections idle while others warm up
        conn = http.client.HTTPConnection(host, port, timeout=120)
        while time.perf_counter() < stop_at[0]:
            with lock:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
            try:
                status, seconds_taken = one()
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=120)
                continue
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(seconds_taken)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + 3600          # set for real once every client has warmed up
    start.wait()
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    latencies.sort()
    n = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(n - 1, int(p * n))] * 1000 if n else float("nan")

    return {"concurrency": concurrency, "texts_per_request": per_request, "requests": n,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "requests_per_s": n / wall, "texts_per_s": n * per_request / wall,
            "non_2xx": sum(c for s, c in statuses.items() if not 200 <= s < 300),
            "5xx": sum(c for s, c in statuses.items() if s >= 500), "failed": len(failures), "seconds": wall,
            "errors": failures[:3]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--root", type=Path, help="storage root: start `naics-pipeline serve` on it")
    where.add_argument("--url", help="a running server on a loopback address")
    ap.add_argument("--stage", default=None, help="with --root: the stage to serve (default: the last)")
    ap.add_argument("--concurrency", default="1,4,16", help="client counts, comma-separated")
    ap.add_argument("--texts", default="1,32", help="texts per request, comma-separated")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured time per cell (bound)")
    ap.add_argument("--max-requests", type=int, default=2000, help="requests per cell (bound)")
    ap.add_argument("--warmup", type=int, default=3, help="uncounted requests per client before each cell")
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--min-precision", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.seconds > 600 or args.max_requests < 1:
        raise SystemExit("bench_serve: --seconds must be in (0, 600] and --max-requests at least 1")

    proc, rows = None, []
    if args.root is not None:
        proc, url, startup = start_server(args.root, args.stage)
        print(f"server: naics-pipeline serve --root {args.root}: answered /healthz {startup:.1f} s after start")
    else:
        url = args.url.rstrip("/")
    host, port = loopback_url(url)
    try:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("GET", "/healthz")
        health = json.loads(conn.getresponse().read())
        texts = load_texts(args.root)
        print(f"{url}: stage {health['stage']}; {len(texts):,} distinct texts; k={args.k}"
              + (f", min_precision={args.min_precision}" if args.min_precision is not None else "")
              + f"; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} before the run")
        print("| clients | texts/request | requests | p50 ms | p99 ms | requests/s | texts/s | non-2xx | 5xx |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for per_request in map(int, args.texts.split(",")):
            for concurrency in map(int, args.concurrency.split(",")):
                row = run_cell(host, port, texts, concurrency, per_request, args.seconds, args.max_requests,
                               args.warmup, args.k, args.min_precision, args.seed)
                rows.append(row)
                print(f"| {concurrency} | {per_request} | {row['requests']:,} | {row['p50_ms']:.1f} | "
                      f"{row['p99_ms']:.1f} | {row['requests_per_s']:.1f} | {row['texts_per_s']:.0f} | "
                      f"{row['non_2xx']} | {row['5xx']} |"
                      + (f" {row['failed']} failed: {row['errors']}" if row["failed"] else ""), flush=True)
        print(f"load average after the run: {os.getloadavg()[0]:.1f}")
        if args.json:
            args.json.write_text(json.dumps({"url": url, "stage": health["stage"], "rows": rows}, indent=1) + "\n")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    bad = [r for r in rows if r["5xx"] or r["failed"]]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
