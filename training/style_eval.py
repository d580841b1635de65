"""Style evaluation: does a model's output look like the style it was asked for?

A small classifier on VGG19 style statistics tells photos and the four painting styles apart;
it is fitted once on the shared datasets and cached. A model is then scored by stylizing
held-out colour photos in every style through the SDK (the path users run) and classifying the
outputs.

Features ("VGG Gram statistics", :func:`vgg_style_features`): each image is resized so its short
side is ``size`` (224 by default) and centre-cropped to ``size`` x ``size``; the paintings are
already 224x224 and photos and model outputs get the same treatment. Through VGG19 (caffe
weights, up to relu3_1) we take, for relu1_1, relu2_1 and relu3_1, the per-channel spatial mean
and standard deviation (64 + 128 + 256 channels), and the upper triangle (with the diagonal) of
the Gram matrix of relu1_1 and relu2_1 (2,080 + 8,256 values). The relu3_1 Gram (32,896 values)
is left out: it is cheap to compute (~5% of the VGG forward) but would quadruple the feature size,
the fit time and the cached PCA basis, and on the validation split it moved accuracy by under one
point. All values are non-negative and heavy-tailed, so each is log-scaled, ``log(x + 1e-3)``;
that gives ``FEATURE_DIM`` = 11,232 values per image. On 1 CPU thread the VGG forward costs about
0.2 s per 224x224 image, so fitting (2,000 images at the defaults) takes ~8 minutes, once.

Classifier (:func:`fit_classifier`): the features are standardised, each block (statistics,
relu1_1 Gram, relu2_1 Gram) scaled so that the 896 statistics weigh twice as much as each Gram
block (:data:`FEATURE_BLOCKS`; unweighted, the 10k Gram values drown them and val accuracy drops
from ~94% to ~89%), reduced by a whitening PCA to ``pca_dims`` components and fed to a
class-balanced multinomial logistic regression with an L2 penalty (full-batch L-BFGS in torch).
Classes are ``("photo",) + STYLES[1:]``; class 0 is a photo, i.e. what the ``natural`` style
should produce. It is saved to a ``.npz`` (~11 MB) with its validation report, so model
evaluations do not refit.

Model evaluation (:func:`evaluate_model`): for N photos of ``photos/val`` and each of the four
painting styles, ``pipe.stylize(photo, style)`` is classified; reported per style are the share
classified as the intended style, the mean probability of that style, and the luminance SSIM of
output vs input (content preservation); per style pair, the mean absolute difference in 8-bit
levels between the two styles' outputs of the same photo, and how often each is classified as
the other. Per style also the **edge bands** (:func:`edge_bands`): how much more the outermost
twelfth of the image (by its long side, ~21 px of the 256 working size) changes the luminance than
the interior does, per side; a style that paints a dark or light frame shows it there.

    python -m training.style_eval --model-dir path/to/exported_model --json runs/style_eval.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from sdk import contract
from sdk.fusion import FUSE_METHODS, FuseParams, fuse_rgb
from training.data import list_images

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_DATASETS = SHARED / "datasets"
DEFAULT_VGG = SHARED / "weights" / "vgg19_relu3_1_caffe.safetensors"
DEFAULT_CACHE = "runs/style_classifier.npz"

PAINTING_STYLES: tuple[str, ...] = contract.PAINTING_STYLES
CLASSES: tuple[str, ...] = ("photo",) + PAINTING_STYLES
"""Classifier classes: 0 is a photo (what ``natural`` should give), then the painting styles in contract order."""

CHANNELS = (64, 128, 256)  # relu1_1, relu2_1, relu3_1
GRAM_LAYERS = (0, 1)  # Gram matrices of relu1_1 and relu2_1 only
FEATURE_BLOCKS: tuple[tuple[str, int, float], ...] = (
    ("mean_std", 2 * sum(CHANNELS), 2.0),
    *((f"gram_relu{i + 1}_1", CHANNELS[i] * (CHANNELS[i] + 1) // 2, 1.0) for i in GRAM_LAYERS),
)
"""(name, size, weight) of the feature blocks, in order; before PCA each block is scaled so its
total variance is proportional to weight^2, so the 10k Gram values do not drown the 896 statistics."""
FEATURE_DIM = sum(n for _, n, _ in FEATURE_BLOCKS)
FEATURE_VERSION = 1
"""Bumped whenever the features change, so a cached classifier for other features is refitted."""

@dataclass(frozen=True)
class ClassifierConfig:
    """How the style classifier is fitted.

    Attributes:
        datasets: folder with ``styles/<style>/{train,val}`` and ``photos/{train,val}``.
        vgg: VGG19 safetensors file.
        size: square crop side the features are computed at.
        per_class: training images per class at most (evenly spaced files).
        val_per_class: validation images per class at most.
        pca_dims: PCA components kept.
        l2: L2 penalty on the logistic-regression weights.
        batch: images per VGG forward.
    """

    datasets: str = str(DEFAULT_DATASETS)
    vgg: str = str(DEFAULT_VGG)
    size: int = 224
    per_class: int = 300
    val_per_class: int = 100
    pca_dims: int = 256
    l2: float = 0.1
    batch: int = 16


# ---------------------------------------------------------------------------------- features
def prepare(rgb: np.ndarray | Image.Image, size: int) -> np.ndarray:
    """Resize so the short side is ``size``, then centre-crop ``size`` x ``size``.

    Args:
        rgb: HxWx3 uint8 array or PIL image.
        size: output side.

    Returns:
        size x size x 3 uint8 array.
    """
    im = rgb if isinstance(rgb, Image.Image) else Image.fromarray(np.asarray(rgb))
    im = im.convert("RGB")
    if im.size != (size, size):
        s = size / min(im.size)
        w, h = max(size, round(im.width * s)), max(size, round(im.height * s))
        im = im.resize((w, h), Image.BICUBIC, reducing_gap=2.0)
        x, y = (w - size) // 2, (h - size) // 2
        im = im.crop((x, y, x + size, y + size))
    return np.asarray(im)


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file as HxWx3 uint8 RGB (EXIF orientation applied)."""
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def load_vgg(path: str | Path):
    """The frozen VGG19 feature extractor of :mod:`training.losses` (relu1_1, relu2_1, relu3_1)."""
    from training.losses import VGGFeatures

    return VGGFeatures(path)


