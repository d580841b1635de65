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
the interior does, per side; a style that paints a dark or light frame shows it there. The styles
are the painting styles of the model's manifest (``natural`` left out), not a fixed list; a style
a classifier has no class for gets no recognition score from it.

Photo splits (``--split``): ``photos/val`` (98 ImageNet-sample + 100 BSDS500 photos) is split
once into **final** (60 photos listed in the committed ``training/final_test.json``: 30 per
source, evenly spaced over that source's photos that neither the trainer's validation, the first
32 sorted files, nor the old ``--limit 40`` selection over all 198 ever looked at;
:func:`build_final_split`) and **tune** (the other 138). ``--split tune`` is the default and what
every choice is made on; ``--split final`` is for release figures only. ``--limit N`` takes N
evenly spaced photos of the split. The classifiers' "photo" val class uses tune photos only.

Second classifier (:func:`train_mnet_classifier`, ``--mnet-*`` flags), built differently: pooled
MobileNetV2 ImageNet features (:mod:`training.style_metrics`: the global average of the stride-32
features, 320, and of the 1280-d head; RGB input by default, ``--mnet-colour luma`` for what the
generator's encoder reads), standardised, whitening PCA (128) and the same class-balanced softmax
regression. Trained on ``photos/train`` and ``styles/*/train`` (300 per class), plus any
``--extra-style NAME=FOLDER`` (``FOLDER/train``, ``FOLDER/val``) as further classes, so a
user-added style can be recognised; its val report covers every ``styles/*/val`` painting and
the tune photos. Cached like the first (``runs/style_classifier_mnet.npz``). Recognition and
confusion are reported for both classifiers side by side.

ArtFID-style score (:func:`artfid`), after Wright & Ommer (2022), who use
``(1 + LPIPS(photo, output)) * (1 + FID(paintings, outputs))`` with LPIPS and Inception
features. Here, per style: ``(1 + content) * (1 + FID)``, where

* FID is the Fréchet distance between the style's N outputs and its reference paintings (its
  ``val`` folder, all of them by default: 115 / 206 / 41 / 207 for ukiyoe / impressionism /
  pointillism / rococo) in MobileNetV2 pooled-feature space: each feature standardised by the
  MobileNet training set's mean and std, projected on the first ``k`` principal directions of
  that training set (a fixed basis, the same for every model), ``k = min(--fid-dims (16),
  min(N, N_paintings) // 2)``, and both covariances Ledoit-Wolf shrunk. FID from a few dozen
  samples is biased upwards (the bias falls with N), so compare models only at the same N and
  ``k`` (both are reported), never with published FIDs. Reported beside it: the FID of the
  unchanged photos (what doing nothing scores) and of the paintings' even half against their
  odd half (the sampling noise floor at that ``k``);
* content is :func:`training.style_metrics.content_distance` between each output and its
  photo, both as the classifier's square RGB crops: VGG19 relu2_1 and relu3_1, channel vectors
  scaled to unit length per position, squared difference summed over channels and averaged over
  positions and the two layers (LPIPS without its learned weights; 0 = same image, at most 2).

Lower is better. Baselines through the same scoring, on the same photos (never fused):
**Reinhard** colour transfer (on by default, ``--no-reinhard``): each photo's Lab channels moved
to the mean, over the style's reference paintings, of their Lab mean and std (it sees the colour
photo, the model only its luminance); **Gatys** (``--gatys N``): the optimisation of
:mod:`training.style_reference` on N of the photos (``--gatys-steps``, ``--gatys-size``,
``--gatys-exemplars``), slow.

Output: the JSON report on stdout (``--json`` also writes it) and compact Markdown tables on
stderr (``--markdown`` also writes them): the classifiers' val accuracy per class, then per
renderer and style recognition by both classifiers, the worst confusion of each, content SSIM,
content distance, FID and ArtFID-style.

    python -m training.style_eval --model-dir path/to/exported_model --json runs/style_eval.json
    python -m training.style_eval --extra-style fauvism=../shared/datasets/styles_extra/fauvism --no-model
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from sdk import contract
from sdk.fusion import FUSE_METHODS, FuseParams, fuse_rgb
from training.data import list_images
from training.style_metrics import (MOBILENET_COLOURS, GatysBaseline, ReinhardBaseline, content_distance, fid_dims_for, frechet_distance,
                                    load_mobilenet, mobilenet_features)

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

    out: list[np.ndarray] = []

    def run(chunk: list[np.ndarray]) -> None:
        out.append(_style_vectors(vgg(_batch(chunk))))

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


def _batch(crops: Sequence[np.ndarray]):
    """uint8 HxWx3 crops of one size -> [N,3,H,W] float tensor in [0, 1]."""
    import torch

    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0


def _style_vectors(fs) -> np.ndarray:
    """:func:`vgg_style_features` of VGG outputs ``fs`` (relu1_1, relu2_1, relu3_1): float32 [N, FEATURE_DIM]."""
    import torch

    from training.losses import STATS_EPS, channel_stats, gram

    stats = [channel_stats(f).flatten(1) for f in fs]  # log mean, log std per layer
    grams = []
    for i in GRAM_LAYERS:
        iu = torch.triu_indices(CHANNELS[i], CHANNELS[i])
        grams.append(torch.log(gram(fs[i])[:, iu[0], iu[1]].clamp_min(0) + STATS_EPS))
    return torch.cat(stats + grams, 1).numpy().astype(np.float32)


def evenly_spaced(files: Sequence[Path], n: int | None) -> list[Path]:
    """At most ``n`` of ``files``, evenly spaced over the sorted list (all when ``n`` is None or 0)."""
    files = list(files)
    if not n or len(files) <= n:
        return files
    return [files[i] for i in np.linspace(0, len(files) - 1, n).round().astype(int)]


