"""Losses: VGG19 content/Gram features, saturation-rebalanced chroma L1, hinge GAN, total variation."""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# torchvision indices of the VGG19 "features" layers in the shared file (conv1_1 .. conv3_1).
_VGG_CONVS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256)}
VGG_LAYERS = ("relu1_1", "relu2_1", "relu3_1")


class VGGFeatures(nn.Module):
    """Frozen VGG19 up to relu3_1, fed RGB in [0,1]; returns relu1_1, relu2_1, relu3_1.

    The weights use the caffe convention (BGR, 0..255, mean subtracted); the mean and channel
    order are read from the safetensors metadata, so this module converts internally.

    Args:
        path: the safetensors file (``../shared/weights/vgg19_relu3_1_caffe.safetensors``).

    Raises:
        FileNotFoundError: the file is missing.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"VGG weights not found at {path}")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        self.convs = nn.ModuleDict()
        for idx, (cin, cout) in _VGG_CONVS.items():
            conv = nn.Conv2d(cin, cout, 3, padding=1)
            conv.weight.data.copy_(tensors[f"features.{idx}.weight"])
            conv.bias.data.copy_(tensors[f"features.{idx}.bias"])
            self.convs[str(idx)] = conv
        mean, bgr = _caffe_convention(meta)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.bgr = bgr
        self.requires_grad_(False)
        self.eval()

    BORDER = 16
    """Pixels of reflection padding added before, and cropped (at each layer's scale) after, the
    network: VGG's own zero padding makes border features special, and a Gram loss then teaches
    the generator bright frames around the image."""

    def forward(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        x = rgb.flip(1) if self.bgr else rgb
        x = F.pad(x * 255.0 - self.mean, (self.BORDER,) * 4, mode="reflect")
        feats = self._layers(x)
        return [f[..., self.BORDER // k : -(self.BORDER // k), self.BORDER // k : -(self.BORDER // k)] for f, k in zip(feats, (1, 2, 4))]

    def _layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        c = self.convs
        r11 = F.relu(c["0"](x))
        h = F.relu(c["2"](r11))
        h = F.max_pool2d(h, 2)
        r21 = F.relu(c["5"](h))
        h = F.relu(c["7"](r21))
        h = F.max_pool2d(h, 2)
        r31 = F.relu(c["10"](h))
        return [r11, r21, r31]


def _caffe_convention(meta: dict[str, str]) -> tuple[list[float], bool]:
    """Mean (in the model's channel order) and whether the model wants BGR, from file metadata.

    The shared file says e.g. ``BGR channel order, 0..255, minus mean (B,G,R)=(103.939,116.779,123.68)``.
    """
    text = meta.get("input_convention", "")
    bgr = "bgr" in text.lower()
    m = re.search(r"=\(\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*\)", text)
    if m is None:
        raise ValueError(f"VGG weights carry no readable input convention: {text!r}")
    return [float(v) for v in m.groups()], bgr


def gram(feat: torch.Tensor) -> torch.Tensor:
    """Gram matrix [N,C,C] of features [N,C,H,W], normalised by C*H*W."""
    n, c, h, w = feat.shape
    f = feat.reshape(n, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


STATS_EPS = 1e-3
"""Offset inside the log of :func:`channel_stats` (VGG activations are >= 0, often near 0)."""


def channel_stats(feat: torch.Tensor, eps: float = STATS_EPS) -> torch.Tensor:
    """Log per-channel mean and standard deviation of features [N,C,H,W]: [N,2,C].

    The style statistics of Huang & Belongie (2017), in log space so that weak channels count as
    much as strong ones (a Gram loss is dominated by a few large entries). The style evaluation's
    classifier features use the same function.
    """
    f = feat.flatten(2)
    return torch.log(torch.stack([f.mean(2), f.std(2)], dim=1).clamp_min(0) + eps)


def content_loss(mine: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared feature error relative to the target's mean square (``target`` broadcasts over ``mine``'s batch)."""
    return F.mse_loss(mine, target.expand_as(mine)) / (target.pow(2).mean() + 1e-8)


def crop_margin(feats: list[torch.Tensor], margin: int) -> list[torch.Tensor]:
    """relu1_1 / relu2_1 / relu3_1 features (strides 1, 2, 4) without ``margin`` image pixels on each side."""
    if not margin:
        return feats
    return [f[..., margin // k : -(margin // k), margin // k : -(margin // k)] for f, k in zip(feats, (1, 2, 4))]


def gram_loss(feats: list[torch.Tensor], targets: list[torch.Tensor], weights: tuple[float, ...] = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """Style loss: per layer, the squared Gram error relative to the target's norm, averaged over
    the batch, weighted and summed. ``feats`` [N,C,H,W] and ``targets`` [N,C,C] (one per image) per layer."""
    total = feats[0].new_zeros(())
    for w, f, t in zip(weights, feats, targets):
        total = total + w * ((gram(f.float()) - t) ** 2).sum(dim=(1, 2)).div(t.pow(2).sum(dim=(1, 2))).mean()
    return total


def stats_loss(feats: list[torch.Tensor], targets: list[torch.Tensor], weights: tuple[float, ...] = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """Mean squared error of :func:`channel_stats` against targets [N,2,C] per layer, weighted and summed."""
    total = feats[0].new_zeros(())
    for w, f, t in zip(weights, feats, targets):
        total = total + w * (channel_stats(f.float()) - t).pow(2).mean()
    return total


def colourfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler & Suesstrunk colourfulness per image, on a 0..255 scale: [N].

    The differentiable twin of :func:`training.metrics.colourfulness` (the metric validation and
    evaluation report); population statistics, as there, so the loss targets the same number.
    """
    r, g, b = (rgb * 255.0).unbind(1)
    rg = r - g
    yb = 0.5 * (r + g) - b
    std = torch.sqrt(rg.var(dim=(1, 2), correction=0) + yb.var(dim=(1, 2), correction=0) + 1e-6)
    mean = torch.sqrt(rg.mean(dim=(1, 2)) ** 2 + yb.mean(dim=(1, 2)) ** 2 + 1e-6)
    return std + 0.3 * mean


def rebalanced_l1(pred_cbcr: torch.Tensor, true_cbcr: torch.Tensor, rebalance: float) -> torch.Tensor:
    """L1 on chroma with saturated pixels weighted up: ``w = 1 + rebalance * |c_true|``.

    Plain L1 regresses to the median colour and washes images out; weighting saturated pixels
    (as CIC's class rebalancing does) keeps strong colours where the truth has them. Unlike a
    penalty on the predicted chroma's spread, it cannot be satisfied by colour that merely
    follows luminance.
    """
    w = 1.0 + rebalance * true_cbcr.norm(dim=1, keepdim=True)  # [N,1,H,W]
    return (w * (pred_cbcr - true_cbcr).abs()).mean() / w.mean()


def d_hinge(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def g_hinge(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def total_variation(x: torch.Tensor, per_image: bool = False) -> torch.Tensor:
    """Mean absolute difference of neighbours, vertical plus horizontal, of [N,C,H,W]: a scalar, or [N] with ``per_image``."""
    dims = tuple(range(1, x.dim())) if per_image else None
    dv, dh = (x[..., 1:, :] - x[..., :-1, :]).abs(), (x[..., :, 1:] - x[..., :, :-1]).abs()
    return (dv.mean(dims) + dh.mean(dims)) if per_image else (dv.mean() + dh.mean())


def chroma_prior(images: list, bins: torch.Tensor, per_image: int = 4096, seed: int = 0) -> torch.Tensor:
    """Empirical distribution [Q] of the nearest colour bin over pixels sampled from RGB uint8 images.

    Args:
        images: HxWx3 uint8 arrays (an :class:`training.data.ImageBank`'s ``images``).
        bins: bin centres [Q,2] (Cb, Cr).
        per_image: pixels sampled from each image.
    """
    import numpy as np

    from sdk import contract

    rng = np.random.default_rng(seed)
    m = np.asarray(contract.RGB_TO_YCBCR, np.float32)[1:]
    counts = torch.zeros(len(bins), dtype=torch.float64)
    for img in images:
        px = img.reshape(-1, 3)
        px = px[rng.integers(len(px), size=min(per_image, len(px)))].astype(np.float32) / 255.0
        cbcr = torch.from_numpy(px @ m.T)  # [P,2]
        idx = torch.cdist(cbcr, bins).argmin(dim=1)
        counts += torch.bincount(idx, minlength=len(bins)).double()
    return (counts / counts.sum()).float()


def rebalance_weights(prior: torch.Tensor, bins: torch.Tensor, lam: float = 0.5, sigma: float = 0.05) -> torch.Tensor:
    """Zhang et al.'s class-rebalancing weights [Q]: ``w ~ 1 / ((1 - lam) * smooth(p) + lam / Q)``, E_p[w] = 1.

    ``smooth`` is a Gaussian of width ``sigma`` over the bin centres; rare, saturated colours get
    up to ``1 / lam`` times the weight of the common browns and greys.
    """
    k = torch.exp(-torch.cdist(bins, bins).pow(2) / (2 * sigma**2))
    smooth = (k @ prior) / k.sum(dim=1)
    smooth = smooth / smooth.sum()
    w = 1.0 / ((1.0 - lam) * smooth + lam / len(bins))
    return w / (w * smooth).sum()


def soft_encode(cbcr: torch.Tensor, bins: torch.Tensor, sigma: float, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft class targets for true chroma: Gaussian weights on the ``k`` nearest bins.

    Args:
        cbcr: [N,2,h,w] true chroma.
        bins: [Q,2] centres.
    Returns:
        (targets [N,Q,h,w] summing to 1 per pixel, nearest bin index [N,h,w]).
    """
    n, _, h, w = cbcr.shape
    flat = cbcr.permute(0, 2, 3, 1).reshape(-1, 2)  # [P,2]
    d = torch.cdist(flat, bins)  # [P,Q]
    dk, ik = d.topk(k, dim=1, largest=False)
    wk = torch.exp(-dk.pow(2) / (2 * sigma**2))
    q = torch.zeros_like(d).scatter_(1, ik, wk / wk.sum(dim=1, keepdim=True))
    return q.reshape(n, h, w, -1).permute(0, 3, 1, 2), ik[:, 0].reshape(n, h, w)


def colour_ce(logits: torch.Tensor, true_cbcr: torch.Tensor, bins: torch.Tensor, weights: torch.Tensor, sigma: float) -> torch.Tensor:
    """Class-rebalanced cross-entropy of colour logits [N,Q,h,w] against soft-encoded truth [N,2,h,w]."""
    q, nearest = soft_encode(true_cbcr, bins, sigma)
    ce = -(q * F.log_softmax(logits.float(), dim=1)).sum(dim=1)  # [N,h,w]
    return (weights[nearest] * ce).mean()
