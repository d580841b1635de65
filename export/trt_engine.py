"""``python -m export trt``: a serialized TensorRT engine for this GPU, from the model's ONNX.

The engine is built from the FP32 ONNX, or with ``--fp16`` from the FP16 ONNX that
``python -m export fp16`` made, as a **strongly typed** network: its precision is the ONNX file's
types, as TensorRT 11 requires (``BuilderFlag.FP16`` is deprecated in 10 and removed in 11; the
FP16 ONNX carries the precision instead). Shape profiles come from :mod:`sdk.backends.profiles`
(one dynamic profile covering every working shape, or ``--shapes`` buckets, which must cover them
too). A timing cache file is read, extended and written back (``--timing-cache``), so rebuilding
or building another model reuses the kernel timings. Written beside the model:

- ``engines/model.<precision>.<gpu>.sm<cc>.trt<version>.plan``: the engine bytes exactly as
  TensorRT serialised them (nothing spliced in);
- ``<engine>.json``: the sidecar (TensorRT version, GPU name, compute capability, profiles,
  sha256 of the engine and of the source ONNX, build options);
- a ``tensorrt`` artifact in ``manifest.json`` with the same facts, which the SDK's ``tensorrt``
  backend matches against the GPU it runs on.

API followed (TensorRT Python API reference, docs.nvidia.com/deeplearning/tensorrt/latest/_static/
python-api, and the 10.x -> 11.x migration guide): ``Builder``, ``create_network`` with
``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (ignored, always on, in 11), ``OnnxParser.
parse_from_file`` / ``num_errors`` / ``get_error``, ``create_builder_config``,
``set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)``, ``create_optimization_profile`` /
``set_shape`` / ``add_optimization_profile``, ``create_timing_cache`` / ``set_timing_cache`` /
``get_timing_cache`` / ``ITimingCache.serialize``, ``build_serialized_network``.
**The build itself has never run**: TensorRT cannot be installed on the machines this was written
on (README, "GPU"). Without the ``tensorrt`` package it raises :class:`TensorRTUnavailableError`
(the CLI exits 2).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.fp16 import prepare_out
from export.onnx_export import ExportError
from sdk.backends import Shape
from sdk.backends import profiles as _profiles
from sdk.backends._cuda import DeviceInfo
from sdk.errors import ChromaforgeError, install_hint
from sdk.manifest import Artifact, Manifest, ShapeProfile, sha256_file, write_manifest

log = logging.getLogger(__name__)

EXTRA = f"{install_hint('tensorrt')}: tensorrt and cuda-python, on a machine with an NVIDIA GPU"


class TensorRTUnavailableError(ExportError):
    """TensorRT, cuda-python or a GPU is missing: nothing can be built here (the CLI exits 2)."""


@dataclass(frozen=True)
class TrtConfig:
    """Options of ``python -m export trt``.

    Args:
        model_dir: a model folder written by ``python -m export onnx`` (and ``fp16`` for ``--fp16``).
        out: folder for the result: the same folder, or a new one (the model folder is copied first).
        fp16: build from the FP16 ONNX (strongly typed FP16 engine); else from the FP32 ONNX.
        shapes: fixed (h, w) buckets, one profile each; empty for one dynamic profile.
        max_batch: largest batch every profile accepts.
        timing_cache: timing cache file to reuse and extend ("" = ``$CHROMAFORGE_CACHE/trt/timing.cache``).
        workspace_gb: builder workspace memory limit in GiB.
        force: replace an engine for this GPU and TensorRT version that already exists.
    """

    model_dir: str
    out: str
    fp16: bool = False
    shapes: tuple[Shape, ...] = ()
    max_batch: int = _profiles.DEFAULT_MAX_BATCH
    timing_cache: str = ""
    workspace_gb: float = 4.0
    force: bool = False


def plan_profiles(cfg: TrtConfig, manifest: Manifest) -> tuple[ShapeProfile, ...]:
    """The engine's profiles, checked to cover every working shape of the model.

    Raises:
        ExportError: a bucket is not a multiple of the model's ``size_multiple``, or the buckets
            leave working shapes uncovered (the message lists them).
    """
    m = manifest.size_multiple
    try:
        if cfg.shapes:
            bad = [s for s in cfg.shapes if s[0] % m or s[1] % m]
            if bad:
                raise ExportError(f"--shapes {bad} are not multiples of the model's size_multiple {m}; e.g. 256x256,160x256,256x160")
            profiles = _profiles.bucket_profiles(cfg.shapes, cfg.max_batch)
        else:
            profiles = (_profiles.dynamic_profile(_profiles.run_side(manifest), m, cfg.max_batch),)
    except ChromaforgeError as e:
        raise ExportError(str(e)) from None
    missing = _profiles.check_coverage(profiles, manifest.work_size, m, extra=_profiles.manifest_shapes(manifest))
    if missing:
        raise ExportError(f"the --shapes buckets leave working shapes {missing} uncovered (long side {manifest.work_size}, up to {_profiles.run_side(manifest)} for stylize with its padding; "
                          f"multiples of {m}); add buckets that hold them (a bucket holds every shape it can be padded from)")
    return profiles


def slug(text: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"h100-80gb-hbm3"`` (file-name safe, vendor prefix dropped)."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return re.sub(r"^nvidia-", "", s) or "gpu"


def engine_filename(precision: str, device: DeviceInfo, trt_version: str) -> str:
    """Where the engine goes, relative to the model folder: one file per precision, GPU and TensorRT version.

    Example:
        >>> engine_filename("fp16", DeviceInfo("NVIDIA H100 80GB HBM3", "9.0"), "10.4.0")
        'engines/model.fp16.h100-80gb-hbm3.sm90.trt10.4.0.plan'
    """
    cc = device.compute_capability.replace(".", "")
    return f"engines/model.{precision}.{slug(device.name)}.sm{cc}.trt{trt_version}.plan"


def engine_artifact(manifest: Manifest, engine: Path, precision: str, device: DeviceInfo, trt_version: str,
                    profiles: tuple[ShapeProfile, ...], source: Artifact) -> Artifact:
    """The manifest entry of an engine file."""
    return Artifact(file=engine.relative_to(manifest.directory).as_posix(), format="tensorrt", precision=precision,
                    sha256=sha256_file(engine), bytes=engine.stat().st_size, gpu=device.name, tensorrt=trt_version,
                    profiles=profiles, compute_capability=device.compute_capability, source_sha256=source.sha256)


def sidecar(art: Artifact, source: Artifact, cfg: TrtConfig, timing_cache: Path) -> dict[str, Any]:
    """The JSON written beside the engine: what it was built for and from (never inside its bytes)."""
    return {
        "engine": Path(art.file).name, "sha256": art.sha256, "bytes": art.bytes, "precision": art.precision,
        "tensorrt": art.tensorrt, "gpu": art.gpu, "compute_capability": art.compute_capability,
        "profiles": [{"input": "luma", "min": list(p.min), "opt": list(p.opt), "max": list(p.max)} for p in art.profiles],
        "source": {"file": source.file, "precision": source.precision, "sha256": source.sha256},
        "build": {"strongly_typed": True, "max_batch": cfg.max_batch, "buckets": [list(s) for s in cfg.shapes] or None,
                  "workspace_gb": cfg.workspace_gb, "timing_cache": str(timing_cache)},
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def default_timing_cache() -> Path:
    from sdk.backends.onnxruntime import cache_dir

    return cache_dir() / "trt" / "timing.cache"


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailableError(f"building an engine needs the tensorrt package ({e}); {EXTRA}") from None
    return trt


def _device() -> DeviceInfo:
    from sdk.backends import _cuda

    try:
        return _cuda.device_info(0)
    except ChromaforgeError as e:
        raise TensorRTUnavailableError(f"no GPU to build for: {e}") from None


def source_onnx(manifest: Manifest, fp16: bool) -> Artifact:
    """The ONNX artifact the engine is built from: the FP16 ONNX with ``fp16``, else the primary
    (:meth:`Manifest.onnx_artifact`).

    Raises:
        ExportError: ``fp16`` and the model has no FP16 ONNX yet (the message says how to make it).
    """
    return manifest.onnx_artifact("fp16" if fp16 else None, error=ExportError)


def build_engine(cfg: TrtConfig) -> dict[str, Any]:
    """Build, write and register the engine. See the module docstring.

    Returns:
        The sidecar written beside the engine.

    Raises:
        TensorRTUnavailableError: tensorrt, cuda-python or a GPU is missing.
        ExportError: bad options, an existing engine without ``force``, a parser or build failure.
    """
    trt = _import_tensorrt()
    device = _device()
    manifest = prepare_out(cfg.model_dir, cfg.out, cfg.force)
    source = source_onnx(manifest, cfg.fp16)
    profiles = plan_profiles(cfg, manifest)
    rel = engine_filename(source.precision, device, trt.__version__)
    engine_path = manifest.directory / rel
    if engine_path.exists() and not cfg.force:
        raise ExportError(f"{engine_path} exists; pass --force to rebuild it")
    cache_path = Path(cfg.timing_cache) if cfg.timing_cache else default_timing_cache()
    data = _build(trt, manifest, manifest.path(source), profiles, cfg.workspace_gb, cache_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_name(f".{engine_path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, engine_path)
    art = engine_artifact(manifest, engine_path, source.precision, device, trt.__version__, profiles, source)
    car = sidecar(art, source, cfg, cache_path)
    engine_path.with_name(engine_path.name + ".json").write_text(json.dumps(car, indent=2) + "\n")
    write_manifest(manifest.with_artifact(art))
    return car


def _build(trt: Any, manifest: Manifest, onnx_path: Path, profiles: tuple[ShapeProfile, ...], workspace_gb: float, cache_path: Path) -> bytes:
    """Parse the ONNX into a strongly typed network and build the serialized engine (never run here)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):  # TensorRT 10; deprecated and always on in 11
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    luma, style = manifest.input_names[:2]
    n_styles = len(manifest.styles)
    for p in profiles:
        profile = builder.create_optimization_profile()
        profile.set_shape(luma, p.min, p.opt, p.max)
        profile.set_shape(style, (p.min[0], n_styles), (p.opt[0], n_styles), (p.max[0], n_styles))
        config.add_optimization_profile(profile)
    cache = config.create_timing_cache(b"")
    if cache_path.is_file():
        # combine() skips (returns False) a cache from another TensorRT build or device.
        if not cache.combine(config.create_timing_cache(cache_path.read_bytes()), False):
            log.warning("timing cache %s is from another TensorRT version or GPU; timing from scratch", cache_path)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT could not build an engine from {onnx_path} (see its log above); try a larger --workspace-gb")
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    os.replace(tmp, cache_path)
    return bytes(serialized)


def with_shapes(cfg: TrtConfig, text: str) -> TrtConfig:
    """``cfg`` with ``--shapes`` parsed (``"dynamic"`` or "" = one dynamic profile).

    Raises:
        ExportError: the text is not ``HxW[,HxW...]``.
    """
    if not text or text == "dynamic":
        return dataclasses.replace(cfg, shapes=())
    try:
        return dataclasses.replace(cfg, shapes=_profiles.parse_shapes(text))
    except ChromaforgeError as e:
        raise ExportError(str(e)) from None
