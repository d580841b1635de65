"""Image-quality metrics in plain numpy: PSNR, SSIM and colourfulness.

Used by the trainer's validation, the model card's evaluation and the tests, so every number
the project reports comes from one implementation. Images are uint8 or float arrays in
[0, 255] / [0, 1] with shape HxWx3 (or HxW for SSIM on one channel).
"""

from __future__ import annotations

import numpy as np


def _as_unit(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    return img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two images on the same scale (peak 1.0 or 255).

    Example:
        >>> psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8))
        inf
    """
    x, y = _as_unit(a), _as_unit(b)
    mse = float(np.mean((x.astype(np.float64) - y) ** 2))
    return float("inf") if mse == 0.0 else 10.0 * np.log10(1.0 / mse)


def _box(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window, valid region only, via cumulative sums."""
    k = 2 * r + 1
    c = np.cumsum(np.cumsum(np.pad(x, ((1, 0), (1, 0))), axis=0), axis=1)
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def ssim(a: np.ndarray, b: np.ndarray, win: int = 7) -> float:
    """Structural similarity (Wang et al. 2004) with a uniform ``win``x``win`` window.

    Colour images are scored per channel and averaged (scikit-image's convention with
    ``channel_axis=-1``, ``gaussian_weights=False``).
    """
    x, y = _as_unit(a).astype(np.float64), _as_unit(b).astype(np.float64)
    if x.ndim == 3:
        return float(np.mean([ssim(x[..., c], y[..., c], win) for c in range(x.shape[2])]))
    r = win // 2
    c1, c2 = 0.01**2, 0.03**2
    n = win * win
    mx, my = _box(x, r), _box(y, r)
    cov = n / (n - 1)
    vx = (_box(x * x, r) - mx * mx) * cov
    vy = (_box(y * y, r) - my * my) * cov
    vxy = (_box(x * y, r) - mx * my) * cov
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def colourfulness(img: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colourfulness on a 0..255 RGB scale.

    ``rg = R - G``, ``yb = (R + G) / 2 - B``, ``CF = sqrt(s_rg^2 + s_yb^2) + 0.3 sqrt(m_rg^2 + m_yb^2)``.
    A grey image scores 0; DDColor reports about 38 on ImageNet, DeOldify about 21.
    """
    x = _as_unit(img).astype(np.float64) * 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    rg = r - g
    yb = 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def rgb_to_lab(img: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of sRGB pixels: HxWx3 uint8 or float in [0, 1] -> HxWx3 float32.

    Example:
        >>> rgb_to_lab(np.full((1, 1, 3), 255, np.uint8)).round(1).tolist()
        [[[100.0, 0.0, 0.0]]]
    """
    x = _as_unit(img)
    lin = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]], np.float32)
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883], np.float32)
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)
    return lab.astype(np.float32)


def ab_auc(pred: np.ndarray, truth: np.ndarray, max_threshold: int = 150, *, truth_ab: np.ndarray | None = None) -> float:
    """Colour accuracy (Zhang et al. 2016's AuC): area under the cumulative distribution of
    per-pixel ab error in Lab over thresholds 0..``max_threshold``, normalised to 0..100.

    Rewards the right hue rather than saturation alone: a grey image scores high (most true
    colours are weak), a wrongly saturated one lower, a correct one higher.

    Args:
        pred, truth: HxWx3 uint8 RGB images of the same size.
        max_threshold: the largest ab error counted (Zhang et al.: 150).
        truth_ab: ``rgb_to_lab(truth)[..., 1:]`` when the caller already has it (scoring several
            outputs against one photo converts the photo once).

    Returns:
        The AuC, 0..100.

    Raises:
        ValueError: the truth (or ``truth_ab``) is not the prediction's size.

    Example:
        >>> grey = np.full((4, 4, 3), 128, np.uint8)
        >>> ab_auc(grey, grey)
        100.0
    """
    ab = rgb_to_lab(truth)[..., 1:] if truth_ab is None else truth_ab
    if ab.shape != (*pred.shape[:2], 2):
        raise ValueError(f"ab_auc needs the truth's a*b* planes at the prediction's size {(*pred.shape[:2], 2)}; "
                         f"got {ab.shape} (pass truth_ab=rgb_to_lab(truth)[..., 1:] of the same photo)")
    err = np.linalg.norm(rgb_to_lab(pred)[..., 1:] - ab, axis=-1).ravel()
    thresholds = np.arange(max_threshold + 1)
    cdf = np.searchsorted(np.sort(err), thresholds, side="right") / err.size
    return float(100.0 * cdf.mean())
