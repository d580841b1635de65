"""Comparison sheets on held-out photos: previous release vs the model being judged.

    python docs/make_comparison.py --prev-rev f881705                    # previous release from git
    python docs/make_comparison.py --prev-model-dir runs/prev_model --model-dir models/mine

Writes ``docs/comparison_colour.jpg`` (grey input, previous release, this model, truth for a
dozen ``photos/val`` images, evenly spaced through the sorted folder) and
``docs/comparison_styles.jpg`` (input and each style, both models, on four photos). The photos
are read from ``../shared`` and only rendered into the sheets, scaled down.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import sdk
from training.data import list_images

REPO = Path(__file__).resolve().parents[1]


def _tile(img: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop, resized to ``size``."""
    im = Image.fromarray(img)
    s = min(im.size)
    im = im.crop(((im.width - s) // 2, (im.height - s) // 2, (im.width + s) // 2, (im.height + s) // 2))
    return np.asarray(im.resize((size, size), Image.LANCZOS))


def _sheet(rows: list[list[np.ndarray]], header: list[str], size: int, path: Path) -> None:
    grid = np.concatenate([np.concatenate([_tile(c, size) for c in row], axis=1) for row in rows], axis=0)
    canvas = Image.new("RGB", (grid.shape[1], grid.shape[0] + 18), "white")
    canvas.paste(Image.fromarray(grid), (0, 18))
    draw = ImageDraw.Draw(canvas)
    for i, h in enumerate(header):
        draw.text((i * size + 4, 3), h, fill="black")
    canvas.save(path, quality=90)


def previous_release(rev: str, into: Path) -> Path:
    """Write the bundled model of git revision ``rev`` into ``into`` and return the folder."""
    into.mkdir(parents=True, exist_ok=True)
    for name in ("model.onnx", "manifest.json"):
        blob = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:sdk/models/default/{name}"], capture_output=True, check=True).stdout
        (into / name).write_bytes(blob)
    return into


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", default=None, help="model to judge (default: the bundled one)")
    p.add_argument("--prev-model-dir", default=None, help="previous release's model folder")
    p.add_argument("--prev-rev", default=None, help="or: git revision whose bundled model is the previous release")
    p.add_argument("--photos", default=str(REPO.parent / "shared" / "datasets" / "photos" / "val"))
    p.add_argument("--n-colour", type=int, default=12, help="photos on the colour sheet (at least 1)")
    p.add_argument("--n-style", type=int, default=4, help="photos on the style sheet (0: no style sheet)")
    p.add_argument("--tile", type=int, default=160)
    p.add_argument("--out-dir", default=str(REPO / "docs"))
    args = p.parse_args(argv)
    if args.n_colour < 1 or args.n_style < 0:
        p.error(f"--n-colour must be >= 1 and --n-style >= 0; got {args.n_colour} and {args.n_style}")

    with tempfile.TemporaryDirectory() as tmp:
        prev_dir = args.prev_model_dir or (previous_release(args.prev_rev, Path(tmp) / "prev") if args.prev_rev else None)
        if prev_dir is None:
            p.error("give --prev-model-dir or --prev-rev")
        new, prev = sdk.load(args.model_dir), sdk.load(prev_dir)
        files = list_images(args.photos)
        pick = [files[i] for i in np.linspace(0, len(files) - 1, args.n_colour).astype(int)]
        rows = []
        for f in pick:
            rgb = np.asarray(Image.open(f).convert("RGB"))
            grey = np.asarray(Image.fromarray(rgb).convert("L"))
            rows.append([np.repeat(grey[:, :, None], 3, 2), prev.colorize(grey), new.colorize(grey), rgb])
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _sheet(rows, ["grey input", "previous release", "this model", "truth"], args.tile, out / "comparison_colour.jpg")

        if not args.n_style:
            return 0
        styles = new.styles()[1:]
        rows = []
        for f in pick[1 :: max(1, len(pick) // args.n_style)][: args.n_style]:
            rgb = np.asarray(Image.open(f).convert("RGB"))
            rows.append([rgb] + [prev.stylize(rgb, s) for s in styles])
            rows.append([rgb] + [new.stylize(rgb, s) for s in styles])
        header = ["input (rows: previous, this model)"] + styles
        _sheet(rows, header, args.tile, out / "comparison_styles.jpg")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