# ---------------------------------------------------------------------------------- photo splits
FINAL_SPLIT_FILE = REPO / "training" / "final_test.json"
FINAL_PER_SOURCE = 30
SPLITS = ("tune", "final")
TRAINER_VAL_IMAGES = 32
"""The trainer validates on the first ``--val-images`` (default 32) sorted files of ``photos/val``."""
HISTORIC_LIMIT = 40
"""``--limit 40`` (evenly spaced over all 198 ``photos/val``) is the set steps and styles were chosen on."""


def build_final_split(photo_dir: str | Path, per_source: int = FINAL_PER_SOURCE) -> dict:
    """The release-only photos: ``per_source`` evenly spaced files of every source sub-folder of
    ``photo_dir``, among those no earlier selection looked at.

    Left out before choosing: the trainer's validation photos (the first
    :data:`TRAINER_VAL_IMAGES` sorted files) and the :data:`HISTORIC_LIMIT` photos that
    ``--limit 40`` picked from the whole folder. Deterministic: sorted names only.

    Returns:
        ``{"photo_dir", "per_source", "excluded", "sources": {name: n}, "files": [relative posix paths]}``.
    """
    root = Path(photo_dir)
    everything = list_images(root)
    used = set(everything[:TRAINER_VAL_IMAGES]) | set(evenly_spaced(everything, HISTORIC_LIMIT))
    files: list[str] = []
    sources = {}
    for src in sorted(d for d in root.iterdir() if d.is_dir()):
        eligible = [f for f in list_images(src) if f not in used]
        if len(eligible) < per_source:
            raise ValueError(f"{src} has {len(eligible)} unused photos, fewer than {per_source}")
        chosen = evenly_spaced(eligible, per_source)
        sources[src.name] = len(chosen)
        files += [f.relative_to(root).as_posix() for f in chosen]
    return {
        "description": "Release-only final-test photos of photos/val (python -m training.style_eval --split final); "
                       "written once by training.style_eval.write_final_split, never re-chosen. Not for tuning.",
        "photo_dir": "photos/val", "per_source": per_source,
        "excluded": f"first {TRAINER_VAL_IMAGES} sorted files (trainer validation) and the {HISTORIC_LIMIT} "
                    "evenly spaced over all files (--limit 40 before this split existed)",
        "sources": sources, "files": files,
    }


def write_final_split(photo_dir: str | Path, path: str | Path = FINAL_SPLIT_FILE, per_source: int = FINAL_PER_SOURCE) -> Path:
    """Write :func:`build_final_split` to ``path`` (done once; the file is committed)."""
    path = Path(path)
    path.write_text(json.dumps(build_final_split(photo_dir, per_source), indent=1) + "\n")
    return path


def read_final_split(path: str | Path = FINAL_SPLIT_FILE) -> list[str]:
    """The committed final-test photo names (relative to ``photos/val``)."""
    return list(json.loads(Path(path).read_text())["files"])


