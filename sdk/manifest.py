"""Reading and checking the manifest that travels with a model.

``manifest.json`` is written by ``python -m export onnx`` beside ``model.onnx``. It states the
colour space, scaling, style names, working resolution, input/output names, precision, opset and
the model file's sha256. The SDK refuses a model whose manifest it cannot honour.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk import contract
from sdk.errors import ModelCorruptError, ModelNotFoundError


@dataclass(frozen=True)
class Manifest:
    """The model contract as read from ``manifest.json``.

    Attributes:
        styles: style names in the order of the style-weight vector.
        work_size: long side (pixels) the generator runs at.
        size_multiple: generator input sides must be multiples of this.
        input_names / output_names: tensor names in the model file.
        model_file: file name of the model, relative to the manifest.
        sha256: checksum of the model file.
        precision: "fp32" or "fp16".
        raw: the whole parsed JSON, for fields this version does not interpret.
    """

    styles: tuple[str, ...]
    work_size: int
    size_multiple: int
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    model_file: str
    sha256: str
    precision: str
    color_space: str
    directory: Path
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def model_path(self) -> Path:
        return self.directory / self.model_file


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(model_dir: str | Path, verify: bool = True) -> Manifest:
    """Read and check ``model_dir/manifest.json``.

    Args:
        model_dir: folder holding ``manifest.json`` and the model file it names.
        verify: recompute the model file's sha256 and compare it with the manifest.

    Returns:
        The parsed :class:`Manifest`.

    Raises:
        ModelNotFoundError: the folder, the manifest or the model file is missing.
        ModelCorruptError: the manifest is not valid JSON, lacks a field, names a colour space
            this SDK does not implement, or the checksum does not match.

    Example:
        >>> m = load_manifest(default_model_dir())
        >>> m.styles[0]
        'natural'
    """
    d = Path(model_dir)
    mpath = d / contract.MANIFEST_NAME
    if not d.is_dir():
        raise ModelNotFoundError(f"model folder {d} does not exist; pass model_dir=None for the bundled model or the folder written by `python -m export onnx`")
    if not mpath.is_file():
        raise ModelNotFoundError(f"no {contract.MANIFEST_NAME} in {d}; expected the folder written by `python -m export onnx`")
    try:
        raw = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelCorruptError(f"{mpath} is not valid JSON ({e}); re-export the model") from e
    try:
        io = raw["io"]
        m = Manifest(
            styles=tuple(raw["styles"]),
            work_size=int(raw["work_size"]),
            size_multiple=int(raw["size_multiple"]),
            input_names=tuple(io["inputs"]),
            output_names=tuple(io["outputs"]),
            model_file=str(raw["model_file"]),
            sha256=str(raw["sha256"]),
            precision=str(raw["precision"]),
            color_space=str(raw["color_space"]["name"]),
            directory=d,
            raw=raw,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ModelCorruptError(f"{mpath} lacks or mangles field {e}; re-export the model with `python -m export onnx`") from e
    if m.color_space != contract.COLOR_SPACE:
        raise ModelCorruptError(f"{mpath} uses colour space {m.color_space!r}; this SDK implements {contract.COLOR_SPACE!r}")
    version = raw.get("manifest_version", 0)
    if not isinstance(version, int) or version > contract.MANIFEST_VERSION:
        raise ModelCorruptError(f"{mpath} has manifest_version {version!r}; this SDK reads up to {contract.MANIFEST_VERSION}: upgrade chromaforge")
    if not m.model_path.is_file():
        raise ModelNotFoundError(f"manifest {mpath} names {m.model_file}, which is missing from {d}")
    if verify:
        actual = sha256_file(m.model_path)
        if actual != m.sha256:
            raise ModelCorruptError(
                f"{m.model_path} has sha256 {actual[:16]}..., the manifest expects {m.sha256[:16]}...; "
                "the file is damaged or was replaced: re-export it or reinstall the package"
            )
    return m


def default_model_dir() -> Path:
    """The folder of the model bundled with the package."""
    return Path(__file__).resolve().parent / "models" / "default"
