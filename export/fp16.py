"""``python -m export fp16``: an FP16 ONNX from a model folder's FP32 one, parity-tested through the
SDK's own stages and registered in the manifest as an artifact with its own checksum.

Conversion: onnxconverter-common's ``float16.convert_float_to_float16`` with ``keep_io_types``
(inputs and outputs stay float32, so every backend and the pipeline see the same contract) and an
op block list: the converter's defaults (which keep ``Resize`` in FP32) plus
:data:`KEEP_FP32_OPS` (the colour read-out's ``Softmax`` over the CbCr bins). It works on any
generator graph; nothing here depends on one architecture.

Parity is measured in what a user sees: 8-bit colour levels of the final images, after the
full-resolution step (:func:`sdk.stages.prepare` -> :func:`~sdk.stages.infer` ->
:func:`~sdk.stages.finish`), FP32 ONNX vs FP16 ONNX, on real photos (colorize and every style)
and random images (random sizes, style blends). ONNX Runtime's CPU provider has no FP16 kernels
for most of these ops: it inserts casts and computes them in FP32, keeping the intermediate
tensors in FP32 too, which would hide FP16's rounding. So the FP16 file is also run as
:func:`fp16_storage_emulation`: every op computes in FP32 from FP16 inputs and rounds its output to
FP16, which is what GPU FP16 kernels do (FP16 storage, FP32 accumulation). The tolerance
(mean < 0.5 level, max < 4 levels by default) is enforced on that stricter run; both are reported.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.onnx_export import ExportError, ParityError
from sdk import contract
from sdk.manifest import Artifact, Manifest, load_manifest, sha256_file, write_manifest

log = logging.getLogger(__name__)

FP16_NAME = "model.fp16.onnx"
KEEP_FP32_OPS: tuple[str, ...] = ("Softmax",)
"""Op types kept in FP32 on top of the converter's defaults: the colour head's softmax over the
CbCr bins at temperature 0.38 (exp of logits / 0.38 loses its small probabilities in FP16)."""

MEAN_LEVELS = 0.5
MAX_LEVELS = 4.0
EXTRA = "pip install 'chromaforge[export]' (onnx, onnxconverter-common)"


@dataclass(frozen=True)
class Fp16Config:
    """Options of ``python -m export fp16``.

    Args:
        model_dir: a model folder written by ``python -m export onnx``.
        out: folder for the result: the same folder (the FP16 file is added), or a new one (the
            model folder is copied there first).
        photos: folder of real photos for the parity check ("" = the bundled example photo).
        n_photos: how many photos (sorted by path) to use.
        keep_fp32: op types kept in FP32 besides the converter's defaults.
        mean_levels, max_levels: tolerance on the emulated FP16 run, in 8-bit levels.
        threads: CPU threads for the parity runs.
        force: replace an FP16 artifact (or a model in ``out``) that already exists.
    """

    model_dir: str
    out: str
    photos: str = ""
    n_photos: int = 8
    keep_fp32: tuple[str, ...] = KEEP_FP32_OPS
    mean_levels: float = MEAN_LEVELS
    max_levels: float = MAX_LEVELS
    threads: int | None = None
    force: bool = False


def convert(model, keep_fp32: tuple[str, ...] = KEEP_FP32_OPS):
    """FP32 ``onnx.ModelProto`` -> FP16 with float32 inputs and outputs.

    Raises:
        ExportError: onnxconverter-common is not installed.
    """
    try:
        from onnxconverter_common import float16
    except ImportError as e:
        raise ExportError(f"the FP16 conversion needs onnxconverter-common ({e}); {EXTRA}") from None
    block = list(dict.fromkeys([*float16.DEFAULT_OP_BLOCK_LIST, *keep_fp32]))
    # convert_float_to_float16 (onnxconverter-common 1.16, onnxconverter_common/float16.py):
    # keep_io_types inserts Casts at the graph's inputs and outputs; op_block_list replaces the
    # default list, hence the defaults joined above.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model16 = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=block)
    if caught:  # "the float32 number 3.8e-08 will be truncated to 1e-07": tiny weights, harmless
        log.info("fp16 conversion clamped %d weight tensors to FP16's range (%s)", len(caught), str(caught[0].message)[:80])
    # The converter appends value_info for the tensors around blocked ops (Cast in, Cast out) but
    # keeps the stale entries of the same names (an FP16 and an FP32 one for a Resize output), and
    # ONNX Runtime refuses the file. The types follow from the graph: drop them all.
    del model16.graph.value_info[:]
    return model16


def fp16_storage_emulation(model16):
    """The FP16 graph rewritten so that ONNX Runtime's CPU provider keeps FP16's rounding.

    Every op with FP16 inputs or outputs (other than casts and constants) gets its FP16 inputs
    cast to FP32 and its outputs cast back to FP16: the op computes in FP32 and every tensor
    between ops holds FP16 values, as on a GPU's FP16 kernels. ONNX Runtime does not remove
    such explicit FP32 -> FP16 -> FP32 cast pairs (checked when this was written, 1.32).
    """
    import onnx
    from onnx import TensorProto, helper

    m = onnx.shape_inference.infer_shapes(model16)
    F16 = TensorProto.FLOAT16

    def rewrite(g, outer: dict) -> None:
        """Rewrite one graph, then the bodies of its If/Loop nodes (which see the outer names)."""
        types = dict(outer)
        types.update({vi.name: vi.type.tensor_type.elem_type for vi in [*g.value_info, *g.input, *g.output]})
        types.update({t.name: t.data_type for t in g.initializer})
        nodes = []
        for node in g.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    rewrite(attr.g, types)
            if node.op_type in ("Cast", "Constant", "ConstantOfShape", "If", "Loop") or not any(
                    types.get(t) == F16 for t in [*node.input, *node.output]):
                nodes.append(node)
                continue
            for k, name in enumerate(node.input):
                if types.get(name) == F16:
                    nodes.append(helper.make_node("Cast", [name], [f"{name}__f32_for_{node.name}_{k}"], to=TensorProto.FLOAT))
                    node.input[k] = f"{name}__f32_for_{node.name}_{k}"
            rounded = []
            for k, name in enumerate(node.output):
                if types.get(name) == F16:
                    node.output[k] = f"{name}__f32"
                    rounded.append(helper.make_node("Cast", [f"{name}__f32"], [name], to=F16))
            nodes.extend([node, *rounded])
        del g.node[:]
        g.node.extend(nodes)
        del g.value_info[:]

    rewrite(m.graph, {})
    return m


def _photo_files(cfg: Fp16Config) -> list[Path]:
    from sdk.io import IMAGE_SUFFIXES

    if cfg.photos:
        root = Path(cfg.photos)
        if not root.is_dir():
            raise ExportError(f"--photos {root} is not a folder; give a folder of real photos (e.g. ../shared/datasets/photos/val)")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ExportError(f"no images in {root}; expected JPEG/PNG photos for the parity check")
        step = max(1, len(files) // max(cfg.n_photos, 1))
        return files[::step][: cfg.n_photos]
    return [Path(__file__).resolve().parents[1] / "sdk" / "examples" / "astronaut.jpg"]


def parity_cases(manifest: Manifest, photos: list[Path], n_random: int = 4, seed: int = 0) -> list[tuple[str, object, str, object]]:
    """(label, image, task, Params) cases: each photo colorized and in every style; random images
    (uniform noise, grey or colour, random sizes) with random style blends."""
    from sdk.stages import Params

    cases: list[tuple[str, object, str, object]] = []
    for f in photos:
        cases.append((f"{f.name} colorize", f, "colorize", Params()))
        for style in manifest.styles[1:]:
            cases.append((f"{f.name} {style}", f, "stylize", Params(style)))
    rng = np.random.default_rng(seed)
    for k in range(n_random):
        h, w = (int(v) for v in rng.integers(48, 400, size=2))
        img = rng.integers(0, 256, size=(h, w) if k % 2 == 0 else (h, w, 3), dtype=np.uint8)
        weights = rng.dirichlet(np.ones(len(manifest.styles)))
        blend = {s: float(v) for s, v in zip(manifest.styles, weights)}
        cases.append((f"random {h}x{w} colorize", img, "colorize", Params()))
        cases.append((f"random {h}x{w} blend", img, "stylize", Params(blend)))
    return cases


def stage_parity(manifest: Manifest, reference, candidates: dict, cases, workers: int = 1) -> dict[str, dict]:
    """Per candidate backend: max / mean |reference - candidate| in 8-bit levels of the final images,
    over all cases, separately for photos and random inputs.

    The jobs are prepared and the reference run and finished once; every backend runs the same jobs
    through :func:`sdk.stages.infer` (one call per working shape) and :func:`sdk.stages.finish`.
    """
    from sdk import stages

    jobs = [stages.prepare(img, task, params, manifest, label) for label, img, task, params in cases]
    # PIL (path in) or array out, uint8 -> int16 for differences
    ref_imgs = [np.asarray(stages.finish(job, out, workers), dtype=np.int16) for job, out in zip(jobs, stages.infer(reference, jobs))]
    reports: dict[str, dict] = {}
    for key, candidate in candidates.items():
        report: dict[str, dict] = {}
        for (label, *_), job, x, b in zip(cases, jobs, ref_imgs, stages.infer(candidate, jobs)):
            err = np.abs(x - np.asarray(stages.finish(job, b, workers), dtype=np.int16))
            kind = "random" if label.startswith("random") else "photos"
            r = report.setdefault(kind, {"max_levels": 0.0, "mean_levels": 0.0, "cases": 0, "worst_case": "", "_sum": 0.0, "_n": 0})
            if err.max() > r["max_levels"] or not r["worst_case"]:
                r["max_levels"], r["worst_case"] = float(err.max()), label
            r["_sum"] += float(err.sum())
            r["_n"] += err.size
            r["cases"] += 1
        for r in report.values():
            r["mean_levels"] = r.pop("_sum") / max(r.pop("_n"), 1)
        reports[key] = report
    return reports


def _backend(manifest: Manifest, art: Artifact, threads: int | None):
    from sdk.backends.onnxruntime import ORTBackend

    listed = manifest if art in manifest.artifacts else dataclasses.replace(manifest, artifacts=(manifest.primary, art))
    return ORTBackend(listed, "CPUExecutionProvider", threads=threads, artifact=None if art == manifest.primary else art)


def _onnx_artifact(directory: Path, path: Path, precision: str, opset: int | None, source: str | None) -> Artifact:
    return Artifact(file=path.relative_to(directory).as_posix(), format="onnx", precision=precision, sha256=sha256_file(path),
                    bytes=path.stat().st_size, opset=opset, source_sha256=source)


def prepare_out(model_dir: str | Path, out: str | Path, force: bool) -> Manifest:
    """The manifest of ``out``: ``model_dir`` itself, or a copy of the whole model folder there.

    Raises:
        ExportError: ``out`` already holds another model and ``force`` is not set.
    """
    src = load_manifest(model_dir)
    dst = Path(out)
    if dst.resolve() == Path(model_dir).resolve():
        return src
    if (dst / contract.MANIFEST_NAME).exists() and not force:
        raise ExportError(f"{dst} already holds a model; pass --force to replace it, or choose another --out (or --out {model_dir} to add to that model)")
    shutil.copytree(src.directory, dst, dirs_exist_ok=True)
    return load_manifest(dst)


def export_fp16(cfg: Fp16Config) -> dict:
    """Convert, parity-test and register the FP16 ONNX.

    Returns:
        The parity report written to the manifest (``extra["fp16"]``).

    Raises:
        ExportError: missing packages, an existing FP16 file without ``force``, bad options.
        ParityError: the emulated FP16 run misses the tolerance (nothing is written then).
    """
    try:
        import onnx
    except ImportError as e:
        raise ExportError(f"the FP16 export needs onnx ({e}); {EXTRA}") from None
    manifest = prepare_out(cfg.model_dir, cfg.out, cfg.force)
    out = manifest.directory
    target = out / FP16_NAME
    if manifest.find("onnx", "fp16") and not cfg.force:
        raise ExportError(f"{out} already has an FP16 ONNX ({manifest.find('onnx', 'fp16')[0].file}); pass --force to rebuild it")
    model16 = convert(onnx.load(str(manifest.model_path)), tuple(cfg.keep_fp32))
    onnx.checker.check_model(model16)
    photos = _photo_files(cfg)
    cases = parity_cases(manifest, photos)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        tmp_model = Path(tmp) / FP16_NAME
        onnx.save(model16, str(tmp_model))
        emulated = Path(tmp) / "emulated.onnx"
        onnx.save(fp16_storage_emulation(model16), str(emulated))
        ref, candidates = _backend(manifest, manifest.primary, cfg.threads), {}
        try:
            for key, path in (("onnxruntime_cpu", tmp_model), ("fp16_storage_emulation", emulated)):
                candidates[key] = _backend(manifest, _onnx_artifact(out, path, "fp16", manifest.primary.opset, None), cfg.threads)
            report = stage_parity(manifest, ref, candidates, cases, cfg.threads or 1)
        finally:
            for backend in (ref, *candidates.values()):
                backend.close()
        strict = report["fp16_storage_emulation"]
        for kind, r in strict.items():
            log.info("fp16 parity (%s, emulated): max %.0f, mean %.3f levels over %d cases", kind, r["max_levels"], r["mean_levels"], r["cases"])
            if not (r["mean_levels"] < cfg.mean_levels and r["max_levels"] < cfg.max_levels):
                raise ParityError(
                    f"FP16 differs from FP32 by max {r['max_levels']:.0f} / mean {r['mean_levels']:.3f} 8-bit levels on {kind} "
                    f"(worst: {r['worst_case']}), above the tolerance max < {cfg.max_levels:g}, mean < {cfg.mean_levels:g}; "
                    "keep more ops in FP32 (--keep-fp32 Softmax,MatMul,...) or ship the FP32 model only")
        os.replace(tmp_model, target)
    try:
        import onnxconverter_common

        conv_v = onnxconverter_common.__version__
    except (ImportError, AttributeError):  # pragma: no cover
        conv_v = None
    art = _onnx_artifact(out, target, "fp16", manifest.primary.opset, manifest.sha256)
    record = {"file": art.file, "converter": f"onnxconverter-common {conv_v}", "keep_io_types": True,
              "keep_fp32_ops": list(cfg.keep_fp32), "photos": [p.name for p in photos],
              "tolerance": {"mean_levels": cfg.mean_levels, "max_levels": cfg.max_levels},
              "parity_levels": report, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    updated = manifest.with_artifact(art)
    write_manifest(dataclasses.replace(updated, extra={**updated.extra, "fp16": record}))
    return record
