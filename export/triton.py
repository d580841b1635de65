"""``python -m export triton``: a Triton Inference Server model repository for the generator.

Layout (Triton's model repository documentation, docs.nvidia.com/deeplearning/triton-inference-
server/user-guide/docs/user_guide/model_repository.html; schema: ``model_config.proto``)::

    REPO/<name>_onnx/config.pbtxt        platform "onnxruntime_onnx"
    REPO/<name>_onnx/1/model.onnx        the FP32 ONNX (or --precision fp16: the FP16 one)
    REPO/<name>_trt/config.pbtxt         platform "tensorrt_plan"          (with --engine)
    REPO/<name>_trt/1/model.plan         the engine from `python -m export trt`

Each config: ``max_batch_size``, inputs ``luma`` [1, -1, -1] and ``style`` [S], output ``ycbcr``
[3, -1, -1] (dims without the batch; -1 for H and W), ``dynamic_batching`` and an
``instance_group``. Triton batches only requests of equal shape; the SDK's working shapes are few
(long side 256), so requests of one aspect ratio batch together. The text is written by hand (no
protobuf needed to export); the tests parse it with Triton's own ``model_config_pb2`` from the
``tritonclient`` package.

A TensorRT plan runs only under the TensorRT version it was built with: serve it from the Triton
release that ships that version (the engine's sidecar names it).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from export.onnx_export import ExportError
from sdk.manifest import Artifact, Manifest, load_manifest

@dataclass(frozen=True)
class TritonConfig:
    """Options of ``python -m export triton``.

    Args:
        model_dir: a model folder written by ``python -m export onnx``.
        out: the repository folder (created; existing model folders in it are replaced with ``force``).
        name: model name prefix (``<name>_onnx``, ``<name>_trt``).
        max_batch: Triton's ``max_batch_size`` (an engine's profiles must accept it).
        instances: model instances per device (``instance_group.count``).
        kind: ``"gpu"`` or ``"cpu"`` instances (``KIND_GPU`` / ``KIND_CPU``; the plan needs a GPU).
        engine: a ``.plan`` from ``python -m export trt`` (its ``.json`` sidecar beside it), or "".
        precision: which ONNX file goes in the ONNX model: ``"fp32"`` or ``"fp16"``.
        queue_delay_us: ``dynamic_batching.max_queue_delay_microseconds``.
        force: replace model folders that already exist in ``out``.
    """

    model_dir: str
    out: str
    name: str = "chromaforge"
    max_batch: int = 8
    instances: int = 1
    kind: str = "gpu"
    engine: str = ""
    precision: str = "fp32"
    queue_delay_us: int = 500
    force: bool = False


def config_pbtxt(name: str, platform: str, manifest: Manifest, max_batch: int, instances: int, kind: str,
                 io_type: str = "TYPE_FP32", queue_delay_us: int = 500, model_file: str = "") -> str:
    """The ``config.pbtxt`` text of one model (protobuf text format of ``inference.ModelConfig``).

    Example:
        >>> print(config_pbtxt("chromaforge_onnx", "onnxruntime_onnx", m, 8, 1, "gpu"))  # doctest: +ELLIPSIS
        name: "chromaforge_onnx"
        platform: "onnxruntime_onnx"
        max_batch_size: 8
        ...
    """
    (luma, style), out = manifest.input_names[:2], manifest.output_names[0]
    lines = [
        f'name: "{name}"',
        f'platform: "{platform}"',
        f"max_batch_size: {max_batch}",
        "input [",
        f'  {{ name: "{luma}" data_type: {io_type} dims: [ 1, -1, -1 ] }},',
        f'  {{ name: "{style}" data_type: {io_type} dims: [ {len(manifest.styles)} ] }}',
        "]",
        "output [",
        f'  {{ name: "{out}" data_type: {io_type} dims: [ 3, -1, -1 ] }}',
        "]",
        f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}",
        f"instance_group [ {{ count: {instances} kind: KIND_{kind.upper()} }} ]",
    ]
    if model_file:
        lines.insert(3, f'default_model_filename: "{model_file}"')
    return "\n".join(lines) + "\n"


def _check(cfg: TritonConfig) -> None:
    if cfg.max_batch < 1 or cfg.instances < 1:
        raise ExportError(f"--max-batch {cfg.max_batch} and --instances {cfg.instances}: expected integers >= 1")
    if cfg.kind not in ("gpu", "cpu"):
        raise ExportError(f"--kind {cfg.kind!r}: expected gpu or cpu")
    if cfg.engine and cfg.kind != "gpu":
        raise ExportError("a TensorRT plan needs GPU instances; drop --kind cpu or --engine")


def engine_record(manifest: Manifest, plan: Path) -> dict:
    """The engine's sidecar (``<plan>.json`` from ``python -m export trt``), checked against the plan file.

    Raises:
        ExportError: the plan or its sidecar is missing, or the plan's sha256 differs from the sidecar's.
    """
    from sdk.manifest import sha256_file

    car_path = plan.with_name(plan.name + ".json")
    if not plan.is_file():
        raise ExportError(f"--engine {plan} does not exist; build one with python -m export trt --model-dir {manifest.directory} --out {manifest.directory}")
    if not car_path.is_file():
        raise ExportError(f"{plan} has no sidecar {car_path.name}; engines built by `python -m export trt` carry one (TensorRT version, GPU, profiles)")
    car = json.loads(car_path.read_text())
    if sha256_file(plan) != car.get("sha256"):
        raise ExportError(f"{plan} does not match the sha256 in {car_path.name}; rebuild it with python -m export trt")
    return car


def write_repository(cfg: TritonConfig) -> dict:
    """Write the repository; returns ``{model name: config.pbtxt path}``.

    Raises:
        ExportError: bad options, an engine whose profiles do not accept ``max_batch``, existing
            model folders without ``force``.
    """
    _check(cfg)
    manifest = load_manifest(cfg.model_dir)
    repo = Path(cfg.out)
    onnx_art: Artifact = manifest.onnx_artifact(None if cfg.precision == "fp32" else cfg.precision, error=ExportError)
    models = {f"{cfg.name}_onnx": ("onnxruntime_onnx", manifest.path(onnx_art), "model.onnx", "TYPE_FP32")}
    if cfg.engine:
        plan = Path(cfg.engine)
        car = engine_record(manifest, plan)
        smallest = min(p["max"][0] for p in car["profiles"])
        if cfg.max_batch > smallest:
            raise ExportError(f"--max-batch {cfg.max_batch} exceeds the engine's profiles (batch up to {smallest}); "
                              f"pass --max-batch {smallest} or rebuild the engine with --max-batch {cfg.max_batch}")
        # Engines built from either ONNX keep float32 inputs and outputs (the FP16 file keeps its I/O types).
        models[f"{cfg.name}_trt"] = ("tensorrt_plan", plan, "model.plan", "TYPE_FP32")
    for name in models:
        if (repo / name).exists() and not cfg.force:
            raise ExportError(f"{repo / name} exists; pass --force to replace it, or choose another --out or --name")
    written = {}
    for name, (platform, src, filename, io_type) in models.items():
        folder = repo / name
        if folder.exists():
            shutil.rmtree(folder)
        (folder / "1").mkdir(parents=True)
        shutil.copyfile(src, folder / "1" / filename)
        notice = manifest.directory / "NOTICE.txt"
        if notice.is_file():
            shutil.copyfile(notice, folder / "NOTICE.txt")  # the encoder's licence travels with the weights
        text = config_pbtxt(name, platform, manifest, cfg.max_batch, cfg.instances, cfg.kind, io_type, cfg.queue_delay_us, filename)
        (folder / "config.pbtxt").write_text(text)
        written[name] = str(folder / "config.pbtxt")
    return written
