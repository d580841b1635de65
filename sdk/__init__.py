"""chromaforge SDK: colorize grey photos and render them in painting styles.

Example:
    >>> import sdk
    >>> colour = sdk.colorize("old_photo.jpg")              # PIL image out
    >>> art = sdk.stylize(colour, "ukiyoe")                 # any style in sdk.styles()
    >>> blend = sdk.stylize(colour, {"ukiyoe": .6, "rococo": .4}, strength=0.8)
    >>> final = sdk.fuse(colour, art, method="laplacian")   # restore the photo's fine detail

The module-level functions share one cached :class:`Pipeline` on the bundled model, created on
first use; call :func:`load` to manage your own (another model folder, backend or thread count).
Importing ``sdk`` loads only numpy, Pillow and onnxruntime, and those only when first needed:
``Pipeline``, ``load``, ``fuse`` and the submodules are imported on first access, so ``sdk.contract``
(standard library only) can be imported by training code without pulling in the runtime.

How the pieces fit (README, "How it fits together"): :mod:`sdk.stages` (prepare -> infer ->
finish) is the pipeline; :class:`Pipeline` composes it; :mod:`sdk.backends` defines what a backend
declares and runs; :mod:`sdk.manifest` owns the model contract on disk; :mod:`sdk.fusion` and
:mod:`sdk.folder` are the fusion and folder-job building blocks the CLI uses; :mod:`sdk.ray_executor`
runs folder jobs on Ray Data actors (the ``ray`` extra, imported only when used).
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sdk.fusion import fuse
    from sdk.images import ImageInput
    from sdk.pipeline import Pipeline, load
    from sdk.stages import StyleSpec

__version__ = "0.1.0"
__all__ = ["colorize", "stylize", "fuse", "styles", "load", "Pipeline", "errors", "example_image", "colorize_video", "stylize_video",
           "__version__"]

_LAZY = {"Pipeline": "sdk.pipeline", "load": "sdk.pipeline", "fuse": "sdk.fusion", "StyleSpec": "sdk.stages",
         "colorize_video": "sdk.video", "stylize_video": "sdk.video"}
"""Public names imported on first access (PEP 562), with the module that defines them."""
_SUBMODULES = {"backends", "cli", "colour", "contract", "describe", "errors", "folder", "fusion", "images", "manifest",
               "pipeline", "ray_executor", "resample", "serve", "stages", "temporal", "tiling", "video"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"sdk.{name}")
    else:
        raise AttributeError(f"module 'sdk' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)


_default: Pipeline | None = None
_lock = threading.Lock()


def _pipeline() -> Pipeline:
    global _default
    if _default is None:
        with _lock:
            if _default is None:
                from sdk.pipeline import Pipeline

                _default = Pipeline()
    return _default


def colorize(image: ImageInput, saturation: float = 1.0):
    """Colorize ``image`` with the bundled model; see :meth:`Pipeline.colorize`."""
    return _pipeline().colorize(image, saturation=saturation)


def stylize(image: ImageInput, style: StyleSpec = "ukiyoe", strength: float = 1.0, saturation: float = 1.0):
    """Stylize ``image`` with the bundled model; see :meth:`Pipeline.stylize`."""
    return _pipeline().stylize(image, style=style, strength=strength, saturation=saturation)


def styles() -> list[str]:
    """Style names of the bundled model, in manifest order (``"natural"`` first)."""
    return _pipeline().styles()


def example_image() -> Path:
    """Path of the bundled example photo (NASA's astronaut portrait, public domain)."""
    return Path(__file__).resolve().parent / "examples" / "astronaut.jpg"
