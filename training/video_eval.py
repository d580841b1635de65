"""Flicker and colour quality of video colorization / stylization on real clips made grey.

For each clip (a video file or a folder of JPEG frames), the colour frames are made grey and run
through the SDK frame by frame and stabilised (:mod:`sdk.temporal`). Reported per clip and method:

- **Warping error** (Lai et al. 2018, "Learning Blind Video Temporal Consistency"): the mean over
  consecutive frames of the mean squared difference |O_t - warp(O_{t-1})|^2 (RGB in [0, 1]) over the
  pixels where the flow is reliable (forward-backward check), the flow computed on the *input*
  (grey) frames at full resolution. Two flows, built differently: OpenCV's DIS at its ``medium``
  preset (the SDK stabilises with DIS ``fast`` at the working size) and Farneback's polynomial
  expansion; ``original`` is the colour video itself (its natural level).
- **Colour quality** against the original colour frames: AuC of the ab error (0-150 levels, %),
  PSNR (dB) and colourfulness (Hasler & Suesstrunk).

Example:
    python -m training.video_eval ../shared/datasets/video/davis_bear ../shared/datasets/video/davis_blackswan --frames 60
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from training import metrics


def read_clip(path: Path, limit: int = 0) -> list[np.ndarray]:
    """RGB uint8 frames of a video file or a folder of images (sorted), at most ``limit`` (0: all)."""
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if files:
            from PIL import Image

            files = files[:limit] if limit else files
            return [np.asarray(Image.open(f).convert("RGB")) for f in files]
        videos = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() not in (".md", ".csv", ".txt"))
        if not videos:
            raise FileNotFoundError(f"{path} holds no frames and no video")
        path = videos[0]
    import av

    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgb24"))
            if limit and len(out) >= limit:
                break
    return out


def grey(rgb: np.ndarray) -> np.ndarray:
    from sdk import contract

    return np.clip(rgb.astype(np.float32) @ np.asarray(contract.LUMA_WEIGHTS, np.float32) + 0.5, 0, 255).astype(np.uint8)


class Flow:
    """Optical flow on the input frames and its forward-backward reliability mask."""

    def __init__(self, method: str) -> None:
        import cv2

        self.cv2, self.method = cv2, method
        if method == "dis":
            self.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def _calc(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self.method == "dis":
            return self.dis.calc(a, b, None)
        return self.cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 4, 15, 3, 5, 1.2, 0)

    def backward(self, prev: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(map_x, map_y, mask): where each pixel of ``cur`` was in ``prev``, and where that is reliable."""
        from sdk.temporal import forward_backward

        mx, my, ok = forward_backward(self._calc(cur, prev), self._calc(prev, cur))
        return mx, my, ok.astype(np.float32)


def warping_error(outputs: list[np.ndarray], flows: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Warping errors over consecutive frames, each the mean over t of a masked mean:

    ``l2``: |O_t - warp(O_{t-1})|^2 summed over RGB in [0, 1] (Lai et al.'s definition); ``l1``: the
    mean absolute RGB difference in 8-bit levels; ``chroma``: the L1 distance of Lab's (a, b), the
    colour alone (colorize takes the luminance from the input, so colour flicker shows here undiluted).
    """
    import cv2

    l2, l1, ab = [], [], []
    lab = [metrics.rgb_to_lab(o)[..., 1:] for o in outputs]
    for t in range(1, len(outputs)):
        mx, my, mask = flows[t - 1]
        n = max(float(mask.sum()), 1.0)
        prev = outputs[t - 1].astype(np.float32)
        cur = outputs[t].astype(np.float32)
        warped = cv2.remap(prev, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        d = cur - warped
        l2.append(float((((d / 255.0) ** 2).sum(-1) * mask).sum() / n))
        l1.append(float((np.abs(d).mean(-1) * mask).sum() / n))
        wab = cv2.remap(lab[t - 1].astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        ab.append(float((np.abs(lab[t] - wab).sum(-1) * mask).sum() / n))
    mean = lambda v: float(np.mean(v)) if v else 0.0  # noqa: E731
    return {"l2": mean(l2), "l1": mean(l1), "chroma": mean(ab)}


def colour_quality(outputs: list[np.ndarray], truth: list[np.ndarray]) -> dict[str, float]:
    return {"auc": float(np.mean([metrics.ab_auc(o, t) for o, t in zip(outputs, truth)])),
            "psnr": float(np.mean([metrics.psnr(o, t) for o, t in zip(outputs, truth)])),
            "colourfulness": float(np.mean([metrics.colourfulness(o) for o in outputs]))}


def evaluate_clip(pipeline, path: Path, frames: int, task: str, style: str, keeps: list[float]) -> dict:
    from sdk import stages, video
    from sdk.temporal import TemporalParams

    colour = read_clip(path, frames)
    greys = [grey(f) for f in colour]
    params = stages.Params() if task == "colorize" else stages.Params(style)
    per_frame = list(video.frames(pipeline, greys, task, params, video.VideoOptions(stabilize=False)))
    stab = {k: list(video.frames(pipeline, greys, task, params, video.VideoOptions(temporal=TemporalParams(keep=k)))) for k in keeps}
    row: dict = {"clip": path.name, "frames": len(colour), "size": f"{colour[0].shape[1]}x{colour[0].shape[0]}", "task": task}
    for method in ("dis", "farneback"):
        fl = Flow(method)
        flows = [fl.backward(greys[t - 1], greys[t]) for t in range(1, len(greys))]
        row[f"warp_{method}"] = {"original": warping_error(colour, flows), "per_frame": warping_error(per_frame, flows),
                                 **{f"keep_{k}": warping_error(v, flows) for k, v in stab.items()}}
    if task == "colorize":
        row["per_frame"] = colour_quality(per_frame, colour)
        row.update({f"keep_{k}": colour_quality(v, colour) for k, v in stab.items()})
        row["grey"] = colour_quality([np.repeat(g[..., None], 3, -1) for g in greys], colour)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.video_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("clips", nargs="+", type=Path, help="video files or clip folders (../shared/datasets/video/<clip>)")
    p.add_argument("--frames", type=int, default=60, help="frames per clip (0: all)")
    p.add_argument("--task", choices=["colorize", "stylize"], default="colorize", help="what to measure (default colorize)")
    p.add_argument("--style", default="ukiyoe", help="style for --task stylize (default ukiyoe)")
    p.add_argument("--keep", type=float, nargs="+", default=[0.8], help="TemporalParams.keep of the stabilised runs (default 0.8)")
    p.add_argument("--model-dir", default=None, help="model folder (default: the bundled model)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    import sdk

    pipe = sdk.load(model_dir=args.model_dir, threads=args.threads)
    rows = []
    for clip in args.clips:
        row = evaluate_clip(pipe, clip, args.frames, args.task, args.style, list(args.keep))
        rows.append(row)
        sys.stdout.write(json.dumps(row) + "\n")
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
