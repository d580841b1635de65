"""Evaluate an exported model on held-out photos through the SDK (the path users run).

For each colour photo: make it grey, colorize it at full resolution with the SDK, and score the
result against the original: PSNR, SSIM, colourfulness, per-image |colourfulness - truth's|, and
colour accuracy (AuC of the per-pixel Lab ab error over thresholds 0..150, Zhang et al. 2016).
The luminance-only baseline (the grey image itself) is scored the same way, so the table says
what the model adds; run it on the previous release's model folder to compare releases.

    python -m training.evaluate --model-dir sdk/models/default --photos ../shared/datasets/photos/val
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

import sdk
from sdk import metrics
from training.data import list_images


def evaluate(model_dir: str | None, photos: str, limit: int = 0, backend: str = "auto", offset: int = 0, every: int = 1) -> dict:
    """Mean PSNR / SSIM / colourfulness / |dCF| / AuC of the model and of the grey baseline over ``photos``.

    ``every`` keeps every n-th file after the offset (``every=2`` with offsets 0 and 1 splits the
    folder in two halves: choose settings on one, report the other).
    ``offset`` skips the first files (sorted order): the trainer validates on the first
    ``--val-images`` files, so ``offset`` = that number scores only photos that never took part
    in choosing a checkpoint.

    Returns:
        ``{"model": {...}, "baseline_grey": {...}, "ground_truth": {"colourfulness": ...}, "images": n}``
    """
    pipe = sdk.load(model_dir, backend=backend)
    files = list_images(photos)[offset::every]
    if limit:
        files = files[:limit]
    rows = []
    t0 = time.perf_counter()
    for f in files:
        rgb = np.asarray(Image.open(f).convert("RGB"))
        grey = np.asarray(Image.fromarray(rgb).convert("L"))
        out = pipe.colorize(grey)
        grey3 = np.repeat(grey[:, :, None], 3, axis=2)
        cf_true = metrics.colourfulness(rgb)
        cf = metrics.colourfulness(out)
        rows.append([
            metrics.psnr(out, rgb), metrics.ssim(out, rgb), cf,
            metrics.psnr(grey3, rgb), metrics.ssim(grey3, rgb), cf_true,
            abs(cf - cf_true), metrics.ab_auc(out, rgb), metrics.ab_auc(grey3, rgb),
        ])
    a = np.asarray(rows)
    m = a.mean(axis=0)
    return {
        "images": len(files),
        "offset": offset,
        "every": every,
        "photos": str(photos),
        "model": {"psnr": round(m[0], 3), "ssim": round(m[1], 4), "colourfulness": round(m[2], 2),
                  "abs_dcf": round(m[6], 2), "auc": round(m[7], 2), "psnr_wins_vs_grey": int((a[:, 0] > a[:, 3]).sum())},
        "baseline_grey": {"psnr": round(m[3], 3), "ssim": round(m[4], 4), "colourfulness": 0.0,
                          "abs_dcf": round(m[5], 2), "auc": round(m[8], 2)},
        "ground_truth": {"colourfulness": round(m[5], 2)},
        "backend": pipe.backend_name,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", default=None, help="exported model folder (default: the bundled model)")
    p.add_argument("--photos", default="../shared/datasets/photos/val", help="folder of colour photos")
    p.add_argument("--limit", type=int, default=0, help="use only the first N photos")
    p.add_argument("--offset", type=int, default=0, help="skip the first N photos (e.g. those used to pick a checkpoint)")
    p.add_argument("--every", type=int, default=1, help="keep every N-th photo after the offset")
    p.add_argument("--backend", default="auto")
    p.add_argument("--json", default="", help="also write the result to this file")
    args = p.parse_args(argv)
    result = evaluate(args.model_dir, args.photos, args.limit, args.backend, args.offset, args.every)
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
