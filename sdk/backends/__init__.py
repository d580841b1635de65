"""Inference backends behind one small interface, with a registry of names.

A backend runs the generator: ``run(luma [N,1,h,w] float32, style [N,S] float32) -> ycbcr
[N,3,h,w] float32``. Everything else (decoding, resizing, colour, fusion) is the pipeline's.
A new backend is one module that calls :func:`register`.

Names:
    ``onnxruntime-cpu``, ``onnxruntime-cuda``, ``onnxruntime-tensorrt`` (the last two need the
    ``gpu`` extra, onnxruntime-gpu, and a GPU). ``auto`` picks the first available in priority
    order and records why in :attr:`Backend.reason`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from sdk.errors import BackendUnavailableError
from sdk.manifest import Manifest


class Backend(Protocol):
    """What the pipeline needs from a backend."""

    name: str
    reason: str

    def run(self, luma: np.ndarray, style: np.ndarray) -> np.ndarray:
        """Run the generator on a batch; see the module docstring for shapes."""
        ...


@dataclass(frozen=True)
class BackendSpec:
    """A registered backend.

    Attributes:
        name: registry name.
        priority: lower is tried first by ``auto``.
        available: returns (True, why) or (False, why not, including the pip extra to install).
        create: builds the backend for a manifest.
    """

    name: str
    priority: int
    available: Callable[[], tuple[bool, str]]
    create: Callable[..., Backend]


_REGISTRY: dict[str, BackendSpec] = {}


def register(spec: BackendSpec) -> None:
    """Add a backend to the registry (replacing one of the same name)."""
    _REGISTRY[spec.name] = spec


def names() -> list[str]:
    """Registered backend names, in ``auto``'s order."""
    _load_builtin()
    return [s.name for s in sorted(_REGISTRY.values(), key=lambda s: s.priority)]


def availability() -> dict[str, tuple[bool, str]]:
    """For each registered backend: whether it can run here, and why (not)."""
    _load_builtin()
    return {n: _REGISTRY[n].available() for n in names()}


def create(name: str, manifest: Manifest, threads: int | None = None) -> Backend:
    """Create the backend ``name`` (or the best available for ``"auto"``) for a model.

    Raises:
        BackendUnavailableError: the name is unknown, or the backend cannot run here; the
            message names what is missing and the pip extra that provides it.
    """
    _load_builtin()
    if name == "auto":
        tried = []
        for n in names():
            ok, why = _REGISTRY[n].available()
            if not ok:
                tried.append(f"{n}: {why}")
                continue
            try:
                backend = _REGISTRY[n].create(manifest, threads=threads)
            except BackendUnavailableError as e:
                tried.append(f"{n}: {e}")
                continue
            skipped = f" (skipped {'; '.join(tried)})" if tried else ""
            backend.reason = f"auto picked {n}: {why}{skipped}"
            return backend
        raise BackendUnavailableError("no backend can run here: " + "; ".join(tried))
    if name not in _REGISTRY:
        raise BackendUnavailableError(f"unknown backend {name!r}; expected 'auto' or one of {names()}")
    ok, why = _REGISTRY[name].available()
    if not ok:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {why}")
    backend = _REGISTRY[name].create(manifest, threads=threads)
    backend.reason = f"{name} requested explicitly: {why}"
    return backend


def _load_builtin() -> None:
    if not _REGISTRY:
        from sdk.backends import onnxruntime as _ort  # noqa: F401  (registers itself)
