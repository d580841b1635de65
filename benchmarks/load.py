"""Bounded load test of ``chromaforge serve`` on loopback: dynamic batching on and off, memory bound.

Starts the service as a subprocess (127.0.0.1, a free port), sends a fixed number of requests
from ``--concurrency`` async clients (httpx), mixed image sizes and styles, and reports
throughput, p50/p95/p99 latency, the share of 503 answers (admission control), other errors, and
the server's RSS: once ready, after the warm-up, every 10 % of the run and at the end, and its peak
(``VmHWM`` of ``/proc/PID/status``) against the memory bound (RSS once ready + ``--max-memory``).
Then stops the server with SIGTERM and checks it exits 0.

``--calibrate SIDE`` measures instead what one request costs: for each operation and input kind, a
fresh server, one SIDE x SIDE request, its peak RSS above the idle server (the high-water mark reset
just before), in bytes per pixel, next to the server's own estimate (``sdk.serve.admission``).

Example:
    python benchmarks/load.py --requests 10000 --json .benchmarks/load.json     # both modes
    python benchmarks/load.py --requests 200 --warmup 50 --modes on,off         # CI's short pass
    python benchmarks/load.py --sizes 8192x8192 --depth 8,16 --requests 24 --warmup 0 --concurrency 6 --modes on \\
        --max-memory 2G --max-body-mb 256 --max-503-share 1                      # the memory bound under 8192^2 requests
    python benchmarks/load.py --calibrate 8192 --json .benchmarks/calibrate.json  # per-pixel costs
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
sys.path.insert(0, str(REPO))
SIZES = "128x128,160x96,256x192,256x256"
"""w x h of the request images, cycled: two working shapes share batches, two do not."""
STYLES = ("natural", "ukiyoe", "impressionism", "pointillism", "rococo", "ukiyoe=0.6,rococo=0.4")
MODES = {"on": 8, "off": 1}
"""Batching on: --max-batch 8 (--max-wait-ms 5); off: --max-batch 1."""


def proc_status(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` entry in bytes (``VmRSS``, ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} for pid {pid}")


def reset_peak(pid: int) -> bool:
    """Reset ``VmHWM`` of ``pid`` to its current RSS (Linux ``clear_refs``); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def image(w: int, h: int, depth: int = 8, colour: bool = False, seed: int = 0) -> bytes:
    """A PNG request image: small ones a noisy gradient (as before), large ones the bundled photo
    upscaled with sensor-like noise (compresses as photos do); 16-bit when ``depth`` is 16."""
    rng = np.random.default_rng(seed)
    if w * h <= 512 * 512:
        y, x = np.mgrid[0:h, 0:w]
        arr = ((x + y) * 255 / (h + w) + rng.integers(0, 50, (h, w))).clip(0, 255)
        arr = np.stack([arr, arr[::-1], arr[:, ::-1]], -1) if colour else arr
    else:
        import sdk

        photo = Image.open(sdk.example_image()).convert("RGB" if colour else "L").resize((w, h), Image.BICUBIC)
        arr = np.asarray(photo, np.float32)
        arr += rng.normal(0, 2.0, arr.shape).astype(np.float32)
    if depth == 16:
        im = Image.fromarray(np.clip(arr * 257.0, 0, 65535).astype(np.uint16)) if arr.ndim == 2 else None
        if im is None:
            raise SystemExit("--depth 16 is for grey images (Pillow writes no 16-bit RGB PNG)")
    else:
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1 if w * h > 512 * 512 else 6)
    return buf.getvalue()


def images(sizes: str, depths: str) -> list[bytes]:
    """PNG-encoded grey request images: per size and depth, three (small) or one (large)."""
    out = []
    for size in sizes.split(","):
        w, h = (int(v) for v in size.lower().split("x"))
        for depth in (int(d) for d in depths.split(",")):
            out += [image(w, h, depth, seed=i) for i in range(3 if w * h <= 512 * 512 else 1)]
    return out


