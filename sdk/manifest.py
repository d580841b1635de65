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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sdk import contract
from sdk.errors import ModelCorruptError, ModelNotFoundError, shorten

COLOR_SPACE_NOTES = {
    "input": "luma: Y of gamma-encoded sRGB in [0, 1] (the graph rescales to [-1, 1] itself)",
    "output": "ycbcr: Y in [0, 1], Cb and Cr in [-0.5, 0.5]",
}
MAX_WORK_SIZE = 4096
"""Largest ``work_size`` the SDK runs (the generator's cost grows with its square; the bundled model runs at 256)."""
MAX_SIZE_MULTIPLE = 128
"""Largest ``size_multiple`` (a power of two, at least 8; the encoder's five stride-2 stages make 32)."""
MAX_MANIFEST_BYTES = 1 << 20
"""Largest ``manifest.json`` read (1 MiB; the bundled one is 5 KB): a larger file is refused before it is read."""
MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects in ``manifest.json`` (the bundled one: 7; each release it
was recovered from adds 2), checked before parsing."""
MAX_INT_DIGITS = 20
"""Longest integer literal in ``manifest.json`` (a 64-bit integer has 20 digits)."""
MAX_ARTIFACT_BYTES = 1 << 32
"""Largest model file (4 GiB; the bundled one is 15 MB): ``bytes`` above it is refused, and so is a
file above it when its entry has no ``bytes``, before it is hashed."""
MIN_SIZE_MULTIPLE = 8
PRECISIONS = ("fp32", "fp16")
"""What a model file may compute in (as :data:`sdk.backends.PRECISIONS`)."""
FORMATS = ("onnx", "tensorrt")
DTYPES = ("float32", "float16")
STYLE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
"""A style name: a lower-case letter, then up to 31 letters, digits, ``_`` or ``-`` (as ``chromaforge style add`` takes)."""
MAX_STYLES = 64


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
                         for p in d.get("profiles") or ())
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

    Nothing in the file is trusted: its size is checked before it is read and its nesting before
    it is parsed, every field the SDK reads is checked by type and range (:data:`FIELDS`,
    :data:`ARTIFACT_FIELDS`), and the model file's size is compared with the manifest's ``bytes``
    before it is hashed.

    Args:
        model_dir: folder holding ``manifest.json`` and the model file it names.
        verify: recompute the model file's sha256 and compare it with the manifest.

    Returns:
        The parsed :class:`Manifest`.

    Raises:
        ModelNotFoundError: the folder, the manifest or the model file is missing or unreadable.
        ModelCorruptError: the manifest is over :data:`MAX_MANIFEST_BYTES`, nested deeper than
            :data:`MAX_JSON_DEPTH`, not valid UTF-8 JSON, lacks a field or has one of the wrong
            type or out of range (the message names the field, its value and what is expected),
            names a colour space this SDK does not implement, or the model file's size or checksum
            does not match. (The backend then checks the manifest against the model graph itself.)

    Example:
        >>> m = load_manifest(default_model_dir())
        >>> m.styles[0]
        'natural'
    """
    try:
        d = Path(model_dir)
        mpath = d / contract.MANIFEST_NAME
        found_dir, found_manifest = d.is_dir(), mpath.is_file()
    except (OSError, ValueError, TypeError) as e:  # a name too long, a NUL byte, no access, not a path
        raise ModelNotFoundError(f"model_dir {shorten(model_dir, 200)} is not a usable folder ({type(e).__name__}: "
                                 f"{shorten(str(e), 200, quote=False)}); pass the folder written by `python -m export onnx`") from e
    if not found_dir:
        raise ModelNotFoundError(f"model folder {_path(d)} does not exist; pass model_dir=None for the bundled model or the folder written by `python -m export onnx`")
    if not found_manifest:
        raise ModelNotFoundError(f"no {contract.MANIFEST_NAME} in {_path(d)}; expected the folder written by `python -m export onnx`")
    raw = _read_json(mpath)
    _check_fields(raw, mpath)
    try:
        io = raw["io"]
        primary = Artifact(file=raw["model_file"], format=raw.get("format") or "onnx", precision=raw["precision"], sha256=raw["sha256"],
                           bytes=raw.get("bytes"), opset=raw.get("opset"))
        artifacts = tuple(Artifact.from_dict(a) for a in raw.get("artifacts") or [primary.to_dict()])
        m = Manifest(
            styles=tuple(raw["styles"]),
            work_size=raw["work_size"],
            size_multiple=raw["size_multiple"],
            input_names=tuple(io["inputs"]),
            output_names=tuple(io["outputs"]),
            artifacts=artifacts,
            directory=d,
            name=raw.get("name") or "",
            color_space=raw["color_space"]["name"],
            input_dtype=io.get("dtype") or "float32",
            extra={k: v for k, v in raw.items() if k not in _OWNED},
            raw=raw,
            style_work_size=raw.get("style_work_size") or 0,
            style_pad=raw.get("style_pad") or 0,
        )
    except (KeyError, TypeError, ValueError) as e:  # every field is checked above: a safety net only
        raise ModelCorruptError(f"{_path(mpath)} lacks or mangles field {e}; expected the fields `python -m export onnx` writes: "
                                "re-export the model") from e
    if m.primary != primary:
        raise ModelCorruptError(
            f"{_path(mpath)}: the top-level model_file/sha256/precision ({primary.file}, {primary.sha256[:16]}..., {primary.precision}) "
            f"disagree with the first artifact ({m.primary.file}, {m.primary.sha256[:16]}..., {m.primary.precision}); expected the "
            "same file, format, sha256, bytes, opset and precision in both (the top level repeats the primary for older SDKs): re-export the model"
        )
    if not m.model_path.is_file():
        raise ModelNotFoundError(f"manifest {_path(mpath)} names {m.model_file}, which is missing from {_path(d)}")
    if verify:
        verify_artifact(m, m.primary)  # its size first, then its sha256
    return m


