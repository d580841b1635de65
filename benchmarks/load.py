"""Bounded load test of ``chromaforge serve`` on loopback: dynamic batching on and off.

Starts the service as a subprocess (127.0.0.1, a free port), sends a fixed number of requests
from ``--concurrency`` async clients (httpx), mixed image sizes and styles, and reports
throughput, p50/p95/p99 latency, errors and the server's RSS after the warm-up and at the end.
Then stops the server with SIGTERM and checks it exits 0.

Example:
    python benchmarks/load.py --requests 10000 --json .benchmarks/load.json     # both modes
    python benchmarks/load.py --requests 300 --modes on --max-rss-growth 0.05  # CI's short pass
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SIZES = ((128, 128), (96, 160), (192, 256), (256, 256))
"""(h, w) of the request images, cycled: two working shapes share batches, two do not."""
STYLES = ("natural", "ukiyoe", "impressionism", "pointillism", "rococo", "ukiyoe=0.6,rococo=0.4")
MODES = {"on": 8, "off": 1}
"""Batching on: --max-batch 8 (--max-wait-ms 5); off: --max-batch 1."""


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in kB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def images() -> list[bytes]:
    """PNG-encoded grey request images, a few per size."""
    out = []
    rng = np.random.default_rng(0)
    for h, w in SIZES:
        for _ in range(3):
            y, x = np.mgrid[0:h, 0:w]
            arr = ((x + y) * 255 // (h + w) + rng.integers(0, 50, (h, w))).clip(0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG")
            out.append(buf.getvalue())
    return out


def start_server(args: argparse.Namespace, max_batch: int) -> tuple[subprocess.Popen, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    cmd = [sys.executable, "-m", "sdk", "--threads", str(args.threads), "--backend", args.backend]
    if args.model_dir:
        cmd += ["--model-dir", args.model_dir]
    cmd += ["serve", "--port", str(port), "--max-batch", str(max_batch), "--max-wait-ms", str(args.max_wait_ms),
            "--queue", "256", "--timeout-s", "120", "--no-access-log"]  # stderr is a pipe read only on failure: keep it small
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, f"http://127.0.0.1:{port}"


async def wait_ready(client, url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            if (await client.get(url + "/healthz")).status_code == 200:
                return
        except Exception:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"server not ready within {timeout} s")


async def blast(client, url: str, n: int, concurrency: int, bodies: list[bytes],
                sample: tuple[int, list[int]] | None = None) -> tuple[list[float], dict[str, int]]:
    """``n`` requests from ``concurrency`` clients; (latencies in s, error counts by status).

    ``sample``: (pid, list) to append the server's RSS (kB) to every 10 % of the requests.
    """
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            style = STYLES[i % len(STYLES)]
            path = "/v1/colorize" if style == "natural" else "/v1/stylize"
            params = {} if style == "natural" else {"style": style}
            t0 = time.perf_counter()
            try:
                r = await client.post(url + path, params=params, content=bodies[(i // len(STYLES)) % len(bodies)])
                code = str(r.status_code)
            except Exception as e:  # counted, never fatal for the run
                code = type(e).__name__
            latencies.append(time.perf_counter() - t0)
            if code != "200":
                errors[code] = errors.get(code, 0) + 1
            if sample is not None and (i + 1) % max(n // 10, 1) == 0:
                sample[1].append(rss_kb(sample[0]))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


async def run_mode(args: argparse.Namespace, mode: str, bodies: list[bytes]) -> dict:
    import httpx

    proc, url = start_server(args, MODES[mode])
    try:
        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        async with httpx.AsyncClient(timeout=180, limits=limits) as client:
            await wait_ready(client, url, proc)
            await blast(client, url, args.warmup, args.concurrency, bodies)
            rss_start = rss_kb(proc.pid)
            t0 = time.perf_counter()
            trace: list[int] = []
            lat, errors = await blast(client, url, args.requests, args.concurrency, bodies, (proc.pid, trace))
            wall = time.perf_counter() - t0
            rss_end = rss_kb(proc.pid)
            metrics = (await client.get(url + "/metrics")).text
        batches = sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("chromaforge_batch_size_count"))
        jobs = sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("chromaforge_batch_size_sum"))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(10)
    ms = np.percentile(np.array(lat) * 1000, [50, 95, 99])
    return {"mode": mode, "max_batch": MODES[mode], "requests": args.requests, "concurrency": args.concurrency,
            "throughput_img_s": round(args.requests / wall, 1), "wall_s": round(wall, 1),
            "p50_ms": round(ms[0], 1), "p95_ms": round(ms[1], 1), "p99_ms": round(ms[2], 1),
            "errors": sum(errors.values()), "errors_by_status": errors, "mean_batch": round(jobs / max(batches, 1), 2),
            "rss_start_mb": round(rss_start / 1024, 1), "rss_end_mb": round(rss_end / 1024, 1),
            "rss_growth": round(rss_end / rss_start - 1, 4), "rss_trace_mb": [round(k / 1024, 1) for k in trace],
            "exit_code": code}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=10000, help="requests per mode (after the warm-up)")
    p.add_argument("--warmup", type=int, default=200, help="requests before RSS is first read")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--modes", default="on,off", help="on (--max-batch 8), off (--max-batch 1), or both")
    p.add_argument("--model-dir", default=None, help="model folder (default: the bundled model)")
    p.add_argument("--backend", default="onnxruntime-cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--max-rss-growth", type=float, default=None, help="exit 1 if RSS grows more than this fraction")
    args = p.parse_args(argv)
    bodies = images()
    results = [asyncio.run(run_mode(args, mode.strip(), bodies)) for mode in args.modes.split(",")]
    for r in results:
        print(f"batching {r['mode']:>3}: {r['throughput_img_s']:7.1f} img/s  p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  "
              f"p99 {r['p99_ms']:7.1f} ms  errors {r['errors']}  mean batch {r['mean_batch']}  "
              f"RSS {r['rss_start_mb']} -> {r['rss_end_mb']} MB ({100 * r['rss_growth']:+.1f} %)  exit {r['exit_code']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    bad = [r for r in results if r["errors"] or r["exit_code"] != 0
           or (args.max_rss_growth is not None and r["rss_growth"] > args.max_rss_growth)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
