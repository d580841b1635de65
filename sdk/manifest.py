"""The model contract on disk: ``manifest.json``, read and written by this module only.

``python -m export onnx`` builds a :class:`Manifest` and calls :func:`write_manifest`; the SDK
calls :func:`load_manifest`. The manifest states the colour space, scaling, style names, working
resolution, input/output names, and the model's **artifacts**: each file with its format,
precision and sha256 (the FP32 ONNX today; FP16 ONNX files and TensorRT engines, with the GPU,
TensorRT version and shape profiles they were built for, are further entries). The top-level
``model_file``, ``sha256``, ``bytes``, ``opset`` and ``precision`` repeat the primary (first)
artifact so that SDKs older than the artifact list still read the file. Provenance (generator
config, training, parity, versions, licence...) is carried through unchanged in
:attr:`Manifest.extra`. The SDK refuses a model whose manifest it cannot honour.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk import contract
from sdk.errors import ModelCorruptError, ModelNotFoundError

COLOR_SPACE_NOTES = {
    "input": "luma: Y of gamma-encoded sRGB in [0, 1] (the graph rescales to [-1, 1] itself)",
    "output": "ycbcr: Y in [0, 1], Cb and Cr in [-0.5, 0.5]",
}
MAX_WORK_SIZE = 8192
"""Largest ``work_size`` the SDK runs (the generator's cost grows with its square)."""
MAX_SIZE_MULTIPLE = 1024

_OWNED = {"manifest_version", "name", "format", "model_file", "sha256", "bytes", "opset", "precision",
          "color_space", "styles", "work_size", "size_multiple", "io", "artifacts", "style_work_size", "style_pad"}
"""Top-level keys this module writes from :class:`Manifest`'s fields; every other key is ``extra``."""


@dataclass(frozen=True)
class ShapeProfile:
    """A TensorRT optimisation profile for the ``luma`` input: [N, 1, H, W] at min, opt and max."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class Artifact:
    """One model file listed in the manifest.

    Attributes:
        file: path relative to the manifest's folder.
        format: ``"onnx"`` or ``"tensorrt"``.
        precision: what the file computes in: ``"fp32"`` or ``"fp16"``.
        sha256: checksum of the file.
        bytes: file size.
        opset: ONNX opset (ONNX files).
        gpu, tensorrt: the GPU and TensorRT version an engine was built for (TensorRT engines).
        profiles: the engine's shape profiles (TensorRT engines).
        compute_capability: the CUDA compute capability an engine was built for, ``"9.0"`` (engines).
        source_sha256: checksum of the ONNX file an engine or a converted file was made from.
    """

    file: str
    format: str
    precision: str
    sha256: str
    bytes: int | None = None
    opset: int | None = None
    gpu: str | None = None
    tensorrt: str | None = None
    profiles: tuple[ShapeProfile, ...] = ()
    compute_capability: str | None = None
    source_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object for the ``artifacts`` list (unset optional fields left out)."""
        d: dict[str, Any] = {"file": self.file, "format": self.format, "precision": self.precision, "sha256": self.sha256}
        for key in ("bytes", "opset", "gpu", "tensorrt", "compute_capability", "source_sha256"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        if self.profiles:
            d["profiles"] = [{"min": list(p.min), "opt": list(p.opt), "max": list(p.max)} for p in self.profiles]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Artifact":
        """Parse one ``artifacts`` entry (raises KeyError, TypeError or ValueError when malformed)."""
        profiles = tuple(ShapeProfile(tuple(map(int, p["min"])), tuple(map(int, p["opt"])), tuple(map(int, p["max"])))
                         for p in d.get("profiles", ()))
        return cls(
            file=str(d["file"]), format=str(d["format"]), precision=str(d["precision"]), sha256=str(d["sha256"]),
            bytes=_int_or_none(d.get("bytes")), opset=_int_or_none(d.get("opset")),
            gpu=d.get("gpu"), tensorrt=d.get("tensorrt"), profiles=profiles,
            compute_capability=d.get("compute_capability"), source_sha256=d.get("source_sha256"),
        )


def _int_or_none(v: Any) -> int | None:
    return None if v is None else int(v)


@dataclass(frozen=True)
class Manifest:
    """The model contract as read from (or to be written to) ``manifest.json``.

    Attributes:
        styles: style names in the order of the style-weight vector.
        work_size: long side (pixels) the generator runs at.
        style_work_size: long side for ``stylize`` calls (0: ``work_size``); a style's brushwork
            has the size it was trained at in these pixels.
        style_pad: ``stylize`` runs on its working-size luminance reflect-padded by this many
            pixels on every side (a multiple of ``size_multiple``) and crops the output back: the
            image's border then lies inside what the generator sees (model card, "Edge bands").
        size_multiple: generator input sides must be multiples of this.
        input_names / output_names: tensor names in the model file.
        artifacts: the model files, the primary one (the FP32 ONNX the SDK runs) first.
        directory: the folder holding the manifest and the artifacts.
        name: the model's name.
        color_space: must be :data:`sdk.contract.COLOR_SPACE`.
        input_dtype: dtype of the primary model's inputs.
        extra: every other top-level field (provenance), JSON values, written back unchanged.
        raw: the whole parsed JSON as read (empty for a manifest built in memory).

    Example:
        >>> m = load_manifest(default_model_dir())
        >>> m.styles[0], m.precision
        ('natural', 'fp32')
    """

    styles: tuple[str, ...]
    work_size: int
    size_multiple: int
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    artifacts: tuple[Artifact, ...]
    directory: Path
    name: str = ""
    color_space: str = contract.COLOR_SPACE
    input_dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    style_work_size: int = 0
    style_pad: int = 0

    def __post_init__(self) -> None:
        if not self.artifacts:
            raise ModelCorruptError(f"the manifest for {self.directory} lists no model artifacts; re-export the model with `python -m export onnx`")
        clash = _OWNED & set(self.extra)
        if clash:
            raise ModelCorruptError(f"extra fields {sorted(clash)} are manifest fields; set them through Manifest's own attributes")
        # JSON values only, so that write -> read gives an equal manifest (tuples would come back as lists).
        object.__setattr__(self, "extra", json.loads(json.dumps(self.extra)))

    @property
    def stylize_size(self) -> int:
        """Long side of ``stylize``'s working shape, before its padding."""
        return self.style_work_size or self.work_size

    @property
    def primary(self) -> Artifact:
        """The artifact the ONNX Runtime backends run (the first one)."""
        return self.artifacts[0]

    @property
    def model_file(self) -> str:
        """File name of the primary model, relative to the manifest."""
        return self.primary.file

    @property
    def sha256(self) -> str:
        """Checksum of the primary model file."""
        return self.primary.sha256

    @property
    def precision(self) -> str:
        """Precision of the primary model file (a backend may run another: see ``Pipeline.precision``)."""
        return self.primary.precision

    @property
    def model_path(self) -> Path:
        return self.directory / self.model_file

    def find(self, format: str, precision: str | None = None) -> tuple[Artifact, ...]:
        """The artifacts of a format (``"onnx"``, ``"tensorrt"``), optionally of one precision, in manifest order.

        Example:
            >>> m.find("onnx", "fp16")[0].file
            'model.fp16.onnx'
        """
        return tuple(a for a in self.artifacts if a.format == format and (precision is None or a.precision == precision))

    def onnx_artifact(self, precision: str | None = None, error: type[Exception] = ModelNotFoundError) -> Artifact:
        """The ONNX file to run or build from for ``precision``: the primary for None, else the first
        ONNX artifact of that precision (the primary first: ``"fp32"`` is normally the primary).

        Args:
            precision: ``"fp32"``, ``"fp16"``, or None for the primary model file.
            error: the exception class to raise when there is none (a backend raises
                BackendUnavailableError, an export step its ExportError).

        Returns:
            The artifact (its file: :meth:`path`).

        Raises:
            error: the manifest lists no ONNX file of that precision; the message names the
                command that makes one.

        Example:
            >>> m.onnx_artifact("fp16").file
            'model.fp16.onnx'
        """
        if precision is None:
            return self.primary
        found = self.find("onnx", precision)
        if not found:
            make = (f"python -m export fp16 --model-dir {self.directory} --out {self.directory}" if precision == "fp16"
                    else "python -m export onnx")
            raise error(f"the model in {self.directory} has no {precision} ONNX file (its ONNX files: "
                        f"{[a.precision for a in self.find('onnx')]}); make one with `{make}`")
        return found[0]

    def path(self, artifact: Artifact) -> Path:
        """Where an artifact's file lies."""
        return self.directory / artifact.file

    def with_artifact(self, artifact: Artifact) -> "Manifest":
        """A copy listing ``artifact``: it replaces the entry for the same file, or is appended.

        Raises:
            ModelCorruptError: ``artifact`` would replace the primary model (re-export it instead).
        """
        if artifact.file == self.primary.file:
            raise ModelCorruptError(f"{artifact.file} is the primary model; re-export it with `python -m export onnx` instead of replacing its entry")
        rest = tuple(a for a in self.artifacts if a.file != artifact.file)
        return dataclasses.replace(self, artifacts=rest + (artifact,))

    def to_dict(self) -> dict[str, Any]:
        """The JSON document :func:`write_manifest` writes."""
        p = self.primary
        top: dict[str, Any] = {"manifest_version": contract.MANIFEST_VERSION, "name": self.name, "format": p.format,
                               "model_file": p.file, "sha256": p.sha256}
        if p.bytes is not None:
            top["bytes"] = p.bytes
        if p.opset is not None:
            top["opset"] = p.opset
        top["precision"] = p.precision
        return {
            **top,
            "color_space": {"name": self.color_space, "rgb_to_ycbcr": contract.RGB_TO_YCBCR,
                            "ycbcr_to_rgb": contract.YCBCR_TO_RGB, **COLOR_SPACE_NOTES},
            "styles": list(self.styles),
            "work_size": self.work_size,
            **({"style_work_size": self.style_work_size} if self.style_work_size else {}),
            **({"style_pad": self.style_pad} if self.style_pad else {}),
            "size_multiple": self.size_multiple,
            "io": {
                "inputs": list(self.input_names),
                "outputs": list(self.output_names),
                "shapes": {self.input_names[0]: ["N", 1, "H", "W"], self.input_names[1]: ["N", len(self.styles)],
                           self.output_names[0]: ["N", 3, "H", "W"]},
                "dtype": self.input_dtype,
            },
            "artifacts": [a.to_dict() for a in self.artifacts],
            **self.extra,
        }


def write_manifest(manifest: Manifest) -> Path:
    """Write ``manifest.json`` into ``manifest.directory`` atomically (temporary file, then rename).

    Returns:
        The path written.

    Example:
        >>> write_manifest(dataclasses.replace(load_manifest(src), directory=dst))
    """
    path = Path(manifest.directory) / contract.MANIFEST_NAME
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    os.replace(tmp, path)
    return path


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
        ModelCorruptError: the manifest is not valid JSON, lacks a field, has a value out of range
            (styles not a list of distinct names with ``natural``, ``size_multiple`` or
            ``work_size`` not a sane integer, not two input names), names a colour space this SDK
            does not implement, or the checksum does not match. (The backend then checks the
            manifest against the model graph itself.)

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
    if not isinstance(raw, dict):
        raise ModelCorruptError(f"{mpath} holds a JSON {type(raw).__name__}; expected an object with the model's fields: re-export the model")
    _check_fields(raw, mpath)
    try:
        io = raw["io"]
        primary = Artifact(file=str(raw["model_file"]), format=str(raw.get("format", "onnx")),
                           precision=str(raw["precision"]), sha256=str(raw["sha256"]),
                           bytes=_int_or_none(raw.get("bytes")), opset=_int_or_none(raw.get("opset")))
        artifacts = tuple(Artifact.from_dict(a) for a in raw.get("artifacts", [primary.to_dict()]))
        m = Manifest(
            styles=tuple(raw["styles"]),
            work_size=int(raw["work_size"]),
            size_multiple=int(raw["size_multiple"]),
            input_names=tuple(io["inputs"]),
            output_names=tuple(io["outputs"]),
            artifacts=artifacts,
            directory=d,
            name=str(raw.get("name", "")),
            color_space=str(raw["color_space"]["name"]),
            input_dtype=str(io.get("dtype", "float32")),
            extra={k: v for k, v in raw.items() if k not in _OWNED},
            raw=raw,
            style_work_size=int(raw.get("style_work_size", 0)),
            style_pad=int(raw.get("style_pad", 0)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ModelCorruptError(f"{mpath} lacks or mangles field {e}; re-export the model with `python -m export onnx`") from e
    if m.primary != primary:
        raise ModelCorruptError(
            f"{mpath}: the top-level model_file/sha256/precision ({primary.file}, {primary.sha256[:16]}..., {primary.precision}) "
            f"disagree with the first artifact ({m.primary.file}, {m.primary.sha256[:16]}..., {m.primary.precision}); re-export the model"
        )
    if m.color_space != contract.COLOR_SPACE:
        raise ModelCorruptError(f"{mpath} uses colour space {m.color_space!r}; this SDK implements {contract.COLOR_SPACE!r}")
    version = raw.get("manifest_version", 0)
    if not isinstance(version, int) or version > contract.MANIFEST_VERSION:
        raise ModelCorruptError(f"{mpath} has manifest_version {version!r}; this SDK reads up to {contract.MANIFEST_VERSION}: upgrade chromaforge")
    if not m.model_path.is_file():
        raise ModelNotFoundError(f"manifest {mpath} names {m.model_file}, which is missing from {d}")
    if verify:
        verify_artifact(m, m.primary)
    return m


def _check_fields(raw: dict[str, Any], mpath: Path) -> None:
    """The values the SDK computes with, checked before use (a wrong one would otherwise fail on
    the first call with an untyped ONNX Runtime, ZeroDivision or Memory error, or run silently wrong).

    Raises:
        ModelCorruptError: naming the field, its value and what was expected.
    """
    def bad(field: str, value: Any, expected: str) -> ModelCorruptError:
        return ModelCorruptError(f"{mpath}: {field} is {json.dumps(value)[:80]}; expected {expected}. Re-export the model "
                                 "with `python -m export onnx` or correct manifest.json")

    if "styles" in raw:  # a missing field is reported by the parser
        styles = raw["styles"]
        if (not isinstance(styles, list) or not styles or not all(isinstance(n, str) and n for n in styles)
                or len(set(styles)) != len(styles)):
            raise bad("styles", styles, "a list of distinct style names, in the order of the model's style vector")
        if contract.NATURAL not in styles:
            raise bad("styles", styles, f"a list that includes {contract.NATURAL!r} (plain colorization)")
    sizes = {}
    for field, hi in (("size_multiple", MAX_SIZE_MULTIPLE), ("work_size", MAX_WORK_SIZE)):
        v = raw.get(field)
        if isinstance(v, (int, float)):  # other types are reported by the parser
            if isinstance(v, bool) or not math.isfinite(v) or v != int(v) or not 1 <= v <= hi:
                raise bad(field, v, f"an integer in [1, {hi}]")
            sizes[field] = int(v)
    if len(sizes) == 2 and sizes["work_size"] < sizes["size_multiple"]:
        raise bad("work_size", sizes["work_size"], f"at least size_multiple ({sizes['size_multiple']})")
    multiple = sizes.get("size_multiple", 1)
    for field, lo, hi, step in (("style_work_size", multiple, MAX_WORK_SIZE, 1), ("style_pad", 0, MAX_WORK_SIZE // 4, multiple)):
        if field in raw:  # optional: absent means the colour geometry (no padding)
            v = raw[field]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi or v % step:
                raise bad(field, v, f"an integer in [{lo}, {hi}]" + (f", a multiple of size_multiple ({step})" if step > 1 else ""))
    io = raw.get("io")
    if isinstance(io, dict):
        for key, count in (("inputs", "two names (luma, style)"), ("outputs", "one or more names (ycbcr first)")):
            names = io.get(key)
            if key in io and (not isinstance(names, list) or not all(isinstance(n, str) and n for n in names)
                              or (len(names) != 2 if key == "inputs" else not names)):
                raise bad(f"io.{key}", names, f"a list of {count}")


def verify_artifact(manifest: Manifest, artifact: Artifact) -> Path:
    """Check that an artifact's file exists and matches its checksum; returns its path.

    Raises:
        ModelNotFoundError: the file is missing.
        ModelCorruptError: its sha256 differs from the manifest's.

    Example:
        >>> verify_artifact(m, m.find("onnx", "fp16")[0])
        PosixPath('.../model.fp16.onnx')
    """
    path = manifest.path(artifact)
    if not path.is_file():
        raise ModelNotFoundError(f"manifest in {manifest.directory} lists {artifact.file} ({artifact.format}, {artifact.precision}), which is missing; "
                                 "rebuild it (python -m export fp16 / trt) or copy the whole model folder")
    actual = sha256_file(path)
    if actual != artifact.sha256:
        raise ModelCorruptError(f"{path} has sha256 {actual[:16]}..., the manifest expects {artifact.sha256[:16]}...; "
                                "the file is damaged or was replaced: re-export or rebuild it with python -m export, or reinstall the package")
    return path


def default_model_dir() -> Path:
    """The folder of the model bundled with the package."""
    return Path(__file__).resolve().parent / "models" / "default"