_FIX = "Re-export the model with `python -m export onnx`, or correct the field in manifest.json"


def _path(path: Path) -> str:
    """A path for a message (a very long one cut)."""
    return shorten(str(path), 300, quote=False)


def _read_json(mpath: Path) -> dict[str, Any]:
    """The manifest's JSON object, its size checked before reading and its nesting before parsing."""
    fix = "re-export the model with `python -m export onnx` or reinstall the package"
    try:
        size = mpath.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise ModelCorruptError(f"{_path(mpath)} is {size} bytes; expected a manifest of at most {MAX_MANIFEST_BYTES} bytes "
                                    f"(the file is not a model manifest or is damaged): {fix}")
        with open(mpath, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)  # a file that grows after the stat is still cut
    except OSError as e:
        raise ModelNotFoundError(f"cannot read {_path(mpath)} ({e.strerror or e}); check that it exists and is readable") from e
    if len(data) > MAX_MANIFEST_BYTES:
        raise ModelCorruptError(f"{_path(mpath)} holds more than {MAX_MANIFEST_BYTES} bytes; expected a manifest of at most that: {fix}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ModelCorruptError(f"{_path(mpath)} is not valid JSON (not UTF-8 text: {e.reason} at byte {e.start}); {fix}") from e
    depth = _json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise ModelCorruptError(f"{_path(mpath)} nests arrays and objects more than {MAX_JSON_DEPTH} levels deep; "
                                f"expected at most {MAX_JSON_DEPTH} (the bundled model's manifest has 7): {fix}")
    try:
        raw = json.loads(text, parse_int=_parse_int, object_pairs_hook=_unique_keys)
    except ModelCorruptError as e:
        raise ModelCorruptError(f"{_path(mpath)}: {e}; {fix}") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise ModelCorruptError(f"{_path(mpath)} is not valid JSON ({str(e)[:200]}); {fix}") from e
    if not isinstance(raw, dict):
        kind = "list (array)" if isinstance(raw, list) else _json_type(raw)
        raise ModelCorruptError(f"{_path(mpath)} holds a JSON {kind}; expected an object with the model's fields: {fix}")
    return raw


_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def _json_depth(text: str) -> int:
    """How deep arrays and objects nest in ``text`` (strings skipped); stops counting at
    :data:`MAX_JSON_DEPTH` + 1."""
    depth = deepest = 0
    for m in _BRACKETS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    break
        elif c in "]}":
            depth -= 1
    return deepest


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ModelCorruptError(f"it holds an integer of {len(digits.lstrip('-'))} digits (starting {digits[:12]}...); "
                                f"expected integers of at most {MAX_INT_DIGITS} digits")
    return int(digits)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ModelCorruptError(f"key {_json_text(twice)} appears twice in one object; expected each key once")
    return out


def _json_type(value: Any) -> str:
    """The JSON type of a parsed value, in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number" if math.isfinite(value) else "non-finite number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _json_text(value: Any) -> str:
    """A value's JSON, cut to about 80 characters (a longer one keeps its start and end and says its length)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = shorten(value)
    return text if len(text) <= 80 else f"{text[:60]}...{text[-12:]} ({len(text)} characters)"


def _shown(value: Any) -> str:
    """A value as a message shows it: its JSON (:func:`_json_text`) and its JSON type."""
    return f"{_json_text(value)} (a JSON {_json_type(value)})"


# ------------------------------------------------------------------------------- field checks
Check = Callable[[Any], bool]


def _integer(lo: int, hi: int) -> tuple[Check, str]:
    """A JSON integer (not a boolean, a float or a string of digits) in [lo, hi]."""
    return (lambda v: type(v) is int and lo <= v <= hi), f"an integer in [{lo}, {hi}]"


def _text(longest: int, pattern: str | None = None, what: str = "") -> tuple[Check, str]:
    rx = re.compile(pattern) if pattern else None
    ok = lambda v: isinstance(v, str) and 0 < len(v) <= longest and (rx is None or rx.fullmatch(v) is not None)  # noqa: E731
    return ok, what or f"a non-empty string of at most {longest} characters"


def _one_of(*values: str) -> tuple[Check, str]:
    return (lambda v: isinstance(v, str) and v in values), "one of " + ", ".join(json.dumps(v) for v in values)


def _names(least: int, most: int, what: str) -> tuple[Check, str]:
    """A list of ``least``..``most`` distinct non-empty names."""
    def ok(v: Any) -> bool:
        return (isinstance(v, list) and least <= len(v) <= most and len(set(map(str, v))) == len(v)
                and all(isinstance(n, str) and 0 < len(n) <= 128 and n.isprintable() for n in v))
    return ok, what


def _power_of_two(lo: int, hi: int) -> tuple[Check, str]:
    return (lambda v: type(v) is int and lo <= v <= hi and v & (v - 1) == 0), f"a power of two in [{lo}, {hi}] (an integer)"


def _file(v: Any) -> bool:
    """A file name relative to the model folder that stays inside it."""
    if not isinstance(v, str) or not 0 < len(v) <= 255 or not v.isprintable() or "\\" in v or v.startswith("/"):
        return False
    parts = v.split("/")
    return all(part not in ("", ".", "..") for part in parts)


def _matrix(want: tuple[tuple[float, ...], ...]) -> Check:
    def ok(v: Any) -> bool:
        return (isinstance(v, list) and len(v) == 3
                and all(isinstance(row, list) and len(row) == 3 and all(type(x) in (int, float) for x in row) for row in v)
                and all(abs(x - y) <= 1e-6 for row, wrow in zip(v, want) for x, y in zip(row, wrow)))
    return ok


def _styles(v: Any) -> bool:
    return (isinstance(v, list) and 1 <= len(v) <= MAX_STYLES and all(isinstance(n, str) and STYLE_NAME.fullmatch(n) for n in v)
            and len(set(v)) == len(v) and v[0] == contract.NATURAL)


def _dims(v: Any) -> bool:
    return (isinstance(v, list) and len(v) == 4 and all(type(x) is int for x in v)
            and 1 <= v[0] <= 1024 and v[1] == 1 and all(1 <= x <= 4 * MAX_WORK_SIZE for x in v[2:]))


def _profiles(v: Any) -> bool:
    if not isinstance(v, list) or len(v) > 64:
        return False
    for p in v:
        if not isinstance(p, dict) or set(p) - {"min", "opt", "max", "input"} or not all(_dims(p.get(k)) for k in ("min", "opt", "max")):
            return False
        if not all(a <= b <= c for a, b, c in zip(p["min"], p["opt"], p["max"])):
            return False
    return True


_SHA256 = _text(64, r"[0-9a-f]{64}", "a sha256: 64 lower-case hexadecimal digits")
_BYTES = _integer(0, MAX_ARTIFACT_BYTES)
_BYTES = (_BYTES[0], f"the file's size in bytes, an integer in [0, {MAX_ARTIFACT_BYTES}]")
_OPSET = _integer(7, 64)
_FILE = (_file, "a file name relative to the model folder (no leading /, no .. or empty parts, no backslash, at most 255 characters)")

Field = tuple[str, bool, Check, str]
"""(name, required, check, what was expected): one row of a field table."""

FIELDS: tuple[Field, ...] = (
    ("manifest_version", False, *_integer(0, 1 << 16)),
    ("name", False, *_text(200)),
    ("format", False, lambda v: v == "onnx", '"onnx" (the primary model, the one ONNX Runtime runs, is an ONNX file)'),
    ("model_file", True, *_FILE),
    ("sha256", True, *_SHA256),
    ("bytes", False, *_BYTES),
    ("opset", False, *_OPSET),
    ("precision", True, *_one_of(*PRECISIONS)),
    ("color_space", True, lambda v: isinstance(v, dict), "an object with the colour space's name and matrices"),
    ("styles", True, _styles, f'a list of 1 to {MAX_STYLES} distinct style names (a lower-case letter, then up to 31 letters, digits, '
     f'_ or -), "{contract.NATURAL}" (plain colorization) first, in the order of the model\'s style vector'),
    ("work_size", True, *_integer(MIN_SIZE_MULTIPLE, MAX_WORK_SIZE)),
    ("style_work_size", False, *_integer(MIN_SIZE_MULTIPLE, MAX_WORK_SIZE)),
    ("style_pad", False, *_integer(0, MAX_WORK_SIZE // 4)),
    ("size_multiple", True, *_power_of_two(MIN_SIZE_MULTIPLE, MAX_SIZE_MULTIPLE)),
    ("io", True, lambda v: isinstance(v, dict), "an object with the model's input and output names"),
    ("artifacts", False, lambda v: isinstance(v, list) and 1 <= len(v) <= 64 and all(isinstance(a, dict) for a in v),
     "a list of 1 to 64 objects, one per model file, the primary model first"),
)
"""The top-level fields the SDK reads, each checked by type and range (provenance fields are not read)."""

COLOR_SPACE_FIELDS: tuple[Field, ...] = (
    ("name", True, lambda v: v == contract.COLOR_SPACE, f'"{contract.COLOR_SPACE}" (the colour space this SDK implements)'),
    ("rgb_to_ycbcr", False, _matrix(contract.RGB_TO_YCBCR), f"the BT.601 RGB -> YCbCr matrix {json.dumps(contract.RGB_TO_YCBCR)}"),
    ("ycbcr_to_rgb", False, _matrix(contract.YCBCR_TO_RGB), f"its inverse {json.dumps(contract.YCBCR_TO_RGB)}"),
    ("input", False, *_text(1000)),
    ("output", False, *_text(1000)),
)

IO_FIELDS: tuple[Field, ...] = (
    ("inputs", True, *_names(2, 2, "a list of two distinct names (luma, style)")),
    ("outputs", True, *_names(1, 8, "a list of one to 8 distinct names (ycbcr first)")),
    ("dtype", False, *_one_of(*DTYPES)),
    ("shapes", False, lambda v: isinstance(v, dict), "an object of tensor shapes"),
)

ARTIFACT_FIELDS: tuple[Field, ...] = (
    ("file", True, *_FILE),
    ("format", True, *_one_of(*FORMATS)),
    ("precision", True, *_one_of(*PRECISIONS)),
    ("sha256", True, *_SHA256),
    ("bytes", False, *_BYTES),
    ("opset", False, *_OPSET),
    ("gpu", False, *_text(200)),
    ("tensorrt", False, *_text(32, r"[0-9][0-9A-Za-z.+-]*", "a TensorRT version such as \"10.4.0\"")),
    ("compute_capability", False, *_text(5, r"[0-9]{1,2}\.[0-9]{1,2}", 'a CUDA compute capability such as "9.0"')),
    ("source_sha256", False, *_SHA256),
    ("profiles", False, _profiles, "a list of at most 64 shape profiles {min, opt, max}, each [N, 1, H, W] with "
     f"1 <= N <= 1024, 1 <= H, W <= {4 * MAX_WORK_SIZE} and min <= opt <= max"),
)


def _check_table(obj: dict[str, Any], table: tuple[Field, ...], prefix: str, mpath: Path) -> None:
    for name, required, ok, expected in table:
        if name not in obj or (obj[name] is None and not required):
            if required:
                raise ModelCorruptError(f"{_path(mpath)} lacks field {prefix}{name}; expected {expected}. {_FIX}")
            continue
        if not ok(obj[name]):
            raise _bad(mpath, prefix + name, obj[name], expected)


def _bad(mpath: Path, field: str, value: Any, expected: str) -> ModelCorruptError:
    return ModelCorruptError(f"{_path(mpath)}: {field} {_shown(value)} is not valid; expected {expected}. {_FIX}")


def _check_fields(raw: dict[str, Any], mpath: Path) -> None:
    """Every field the SDK reads, checked by type and range before use, from the field tables, then
    the checks across fields (a wrong value would otherwise fail on the first call with an untyped
    ONNX Runtime, ZeroDivision or Memory error, or run silently wrong).

    Raises:
        ModelCorruptError: naming the field, its value and what was expected.
    """
    _check_table(raw, FIELDS, "", mpath)
    version = raw.get("manifest_version") or 0
    if version > contract.MANIFEST_VERSION:
        raise ModelCorruptError(f"{_path(mpath)} has manifest_version {version}; this SDK reads up to {contract.MANIFEST_VERSION}: upgrade chromaforge")
    _check_table(raw["color_space"], COLOR_SPACE_FIELDS, "color_space.", mpath)
    _check_table(raw["io"], IO_FIELDS, "io.", mpath)
    for i, art in enumerate(raw.get("artifacts") or ()):
        _check_table(art, ARTIFACT_FIELDS, f"artifacts[{i}].", mpath)
    artifacts = raw.get("artifacts") or ()
    if artifacts and artifacts[0]["format"] != "onnx":
        raise _bad(mpath, "artifacts[0].format", artifacts[0]["format"], '"onnx": the first artifact is the primary model, the ONNX file ONNX Runtime runs')
    files = [a["file"] for a in artifacts]
    if len(set(files)) != len(files):
        raise _bad(mpath, "artifacts", files, "one entry per file")
    multiple = raw["size_multiple"]
    for name in ("work_size", "style_work_size"):
        if raw.get(name) and raw[name] < multiple:
            raise _bad(mpath, name, raw[name], f"at least size_multiple ({multiple})")
    if raw.get("style_pad") and raw["style_pad"] % multiple:
        raise _bad(mpath, "style_pad", raw["style_pad"], f"a multiple of size_multiple ({multiple})")


def _check_file_size(manifest: Manifest, artifact: Artifact) -> Path:
    """The artifact's file size (a stat, following links) against its ``bytes``, or against
    :data:`MAX_ARTIFACT_BYTES` where the manifest gives none: before anything reads the file."""
    path = manifest.path(artifact)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ModelNotFoundError(f"cannot read {_path(path)} ({e.strerror or e}); check that it exists and is readable") from e
    if artifact.bytes is not None and size != artifact.bytes:
        raise ModelCorruptError(f"{_path(path)} is {size} bytes, the manifest expects {artifact.bytes}; the file is damaged, truncated "
                                "or was replaced: re-export or rebuild it with python -m export, or reinstall the package")
    if artifact.bytes is None and size > MAX_ARTIFACT_BYTES:
        raise ModelCorruptError(f"{_path(path)} is {size} bytes; expected a model file of at most {MAX_ARTIFACT_BYTES} bytes "
                                "(its manifest entry gives no size): it is not this model's file; re-export the model")
    return path


def verify_artifact(manifest: Manifest, artifact: Artifact) -> Path:
    """Check that an artifact's file exists and matches its checksum; returns its path.

    Raises:
        ModelNotFoundError: the file is missing.
        ModelCorruptError: its size (checked first, before reading) or its sha256 differs from the manifest's.

    Example:
        >>> verify_artifact(m, m.find("onnx", "fp16")[0])
        PosixPath('.../model.fp16.onnx')
    """
    path = manifest.path(artifact)
    if not path.is_file():
        raise ModelNotFoundError(f"manifest in {_path(manifest.directory)} lists {artifact.file} ({artifact.format}, {artifact.precision}), which is missing; "
                                 "rebuild it (python -m export fp16 / trt) or copy the whole model folder")
    _check_file_size(manifest, artifact)  # before hashing: a 1 TB sparse file is refused by its size, not read
    actual = sha256_file(path)
    if actual != artifact.sha256:
        raise ModelCorruptError(f"{_path(path)} has sha256 {actual[:16]}..., the manifest expects {artifact.sha256[:16]}...; "
                                "the file is damaged or was replaced: re-export or rebuild it with python -m export, or reinstall the package")
    return path


def default_model_dir() -> Path:
    """The folder of the model bundled with the package."""
    return Path(__file__).resolve().parent / "models" / "default"
