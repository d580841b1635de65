"""Temporal stabilisation of video: each frame's generator output blended with the previous one's.

Frame-by-frame inference flickers (a wall changes hue from one frame to the next). Between
:func:`sdk.stages.infer` and :func:`sdk.stages.finish`, :class:`Stabilizer` blends each frame's
output at the working size with the previous *stabilised* output, warped to the current frame by
the optical flow between the two frames' luminance (OpenCV's DIS flow, at the working size):

    out_t = raw_t + keep * M_t * (warp(out_{t-1}) - raw_t)

``M_t`` is 1 where the flow is reliable and 0 where it is not: the forward-backward check of
Sundaram et al. (2010) (occlusions, fast motion) and a luminance check (the warped previous frame
must match the current one), so a moving object takes its own colour instead of smearing the
background's over it. A scene cut (a jump of the luminance histogram) resets the state. Colorize
stabilises the chroma (Cb, Cr: the luminance comes from the frame itself); stylize all three planes.

OpenCV (``opencv-python-headless``) comes with the ``video`` extra; it is imported when a
:class:`Stabilizer` is created.

Example:
    >>> stab = Stabilizer()
    >>> options = stages.check_options("colorize", stages.Params(), p.manifest)
    >>> jobs = [stages.prepare(f, options) for f in frames]
    >>> outs = [stab(job.luma, out, "colorize") for job, out in zip(jobs, stages.infer(p.runner, jobs))]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sdk.errors import BackendUnavailableError, InvalidArgumentError, install_hint

INSTALL = install_hint("video")


def require_cv2():
    """The ``cv2`` module, or BackendUnavailableError naming the ``video`` extra."""
    try:
        import cv2
    except ImportError as e:
        raise BackendUnavailableError(f"video needs OpenCV (opencv-python-headless), which is not importable here ({e}); "
                                      f"install it with {INSTALL}") from e
    return cv2


@dataclass(frozen=True)
class TemporalParams:
    """Settings of :class:`Stabilizer`.

    Args:
        keep: share of the motion-compensated previous output a frame keeps where the flow is
            reliable, in [0, 1): 0 is frame by frame; higher is steadier and slower to follow a
            real change of colour.
        cut: luminance-histogram distance (half the L1 distance of 32-bin histograms, 0..1) above
            which a frame starts a new shot (the state is reset).
        luma_tolerance: largest |luma - warped previous luma| (0..1) at which a pixel's flow counts
            as reliable.
        fb_alpha, fb_beta: the forward-backward check, |f + b|^2 <= alpha (|f|^2 + |b|^2) + beta
            (pixels at the working size).
    """

    keep: float = 0.8
    cut: float = 0.35
    luma_tolerance: float = 0.05
    fb_alpha: float = 0.01
    fb_beta: float = 0.5

    def __post_init__(self) -> None:
        for name, lo, hi in (("keep", 0.0, 0.999), ("cut", 0.0, 1.0), ("luma_tolerance", 0.0, 1.0), ("fb_alpha", 0.0, 10.0),
                             ("fb_beta", 0.0, 1000.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= float(v) <= hi:
                raise InvalidArgumentError(f"TemporalParams.{name} is {v!r}; expected a number in [{lo}, {hi}]")


def histogram_distance(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """Half the L1 distance between the luminance histograms of ``a`` and ``b`` (floats in [0, 1]): 0..1."""
    ha = np.histogram(a, bins=bins, range=(0.0, 1.0))[0] / max(a.size, 1)
    hb = np.histogram(b, bins=bins, range=(0.0, 1.0))[0] / max(b.size, 1)
    return 0.5 * float(np.abs(ha - hb).sum())


def forward_backward(back: np.ndarray, fwd: np.ndarray, alpha: float = 0.01, beta: float = 0.5
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sampling maps along a backward flow and where the flow is consistent (Sundaram et al. 2010).

    Args:
        back: float32 [h, w, 2], for each pixel of the current frame its offset in the previous one.
        fwd: float32 [h, w, 2], the flow from the previous frame to the current one.
        alpha, beta: |b + f|^2 <= alpha (|b|^2 + |f|^2) + beta.

    Returns:
        (map_x, map_y, ok): float32 maps for ``cv2.remap`` into the previous frame, and a bool mask
        of pixels whose flow lands inside the frame and passes the check.
    """
    cv2 = require_cv2()
    h, w = back.shape[:2]
    map_x = back[..., 0] + np.arange(w, dtype=np.float32)[None, :]
    map_y = back[..., 1] + np.arange(h, dtype=np.float32)[:, None]
    fwd_at = cv2.remap(fwd, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    err = ((back + fwd_at) ** 2).sum(-1)
    bound = alpha * ((back**2).sum(-1) + (fwd_at**2).sum(-1)) + beta
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    return map_x, map_y, inside & (err <= bound)


class FlowField:
    """Optical flow between consecutive luminance frames and its reliability mask (DIS, OpenCV)."""

    def __init__(self, params: TemporalParams = TemporalParams()) -> None:
        self.cv2 = require_cv2()
        self.params = params
        self._dis = self.cv2.DISOpticalFlow_create(self.cv2.DISOPTICAL_FLOW_PRESET_FAST)

    def backward(self, prev: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each pixel of ``cur``, where it was in ``prev``.

        Args:
            prev, cur: float32 [h, w] luminance in [0, 1].

        Returns:
            (map_x, map_y, mask): float32 [h, w] sampling maps into ``prev`` (for ``cv2.remap``) and
            the reliability mask (1 reliable, 0 not: outside the frame, failing the forward-backward
            or the luminance check).
        """
        cv2, prm = self.cv2, self.params
        p8 = np.clip(prev * 255.0 + 0.5, 0, 255).astype(np.uint8)
        c8 = np.clip(cur * 255.0 + 0.5, 0, 255).astype(np.uint8)
        back = self._dis.calc(c8, p8, None)  # cur(x) ~ prev(x + back(x))
        fwd = self._dis.calc(p8, c8, None)  # prev(y) ~ cur(y + fwd(y))
        map_x, map_y, ok = forward_backward(back, fwd, prm.fb_alpha, prm.fb_beta)
        warped = cv2.remap(prev.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mask = ok & (np.abs(warped - cur) <= prm.luma_tolerance)
        return map_x, map_y, mask.astype(np.float32)


class Stabilizer:
    """Blends each frame's generator output with the motion-compensated previous output.

    Create one per video (or per shot stream) and call it on the frames in order; :meth:`reset`
    starts over (a new video). Not thread-safe: one video, one stabiliser.
    """

    def __init__(self, params: TemporalParams = TemporalParams()) -> None:
        self.params = params
        self.flow = FlowField(params)
        self.cuts = 0
        self.reliable = 0.0  # mean reliability mask of the last frame (0 after a cut)
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame (the next call passes its output through unchanged)."""
        self._luma: np.ndarray | None = None
        self._out: np.ndarray | None = None

    def __call__(self, luma: np.ndarray, output: np.ndarray, task: str) -> np.ndarray:
        """The stabilised output of the next frame.

        Args:
            luma: float32 [h, w] the frame's luminance at the working shape (``Job.luma``).
            output: float32 [3, h, w] its generator output (Y, Cb, Cr) from :func:`sdk.stages.infer`.
            task: ``"colorize"`` (chroma stabilised) or ``"stylize"`` (every plane).

        Returns:
            float32 [3, h, w], for :func:`sdk.stages.finish`.

        Raises:
            InvalidArgumentError: shapes that do not match, or an unknown task.
        """
        if task not in ("colorize", "stylize"):
            raise InvalidArgumentError(f"task {task!r}; expected 'colorize' or 'stylize'")
        if luma.ndim != 2 or output.shape != (3,) + luma.shape:
            raise InvalidArgumentError(f"luma {luma.shape} and output {output.shape}; expected [h, w] and [3, h, w] of one frame")
        first = 1 if task == "colorize" else 0
        prev_luma, prev_out = self._luma, self._out
        if prev_luma is None or prev_out is None or prev_luma.shape != luma.shape or \
                histogram_distance(prev_luma, luma) > self.params.cut:
            if prev_luma is not None:
                self.cuts += 1
            result = output.astype(np.float32, copy=True)
            self.reliable = 0.0
        else:
            cv2 = self.flow.cv2
            map_x, map_y, mask = self.flow.backward(prev_luma, luma)
            mask = cv2.blur(mask, (3, 3))  # soft edges: no seam where reliability changes
            self.reliable = float(mask.mean())
            wgt = np.float32(self.params.keep) * mask
            result = output.astype(np.float32, copy=True)
            for c in range(first, 3):
                warped = cv2.remap(prev_out[c], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                result[c] += wgt * (warped - result[c])
        self._luma = luma.astype(np.float32, copy=True)
        self._out = result
        return result
