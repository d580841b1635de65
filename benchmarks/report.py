"""Markdown tables and a bar chart from a pytest-benchmark JSON file.

Usage::

    python -m pytest benchmarks --benchmark-warmup=on --benchmark-json=.benchmarks/all.json
    python benchmarks/report.py .benchmarks/all.json --plot docs/latency.png > .benchmarks/all.md

Uses Pillow for the chart (no plotting library needed).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

SIZES = ["256", "512", "1024", "4096x3072"]
SIZE_LABEL = {"256": "256²", "512": "512²", "1024": "1024²", "4096x3072": "4096×3072"}


def load(path: Path) -> list[dict]:
    return json.loads(Path(path).read_text())["benchmarks"]


def row_key(b: dict) -> tuple[str, str]:
    """(row label, size) for a benchmark, from its test name and extra_info."""
    name, e = b["name"], b.get("extra_info", {})
    base = name.split("[")[0].removeprefix("test_")
    backend = e.get("backend", "")
    if base == "fuse":
        return f"fuse {e.get('method')}", e["size"]
    if base.startswith("stage_"):
        return f"colorize stage: {e.get('stage')}" + (f" ({backend})" if e.get("stage") == "infer" else ""), e["size"]
    if base in ("colorize", "stylize"):
        return f"{base} ({backend})", e["size"]
    return re.sub(r"_", " ", name), e.get("size", "-")


def ms(b: dict) -> str:
    s = b["stats"]
    return f"{1e3 * s['median']:.1f} ± {1e3 * (s['q3'] - s['q1']) / 2:.1f}"


def size_table(benches: list[dict]) -> str:
    rows: dict[str, dict[str, str]] = {}
    for b in benches:
        if b.get("extra_info", {}).get("batch", 1) != 1 or "peak_memory" in b["name"] or not any(
                b["name"].startswith(p) for p in ("test_colorize", "test_stylize", "test_fuse", "test_stage")):
            continue
        label, size = row_key(b)
        rows.setdefault(label, {})[size] = ms(b)
    out = ["| call (ms, median ± half IQR) | " + " | ".join(SIZE_LABEL[s] for s in SIZES) + " |",
           "|---|" + "---:|" * len(SIZES)]
    rank = ["colorize (", "stylize (", "fuse laplacian", "fuse luminance", "fuse weighted", "colorize stage: pre",
            "colorize stage: infer", "colorize stage: post"]
    for label, cells in sorted(rows.items(), key=lambda kv: next((i for i, r in enumerate(rank) if kv[0].startswith(r)), len(rank))):
        out.append(f"| {label} | " + " | ".join(cells.get(s, "") for s in SIZES) + " |")
    return "\n".join(out)


def other_table(benches: list[dict]) -> str:
    out = ["| case | backend | batch | median ms | per image ms |", "|---|---|---:|---:|---:|"]
    for b in benches:
        e = b.get("extra_info", {})
        if "peak_mb_above_idle" in e:
            out.append(f"| colorize 4096×3072, peak memory above idle: {e['peak_mb_above_idle']:.0f} MB | {e.get('backend')} | 1 "
                       f"| {1e3 * b['stats']['median']:.1f} | |")
            continue
        if "in_process_median_s" in e:
            out.append(f"| cold start: new process, import sdk + first colorize 512² (in-process part {1e3 * e['in_process_median_s']:.0f} ms) "
                       f"| auto | 1 | {1e3 * b['stats']['median']:.0f} | |")
            continue
        if not (b["name"].startswith("test_batch") or b["name"].startswith("test_generator") or b["name"] == "test_calibration"):
            continue
        e = b.get("extra_info", {})
        batch = int(e.get("batch", 1))
        med = 1e3 * b["stats"]["median"]
        what = {"test_batch": f"{e.get('op')} 256² through Pipeline", "test_generator_torch_eager": "generator 256², PyTorch eager",
                "test_generator_onnx": "generator 256², ONNX Runtime", "test_calibration": "calibration workload"}
        label = next(v for k, v in what.items() if b["name"].startswith(k))
        out.append(f"| {label} | {e.get('backend', '-')} | {batch} | {med:.1f} | {med / batch:.1f} |")
    return "\n".join(out)


def plot(benches: list[dict], path: Path) -> None:
    """Horizontal bars, log-scaled time, for the end-to-end calls at every size."""
    items = []
    for b in benches:
        base = b["name"].split("[")[0]
        if base in ("test_colorize", "test_stylize", "test_fuse") and "peak_memory" not in b["name"]:
            label, size = row_key(b)
            items.append((label.replace(" (onnxruntime-cpu)", ""), size, 1e3 * b["stats"]["median"]))
    order = ["colorize", "stylize", "fuse laplacian", "fuse luminance", "fuse weighted"]
    items.sort(key=lambda t: (order.index(t[0]) if t[0] in order else len(order), t[0], SIZES.index(t[1])))
    ascii_size = {"256": "256x256", "512": "512x512", "1024": "1024x1024", "4096x3072": "4096x3072"}
    colours = {"256": (120, 170, 220), "512": (70, 130, 200), "1024": (30, 90, 170), "4096x3072": (10, 40, 110)}
    font = ImageFont.load_default(size=14) if hasattr(ImageFont, "load_default") else None
    W, left, right, bar, gap = 960, 160, 170, 16, 10
    H = 70 + len(items) * bar + gap * len({t[0] for t in items}) + 40
    im = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(im)
    lo, hi = 0.1, 10 ** math.ceil(math.log10(max(t[2] for t in items)))
    x = lambda v: left + (W - left - right) * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))  # noqa: E731
    d.text((10, 10), "chromaforge latency, ONNX Runtime CPU, 2 cores (median ms, log scale)", fill="black", font=font)
    y, prev = 45, None
    for label, size, v in items:
        if label != prev:
            y += gap
            d.text((10, y), label, fill="black", font=font)
            prev = label
        d.rectangle([left, y, x(v), y + bar - 3], fill=colours[size])
        d.text((x(v) + 4, y), f"{v:.3g} ms  {ascii_size[size]}", fill="black", font=font)
        y += bar
    for k in range(-1, int(math.log10(hi)) + 1):
        gx = x(10.0 ** k)
        d.line([gx, 40, gx, y + 4], fill=(200, 200, 200))
        d.text((gx - 10, y + 8), f"{10.0 ** k:g}", fill="black", font=font)
    im.save(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/report.py", description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path)
    p.add_argument("--plot", type=Path, default=None, help="write a PNG bar chart here")
    a = p.parse_args(argv)
    benches = load(a.results)
    print(size_table(benches))
    print()
    print(other_table(benches))
    if a.plot:
        plot(benches, a.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
