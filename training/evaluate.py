"""Evaluate an exported model on held-out photos through the SDK (the path users run).

For each colour photo: make it grey, colorize it at full resolution with the SDK, and score the
result against the original: PSNR, SSIM, colourfulness, per-image |colourfulness - truth's|, and
colour accuracy (AuC of the per-pixel Lab ab error over thresholds 0..150, Zhang et al. 2016).
The luminance-only baseline (the grey image itself) is scored the same way, so the table says
what the model adds; run it on the previous release's model folder to compare releases.

    python -m training.evaluate --model-dir sdk/models/default --photos ../shared/datasets/photos/val

``--chroma-factors 1.0,1.1,1.2`` also scores each output with its chroma scaled by those factors
(in YCbCr, luminance kept): the model's trade between colourfulness and accuracy, so that two models
are compared at equal colourfulness rather than at whatever colourfulness their read-outs give.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

import sdk
from sdk import contract
from training import metrics
from training.data import list_images

_RGB_TO_YCBCR = np.asarray(contract.RGB_TO_YCBCR, np.float64)
_YCBCR_TO_RGB = np.asarray(contract.YCBCR_TO_RGB, np.float64)


def scale_chroma(rgb: np.ndarray, factor: float) -> np.ndarray:
    """HxWx3 uint8 -> the same with Cb and Cr multiplied by ``factor`` (luminance kept, clipped to the box)."""
    ycc = (rgb.astype(np.float64) / 255.0) @ _RGB_TO_YCBCR.T
    ycc[..., 1:] *= factor
    return np.clip(np.rint((ycc @ _YCBCR_TO_RGB.T) * 255.0), 0, 255).astype(np.uint8)


def _scores(out: np.ndarray, rgb: np.ndarray, cf_true: float, truth_ab: np.ndarray) -> list[float]:
    """PSNR, SSIM, colourfulness, |dCF|, AuC of one output (``truth_ab``: the photo's Lab a*b*)."""
    cf = metrics.colourfulness(out)
    return [metrics.psnr(out, rgb), metrics.ssim(out, rgb), cf, abs(cf - cf_true), metrics.ab_auc(out, rgb, truth_ab=truth_ab)]


def _summary(a: np.ndarray) -> dict:
    """Means of :func:`_scores` rows, rounded as reported."""
    m = a.mean(axis=0)
    return {"psnr": round(float(m[0]), 3), "ssim": round(float(m[1]), 4), "colourfulness": round(float(m[2]), 2),
            "abs_dcf": round(float(m[3]), 2), "auc": round(float(m[4]), 2)}


def evaluate(model_dir: str | None, photos: str, limit: int = 0, backend: str = "auto", offset: int = 0, every: int = 1,
             chroma_factors: tuple[float, ...] = (), saturation: float = 1.0) -> dict:
    """Mean PSNR / SSIM / colourfulness / |dCF| / AuC of the model and of the grey baseline over ``photos``.

    ``every`` keeps every n-th file after the offset (``every=2`` with offsets 0 and 1 splits the
    folder in two halves: choose settings on one, report the other).
    ``offset`` skips the first files (sorted order): the trainer validates on the first
    ``--val-images`` files, so ``offset`` = that number scores only photos that never took part
    in choosing a checkpoint.
    ``chroma_factors`` adds ``"chroma_factors": {"1.1": {...}, ...}``: the same scores with each
    output's chroma scaled (:func:`scale_chroma`).
    ``saturation`` is passed to the SDK's ``colorize`` (what a user's setting gives).

    Returns:
        ``{"model": {...}, "baseline_grey": {...}, "ground_truth": {"colourfulness": ...}, "images": n}``

    Raises:
        ValueError: a chroma factor is not positive.
    """
    if any(not f > 0 for f in chroma_factors):
        raise ValueError(f"chroma factors scale the output's chroma and must be > 0; got {list(chroma_factors)}")
    pipe = sdk.load(model_dir, backend=backend)
    files = list_images(photos)[offset::every]
    if limit:
        files = files[:limit]
    model, grey_rows, cf_true = [], [], []
    scaled: dict[float, list[list[float]]] = {f: [] for f in chroma_factors}
    t0 = time.perf_counter()
    for f in files:
        rgb = np.asarray(Image.open(f).convert("RGB"))
        grey = np.asarray(Image.fromarray(rgb).convert("L"))
        out = pipe.colorize(grey, saturation=saturation)
        cf_true.append(metrics.colourfulness(rgb))
        truth_ab = metrics.rgb_to_lab(rgb)[..., 1:]  # once per photo, for every output scored against it
        model.append(_scores(out, rgb, cf_true[-1], truth_ab))
        grey_rows.append(_scores(np.repeat(grey[:, :, None], 3, axis=2), rgb, cf_true[-1], truth_ab))
        for k in chroma_factors:
            scaled[k].append(_scores(scale_chroma(out, k), rgb, cf_true[-1], truth_ab))
    a, g = np.asarray(model), np.asarray(grey_rows)
    return {
        "images": len(files),
        "offset": offset,
        "every": every,
        "photos": str(photos),
        "model": {**_summary(a), "psnr_wins_vs_grey": int((a[:, 0] > g[:, 0]).sum())},
        "baseline_grey": {**_summary(g), "colourfulness": 0.0},
        "ground_truth": {"colourfulness": round(float(np.mean(cf_true)), 2)},
        **({"chroma_factors": {f"{k:g}": _summary(np.asarray(r)) for k, r in scaled.items()}} if chroma_factors else {}),
        "saturation": saturation,
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
    p.add_argument("--chroma-factors", default="", help="comma-separated factors: also score the outputs with their chroma scaled")
    p.add_argument("--saturation", type=float, default=1.0, help="the SDK's colorize saturation (1: the model's colour)")
    p.add_argument("--json", default="", help="also write the result to this file")
    args = p.parse_args(argv)
    try:
        factors = tuple(float(f) for f in args.chroma_factors.split(",") if f.strip())
    except ValueError:
        p.error(f"--chroma-factors takes comma-separated numbers such as 1.0,1.1,1.2; got {args.chroma_factors!r}")
    result = evaluate(args.model_dir, args.photos, args.limit, args.backend, args.offset, args.every, factors, args.saturation)
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
