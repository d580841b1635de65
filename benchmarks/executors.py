"""Start-up vs steady-state rate of the folder executors, in one process (benchmarks/README.md,
"Folder throughput: local vs Ray").

Runs colorize on DIR with the local executor (``sdk.folder.run``) and the Ray executor
(``sdk.ray_executor.run``, a local Ray instance started and stopped per run), alternating, and prints
one JSON line per run: seconds until the first file was done, the rate after it (from the
progress callback's timestamps) and the whole run's wall time. Outputs go to a temporary folder.

Usage:
    python benchmarks/executors.py DIR [--rounds 2] [--threads 2] [--actors 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import sdk
from sdk import folder, ray_executor


def measure(name: str, src: str, run) -> dict:
    """Run one executor on a fresh output folder; the timings of its progress callback."""
    with tempfile.TemporaryDirectory() as out:
        items = folder.plan([src], str(Path(out) / "out"), "png")
        stamps: list[float] = []
        t0 = time.perf_counter()
        summary = run(items, lambda note: stamps.append(time.perf_counter()))
        t1 = time.perf_counter()
    return {"executor": name, "files": len(stamps), "written": summary.written, "wall_s": round(t1 - t0, 2),
            "first_done_s": round(stamps[0] - t0, 2), "rate_after_first_img_s": round((len(stamps) - 1) / (stamps[-1] - stamps[0]), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="total threads of each executor (Ray: split over the actors)")
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    a = p.parse_args()

    def local(items, step):
        with sdk.load(threads=a.threads) as pipe:
            return folder.run(items, folder.pipeline_process(pipe, "colorize"), batch_size=a.batch_size, progress=step)

    def ray(items, step):
        return ray_executor.run(items, "colorize", actors=a.actors, threads=max(1, a.threads // a.actors), batch_size=a.batch_size,
                              quiet=True, progress=step)

    for _ in range(a.rounds):
        print(json.dumps(measure(f"local {a.threads} threads", a.dir, local)), flush=True)
        print(json.dumps(measure(f"ray {a.actors} actors x {max(1, a.threads // a.actors)} threads", a.dir, ray)), flush=True)


if __name__ == "__main__":
    main()