def vgg_style_features(images: Iterable[np.ndarray], vgg, size: int = 224, batch: int = 16) -> np.ndarray:
    """Log-scaled VGG Gram statistics of each image (see the module docstring).

    Args:
        images: HxWx3 uint8 RGB arrays of any size (prepared with :func:`prepare`).
        vgg: a :class:`training.losses.VGGFeatures`.
        size: crop side.
        batch: images per forward pass.

    Returns:
        float32 array [N, FEATURE_DIM].
    """
    import torch

    from training.losses import STATS_EPS, channel_stats, gram

    iu = {i: torch.triu_indices(CHANNELS[i], CHANNELS[i]) for i in GRAM_LAYERS}
    out: list[np.ndarray] = []

    def run(chunk: list[np.ndarray]) -> None:
        x = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).float() / 255.0
        fs = vgg(x)
        stats = [channel_stats(f).flatten(1) for f in fs]  # log mean, log std per layer
        grams = [torch.log(gram(fs[i])[:, iu[i][0], iu[i][1]].clamp_min(0) + STATS_EPS) for i in GRAM_LAYERS]
        feats = torch.cat(stats + grams, 1)
        out.append(feats.numpy().astype(np.float32))

    chunk: list[np.ndarray] = []
    with torch.no_grad():
        for img in images:
            chunk.append(prepare(img, size))
            if len(chunk) == batch:
                run(chunk)
                chunk = []
        if chunk:
            run(chunk)
    return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM), np.float32)


def evenly_spaced(files: Sequence[Path], n: int | None) -> list[Path]:
    """At most ``n`` of ``files``, evenly spaced over the sorted list (all when ``n`` is None or 0)."""
    files = list(files)
    if not n or len(files) <= n:
        return files
    return [files[i] for i in np.linspace(0, len(files) - 1, n).round().astype(int)]


def class_files(datasets: str | Path, split: str, per_class: int | None) -> list[list[Path]]:
    """Image files of each class in :data:`CLASSES` for ``split`` ("train" or "val"), capped per class.

    Raises:
        FileNotFoundError: a class folder is missing.
    """
    root = Path(datasets)
    folders = [root / "photos" / split] + [root / "styles" / s / split for s in PAINTING_STYLES]
    return [evenly_spaced(list_images(f), per_class) for f in folders]


