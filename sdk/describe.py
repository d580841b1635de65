"""One description of a loaded model, for ``chromaforge info`` and the service's ``GET /v1/models``."""

from __future__ import annotations

from typing import Any

from sdk.fusion import FUSE_METHODS


def describe(pipeline, paths: bool = True) -> dict[str, Any]:
    """What a :class:`sdk.Pipeline` runs: the model (name, checksum, working sizes, artifacts), its
    styles, the fusion methods, and the backend with the precision it computes in and why it was picked.

    Args:
        pipeline: a loaded pipeline.
        paths: include ``model_dir``, the model folder on this machine (the service leaves it out).

    Example:
        >>> describe(sdk.load())["styles"]
        ['natural', 'ukiyoe', 'impressionism', 'pointillism', 'rococo']
    """
    m = pipeline.manifest
    d: dict[str, Any] = {"model_dir": str(m.directory)} if paths else {}
    d.update({
        "name": m.name, "styles": pipeline.styles(), "sha256": m.sha256,
        "work_size": m.work_size, "style_work_size": m.stylize_size, "style_pad": m.style_pad,
        "precision": pipeline.precision, "model_precision": m.precision,
        "artifacts": [a.to_dict() for a in m.artifacts], "fuse_methods": list(FUSE_METHODS),
        "backend": pipeline.backend_name, "reason": pipeline.backend_reason,
    })
    return d
