"""Measures for :mod:`training.style_eval` that do not use the VGG style classifier.

* :func:`load_mobilenet` / :func:`mobilenet_features`: MobileNetV2 1.0 (ImageNet weights,
  :class:`training.encoder.MobileNetV2Encoder` with its 1x1 head) as a second, independent
  feature space: per image the global average of the stride-32 features (320) and of the
  1280-d head (ReLU6), 1,600 values. ``colour="rgb"`` (default) runs the network on RGB, the
  input it was trained on (the encoder's stem left unfolded; ``x * 2 - 1`` as in the encoder);
  ``colour="luma"`` feeds it the BT.601 luminance exactly as the generator's encoder reads it
  (the stem folded to one channel), blind to colour.
* :func:`frechet_distance`: FID between two feature sets, with Ledoit-Wolf shrunk covariances
  (for the few samples a style's val paintings give).
* :func:`content_distance`: an LPIPS-like VGG distance without learned weights: relu2_1 and
  relu3_1 of :class:`training.losses.VGGFeatures`, each position's channel vector scaled to
  unit length, the squared difference summed over channels, averaged over positions, then over
  the two layers. 0 for the same image; at most 2 (ReLU features are non-negative).
* :func:`reinhard_transfer`, :class:`ReinhardBaseline`: Reinhard et al. (2001) colour transfer in
  CIE Lab, a per-photo baseline the generator has to beat.
* :class:`GatysBaseline`: :mod:`training.style_reference`'s pixel optimisation as a renderer.

A "renderer" is anything with ``stylize(rgb, style) -> rgb`` (an :class:`sdk.Pipeline` is one),
so baselines go through the same scoring as a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MOBILENET = REPO.parent / "shared" / "weights" / "mobilenet_v2_100.safetensors"
MOBILENET_COLOURS = ("rgb", "luma")
MOBILENET_DIM = 320 + 1280
"""Length of :func:`mobilenet_features`: pooled stride-32 features, then the pooled head."""


# ---------------------------------------------------------------------------------- MobileNetV2
def load_mobilenet(path: str | Path = DEFAULT_MOBILENET, colour: str = "rgb"):
    """The frozen MobileNetV2 encoder with its 1280-d head, for RGB or luminance input.

    Args:
        path: the shared ``mobilenet_v2_100.safetensors``.
        colour: ``"rgb"`` (a three-channel stem, the ImageNet network as trained) or ``"luma"``
            (the stem folded to one channel, as :meth:`MobileNetV2Encoder.load_pretrained` does).

    Raises:
        ValueError: unknown ``colour``.
        FileNotFoundError: no weights at ``path``.
    """
    from training.encoder import ConvAct, MobileNetV2Encoder

    if colour not in MOBILENET_COLOURS:
        raise ValueError(f"colour must be one of {MOBILENET_COLOURS}, got {colour!r}")
    net = MobileNetV2Encoder(head=True)
    if colour == "luma":
        net.load_pretrained(path)
    else:
        from safetensors.torch import load_file

        if not Path(path).is_file():
            raise FileNotFoundError(f"MobileNetV2 weights not found at {path}")
        net.stem = ConvAct(3, 32, 3, 2)
        sd = load_file(str(path))
        net.load_state_dict({k: sd[k] for k in net.state_dict()})
    net.colour = colour
    net.requires_grad_(False)
    return net.eval()


def mobilenet_features(images: Iterable[np.ndarray], net, batch: int = 16) -> np.ndarray:
    """Pooled MobileNetV2 features of square uint8 RGB crops (sides multiples of 32).

    Args:
        images: HxWx3 uint8 arrays, all of one size (see :func:`training.style_eval.prepare`).
        net: from :func:`load_mobilenet`.
        batch: images per forward.

    Returns:
        float32 [N, :data:`MOBILENET_DIM`].

    Raises:
        ValueError: a side is not a multiple of 32 (the encoder's constant SAME padding).
    """
    import torch

    from sdk import contract

    luma_w = torch.tensor(contract.RGB_TO_YCBCR[0], dtype=torch.float32).view(1, 3, 1, 1)
    out: list[np.ndarray] = []

    def run(chunk: list[np.ndarray]) -> None:
        if any(s % 32 for s in chunk[0].shape[:2]):
            raise ValueError(f"MobileNetV2 features need sides that are multiples of 32, got {chunk[0].shape[:2]}")
        x = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).float() / 255.0
        if net.colour == "luma":
            x = (x * luma_w).sum(1, keepdim=True)
        f32 = net(x)[-1]
        head = net.head(f32)
        out.append(torch.cat([f32.mean((2, 3)), head.mean((2, 3))], 1).numpy().astype(np.float32))

    chunk: list[np.ndarray] = []
    with torch.no_grad():
        for img in images:
            chunk.append(np.asarray(img, np.uint8))
            if len(chunk) == batch:
                run(chunk)
                chunk = []
        if chunk:
            run(chunk)
    return np.concatenate(out) if out else np.zeros((0, MOBILENET_DIM), np.float32)


# ---------------------------------------------------------------------------------- FID
def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf (2004) shrunk covariance of samples [N, D] towards ``mu * I``.

    The analytic shrinkage of ``sklearn.covariance.ledoit_wolf`` (its formulas; the empirical
    covariance is the 1/N one). With N much smaller than D the sample covariance is singular and
    its eigenvalues spread out; shrinkage pulls them towards their mean by the estimated amount.

    Returns:
        (covariance [D, D] float64, shrinkage in [0, 1]).

    Raises:
        ValueError: fewer than two samples.
    """
    x = np.asarray(x, np.float64)
    n, d = x.shape
    if n < 2:
        raise ValueError(f"a covariance needs at least two samples, got {n}")
    x = x - x.mean(0)
    emp = x.T @ x / n
    mu = np.trace(emp) / d
    delta = ((emp - mu * np.eye(d)) ** 2).sum() / d
    x2 = x**2
    beta = ((x2.T @ x2).sum() / n - (emp**2).sum()) / (d * n)
    beta = min(beta, delta)
    shrink = 0.0 if delta <= 0 else float(beta / delta)
    return (1.0 - shrink) * emp + shrink * mu * np.eye(d), shrink


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(x: np.ndarray, y: np.ndarray, shrink: bool = True) -> dict:
    """Fréchet distance between Gaussians fitted to two feature sets [N1, D] and [N2, D].

    ``|m1 - m2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)``, computed in float64 by
    eigendecompositions (exact for symmetric PSD matrices, no complex ``sqrtm`` residue).

    Args:
        x, y: features, two samples each at least.
        shrink: Ledoit-Wolf covariances (:func:`ledoit_wolf`); else the unbiased sample covariance.

    Returns:
        ``{"fid", "mean_term", "cov_term", "n": [N1, N2], "dims", "shrinkage": [a, b]}``.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"frechet_distance takes two [N, D] arrays of one D, got {x.shape} and {y.shape}")
    if shrink:
        (s1, a), (s2, b) = ledoit_wolf(x), ledoit_wolf(y)
    else:
        if min(len(x), len(y)) < 2:
            raise ValueError("a covariance needs at least two samples")
        s1, s2, a, b = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False)), 0.0, 0.0
    r1 = _sqrt_psd(s1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0.0, None)).sum()
    mean_term = float(((x.mean(0) - y.mean(0)) ** 2).sum())
    cov_term = float(max(0.0, np.trace(s1) + np.trace(s2) - 2.0 * cross))
    return {"fid": mean_term + cov_term, "mean_term": mean_term, "cov_term": cov_term, "n": [len(x), len(y)],
            "dims": int(x.shape[1]), "shrinkage": [round(a, 4), round(b, 4)]}


def fid_dims_for(n_min: int, max_dims: int) -> int:
    """The PCA dimension used for an FID between sets of at least ``n_min`` samples:
    ``min(max_dims, n_min // 2)``, at least 1 (two samples per dimension, then shrinkage)."""
    return max(1, min(max_dims, n_min // 2))


# ---------------------------------------------------------------------------------- content distance
CONTENT_LAYERS = (1, 2)
"""Indices into :class:`training.losses.VGGFeatures`' output: relu2_1 and relu3_1."""


def content_distance(f_out: Sequence, f_in: Sequence, layers: Sequence[int] = CONTENT_LAYERS) -> np.ndarray:
    """LPIPS-like distance (see the module docstring) between outputs and their photos.

    Args:
        f_out: VGG features (list per layer, [N,C,H,W] tensors) of the outputs.
        f_in: the photos' features, [N,...] or [1,...] (broadcast: one photo, many outputs).
        layers: which of the layers.

    Returns:
        float64 [N].
    """
    import torch

    def unit(f: torch.Tensor) -> torch.Tensor:
        return f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)

    per = [(unit(f_out[i]) - unit(f_in[i])).pow(2).sum(1).mean((1, 2)) for i in layers]
    return torch.stack(per).mean(0).double().numpy()


# ---------------------------------------------------------------------------------- Reinhard
def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Inverse of :func:`training.metrics.rgb_to_lab` (D65): HxWx3 Lab -> HxWx3 uint8 sRGB (clipped)."""
    lab = np.asarray(lab, np.float64)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    d = 6 / 29
    xyz = np.where(f > d, f**3, 3 * d * d * (f - 4 / 29)) * np.array([0.95047, 1.0, 1.08883])
    m = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]])
    lin = np.clip(xyz @ np.linalg.inv(m).T, 0.0, 1.0)
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    return (np.clip(srgb, 0.0, 1.0) * 255.0).round().astype(np.uint8)


REINHARD_MIN_STD = 1.0
"""A photo channel's Lab standard deviation is taken as at least this (a grey photo's a*, b*
planes would otherwise be divided by ~0)."""


def lab_stats(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of an image in CIE Lab: ([3], [3])."""
    from training.metrics import rgb_to_lab

    lab = rgb_to_lab(np.asarray(rgb, np.uint8)).reshape(-1, 3).astype(np.float64)
    return lab.mean(0), lab.std(0)


def reinhard_transfer(rgb: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Reinhard colour transfer: each Lab channel of ``rgb`` moved to the target mean and std.

    ``out = (lab - mean_photo) / max(std_photo, REINHARD_MIN_STD) * std + mean``, back to sRGB
    (out-of-gamut values clipped, so the result's statistics can fall short of the target where
    the target asks for colours sRGB does not hold). Reinhard et al. work in l-alpha-beta; this
    uses CIE Lab, the colour space the rest of the evaluation measures in.

    Args:
        rgb: HxWx3 uint8 colour photo.
        mean, std: target Lab mean and standard deviation (3 values each).

    Returns:
        HxWx3 uint8.
    """
    from training.metrics import rgb_to_lab

    lab = rgb_to_lab(np.asarray(rgb, np.uint8)).astype(np.float64)
    m, s = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0)
    out = (lab - m) / np.maximum(s, REINHARD_MIN_STD) * np.asarray(std, np.float64) + np.asarray(mean, np.float64)
    return lab_to_rgb(out)


class ReinhardBaseline:
    """A renderer that paints a style as the mean Lab statistics of its reference paintings.

    Args:
        targets: style -> (Lab mean [3], Lab std [3]), e.g. from :meth:`from_paintings`.

    Example:
        >>> r = ReinhardBaseline({"sepia": ([60, 5, 20], [20, 3, 6])})
        >>> r.stylize(np.full((8, 8, 3), 128, np.uint8), "sepia").shape
        (8, 8, 3)
    """

    name = "reinhard"

    def __init__(self, targets: dict[str, tuple[Sequence[float], Sequence[float]]]) -> None:
        self.targets = {s: (np.asarray(m, np.float64), np.asarray(d, np.float64)) for s, (m, d) in targets.items()}

    @classmethod
    def from_paintings(cls, paintings: dict[str, Iterable[np.ndarray]]) -> "ReinhardBaseline":
        """Targets as the mean over each style's paintings of their Lab means and of their Lab stds."""
        targets = {}
        for style, images in paintings.items():
            stats = [lab_stats(im) for im in images]
            if stats:
                targets[style] = (np.mean([m for m, _ in stats], 0), np.mean([s for _, s in stats], 0))
        return cls(targets)

    @property
    def styles(self) -> list[str]:
        return list(self.targets)

    def stylize(self, image: np.ndarray, style: str) -> np.ndarray:
        mean, std = self.targets[style]
        return reinhard_transfer(image, mean, std)

    def describe(self) -> dict:
        return {"name": self.name, "targets": {s: {"mean": np.round(m, 2).tolist(), "std": np.round(d, 2).tolist()}
                                               for s, (m, d) in self.targets.items()}}


# ---------------------------------------------------------------------------------- Gatys
class GatysBaseline:
    """:func:`training.style_reference.optimise` as a renderer: each photo is optimised once in
    every painting style (one batch) at ``cfg.short_side`` and the result resized to the photo.

    Args:
        cfg: a :class:`training.style_reference.ReferenceConfig` (exemplars, steps, size, weights).
        vgg: a loaded :class:`training.losses.VGGFeatures` (shared with the scoring).
    """

    name = "gatys"

    def __init__(self, cfg, vgg) -> None:
        from training import style_reference

        self.cfg, self.vgg = cfg, vgg
        self.styles = list(style_reference.PAINTING_STYLES)
        self.targets = style_reference.style_targets(cfg, vgg)
        self._memo: dict[int, dict[str, np.ndarray]] = {}

    def stylize(self, image: np.ndarray, style: str) -> np.ndarray:
        import torch

        from training import style_reference
        from training.model import rgb_to_ycbcr

        rgb = np.asarray(image, np.uint8)
        key = hash((rgb.shape, rgb.tobytes()))
        if key not in self._memo:
            im = Image.fromarray(rgb)
            c = self.cfg
            s = c.short_side / min(im.size) if c.short_side else c.long_side / max(im.size)
            small = im.resize((max(32, round(im.width * s)), max(32, round(im.height * s))), Image.BICUBIC)
            x = style_reference._tensor(np.asarray(small))
            with torch.enable_grad():
                outs, _ = style_reference.optimise(c, rgb_to_ycbcr(x)[:, :1], self.targets, self.vgg)
            self._memo = {key: {st: np.asarray(Image.fromarray(o).resize(im.size, Image.BICUBIC)) for st, o in zip(self.styles, outs)}}
        return self._memo[key][style]

    def describe(self) -> dict:
        from dataclasses import asdict

        return {"name": self.name, "config": asdict(self.cfg)}