def dataset_features(datasets: str | Path, split: str, per_class: int | None, vgg, size: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of a capped split.

    Returns:
        (features [N, FEATURE_DIM] float32, labels [N] int64 indices into :data:`CLASSES`).
    """
    groups = class_files(datasets, split, per_class)
    files = [f for g in groups for f in g]
    labels = np.concatenate([np.full(len(g), k, np.int64) for k, g in enumerate(groups)])
    log.info("style_eval: VGG features of %d %s images (%s per class) at %d px", len(files), split,
             "/".join(str(len(g)) for g in groups), size)
    feats = vgg_style_features((load_image(f) for f in files), vgg, size, batch)
    return feats, labels


# ---------------------------------------------------------------------------------- classifier
@dataclass
class StyleClassifier:
    """Standardise -> PCA -> multinomial logistic regression, in numpy for prediction.

    Attributes:
        mean, scale: per-feature standardisation [D].
        components: PCA basis [K, D] (rows orthonormal).
        weight, bias: logistic regression [K, C], [C].
        meta: JSON-able settings and the validation report.
        probe: features of :func:`probe_image` when it was fitted, to detect a changed VGG.
    """

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    meta: dict
    probe: np.ndarray | None = None

    def logits(self, feats: np.ndarray) -> np.ndarray:
        """Class scores [N, C] for features [N, D]."""
        z = (np.asarray(feats, np.float32) - self.mean) / self.scale
        return (z @ self.components.T) @ self.weight + self.bias

    def predict_proba(self, feats: np.ndarray) -> np.ndarray:
        """Class probabilities [N, C]."""
        lg = self.logits(feats)
        e = np.exp(lg - lg.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, feats: np.ndarray) -> np.ndarray:
        """Predicted class indices [N]."""
        return self.logits(feats).argmax(axis=1)

    def save(self, path: str | Path) -> Path:
        """Write the classifier to ``path`` (.npz); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, mean=self.mean, scale=self.scale, components=self.components, weight=self.weight,
                            bias=self.bias, meta=np.array(json.dumps(self.meta)),
                            probe=self.probe if self.probe is not None else np.zeros(0, np.float32))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "StyleClassifier":
        """Read a classifier written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file.
        """
        with np.load(path) as z:
            probe = z["probe"] if "probe" in z.files and z["probe"].size else None
            return cls(z["mean"], z["scale"], z["components"], z["weight"], z["bias"], json.loads(str(z["meta"])), probe)