def free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def start_server(args: argparse.Namespace, max_batch: int, extra: list[str] = ()) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "sdk", "--threads", str(args.threads), "--backend", args.backend]
    if args.model_dir:
        cmd += ["--model-dir", args.model_dir]
    cmd += ["serve", "--port", str(port), "--max-batch", str(max_batch), "--max-wait-ms", str(args.max_wait_ms),
            "--queue", "256", "--timeout-s", str(args.timeout_s), "--no-access-log", *extra]
    # (--no-access-log: stderr is a pipe read only on failure, keep it small)
    if args.max_memory:
        cmd += ["--max-memory", args.max_memory]
    if args.max_body_mb and "--max-body-mb" not in extra:
        cmd += ["--max-body-mb", str(args.max_body_mb)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, f"http://127.0.0.1:{port}"


def stop_server(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


async def wait_ready(client, url: str, proc: subprocess.Popen, timeout: float = 120) -> dict:
    """Poll /healthz until 200; its JSON (the memory budget in it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            r = await client.get(url + "/healthz")
            if r.status_code == 200:
                return r.json()
        except Exception:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"server not ready within {timeout} s")


async def blast(client, url: str, n: int, concurrency: int, bodies: list[bytes],
                sample: tuple[int, list[int]] | None = None) -> tuple[list[float], dict[str, int]]:
    """``n`` requests from ``concurrency`` clients; (latencies in s of the 200s, answers by status).

    ``sample``: (pid, list) to append the server's RSS (bytes) to every 10 % of the requests.
    """
    latencies: list[float] = []
    statuses: dict[str, int] = {}
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
            if code == "200":
                latencies.append(time.perf_counter() - t0)
            statuses[code] = statuses.get(code, 0) + 1
            if sample is not None and (i + 1) % max(n // 10, 1) == 0:
                sample[1].append(proc_status(sample[0], "VmRSS"))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, statuses


def mb(n: float) -> float:
    return round(n / 2**20, 1)


async def run_mode(args: argparse.Namespace, mode: str, bodies: list[bytes]) -> dict:
    import httpx

    proc, url = start_server(args, MODES[mode])
    try:
        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        async with httpx.AsyncClient(timeout=args.timeout_s + 60, limits=limits) as client:
            health = await wait_ready(client, url, proc)
            rss_ready = proc_status(proc.pid, "VmRSS")
            if args.warmup:
                await blast(client, url, args.warmup, args.concurrency, bodies)
            rss_start = proc_status(proc.pid, "VmRSS")
            peak_reset = reset_peak(proc.pid)
            t0 = time.perf_counter()
            trace: list[int] = []
            lat, statuses = await blast(client, url, args.requests, args.concurrency, bodies, (proc.pid, trace))
            wall = time.perf_counter() - t0
            rss_end = proc_status(proc.pid, "VmRSS")
            peak_run = proc_status(proc.pid, "VmHWM")
            metrics = (await client.get(url + "/metrics")).text
            memory = (await client.get(url + "/healthz")).json()["memory"]
        batches = sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("chromaforge_batch_size_count"))
        jobs = sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("chromaforge_batch_size_sum"))
        refused_by = {line.split('reason="')[1].split('"')[0]: int(float(line.split()[-1])) for line in metrics.splitlines()
                      if line.startswith("chromaforge_admission_refused_total{")}
    finally:
        code = stop_server(proc)
    ms = np.percentile(np.array(lat) * 1000, [50, 95, 99]) if lat else [float("nan")] * 3
    refused = statuses.get("503", 0)
    errors = {k: v for k, v in statuses.items() if k not in ("200", "503")}
    budget = health["memory"]["budget_bytes"]
    bound = rss_ready + budget
    return {"mode": mode, "max_batch": MODES[mode], "requests": args.requests, "concurrency": args.concurrency,
            "sizes": args.sizes, "depth": args.depth, "answered_200": statuses.get("200", 0),
            "throughput_img_s": round(statuses.get("200", 0) / wall, 1), "wall_s": round(wall, 1),
            "p50_ms": round(ms[0], 1), "p95_ms": round(ms[1], 1), "p99_ms": round(ms[2], 1),
            "share_503": round(refused / args.requests, 4), "answers_503": refused, "refused_by_reason": refused_by,
            "errors": sum(errors.values()), "errors_by_status": errors, "mean_batch": round(jobs / max(batches, 1), 2),
            "rss_ready_mb": mb(rss_ready), "rss_start_mb": mb(rss_start), "rss_end_mb": mb(rss_end),
            "rss_growth": round(rss_end / rss_start - 1, 4), "rss_trace_mb": [mb(k) for k in trace],
            "peak_rss_mb": mb(peak_run), "peak_rss_scope": "run" if peak_reset else "process lifetime",
            "memory_budget_mb": mb(budget), "memory_bound_mb": mb(bound), "within_bound": peak_run <= bound,
            "reserved_peak_mb": mb(memory["reserved_peak_bytes"]), "exit_code": code}


CASES = {  # name -> (route, query, input kind: grey8 / grey16 / rgb8)
    "colorize grey8": ("/v1/colorize", {}, "grey8"), "colorize grey16": ("/v1/colorize", {}, "grey16"),
    "colorize rgb8": ("/v1/colorize", {}, "rgb8"),
    "stylize grey8": ("/v1/stylize", {"style": "ukiyoe"}, "grey8"), "stylize grey16": ("/v1/stylize", {"style": "ukiyoe"}, "grey16"),
    "stylize rgb8": ("/v1/stylize", {"style": "ukiyoe"}, "rgb8"),
    "stylize+fuse grey8": ("/v1/stylize", {"style": "ukiyoe", "fuse": "laplacian"}, "grey8"),
    "stylize+fuse grey16": ("/v1/stylize", {"style": "ukiyoe", "fuse": "laplacian"}, "grey16"),
    "stylize+fuse rgb8": ("/v1/stylize", {"style": "ukiyoe", "fuse": "laplacian"}, "rgb8"),
    "fuse grey8": ("/v1/fuse", {}, "grey8"), "fuse grey16": ("/v1/fuse", {}, "grey16"), "fuse rgb8": ("/v1/fuse", {}, "rgb8"),
}


async def calibrate_case(args: argparse.Namespace, name: str, side: int) -> dict:
    """One request of case ``name`` at side x side on a fresh server: its peak RSS above the idle server."""
    import httpx

    from sdk.serve.admission import estimate, probe

    route, query, kind = CASES[name]
    depth, colour = (16 if kind == "grey16" else 8), kind == "rgb8"
    body = image(side, side, depth, colour, seed=1)
    small = image(256, 256, depth, colour)
    proc, url = start_server(args, 8, ["--max-body-mb", "1024", "--max-memory", "64G"])
    try:
        async with httpx.AsyncClient(timeout=900) as client:
            await wait_ready(client, url, proc)

            async def send(data: bytes) -> httpx.Response:
                if route == "/v1/fuse":
                    return await client.post(url + route, files={"content": ("a.png", data), "stylized": ("b.png", data)})
                return await client.post(url + route, params=query, content=data)

            for _ in range(3):
                await send(small)
            base = proc_status(proc.pid, "VmRSS")
            if not reset_peak(proc.pid):
                raise SystemExit("--calibrate needs /proc/PID/clear_refs (Linux, same user)")
            t0 = time.perf_counter()
            r = await send(body)
            seconds = time.perf_counter() - t0
            peak = proc_status(proc.pid, "VmHWM")
    finally:
        stop_server(proc)
    if r.status_code != 200:
        raise RuntimeError(f"{name}: {r.status_code} {r.text[:300]}")
    info = probe(body, "image", None)
    images, multipart = ([info, info], True) if route == "/v1/fuse" else ([info], False)
    body_bytes = len(body) * len(images)
    op = "stylize+fuse" if query.get("fuse") else route.rsplit("/", 1)[1]
    est = estimate(op, images, body_bytes, multipart)
    used = peak - base
    body_held = body_bytes * (2 if multipart else 1)
    return {"case": name, "side": side, "body_mb": mb(body_bytes), "answer_mb": mb(len(r.content)), "seconds": round(seconds, 1),
            "idle_rss_mb": mb(base), "peak_rss_mb": mb(peak), "used_mb": mb(used),
            "bytes_per_pixel": round((used - body_held) / (info.pixels * (2 if route == "/v1/fuse" else 1)), 2),
            "estimate_mb": mb(est), "estimate_over_used": round(est / used, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=10000, help="requests per mode (after the warm-up)")
    p.add_argument("--warmup", type=int, default=200, help="requests before RSS is first read")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--modes", default="on,off", help="on (--max-batch 8), off (--max-batch 1), or both")
    p.add_argument("--sizes", default=SIZES, help=f"request image sizes WxH, comma-separated (default {SIZES})")
    p.add_argument("--depth", default="8", help="bits per sample of the grey request PNGs: 8, 16 or 8,16")
    p.add_argument("--model-dir", default=None, help="model folder (default: the bundled model)")
    p.add_argument("--backend", default="onnxruntime-cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--timeout-s", type=float, default=120.0, help="the server's --timeout-s")
    p.add_argument("--max-memory", default=None, help="the server's --max-memory (default: its own)")
    p.add_argument("--max-body-mb", type=float, default=None, help="the server's --max-body-mb (default: its own)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--max-rss-growth", type=float, default=None, help="exit 1 if RSS grows more than this fraction")
    p.add_argument("--max-503-share", type=float, default=0.0, help="exit 1 if more answers than this share are 503 (default 0)")
    p.add_argument("--calibrate", type=int, default=None, metavar="SIDE", help="measure per-pixel memory at SIDE x SIDE instead")
    p.add_argument("--cases", default=",".join(CASES), help="--calibrate's cases, comma-separated (default: all)")
    args = p.parse_args(argv)
    if args.calibrate:
        results = [asyncio.run(calibrate_case(args, name.strip(), args.calibrate)) for name in args.cases.split(",")]
        for r in results:
            print(f"{r['case']:>20}: {r['bytes_per_pixel']:6.2f} B/px  used {r['used_mb']:7.1f} MB  estimate {r['estimate_mb']:7.1f} MB "
                  f"(x{r['estimate_over_used']})  body {r['body_mb']} MB  answer {r['answer_mb']} MB  {r['seconds']} s")
        bad = [r for r in results if r["estimate_over_used"] < 1]
    else:
        bodies = images(args.sizes, args.depth)
        results = [asyncio.run(run_mode(args, mode.strip(), bodies)) for mode in args.modes.split(",")]
        for r in results:
            print(f"batching {r['mode']:>3}: {r['throughput_img_s']:7.1f} img/s  p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  "
                  f"p99 {r['p99_ms']:7.1f} ms  503 {100 * r['share_503']:.1f} %  errors {r['errors']}  mean batch {r['mean_batch']}  "
                  f"RSS {r['rss_start_mb']} -> {r['rss_end_mb']} MB ({100 * r['rss_growth']:+.1f} %)  peak {r['peak_rss_mb']} MB "
                  f"(bound {r['memory_bound_mb']} MB: ready {r['rss_ready_mb']} + budget {r['memory_budget_mb']}; "
                  f"reserved at most {r['reserved_peak_mb']})  exit {r['exit_code']}")
        bad = [r for r in results if r["errors"] or r["exit_code"] != 0 or not r["within_bound"] or r["share_503"] > args.max_503_share
               or (args.max_rss_growth is not None and r["rss_growth"] > args.max_rss_growth)]
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
