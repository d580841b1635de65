"""``chromaforge style add``: learn a new painting style from 1-30 paintings, into a new model folder.

The style path (:mod:`training.stylenet`) shares every convolution between styles; a style is one
row of each normalisation's scale and shift. Adding a style appends a row and trains only that
row (a few thousand numbers) with the same VGG content and Gram losses the shipped styles were
trained with, on your paintings' mean Gram statistics. Everything else is frozen, so every shipped
style and colorization give bit-identical outputs in the new model (tested).

The job keeps its state in ``OUT.partial/`` (the base model read back into PyTorch, checkpoints
every 50 steps): run the same command again after an interrupt and it resumes. The model folder
appears at ``OUT`` only when it is complete (ONNX, manifest listing the new style, model card with
its entry), so ``sdk.load(model_dir=OUT)``, every command's ``--model-dir OUT`` and ``chromaforge
serve --model-dir OUT`` take it.

Needs the ``train`` and ``export`` extras (PyTorch, ONNX), a folder of colour photos to learn on
(``--photos``: any 100 or more of your own; the project's ``../shared/datasets/photos/train`` by
default) and the VGG19 loss network (``--vgg``).

Example:
    chromaforge style add fauvism ../shared/datasets/styles_extra/fauvism/train --out my-model
    chromaforge stylize photo.jpg --model-dir my-model --style fauvism -o photo_fauvism.png
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sdk.manifest import STYLE_NAME
from sdk.errors import BackendUnavailableError, InvalidArgumentError, InvalidImageError, OutputExistsError, install_hint

NAME_PATTERN = STYLE_NAME
"""Valid style names: the manifest's own rule (:data:`sdk.manifest.STYLE_NAME`), used with ``fullmatch``."""
"""A style name: lower-case letter first, then letters, digits, ``_`` or ``-``; at most 32 characters."""

MIN_PAINTINGS = 1
MAX_PAINTINGS = 30
"""Paintings the style is learned from: more are thinned to this many, evenly spaced (in sorted order)."""

MIN_SIDE = 64
"""Smallest painting side accepted, in pixels (the Gram statistics are taken at 224 x 224)."""

MIN_PHOTOS = 20
"""Fewest content photos the style is learned on."""

BASE_MODEL = Path(__file__).with_name("models") / "stylenet"
"""The default base: the bundled colorization with the conditional-instance-norm style path (release
14's candidate; the default model, release 13, has the older style branch, which cannot take new styles)."""

PAINTING_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})


@dataclass(frozen=True)
class StyleAddConfig:
    """Options of ``chromaforge style add`` (and :func:`add_style`).

    Args:
        name: the new style's name (:data:`NAME_PATTERN`), not one the base model has.
        paintings: painting files and folders (every image inside, recursively).
        out: the new model folder; must not exist.
        model_dir: the base model (None: the bundled ``stylenet`` model, :data:`BASE_MODEL`).
        photos: folder of colour photos the style is learned on.
        vgg: the VGG19 loss network (conv1_1..relu3_1, caffe convention) as safetensors.
        steps: optimisation steps (the default finishes in under 30 minutes on 2 CPU cores).
        batch: photos per step.
        size: side of the square photo crops.
        lr: learning rate of the new style's scales and shifts.
        threads: PyTorch threads (0: PyTorch's default).
        seed: random seed of the crops.
        ckpt_every: steps between checkpoints in ``OUT.partial`` (what an interrupted job resumes from).
    """

    name: str
    paintings: tuple[str, ...]
    out: str
    model_dir: str | None = None
    photos: str = "../shared/datasets/photos/train"
    vgg: str = "../shared/weights/vgg19_relu3_1_caffe.safetensors"
    steps: int = 600
    batch: int = 4
    size: int = 192
    lr: float = 0.01
    threads: int = 0
    seed: int = 0
    ckpt_every: int = 50