def fit_classifier(
    feats: np.ndarray,
    labels: np.ndarray,
    pca_dims: int = 256,
    l2: float = 0.1,
    n_classes: int = len(CLASSES),
    blocks: Sequence[tuple[str, int, float]] = FEATURE_BLOCKS,
) -> StyleClassifier:
    """Fit block-weighted standardisation, whitening PCA and a class-balanced L2-penalised softmax regression.

    Args:
        feats: [N, D] training features.
        labels: [N] class indices.
        pca_dims: components kept (at most N - 1 and D).
        l2: penalty on the weights (added to the class-weighted mean cross-entropy).
        n_classes: number of classes C.
        blocks: (name, size, weight) of consecutive feature blocks summing to D (see
            :data:`FEATURE_BLOCKS`); a single block of weight 1 for other features.

    Returns:
        A :class:`StyleClassifier` with empty ``meta``. The fit is deterministic (full-batch L-BFGS from zero).
    """
    import torch

    x = torch.from_numpy(np.asarray(feats, np.float64))
    y = torch.from_numpy(np.asarray(labels, np.int64))
    n, d = x.shape
    if sum(size for _, size, _ in blocks) != d:
        blocks = (("all", d, 1.0),)
    w = torch.cat([torch.full((size,), weight / size**0.5, dtype=torch.float64) for _, size, weight in blocks])
    mean = x.mean(0)
    scale = x.std(0).clamp_min(1e-6) / w
    z = (x - mean) / scale
    zc = z - z.mean(0)
    # PCA through the N x N Gram matrix (N << D): zc = U S V^T, V = zc^T U / S.
    evals, evecs = torch.linalg.eigh(zc @ zc.T)
    k = max(1, min(pca_dims, n - 1, d))
    evals, evecs = evals.flip(0)[:k].clamp_min(1e-12), evecs.flip(1)[:, :k]
    sv = evals.sqrt()
    comps = (zc.T @ evecs / sv).T  # [k, D], orthonormal rows
    comps = comps / (sv / max(1, n - 1) ** 0.5)[:, None]  # whiten: unit variance projections
    p = (z @ comps.T).float()
    counts = torch.bincount(y, minlength=n_classes).float()
    cw = torch.where(counts > 0, counts.sum() / (n_classes * counts.clamp_min(1)), torch.zeros_like(counts))
    W = torch.zeros(k, n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=500, tolerance_grad=1e-7, tolerance_change=1e-10, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(p @ W + b, y, weight=cw) + l2 * W.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return StyleClassifier(
        mean=mean.float().numpy(), scale=scale.float().numpy(), components=comps.float().numpy(),
        weight=W.detach().numpy().astype(np.float32), bias=b.detach().numpy().astype(np.float32), meta={},
    )


def accuracy_report(pred: np.ndarray, labels: np.ndarray, classes: Sequence[str] = CLASSES) -> dict:
    """Overall, class-balanced and per-class accuracy and the confusion matrix (rows true, columns predicted).

    Returns:
        ``{"n", "accuracy", "balanced_accuracy", "per_class": {name: acc}, "support": {name: n}, "classes", "confusion"}``.
    """
    c = len(classes)
    cm = np.zeros((c, c), np.int64)
    np.add.at(cm, (labels, pred), 1)
    support = cm.sum(1)
    per = {name: (round(float(cm[i, i] / support[i]), 4) if support[i] else None) for i, name in enumerate(classes)}
    valid = [v for v in per.values() if v is not None]
    return {
        "n": int(len(labels)),
        "accuracy": round(float(np.trace(cm) / max(1, cm.sum())), 4),
        "balanced_accuracy": round(float(np.mean(valid)), 4) if valid else None,
        "per_class": per,
        "support": {name: int(support[i]) for i, name in enumerate(classes)},
        "classes": list(classes),
        "confusion": cm.tolist(),
    }


def train_classifier(cfg: ClassifierConfig, vgg=None) -> StyleClassifier:
    """Extract features of the capped train and val splits, fit, and record the val report in ``meta``.

    Args:
        cfg: settings.
        vgg: a loaded VGG (None: load ``cfg.vgg``).

    Returns:
        The fitted :class:`StyleClassifier`; ``meta`` holds the config, timings and the report.
    """
    vgg = vgg if vgg is not None else load_vgg(cfg.vgg)
    t0 = time.perf_counter()
    xt, yt = dataset_features(cfg.datasets, "train", cfg.per_class, vgg, cfg.size, cfg.batch)
    xv, yv = dataset_features(cfg.datasets, "val", cfg.val_per_class, vgg, cfg.size, cfg.batch)
    t1 = time.perf_counter()
    clf = fit_classifier(xt, yt, cfg.pca_dims, cfg.l2)
    clf.probe = probe_features(vgg)
    t2 = time.perf_counter()
    clf.meta = {
        "feature_version": FEATURE_VERSION,
        "feature_dim": int(xt.shape[1]),
        "classes": list(CLASSES),
        "config": asdict(cfg),
        "train": accuracy_report(clf.predict(xt), yt),
        "val": accuracy_report(clf.predict(xv), yv),
        "seconds": {"features": round(t1 - t0, 1), "fit": round(t2 - t1, 1)},
    }
    return clf


def probe_image(size: int = 64) -> np.ndarray:
    """A fixed synthetic colour image (gradients and stripes), size x size x 3 uint8."""
    yy, xx = np.mgrid[0:size, 0:size] / max(1, size - 1)
    rgb = np.stack([xx, yy, 0.5 + 0.5 * np.sin(12 * np.pi * (xx + yy))], -1)
    return (rgb * 255).round().astype(np.uint8)


def probe_features(vgg) -> np.ndarray:
    """Features of :func:`probe_image`: a fingerprint of the VGG implementation and weights."""
    return vgg_style_features([probe_image()], vgg, size=64)[0]


def _compatible(clf: StyleClassifier, cfg: ClassifierConfig, vgg=None) -> bool:
    """Whether a cached classifier was fitted with the same features, VGG and data settings as ``cfg``."""
    m = clf.meta
    if m.get("feature_version") != FEATURE_VERSION or m.get("classes") != list(CLASSES):
        return False
    if vgg is not None and (clf.probe is None or not np.allclose(clf.probe, probe_features(vgg), rtol=1e-3, atol=1e-3)):
        return False
    old = m.get("config", {})
    keys = ("size", "per_class", "val_per_class", "pca_dims", "l2")
    return all(old.get(k) == getattr(cfg, k) for k in keys)


def get_classifier(cfg: ClassifierConfig, cache: str | Path | None = DEFAULT_CACHE, retrain: bool = False, vgg=None) -> tuple[StyleClassifier, bool]:
    """Load the cached classifier, or fit and cache one.

    The cache is refitted when ``retrain`` is set, or when it was fitted with other features,
    another VGG (its features of :func:`probe_image` differ; checked when ``vgg`` is given) or
    other ``size`` / ``per_class`` / ``val_per_class`` / ``pca_dims`` / ``l2``.

    Args:
        cfg: settings.
        cache: .npz path (None: never read or write a cache).
        retrain: refit even if a matching cache exists.
        vgg: a loaded VGG, or None.

    Returns:
        (classifier, whether it was fitted now).
    """
    if cache is not None and not retrain and Path(cache).is_file():
        clf = StyleClassifier.load(cache)
        if _compatible(clf, cfg, vgg):
            return clf, False
    clf = train_classifier(cfg, vgg)
    if cache is not None:
        clf.save(cache)
    return clf, True


# ---------------------------------------------------------------------------------- model evaluation
def _luma(rgb: np.ndarray) -> np.ndarray:
    """HxW uint8 BT.601 luminance (PIL's ``convert("L")``)."""
    return np.asarray(Image.fromarray(rgb).convert("L"))


EDGE_BAND_FRACTION = 1 / 12  # of the long side: the bands the styles learnt were ~24 px of the 256 working size
EDGE_SIDES = ("top", "bottom", "left", "right")  # the keys of :func:`edge_bands`, in this order


def edge_bands(y_out: np.ndarray, y_in: np.ndarray, fraction: float = EDGE_BAND_FRACTION) -> dict[str, float]:
    """The luminance change ``y_out - y_in`` of each border band minus that of the interior.

    Args:
        y_out, y_in: HxW luminance of a stylized output and its input (any numeric dtype).
        fraction: band width as a share of the long side (at least one pixel).

    Returns:
        ``{"top", "bottom", "left", "right"}`` in 8-bit levels: negative where the output's edge is
        darkened more than its interior (a dark frame), positive where it is lightened more.

    Raises:
        ValueError: the two differ in shape, or the image is too small to have an interior.

    Example:
        >>> y = np.full((24, 24), 100.0); out = y.copy(); out[:, :2] -= 30
        >>> edge_bands(out, y)["left"]
        -30.0
    """
    y_out, y_in = np.asarray(y_out, np.float64), np.asarray(y_in, np.float64)
    if y_out.shape != y_in.shape or y_out.ndim != 2:
        raise ValueError(f"edge_bands takes two HxW luminance images of one shape; got {y_out.shape} and {y_in.shape}")
    b = max(1, round(max(y_in.shape) * fraction))
    if min(y_in.shape) <= 2 * b:
        raise ValueError(f"an image of {y_in.shape} has no interior inside {b}-px bands; use a larger image or a smaller fraction")
    d = y_out - y_in
    inner = float(d[b:-b, b:-b].mean())
    bands = (d[:b], d[-b:], d[:, :b], d[:, -b:])
    return {side: float(band.mean()) - inner for side, band in zip(EDGE_SIDES, bands)}


def tone_layout_error(y_out: np.ndarray, y_in: np.ndarray) -> float:
    """Mean |difference| (8-bit levels) between two luminance planes averaged over the cells of
    :func:`sdk.processing.tone_grid`: how far an output's tonal layout (a dark sky, a bright
    window) moved from the photo's."""
    from sdk.processing import tone_means

    return float(np.abs(tone_means(np.asarray(y_out, np.float64)) - tone_means(np.asarray(y_in, np.float64))).mean())


def evaluate_model(pipe, clf: StyleClassifier, photos: Sequence[np.ndarray], vgg, size: int = 224, batch: int = 16,
                   fuse=None) -> dict:
    """Stylize each photo in every painting style and score the outputs.

    Args:
        pipe: an :class:`sdk.Pipeline`.
        clf: the style classifier.
        photos: HxWx3 uint8 colour photos (the generator reads their luminance only).
        vgg: the VGG used for the classifier's features.
        size, batch: feature settings (must match the classifier's ``size``).
        fuse: an :class:`sdk.fusion.FuseParams` applied to every output with its photo (what a
            user's ``--fuse`` gives), or None.

    Returns:
        ``{"photos", "style_score", "style_score_mean", "style_prob", "as_photo", "confusion",
        "ssim_luma", "ssim_luma_mean", "pairs", "distinct_mad_mean", "inputs_as_photo"}``:
        ``style_score[s]`` is the share of style ``s`` outputs classified as ``s``;
        ``confusion`` rows are the intended styles, columns :data:`CLASSES`; ``pairs["a/b"]`` has
        ``mad`` (mean |a - b| in 8-bit levels over pixels and photos), ``a_as_b`` and ``b_as_a``;
        ``edge_bands[s]`` the mean over photos of :func:`edge_bands` per side, and ``abs`` the mean
        of the four sides' magnitudes; ``tone_layout[s]`` the mean :func:`tone_layout_error`;
        ``photo_colour[s]`` the mean :func:`sdk.metrics.ab_auc` of the outputs against their
        photos (how much of the photo's own colour an output keeps: ~88 for a grey image on
        ``photos/val``, 100 for the photo's colours exactly).
    """
    from sdk import metrics

    styles = PAINTING_STYLES
    n = len(photos)
    crops: list[np.ndarray] = []  # per photo: [S+1, size, size, 3], its S outputs then the input itself
    ssim = np.zeros((len(styles), n))
    mad = {pair: [] for pair in itertools.combinations(range(len(styles)), 2)}
    bands = np.zeros((len(styles), n, 4))
    layout = np.zeros((len(styles), n))
    colour = np.zeros((len(styles), n))
    for i, rgb in enumerate(photos):
        y_in = _luma(rgb)
        truth_ab = metrics.rgb_to_lab(rgb)[..., 1:]  # once per photo, for its four outputs
        outs = [np.asarray(pipe.stylize(rgb, s), np.uint8) for s in styles]
        if fuse is not None:
            outs = [fuse_rgb(rgb, o, fuse) for o in outs]
        for k, out in enumerate(outs):
            y_out = _luma(out)
            ssim[k, i] = metrics.ssim(y_out, y_in)
            layout[k, i] = tone_layout_error(y_out, y_in)
            colour[k, i] = metrics.ab_auc(out, rgb, truth_ab=truth_ab)
            bands[k, i] = list(edge_bands(y_out, y_in).values())  # in EDGE_SIDES order
        for a, b in mad:
            mad[(a, b)].append(float(np.abs(outs[a].astype(np.int16) - outs[b]).mean()))
        crops.append(np.stack([prepare(o, size) for o in outs] + [prepare(rgb, size)]))
    stack = np.stack(crops)  # [n, S+1, size, size, 3]
    feats = vgg_style_features(stack.reshape(-1, size, size, 3), vgg, size, batch).reshape(n, len(styles) + 1, -1)
    prob = clf.predict_proba(feats.reshape(n * (len(styles) + 1), -1)).reshape(n, len(styles) + 1, -1)
    pred = prob.argmax(-1)  # [n, S+1]
    cm = np.zeros((len(styles), len(CLASSES)), np.int64)
    for k in range(len(styles)):
        np.add.at(cm[k], pred[:, k], 1)
    cls = {s: CLASSES.index(s) for s in styles}
    score = {s: round(float(cm[k, cls[s]] / n), 4) for k, s in enumerate(styles)}
    pairs = {}
    for (a, b), v in mad.items():
        sa, sb = styles[a], styles[b]
        pairs[f"{sa}/{sb}"] = {
            "mad": round(float(np.mean(v)), 2),
            "a_as_b": round(float(cm[a, cls[sb]] / n), 4),
            "b_as_a": round(float(cm[b, cls[sa]] / n), 4),
        }
    return {
        "photos": n,
        "style_score": score,
        "style_score_mean": round(float(np.mean(list(score.values()))), 4),
        "style_prob": {s: round(float(prob[:, k, cls[s]].mean()), 4) for k, s in enumerate(styles)},
        "as_photo": {s: round(float(cm[k, 0] / n), 4) for k, s in enumerate(styles)},
        "confusion": {"rows": list(styles), "cols": list(CLASSES), "matrix": cm.tolist()},
        "ssim_luma": {s: round(float(ssim[k].mean()), 4) for k, s in enumerate(styles)},
        "ssim_luma_mean": round(float(ssim.mean()), 4),
        "pairs": pairs,
        "distinct_mad_mean": round(float(np.mean([p["mad"] for p in pairs.values()])), 2),
        "inputs_as_photo": round(float((pred[:, -1] == 0).mean()), 4),
        "edge_bands": {s: {**{side: round(float(v), 1) for side, v in zip(EDGE_SIDES, bands[k].mean(0))},
                           "abs": round(float(np.abs(bands[k].mean(0)).mean()), 1)} for k, s in enumerate(styles)},
        "tone_layout": {s: round(float(layout[k].mean()), 1) for k, s in enumerate(styles)},
        "photo_colour": {s: round(float(colour[k].mean()), 2) for k, s in enumerate(styles)},
    }


# ---------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.style_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", default=None, help="exported model folder (default: the bundled model)")
    p.add_argument("--classifier", default=DEFAULT_CACHE, help="cached classifier .npz (fitted and written if missing)")
    p.add_argument("--retrain", action="store_true", help="refit the classifier even if the cache matches")
    p.add_argument("--datasets", default=str(DEFAULT_DATASETS), help="folder with styles/ and photos/")
    p.add_argument("--vgg", default=str(DEFAULT_VGG), help="VGG19 relu3_1 safetensors")
    p.add_argument("--per-class", type=int, default=ClassifierConfig.per_class, help="training images per class at most")
    p.add_argument("--val-per-class", type=int, default=ClassifierConfig.val_per_class, help="validation images per class at most")
    p.add_argument("--size", type=int, default=ClassifierConfig.size, help="feature crop side")
    p.add_argument("--pca-dims", type=int, default=ClassifierConfig.pca_dims, help="PCA components kept")
    p.add_argument("--l2", type=float, default=ClassifierConfig.l2, help="L2 penalty of the logistic regression")
    p.add_argument("--photos", default=None, help="photos to stylize (default: <datasets>/photos/val)")
    p.add_argument("--limit", type=int, default=40, help="photos to stylize (evenly spaced; 0: all)")
    p.add_argument("--backend", default="auto", help="SDK backend")
    p.add_argument("--threads", type=int, default=0, help="torch and ONNX Runtime threads (0: their defaults)")
    p.add_argument("--no-model", action="store_true", help="only fit / report the classifier")
    p.add_argument("--fuse", default=None, choices=FUSE_METHODS, help="fuse every output with its photo (an sdk.fuse method, e.g. tone)")
    p.add_argument("--fuse-weight", type=float, default=0.5, help="weight of --fuse weighted / luminance / tone / colour")
    p.add_argument("--json", default="", help="also write the result to this file")
    args = p.parse_args(argv)

    import torch

    import sdk

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # progress on stderr; JSON alone on stdout
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = ClassifierConfig(datasets=args.datasets, vgg=args.vgg, size=args.size,
                           per_class=args.per_class, val_per_class=args.val_per_class, pca_dims=args.pca_dims, l2=args.l2)
    t0 = time.perf_counter()
    vgg = load_vgg(cfg.vgg)
    clf, fitted = get_classifier(cfg, args.classifier, args.retrain, vgg)
    size = int(clf.meta["config"]["size"])
    result: dict = {
        "classifier": {
            "path": args.classifier, "fitted_now": fitted, "feature_dim": clf.meta["feature_dim"],
            "pca_dims": int(clf.components.shape[0]), "config": clf.meta["config"],
            "train_accuracy": clf.meta["train"]["accuracy"], "val": clf.meta["val"],
            "fit_seconds": clf.meta["seconds"],
        }
    }
    if not args.no_model:
        t1 = time.perf_counter()
        pipe = sdk.load(args.model_dir, backend=args.backend, threads=args.threads or None)
        photo_dir = args.photos or str(Path(args.datasets) / "photos" / "val")
        files = evenly_spaced(list_images(photo_dir), args.limit)
        photos = [load_image(f) for f in files]
        log.info("style_eval: stylizing %d photos in %d styles with %s", len(photos), len(PAINTING_STYLES), pipe)
        fuse = FuseParams(args.fuse, weight=args.fuse_weight) if args.fuse else None
        model = evaluate_model(pipe, clf, photos, vgg, size, cfg.batch, fuse)
        result["model"] = {
            "model_dir": str(pipe.manifest.directory), "name": pipe.manifest.raw.get("name"), "backend": pipe.backend_name,
            "photo_dir": photo_dir, "fuse": asdict(fuse) if fuse else None,
            **model, "seconds": round(time.perf_counter() - t1, 1),
        }
    result["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