def split_photos(photo_dir: str | Path, split: str, split_file: str | Path = FINAL_SPLIT_FILE) -> list[Path]:
    """The sorted files of ``photo_dir`` in ``split``: ``"final"`` the committed list,
    ``"tune"`` every other file.

    Raises:
        ValueError: unknown split, or ``"final"`` asked of a folder lacking some listed file.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(photo_dir)
    files = list_images(root)
    final = set(read_final_split(split_file))
    rel = {f: f.relative_to(root).as_posix() for f in files}
    present = final & set(rel.values())
    if split == "final":
        if present != final:
            raise ValueError(f"{root} lacks {len(final - present)} of the {len(final)} final-test photos of {split_file}")
        return [f for f in files if rel[f] in final]
    if not present:
        log.warning("style_eval: none of the final-test photos of %s are in %s; tune = all its files", split_file, root)
    return [f for f in files if rel[f] not in final]


def class_files(datasets: str | Path, split: str, per_class: int | None) -> list[list[Path]]:
    """Image files of each class in :data:`CLASSES` for ``split`` ("train" or "val"), capped per class.

    The "val" photos are the tune split (:func:`split_photos`): the final-test photos are never read.

    Raises:
        FileNotFoundError: a class folder is missing.
    """
    root = Path(datasets)
    photos = split_photos(root / "photos" / "val", "tune") if split == "val" else list_images(root / "photos" / split)
    folders = [root / "styles" / s / split for s in PAINTING_STYLES]
    return [evenly_spaced(photos, per_class)] + [evenly_spaced(list_images(f), per_class) for f in folders]


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
        probe: features of :func:`probe_image` when it was fitted, to detect a changed feature network.
        arrays: further named arrays saved with it (the MobileNet classifier's FID basis and
            reference-painting features, :func:`train_mnet_classifier`).
    """

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    meta: dict
    probe: np.ndarray | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names (from ``meta``; :data:`CLASSES` for a classifier fitted without them)."""
        return tuple(self.meta.get("classes", CLASSES))

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
                            probe=self.probe if self.probe is not None else np.zeros(0, np.float32),
                            **{f"x_{k}": v for k, v in self.arrays.items()})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "StyleClassifier":
        """Read a classifier written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file.
        """
        with np.load(path) as z:
            probe = z["probe"] if "probe" in z.files and z["probe"].size else None
            arrays = {k[2:]: z[k] for k in z.files if k.startswith("x_")}
            return cls(z["mean"], z["scale"], z["components"], z["weight"], z["bias"], json.loads(str(z["meta"])), probe, arrays)


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


# ---------------------------------------------------------------------------------- MobileNet classifier
DEFAULT_MOBILENET = SHARED / "weights" / "mobilenet_v2_100.safetensors"
DEFAULT_MNET_CACHE = "runs/style_classifier_mnet.npz"
MNET_FEATURE_VERSION = 1
FID_BASIS_DIMS = 64
"""Principal directions of the MobileNet training features kept for the FID space (``--fid-dims`` at most this)."""


@dataclass(frozen=True)
class MnetConfig:
    """How the second style classifier (pooled MobileNetV2 features, :mod:`training.style_metrics`) is fitted.

    Attributes:
        datasets: folder with ``styles/<style>/{train,val}`` and ``photos/{train,val}``.
        weights: MobileNetV2 safetensors file.
        colour: ``"rgb"`` (the ImageNet network as trained) or ``"luma"`` (what the generator's
            encoder reads).
        size: square crop side (a multiple of 32).
        per_class: training images per class at most (evenly spaced files).
        val_per_class: validation images per class at most (0: all). The style classes' val
            features are kept as the ArtFID reference paintings.
        pca_dims: whitening-PCA components before the logistic regression.
        l2: L2 penalty of the logistic regression.
        batch: images per forward.
        extra: further classes, (name, folder with ``train/`` and ``val/``), after the four styles.
    """

    datasets: str = str(DEFAULT_DATASETS)
    weights: str = str(DEFAULT_MOBILENET)
    colour: str = "rgb"
    size: int = 224
    per_class: int = 300
    val_per_class: int = 0
    pca_dims: int = 128
    l2: float = 0.1
    batch: int = 16
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def classes(self) -> tuple[str, ...]:
        return CLASSES + tuple(name for name, _ in self.extra)


def parse_extra_style(text: str) -> tuple[str, str]:
    """``NAME=FOLDER`` (``--extra-style``) -> (name, folder); the folder must hold ``train/`` and ``val/``.

    Raises:
        ValueError: malformed, a name already taken, or a missing folder.
    """
    name, sep, folder = text.partition("=")
    name = name.strip()
    if not sep or not name.replace("_", "").isalnum() or not name.islower():
        raise ValueError(f"--extra-style takes NAME=FOLDER with a lower-case name, got {text!r}")
    if name in CLASSES:
        raise ValueError(f"--extra-style {name!r} is already a class ({', '.join(CLASSES)})")
    for sub in ("train", "val"):
        if not (Path(folder) / sub).is_dir():
            raise ValueError(f"--extra-style {name}: {Path(folder) / sub} is not a folder")
    return name, folder


def mnet_class_files(cfg: MnetConfig, split: str, per_class: int | None) -> list[list[Path]]:
    """Files of each class of ``cfg.classes`` for ``split``: :func:`class_files` plus the extra styles."""
    groups = class_files(cfg.datasets, split, per_class)
    return groups + [evenly_spaced(list_images(Path(folder) / split), per_class) for _, folder in cfg.extra]


def mnet_features_of(images: Iterable[np.ndarray], net, size: int, batch: int = 16) -> np.ndarray:
    """:func:`training.style_metrics.mobilenet_features` of images prepared at ``size`` (:func:`prepare`)."""
    return mobilenet_features((prepare(im, size) for im in images), net, batch)


def mnet_probe_features(net) -> np.ndarray:
    """Features of :func:`probe_image`: a fingerprint of the MobileNet weights and input mode."""
    return mobilenet_features([probe_image()], net)[0]


def train_mnet_classifier(cfg: MnetConfig, net=None) -> StyleClassifier:
    """Fit the MobileNet style classifier: standardise, whitening PCA, class-balanced softmax
    regression (:func:`fit_classifier`, one feature block), on ``cfg.classes``.

    Also kept in ``arrays``: ``fid_mean``, ``fid_scale`` (plain standardisation of the training
    features) and ``fid_basis`` (their top :data:`FID_BASIS_DIMS` principal directions, not
    whitened): the fixed space :func:`artfid` measures in, the same for every model; and
    ``ref_<style>`` the val features of every style class (the ArtFID reference paintings).
    """
    net = net if net is not None else load_mobilenet(cfg.weights, cfg.colour)
    if cfg.size % 32:
        raise ValueError(f"the MobileNet crop side must be a multiple of 32, got {cfg.size}")
    t0 = time.perf_counter()
    data = {}
    for split, cap in (("train", cfg.per_class), ("val", cfg.val_per_class)):
        groups = mnet_class_files(cfg, split, cap)
        files = [f for g in groups for f in g]
        log.info("style_eval: MobileNet (%s) features of %d %s images (%s per class) at %d px", cfg.colour, len(files), split,
                 "/".join(str(len(g)) for g in groups), cfg.size)
        x = mnet_features_of((load_image(f) for f in files), net, cfg.size, cfg.batch)
        y = np.concatenate([np.full(len(g), k, np.int64) for k, g in enumerate(groups)])
        data[split] = (x, y)
    (xt, yt), (xv, yv) = data["train"], data["val"]
    t1 = time.perf_counter()
    classes = cfg.classes
    clf = fit_classifier(xt, yt, cfg.pca_dims, cfg.l2, n_classes=len(classes))
    clf.probe = mnet_probe_features(net)
    m, sd = xt.astype(np.float64).mean(0), xt.astype(np.float64).std(0) + 1e-6
    z = (xt - m) / sd
    evals, evecs = np.linalg.eigh(np.cov(z, rowvar=False))
    basis = evecs[:, ::-1][:, :FID_BASIS_DIMS].T
    clf.arrays = {"fid_mean": m.astype(np.float32), "fid_scale": sd.astype(np.float32), "fid_basis": basis.astype(np.float32)}
    for k, name in enumerate(classes):
        if k:
            clf.arrays[f"ref_{name}"] = xv[yv == k]
    t2 = time.perf_counter()
    ev = np.clip(evals[::-1], 0, None)
    clf.meta = {
        "feature_version": MNET_FEATURE_VERSION,
        "feature_dim": int(xt.shape[1]),
        "features": f"MobileNetV2 ({cfg.colour}) global mean of stride-32 features (320) and of the 1280-d head",
        "classes": list(classes),
        "config": {**asdict(cfg), "extra": [list(e) for e in cfg.extra]},
        "train": accuracy_report(clf.predict(xt), yt, classes),
        "val": accuracy_report(clf.predict(xv), yv, classes),
        "fid_basis_variance": [round(float(ev[:k].sum() / ev.sum()), 4) for k in (8, 16, 32, 64)],
        "seconds": {"features": round(t1 - t0, 1), "fit": round(t2 - t1, 1)},
    }
    return clf


def _mnet_compatible(clf: StyleClassifier, cfg: MnetConfig, net=None) -> bool:
    """Whether a cached MobileNet classifier matches ``cfg`` (and ``net``'s probe features, when given)."""
    m = clf.meta
    if m.get("feature_version") != MNET_FEATURE_VERSION or m.get("classes") != list(cfg.classes):
        return False
    if net is not None and (clf.probe is None or not np.allclose(clf.probe, mnet_probe_features(net), rtol=1e-3, atol=1e-3)):
        return False
    old = m.get("config", {})
    keys = ("colour", "size", "per_class", "val_per_class", "pca_dims", "l2")
    if not all(old.get(k) == getattr(cfg, k) for k in keys):
        return False
    return [tuple(map(str, e)) for e in old.get("extra", [])] == [tuple(map(str, e)) for e in cfg.extra]


def get_mnet_classifier(cfg: MnetConfig, cache: str | Path | None = DEFAULT_MNET_CACHE, retrain: bool = False,
                        net=None) -> tuple[StyleClassifier, bool]:
    """Load the cached MobileNet classifier, or fit and cache one (as :func:`get_classifier`;
    refitted on other classes, extra-style folders, weights or settings).

    Returns:
        (classifier, whether it was fitted now).
    """
    if cache is not None and not retrain and Path(cache).is_file():
        clf = StyleClassifier.load(cache)
        if _mnet_compatible(clf, cfg, net):
            return clf, False
    clf = train_mnet_classifier(cfg, net)
    if cache is not None:
        clf.save(cache)
    return clf, True


FID_DIMS = 16
"""Default PCA dimension of the ArtFID space (``--fid-dims``); capped at half the smaller sample."""


def fid_project(clf: StyleClassifier, feats: np.ndarray, dims: int) -> np.ndarray:
    """MobileNet features [N, D] -> their first ``dims`` coordinates in the classifier's FID basis."""
    a = clf.arrays
    return ((np.asarray(feats, np.float64) - a["fid_mean"]) / a["fid_scale"]) @ a["fid_basis"][:dims].T.astype(np.float64)


def artfid(clf: StyleClassifier, out_feats: np.ndarray, ref_feats: np.ndarray, content: np.ndarray,
           max_dims: int = FID_DIMS) -> dict | None:
    """ArtFID-style score of one style's outputs (see the module docstring, "ArtFID-style").

    ``(1 + content) * (1 + FID)``: FID between the outputs' and the reference paintings'
    MobileNet features in the first ``k = min(max_dims, min(N_out, N_ref) // 2)`` directions of
    the fixed FID basis, Ledoit-Wolf covariances; ``content`` the mean
    :func:`training.style_metrics.content_distance` of the outputs to their photos.

    Args:
        clf: the MobileNet classifier (its ``fid_*`` arrays).
        out_feats: [N_out, D] features of the outputs.
        ref_feats: [N_ref, D] features of the style's reference paintings.
        content: [N_out] content distances.
        max_dims: ``k`` at most.

    Returns:
        ``{"artfid", "fid", "content", "n_outputs", "n_paintings", "dims", "shrinkage",
        "fid_mean_term", "fid_cov_term"}``, or None with fewer than two outputs or paintings.
    """
    n, r = len(out_feats), len(ref_feats)
    if min(n, r) < 2:
        return None
    k = min(fid_dims_for(min(n, r), max_dims), clf.arrays["fid_basis"].shape[0])
    fd = frechet_distance(fid_project(clf, out_feats, k), fid_project(clf, ref_feats, k))
    c = float(np.mean(content))
    return {"artfid": round((1.0 + c) * (1.0 + fd["fid"]), 3), "fid": round(fd["fid"], 3), "content": round(c, 4),
            "n_outputs": n, "n_paintings": r, "dims": k, "shrinkage": fd["shrinkage"],
            "fid_mean_term": round(fd["mean_term"], 3), "fid_cov_term": round(fd["cov_term"], 3)}


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
    :func:`sdk.fusion.tone_grid`: how far an output's tonal layout (a dark sky, a bright
    window) moved from the photo's."""
    from sdk.fusion import tone_means

    return float(np.abs(tone_means(np.asarray(y_out, np.float64)) - tone_means(np.asarray(y_in, np.float64))).mean())