def check_name(name: str, existing: tuple[str, ...]) -> None:
    """Raises InvalidArgumentError unless ``name`` is a valid, new style name."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidArgumentError(f"style name {str(name)[:40]!r} is not valid; expected a lower-case letter, then up to 31 letters, "
                                   "digits, '_' or '-' (e.g. fauvism, my_style-2)")
    if name in existing:
        raise InvalidArgumentError(f"the base model already has a style {name!r} (its styles: {', '.join(existing)}); choose another name")


def check_paintings(inputs: tuple[str, ...] | list[str]) -> list[Path]:
    """The painting files of ``inputs`` (files, or folders searched recursively), each checked to decode.

    Returns:
        Up to :data:`MAX_PAINTINGS` files, sorted (more are thinned evenly).

    Raises:
        InvalidArgumentError: no inputs, a path that does not exist, or no painting found.
        InvalidImageError: files that cannot be decoded or are smaller than :data:`MIN_SIDE` (all listed).
    """
    from PIL import Image

    if not inputs:
        raise InvalidArgumentError("no paintings given; expected 1-30 painting files or a folder of them")
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in PAINTING_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise InvalidArgumentError(f"painting path {p} does not exist; expected a painting file or a folder of them")
    files = sorted(dict.fromkeys(files))
    if len(files) < MIN_PAINTINGS:
        raise InvalidArgumentError(f"found no painting files in {', '.join(map(str, inputs))} (looked for {', '.join(sorted(PAINTING_SUFFIXES))}); "
                                   f"expected at least {MIN_PAINTINGS}")
    if len(files) > MAX_PAINTINGS:
        step = len(files) / MAX_PAINTINGS
        files = [files[int(i * step)] for i in range(MAX_PAINTINGS)]
    bad = []
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                if min(im.size) < MIN_SIDE:
                    bad.append(f"{f} ({im.width}x{im.height}, smaller than {MIN_SIDE} px)")
        except Exception as e:  # Pillow raises many types for broken files  # noqa: BLE001
            what = "truncated or damaged" if isinstance(e, (OSError, SyntaxError)) and "truncated" in str(e).lower() else "not an image Pillow can read"
            bad.append(f"{f} ({what})")
    if bad:
        raise InvalidImageError(f"{len(bad)} of {len(files)} paintings cannot be used: {'; '.join(bad[:5])}"
                                f"{' ...' if len(bad) > 5 else ''}; remove them or pass other files")
    return files


def _job_id(cfg: StyleAddConfig, files: list[Path], base_sha: str) -> str:
    """What identifies a job for resuming: the name, the base model, the paintings' bytes and the settings."""
    h = hashlib.sha256()
    for part in (cfg.name, base_sha, json.dumps({k: v for k, v in dataclasses.asdict(cfg).items() if k in ("steps", "batch", "size", "lr", "seed")})):
        h.update(part.encode())
    for f in files:
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def add_style(cfg: StyleAddConfig, progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Learn style ``cfg.name`` from ``cfg.paintings`` and write the base model plus that style to ``cfg.out``.

    Args:
        cfg: the job.
        progress: called after each step with (step, steps, losses).

    Returns:
        A summary: the model folder, styles, steps, seconds, final losses, resumed or not.

    Raises:
        OutputExistsError: ``cfg.out`` exists, or ``OUT.partial`` holds another job's state.
        InvalidArgumentError / InvalidImageError: a bad name, paintings, photos folder, settings or loss network.
        BackendUnavailableError: PyTorch or the export tools are not installed.
        ModelNotFoundError / ModelCorruptError: the base model cannot be loaded.

    Example:
        >>> add_style(StyleAddConfig("fauvism", ("paintings/",), "my-model"))["styles"][-1]
        'fauvism'
    """
    from sdk.manifest import load_manifest

    out = Path(cfg.out)
    if out.exists():
        raise OutputExistsError(f"{out} exists; choose a new --out folder (the new model is written there whole)")
    for field, lo in (("steps", 1), ("batch", 1), ("size", 32), ("ckpt_every", 1)):
        if not isinstance(getattr(cfg, field), int) or getattr(cfg, field) < lo:
            raise InvalidArgumentError(f"--{field} is {getattr(cfg, field)!r}; expected an integer >= {lo}")
    if not cfg.lr > 0:
        raise InvalidArgumentError(f"--lr is {cfg.lr}; expected a positive learning rate")
    base_dir = Path(cfg.model_dir) if cfg.model_dir else BASE_MODEL
    base = load_manifest(base_dir)
    check_name(cfg.name, tuple(base.styles))
    files = check_paintings(cfg.paintings)
    photos = Path(cfg.photos)
    if not photos.is_dir():
        raise InvalidArgumentError(f"--photos {photos} is not a folder; give a folder of {MIN_PHOTOS} or more colour photos "
                                   "(the content the style is learned on; 100+ of your own work well)")
    if not Path(cfg.vgg).is_file():
        raise InvalidArgumentError(f"--vgg {cfg.vgg} does not exist; give the VGG19 loss network (conv1_1..relu3_1, caffe "
                                   "convention, safetensors: the project's ../shared/weights/vgg19_relu3_1_caffe.safetensors)")
    try:
        from training.style_add import learn
    except ImportError as e:
        raise BackendUnavailableError(f"chromaforge style add trains with PyTorch and exports to ONNX ({e}); install the extras: "
                                      f"{install_hint('train', 'export')}") from e
    return learn(cfg, base, base_dir, files, photos, _job_id(cfg, files, base.sha256), progress)
