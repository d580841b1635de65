"""Interleaved A/B latency of two model folders through the Pipeline, in one process.

The shared VM's speed drifts between runs (benchmarks/README.md), so two releases timed in
separate benchmark runs can differ by more than the change itself. Here every round times A and
then B on the same input, and the medians are compared: drift hits both alike.

Example:
    python benchmarks/ab.py --a runs/release3_model --b sdk/models/default --op stylize --sizes 256,512,1024
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from conftest import photo
from sdk import Pipeline


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/ab.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--a", required=True, help="model folder A (e.g. the previous release)")
    p.add_argument("--b", default=None, help="model folder B (default: the bundled model)")
    p.add_argument("--op", choices=("colorize", "stylize"), default="stylize")
    p.add_argument("--style", default="ukiyoe", help="style for --op stylize")
    p.add_argument("--sizes", default="256,512,1024", help="comma-separated benchmark sizes (256, 512, 1024, 4096x3072)")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args(argv)
    pipes = {"A": Pipeline(model_dir=args.a), "B": Pipeline(model_dir=args.b)}
    for size in args.sizes.split(","):
        img = photo(size, grey=args.op == "colorize")
        call = {k: (lambda pipe=pipe: pipe.colorize(img)) if args.op == "colorize" else (lambda pipe=pipe: pipe.stylize(img, args.style))
                for k, pipe in pipes.items()}
        for fn in call.values():
            for _ in range(args.warmup):
                fn()
        times: dict[str, list[float]] = {k: [] for k in call}
        for _ in range(args.rounds):
            for k, fn in call.items():
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
        a, b = (1000 * float(np.median(times[k])) for k in ("A", "B"))
        print(f"{args.op} {size}: A {a:.1f} ms, B {b:.1f} ms, B/A {b / a:.2f}  (medians of {args.rounds} interleaved rounds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