def renderer_styles(renderer) -> tuple[str, ...]:
    """The painting styles a renderer offers: a pipeline's manifest styles without ``natural``,
    else its ``styles`` attribute."""
    manifest = getattr(renderer, "manifest", None)
    if manifest is not None:
        return tuple(s for s in manifest.styles if s != contract.NATURAL)
    return tuple(renderer.styles)


def _class_scores(prob: np.ndarray, styles: Sequence[str], classes: Sequence[str]) -> dict:
    """Recognition of ``prob`` [n, S+1, C] (S styles' outputs, then the input photo) by a classifier with ``classes``.

    A style the classifier has no class for gets None scores (its confusion row is still counted).
    """
    n = prob.shape[0]
    pred = prob.argmax(-1)
    cm = np.zeros((len(styles), len(classes)), np.int64)
    for k in range(len(styles)):
        np.add.at(cm[k], pred[:, k], 1)
    cls = {s: (list(classes).index(s) if s in classes else None) for s in styles}
    score = {s: (round(float(cm[k, cls[s]] / n), 4) if cls[s] is not None else None) for k, s in enumerate(styles)}
    known = [v for v in score.values() if v is not None]
    worst = {}
    for k, s in enumerate(styles):
        row = cm[k].astype(float)
        if cls[s] is not None:
            row[cls[s]] = -1
        j = int(row.argmax())
        worst[s] = {"as": classes[j], "share": round(float(cm[k, j] / n), 4)}
    return {
        "classes": list(classes),
        "style_score": score,
        "style_score_mean": round(float(np.mean(known)), 4) if known else None,
        "style_prob": {s: (round(float(prob[:, k, cls[s]].mean()), 4) if cls[s] is not None else None) for k, s in enumerate(styles)},
        "as_photo": {s: round(float(cm[k, 0] / n), 4) for k, s in enumerate(styles)},
        "confusion": {"rows": list(styles), "cols": list(classes), "matrix": cm.tolist()},
        "worst_confusion": worst,
        "inputs_as_photo": round(float((pred[:, -1] == 0).mean()), 4),
        "_cm": cm, "_cls": cls,
    }


