"""Memory of a long video job: RSS sampled while a looped clip is colorized (it must stay flat).

Builds a clip of ``--minutes`` of video (the example photo panned back and forth, H.264, 854x480,
24 fps) in a temporary folder, runs :func:`sdk.video.process` on it and prints one JSON line with
the resident set size every ``--every`` frames, its peak, and the rate.

Usage:
    python benchmarks/video_memory.py --minutes 10
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_long_clip(path: Path, frames: int, size=(854, 480)) -> None:
    import av

    import sdk

    w, h = size
    src = Image.open(sdk.example_image()).convert("L")
    cycle = []
    for i in range(48):  # two seconds right, then the same back: the clip loops
        x = 4 * (i if i < 24 else 48 - i)
        g = np.asarray(src.resize((w, h), Image.BILINEAR, box=(x, 60, x + 400, 60 + 400 * h / w)))
        cycle.append(np.ascontiguousarray(np.repeat(g[..., None], 3, -1)))
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.options = {"crf": "23", "preset": "ultrafast"}
        for i in range(frames):
            fr = av.VideoFrame.from_ndarray(cycle[i % len(cycle)], format="rgb24")
            fr.pts, fr.time_base = i, Fraction(1, 24)
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/video_memory.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="length of the looped clip (default 10)")
    p.add_argument("--every", type=int, default=500, help="frames between RSS samples (default 500)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (default 2)")
    args = p.parse_args(argv)
    import sdk
    from sdk import video

    frames = int(args.minutes * 60 * 24)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "long.mp4", Path(tmp) / "long_colour.mp4"
        make_long_clip(src, frames)
        pipe = sdk.load(threads=args.threads)
        samples: list[tuple[int, float]] = [(0, rss_mb())]

        def progress(done: int, total: int | None) -> None:
            if done % args.every == 0:
                samples.append((done, round(rss_mb(), 1)))

        t0 = time.perf_counter()
        summary = video.process(pipe, src, dst, "colorize", progress=progress)
        wall = time.perf_counter() - t0
    after_first = [r for n, r in samples if n >= args.every]
    sys.stdout.write(json.dumps({"frames": summary.frames, "minutes": args.minutes, "fps": round(summary.frames / wall, 1),
                                 "rss_mb": samples, "peak_mb": max(r for _, r in samples),
                                 "growth_after_first_sample_mb": round(after_first[-1] - after_first[0], 1) if after_first else None}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
