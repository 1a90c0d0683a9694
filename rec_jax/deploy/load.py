r"""Load test of the HTTP service: latency and throughput of /recommend.

    python -m rec_jax.deploy.load --bundle=bundles/mf_kd [--concurrency=1,32] \
        [--requests=2000] [--k=10]

Starts ``python -m rec_jax.serve`` on the bundle (a separate process on a
loopback port), then for each concurrency level sends --requests requests to
warm up and --requests more that are timed, keeping that many requests in flight from an asyncio client (random known users) and
prints p50 / p99 latency and requests per second as a markdown table
(the client is aiohttp: httpx's pool costs more CPU per request than the
server does). With a
text path it also times ``POST /items`` (on a copy of the bundle, so the
bundle itself is left as it was). The client shares the machine with the
server: on a 2-core CPU the two compete for the cores, so the figures are a
floor for a server with the machine to itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(bundle: str, port: int) -> subprocess.Popen:
    import httpx

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))]
        + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.Popen([sys.executable, "-m", "rec_jax.serve", f"--bundle={bundle}",
                             f"--port={port}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("error: the server did not answer /healthz within 180 s")


async def _drive(url: str, users: list[str], concurrency: int, requests: int, k: int):
    """(latencies in ms, wall seconds) of `requests` GET /recommend with `concurrency` in
    flight, measured after as many warm-up requests on the same connections."""
    import aiohttp

    rng = random.Random(0)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=connector) as session:
        async def phase(n):
            latencies: list[float] = []
            todo = iter(range(n))

            async def worker():
                for _ in todo:
                    t = time.perf_counter()
                    async with session.get("/recommend", params={
                            "user_id": rng.choice(users), "k": str(k)}) as r:
                        await r.read()
                        r.raise_for_status()
                    latencies.append(1e3 * (time.perf_counter() - t))
            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return latencies, time.perf_counter() - t0

        await phase(requests)  # warm-up: connections open, caches and allocators settled
        return await phase(requests)


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def measure(bundle: str, concurrency: list[int], requests: int, k: int) -> dict:
    import httpx

    with open(os.path.join(bundle, "meta.json")) as f:
        meta = json.load(f)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        served = bundle
        if meta["text"] is not None:  # POST /items writes the store: serve a copy
            served = os.path.join(tmp, "bundle")
            shutil.copytree(bundle, served)
        proc = start_server(served, port)
        try:
            for c in concurrency:
                lat, wall = asyncio.run(_drive(url, meta["user_ids"], c, requests, k))
                rows[c] = {"p50_ms": _pct(lat, 0.5), "p99_ms": _pct(lat, 0.99),
                           "rps": len(lat) / wall, "requests": len(lat)}
            add_ms = []
            if meta["text"] is not None:
                with httpx.Client(base_url=url, timeout=30.0) as client:  # one connection
                    for i in range(50):
                        t = time.perf_counter()
                        client.post("/items", json={"title": f"Load Test Film {i}",
                                                    "year": 2000, "genres": ["Drama"]}
                                    ).raise_for_status()
                        add_ms.append(1e3 * (time.perf_counter() - t))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return {"model": meta["model"], "items": meta["num_items"], "k": k, "rows": rows,
            "add_item_p50_ms": _pct(add_ms, 0.5) if add_ms else None}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m rec_jax.deploy.load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)
    out = measure(args.bundle, [int(c) for c in args.concurrency.split(",")], args.requests,
                  args.k)
    cpu = "unknown CPU"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    print(f"{out['model']}: GET /recommend (k={out['k']}, {out['items']:,} items), "
          f"server and client on one machine: {cpu}, {os.cpu_count()} cores, "
          f"{platform.machine()}\n")
    print("| concurrency | requests | p50 (ms) | p99 (ms) | requests/s |")
    print("|---|---|---|---|---|")
    for c, r in out["rows"].items():
        print(f"| {c} | {r['requests']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['rps']:.0f} |")
    if out["add_item_p50_ms"] is not None:
        print(f"\nPOST /items: p50 {out['add_item_p50_ms']:.1f} ms per item (50 items)")


if __name__ == "__main__":
    main()