def evaluate_model(pipe, clf: StyleClassifier, photos: Sequence[np.ndarray], vgg, size: int = 224, batch: int = 16,
                   fuse=None, *, styles: Sequence[str] | None = None, mnet=None, mnet_clf: StyleClassifier | None = None,
                   fid_dims: int = FID_DIMS) -> dict:
    """Stylize each photo in every painting style and score the outputs.

    Args:
        pipe: a renderer: an :class:`sdk.Pipeline` or anything with ``stylize(rgb, style)``
            (:class:`training.style_metrics.ReinhardBaseline`, :class:`~training.style_metrics.GatysBaseline`).
        clf: the VGG style classifier.
        photos: HxWx3 uint8 colour photos (the generator reads their luminance only).
        vgg: the VGG used for the classifier's features (and the content distance).
        size, batch: feature settings (must match the classifier's ``size``).
        fuse: an :class:`sdk.fusion.FuseParams` applied to every output with its photo (what a
            user's ``--fuse`` gives), or None.
        styles: the styles to render (default :func:`renderer_styles`: the manifest's painting styles).
        mnet, mnet_clf: the MobileNet network and classifier (:func:`get_mnet_classifier`), or
            None for the VGG scores alone.
        fid_dims: :func:`artfid`'s ``max_dims``.

    Returns:
        ``{"photos", "styles", "style_score", "style_score_mean", "style_prob", "as_photo", "confusion",
        "worst_confusion", "ssim_luma", "ssim_luma_mean", "pairs", "distinct_mad_mean", "inputs_as_photo",
        "edge_bands", "tone_layout", "photo_colour", "content_vgg", "mnet", "artfid"}``:
        ``style_score[s]`` is the share of style ``s`` outputs the VGG classifier classifies as
        ``s`` (None for a style it has no class for); ``confusion`` rows are the intended styles,
        columns the VGG classes; ``worst_confusion[s]`` the most frequent wrong class and its
        share; ``pairs["a/b"]`` has ``mad`` (mean |a - b| in 8-bit levels over pixels and
        photos), ``a_as_b`` and ``b_as_a``; ``edge_bands[s]`` the mean over photos of
        :func:`edge_bands` per side, and ``abs`` the mean of the four sides' magnitudes;
        ``tone_layout[s]`` the mean :func:`tone_layout_error`; ``photo_colour[s]`` the mean
        :func:`training.metrics.ab_auc` of the outputs against their photos (how much of the photo's
        own colour an output keeps: ~88 for a grey image on ``photos/val``, 100 for the photo's
        colours exactly); ``content_vgg[s]`` the mean
        :func:`training.style_metrics.content_distance` output to photo. With a MobileNet
        classifier, ``mnet`` holds its ``style_score``, ``style_prob``, ``as_photo``,
        ``confusion``, ``worst_confusion``, ``inputs_as_photo`` likewise, and ``artfid[s]``
        :func:`artfid` against the style's reference paintings (None without them), with
        ``fid_photos`` (the unchanged photos' FID to them: what doing nothing scores) and
        ``fid_paintings_halves`` (FID between the even and odd halves of the paintings at the
        same dimension: the sampling noise floor).
    """
    import torch

    from training import metrics

    styles = tuple(styles) if styles is not None else renderer_styles(pipe)
    S, n = len(styles), len(photos)
    msize = int(mnet_clf.meta["config"]["size"]) if mnet_clf is not None else 0
    vfeat = np.zeros((n, S + 1, FEATURE_DIM), np.float32)
    mfeat = np.zeros((n, S + 1, mnet_clf.mean.shape[0] if mnet_clf is not None else 0), np.float32)
    ssim = np.zeros((S, n))
    content = np.zeros((S, n))
    mad = {pair: [] for pair in itertools.combinations(range(S), 2)}
    bands = np.zeros((S, n, 4))
    layout = np.zeros((S, n))
    colour = np.zeros((S, n))
    for i, rgb in enumerate(photos):
        y_in = _luma(rgb)
        truth_ab = metrics.rgb_to_lab(rgb)[..., 1:]  # once per photo, for its outputs
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
        images = outs + [rgb]
        with torch.no_grad():
            fs = vgg(_batch([prepare(o, size) for o in images]))  # one forward: style features and content
            vfeat[i] = _style_vectors(fs)
            content[:, i] = content_distance([f[:S] for f in fs], [f[S:] for f in fs])
        if mnet_clf is not None:
            mfeat[i] = mnet_features_of(images, mnet, msize, batch)
    prob = clf.predict_proba(vfeat.reshape(n * (S + 1), -1)).reshape(n, S + 1, -1)
    vs = _class_scores(prob, styles, CLASSES)
    cm, cls = vs.pop("_cm"), vs.pop("_cls")
    pairs = {}
    for (a, b), v in mad.items():
        sa, sb = styles[a], styles[b]
        pairs[f"{sa}/{sb}"] = {
            "mad": round(float(np.mean(v)), 2),
            "a_as_b": round(float(cm[a, cls[sb]] / n), 4) if cls[sb] is not None else None,
            "b_as_a": round(float(cm[b, cls[sa]] / n), 4) if cls[sa] is not None else None,
        }
    result = {
        "photos": n,
        "styles": list(styles),
        "style_score": vs["style_score"],
        "style_score_mean": vs["style_score_mean"],
        "style_prob": vs["style_prob"],
        "as_photo": vs["as_photo"],
        "confusion": vs["confusion"],
        "worst_confusion": vs["worst_confusion"],
        "ssim_luma": {s: round(float(ssim[k].mean()), 4) for k, s in enumerate(styles)},
        "ssim_luma_mean": round(float(ssim.mean()), 4),
        "pairs": pairs,
        "distinct_mad_mean": round(float(np.mean([p["mad"] for p in pairs.values()])), 2) if pairs else None,
        "inputs_as_photo": vs["inputs_as_photo"],
        "edge_bands": {s: {**{side: round(float(v), 1) for side, v in zip(EDGE_SIDES, bands[k].mean(0))},
                           "abs": round(float(np.abs(bands[k].mean(0)).mean()), 1)} for k, s in enumerate(styles)},
        "tone_layout": {s: round(float(layout[k].mean()), 1) for k, s in enumerate(styles)},
        "photo_colour": {s: round(float(colour[k].mean()), 2) for k, s in enumerate(styles)},
        "content_vgg": {s: round(float(content[k].mean()), 4) for k, s in enumerate(styles)},
    }
    if mnet_clf is not None:
        mprob = mnet_clf.predict_proba(mfeat.reshape(n * (S + 1), -1)).reshape(n, S + 1, -1)
        ms = _class_scores(mprob, styles, mnet_clf.classes)
        ms.pop("_cm"), ms.pop("_cls")
        result["mnet"] = ms
        result["artfid"] = {}
        for k, s in enumerate(styles):
            ref = mnet_clf.arrays.get(f"ref_{s}")
            score = artfid(mnet_clf, mfeat[:, k], ref, content[k], fid_dims) if ref is not None else None
            if score is not None:
                d = score["dims"]
                score["fid_photos"] = round(frechet_distance(fid_project(mnet_clf, mfeat[:, S], d), fid_project(mnet_clf, ref, d))["fid"], 3)
                score["fid_paintings_halves"] = (round(frechet_distance(fid_project(mnet_clf, ref[0::2], d),
                                                                         fid_project(mnet_clf, ref[1::2], d))["fid"], 3)
                                                 if len(ref) >= 4 else None)
            result["artfid"][s] = score
        known = [v["artfid"] for v in result["artfid"].values() if v is not None]
        result["artfid_mean"] = round(float(np.mean(known)), 3) if known else None
    return result


# ---------------------------------------------------------------------------------- Markdown
def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def markdown_report(result: dict) -> str:
    """The compact tables of a :func:`main` result: the classifiers' val accuracy per class side
    by side, then per renderer (the model, the baselines) and style: recognition by the VGG and
    the MobileNet classifier, the worst confusion of each, content SSIM, VGG content distance,
    FID and ArtFID-style."""
    lines: list[str] = []
    cv = result.get("classifiers_val")
    if cv:
        lines += ["| class | VGG val % | MobileNet val % | n (VGG / MNet) |", "|---|---:|---:|---:|"]
        for c in cv["classes"]:
            v, m = cv["vgg"]["per_class"].get(c), cv.get("mnet", {}).get("per_class", {}).get(c)
            nv, nm = cv["vgg"]["support"].get(c, 0), cv.get("mnet", {}).get("support", {}).get(c, 0)
            lines.append(f"| {c} | {_pct(v)} | {_pct(m)} | {nv} / {nm} |")
        mb = cv.get("mnet", {}).get("balanced_accuracy")
        lines += [f"| **balanced** | {_pct(cv['vgg']['balanced_accuracy'])} | {_pct(mb)} | |", ""]
    renderers = ([("model", result["model"])] if "model" in result else []) + list(result.get("baselines", {}).items())
    if renderers:
        lines += ["| renderer | style | n | VGG % | MNet % | worst confusion (VGG / MNet) | SSIM | content | FID (k) | FID photos | ArtFID |",
                  "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
        for name, r in renderers:
            m = r.get("mnet", {})
            for s in r["styles"]:
                wv = r["worst_confusion"][s]
                wm = m.get("worst_confusion", {}).get(s)
                worst = f"{wv['as']} {_pct(wv['share'])}" + (f" / {wm['as']} {_pct(wm['share'])}" if wm else "")
                a = (r.get("artfid") or {}).get(s)
                cells = [name, s, str(r["photos"]), _pct(r["style_score"][s]), _pct(m.get("style_score", {}).get(s)), worst,
                         f"{r['ssim_luma'][s]:.3f}", f"{r['content_vgg'][s]:.3f}",
                         f"{a['fid']:.2f} ({a['dims']})" if a else "–", f"{a['fid_photos']:.2f}" if a else "–",
                         f"{a['artfid']:.2f}" if a else "–"]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- CLI
def _classifier_summary(clf: StyleClassifier, path, fitted: bool) -> dict:
    return {"path": str(path), "fitted_now": fitted, "classes": list(clf.classes), "feature_dim": clf.meta["feature_dim"],
            "pca_dims": int(clf.components.shape[0]), "config": clf.meta["config"],
            "train_accuracy": clf.meta["train"]["accuracy"], "val": clf.meta["val"], "fit_seconds": clf.meta["seconds"],
            **({"fid_basis_variance": clf.meta["fid_basis_variance"]} if "fid_basis_variance" in clf.meta else {})}


def reference_paintings(mcfg: MnetConfig, styles: Sequence[str]) -> dict[str, list[Path]]:
    """Each style's reference paintings (its val folder, ``mcfg.val_per_class`` evenly spaced at
    most): the ArtFID reference (the same files as the MobileNet classifier's ``ref_<style>``)
    and the Reinhard targets."""
    folders = {s: Path(mcfg.datasets) / "styles" / s for s in PAINTING_STYLES} | {n: Path(f) for n, f in mcfg.extra}
    return {s: evenly_spaced(list_images(folders[s] / "val"), mcfg.val_per_class) for s in styles if s in folders}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.style_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", default=None, help="exported model folder (default: the bundled model)")
    p.add_argument("--classifier", default=DEFAULT_CACHE, help="cached classifier .npz (fitted and written if missing)")
    p.add_argument("--retrain", action="store_true", help="refit the classifiers even if the caches match")
    p.add_argument("--datasets", default=str(DEFAULT_DATASETS), help="folder with styles/ and photos/")
    p.add_argument("--vgg", default=str(DEFAULT_VGG), help="VGG19 relu3_1 safetensors")
    p.add_argument("--per-class", type=int, default=ClassifierConfig.per_class, help="training images per class at most")
    p.add_argument("--val-per-class", type=int, default=ClassifierConfig.val_per_class, help="validation images per class at most")
    p.add_argument("--size", type=int, default=ClassifierConfig.size, help="feature crop side")
    p.add_argument("--pca-dims", type=int, default=ClassifierConfig.pca_dims, help="PCA components kept")
    p.add_argument("--l2", type=float, default=ClassifierConfig.l2, help="L2 penalty of the logistic regression")
    g = p.add_argument_group("MobileNet classifier (second, independent style classifier; FID space)")
    g.add_argument("--mnet-classifier", default=DEFAULT_MNET_CACHE, help="cached MobileNet classifier .npz (fitted and written if missing)")
    g.add_argument("--no-mnet", action="store_true", help="skip the MobileNet classifier and ArtFID")
    g.add_argument("--mobilenet", default=str(DEFAULT_MOBILENET), help="MobileNetV2 safetensors")
    g.add_argument("--mnet-colour", default=MnetConfig.colour, choices=MOBILENET_COLOURS, help="network input: RGB (default) or the luminance")
    g.add_argument("--mnet-size", type=int, default=None, help="crop side, a multiple of 32 (default: --size)")
    g.add_argument("--mnet-per-class", type=int, default=None, help="training images per class at most (default: --per-class)")
    g.add_argument("--mnet-val-per-class", type=int, default=MnetConfig.val_per_class,
                   help="val images per class at most, also the ArtFID reference paintings (0: all)")
    g.add_argument("--mnet-pca-dims", type=int, default=MnetConfig.pca_dims, help="whitening-PCA components")
    g.add_argument("--mnet-l2", type=float, default=MnetConfig.l2, help="L2 penalty")
    g.add_argument("--extra-style", action="append", default=[], metavar="NAME=FOLDER",
                   help="one more class for the MobileNet classifier (FOLDER/train, FOLDER/val), e.g. "
                        "fauvism=../shared/datasets/styles_extra/fauvism; repeatable")
    g.add_argument("--fid-dims", type=int, default=FID_DIMS, help=f"ArtFID's PCA dimension at most (capped at half the smaller set, and {FID_BASIS_DIMS})")
    p.add_argument("--photos", default=None, help="photos to stylize (default: <datasets>/photos/val, split by --split)")
    p.add_argument("--split", default="tune", choices=SPLITS,
                   help="photos/val split: tune (all but the final-test photos) or final (the 60 of training/final_test.json; releases only)")
    p.add_argument("--split-file", default=str(FINAL_SPLIT_FILE), help="the final-test list")
    p.add_argument("--limit", type=int, default=40, help="photos to stylize (evenly spaced over the split; 0: all)")
    p.add_argument("--backend", default="auto", help="SDK backend")
    p.add_argument("--threads", type=int, default=0, help="torch and ONNX Runtime threads (0: their defaults)")
    p.add_argument("--no-model", action="store_true", help="only fit / report the classifiers")
    p.add_argument("--fuse", default=None, choices=FUSE_METHODS, help="fuse every output with its photo (an sdk.fuse method, e.g. tone)")
    p.add_argument("--fuse-weight", type=float, default=0.5, help="weight of --fuse weighted / luminance / tone / colour")
    b = p.add_argument_group("baselines (scored on the same photos; never fused)")
    b.add_argument("--reinhard", action=argparse.BooleanOptionalAction, default=True,
                   help="Reinhard colour transfer to each style's mean reference-painting Lab statistics (default on)")
    b.add_argument("--gatys", type=int, default=0, metavar="N",
                   help="also the Gatys optimisation (training.style_reference) on N of the photos (slow; 0: off)")
    b.add_argument("--gatys-exemplars", default=str(REPO / "training" / "exemplars.json"), help="style -> painting names for --gatys")
    b.add_argument("--gatys-steps", type=int, default=100, help="Adam steps per photo for --gatys")
    b.add_argument("--gatys-size", type=int, default=128, help="short side --gatys optimises at")
    p.add_argument("--json", default="", help="also write the result to this file")
    p.add_argument("--markdown", default="", help="also write the Markdown tables to this file (always printed on stderr)")
    args = p.parse_args(argv)

    import torch

    import sdk

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # progress on stderr; JSON alone on stdout
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        extra = tuple(parse_extra_style(e) for e in args.extra_style)
    except ValueError as e:
        p.error(str(e))
    cfg = ClassifierConfig(datasets=args.datasets, vgg=args.vgg, size=args.size,
                           per_class=args.per_class, val_per_class=args.val_per_class, pca_dims=args.pca_dims, l2=args.l2)
    mcfg = MnetConfig(datasets=args.datasets, weights=args.mobilenet, colour=args.mnet_colour,
                      size=args.mnet_size or args.size, per_class=args.mnet_per_class if args.mnet_per_class is not None else args.per_class,
                      val_per_class=args.mnet_val_per_class, pca_dims=args.mnet_pca_dims, l2=args.mnet_l2, batch=cfg.batch, extra=extra)
    t0 = time.perf_counter()
    vgg = load_vgg(cfg.vgg)
    clf, fitted = get_classifier(cfg, args.classifier, args.retrain, vgg)
    size = int(clf.meta["config"]["size"])
    result: dict = {"classifier": _classifier_summary(clf, args.classifier, fitted)}
    mnet = mclf = None
    if not args.no_mnet:
        mnet = load_mobilenet(mcfg.weights, mcfg.colour)
        mclf, mfitted = get_mnet_classifier(mcfg, args.mnet_classifier, args.retrain, mnet)
        result["classifier_mnet"] = _classifier_summary(mclf, args.mnet_classifier, mfitted)
    classes = list(mclf.classes) if mclf is not None else list(CLASSES)
    result["classifiers_val"] = {"classes": classes, "vgg": clf.meta["val"],
                                 **({"mnet": mclf.meta["val"]} if mclf is not None else {})}
    if not args.no_model:
        t1 = time.perf_counter()
        pipe = sdk.load(args.model_dir, backend=args.backend, threads=args.threads or None)
        default_dir = Path(args.datasets) / "photos" / "val"
        photo_dir = args.photos or str(default_dir)
        if Path(photo_dir).resolve() == default_dir.resolve():
            pool, split = split_photos(photo_dir, args.split, args.split_file), args.split
        else:
            pool, split = list_images(photo_dir), None  # another folder: all of it
        files = evenly_spaced(pool, args.limit)
        photos = [load_image(f) for f in files]
        styles = renderer_styles(pipe)
        log.info("style_eval: stylizing %d photos (split %s) in %d styles (%s) with %s", len(photos), split, len(styles),
                 ", ".join(styles), pipe)
        fuse = FuseParams(args.fuse, weight=args.fuse_weight) if args.fuse else None
        kw = dict(mnet=mnet, mnet_clf=mclf, fid_dims=args.fid_dims)
        model = evaluate_model(pipe, clf, photos, vgg, size, cfg.batch, fuse, styles=styles, **kw)
        result["model"] = {
            "model_dir": str(pipe.manifest.directory), "name": pipe.manifest.raw.get("name"), "backend": pipe.backend_name,
            "photo_dir": photo_dir, "split": split, "photo_files": [Path(f).relative_to(photo_dir).as_posix() for f in files],
            "fuse": asdict(fuse) if fuse else None,
            **model, "seconds": round(time.perf_counter() - t1, 1),
        }
        result["baselines"] = {}
        if args.reinhard:
            t2 = time.perf_counter()
            refs = reference_paintings(mcfg, styles)
            rein = ReinhardBaseline.from_paintings({s: (load_image(f) for f in fs) for s, fs in refs.items()})
            rstyles = [s for s in styles if s in rein.targets]
            log.info("style_eval: Reinhard baseline on the same %d photos (%s)", len(photos), ", ".join(rstyles))
            r = evaluate_model(rein, clf, photos, vgg, size, cfg.batch, styles=rstyles, **kw)
            result["baselines"]["reinhard"] = {**rein.describe(), **r, "seconds": round(time.perf_counter() - t2, 1)}
        if args.gatys:
            from training.style_reference import ReferenceConfig

            t2 = time.perf_counter()
            gcfg = ReferenceConfig(exemplars=args.gatys_exemplars, datasets=args.datasets, vgg=args.vgg,
                                   short_side=args.gatys_size, steps=args.gatys_steps, threads=args.threads)
            gat = GatysBaseline(gcfg, vgg)
            gstyles = [s for s in styles if s in gat.styles]
            gphotos = [photos[i] for i in np.linspace(0, len(photos) - 1, min(args.gatys, len(photos))).round().astype(int)]
            log.info("style_eval: Gatys reference on %d photos, %d steps at %d px (%s)", len(gphotos), gcfg.steps, gcfg.short_side,
                     ", ".join(gstyles))
            r = evaluate_model(gat, clf, gphotos, vgg, size, cfg.batch, styles=gstyles, **kw)
            result["baselines"]["gatys"] = {**gat.describe(), **r, "seconds": round(time.perf_counter() - t2, 1)}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(result, indent=2)
    table = markdown_report(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table + "\n")
    print(table, file=sys.stderr)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
