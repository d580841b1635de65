"""``python -m export fp16``: an FP16 ONNX from a model folder's FP32 one, parity-tested through the
SDK's own stages and registered in the manifest as an artifact with its own checksum.

Conversion: onnxconverter-common's ``float16.convert_float_to_float16`` with ``keep_io_types``
(inputs and outputs stay float32, so every backend and the pipeline see the same contract), an
op block list (the converter's defaults, which keep ``Resize`` in FP32, plus :data:`KEEP_FP32_OPS`,
the colour read-out's ``Softmax`` over the CbCr bins) and, by default, the **read-out** in FP32:
:func:`readout_nodes`, every node after its graph's last convolution (the softmaxes over colour
bins and inks, the guided filters' variances, which cancel in FP16's 11-bit mantissa). The
convolutions, where the FLOPs are, run in FP16; the read-out is elementwise work at the working
size. It works on any generator graph; nothing here depends on one architecture.

Parity is measured in what a user sees: 8-bit colour levels of the final images, after the
full-resolution step (:func:`sdk.stages.prepare` -> :func:`~sdk.stages.infer` ->
:func:`~sdk.stages.finish`), FP32 ONNX vs FP16 ONNX, on real photos (colorize and every style)
and random images (random sizes, style blends). ONNX Runtime's CPU provider has no FP16 kernels
for most of these ops: it inserts casts and computes them in FP32, keeping the intermediate
tensors in FP32 too, which would hide FP16's rounding. So the FP16 file is also run as
:func:`fp16_storage_emulation`: every op computes in FP32 from FP16 inputs and rounds its output to
FP16, which is what GPU FP16 kernels do (FP16 storage, FP32 accumulation). The tolerance is
enforced on that stricter run (both are reported): a mean below 0.5 level over all cases, and in
every case a PSNR against FP32 of at least 40 dB (:data:`MIN_PSNR`). The largest single-pixel
error is reported, and enforced only when asked (``max_levels``): a read-out that picks one of a
few inks per pixel (ukiyo-e) moves its ink boundaries by a pixel under any rounding change, which
makes single pixels jump by tens of levels while the image stays the same to the eye.
"""

from __future__ import annotations

import copy
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
from sdk.errors import install_hint
from sdk.manifest import Artifact, Manifest, load_manifest, sha256_file, write_manifest

log = logging.getLogger(__name__)

FP16_NAME = "model.fp16.onnx"
KEEP_FP32_OPS: tuple[str, ...] = ("Softmax",)
"""Op types kept in FP32 on top of the converter's defaults: the colour head's softmax over the
CbCr bins at temperature 0.38 (exp of logits / 0.38 loses its small probabilities in FP16)."""

MEAN_LEVELS = 0.5
MIN_PSNR = 40.0
"""dB, per case, FP16 against FP32 (8-bit images): an RMS difference of at most 2.5 levels."""
EXTRA = f"{install_hint('export')}: onnx, onnxconverter-common"


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
        readout_fp32: keep the read-out (every node after its graph's last convolution) in FP32.
        mean_levels: tolerance on the emulated FP16 run: mean error over all cases, 8-bit levels.
        min_psnr: tolerance: each case's PSNR (dB) against FP32.
        max_levels: tolerance on the largest single-pixel error (None: reported, not enforced).
        threads: CPU threads for the parity runs.
        force: replace an FP16 artifact (or a model in ``out``) that already exists.
    """

    model_dir: str
    out: str
    photos: str = ""
    n_photos: int = 8
    keep_fp32: tuple[str, ...] = KEEP_FP32_OPS
    readout_fp32: bool = True
    mean_levels: float = MEAN_LEVELS
    min_psnr: float = MIN_PSNR
    max_levels: float | None = None
    threads: int | None = None
    force: bool = False


def _bodies(node) -> list:
    """The graphs an If/Loop node holds (none for other nodes)."""
    import onnx

    return [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]


def _value_types(g, outer: dict[str, int]) -> dict[str, int]:
    """Element type of every name a graph (after shape inference) can read: the outer graphs'
    names, then its own value_info, inputs, outputs and initializers."""
    types = dict(outer)
    types.update({v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]})
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def readout_nodes(model) -> list[str]:
    """Names of the nodes that lead to no convolution: in each graph (and If/Loop body), the nodes
    after its last ``Conv``, i.e. the read-out of the decoders (softmax over colour bins or inks,
    the annealed mean, guided filters, clamps).

    A node leads to a convolution when it is one, when an If/Loop body it holds contains one, or
    when one of its consumers leads to one (a body's reads of outer names count as its node's
    inputs). Nodes without a name, and names shared with a node that does lead to a convolution,
    are left out (the converter blocks by name).
    """
    bodies = _bodies

    def has_conv(g) -> bool:
        return any(n.op_type == "Conv" or any(has_conv(b) for b in bodies(n)) for n in g.node)

    def reads(g) -> set[str]:  # every name a graph's nodes read, its bodies included
        return {i for n in g.node for i in [*n.input, *(r for b in bodies(n) for r in reads(b))]}

    tail: set[str] = set()
    feeding: set[str] = set()

    def walk(g) -> None:
        consumers: dict[str, list] = {}
        for n in g.node:
            for name in {*n.input, *(r for b in bodies(n) for r in reads(b))}:
                consumers.setdefault(name, []).append(n)
        leads: dict[int, bool] = {}
        for n in reversed(g.node):  # ONNX graphs are topologically sorted: consumers come first here
            leads[id(n)] = (n.op_type == "Conv" or any(has_conv(b) for b in bodies(n))
                            or any(leads.get(id(c), False) for o in n.output for c in consumers.get(o, [])))
        for n in g.node:
            for b in bodies(n):
                walk(b)
            if n.name and not bodies(n):
                (feeding if leads[id(n)] else tail).add(n.name)

    walk(model.graph)
    return sorted(tail - feeding)


def convert(model, keep_fp32: tuple[str, ...] = KEEP_FP32_OPS, readout_fp32: bool = True):
    """FP32 ``onnx.ModelProto`` -> FP16 with float32 inputs and outputs.

    Raises:
        ExportError: onnxconverter-common is not installed.
    """
    try:
        from onnxconverter_common import float16
    except ImportError as e:
        raise ExportError(f"the FP16 conversion needs onnxconverter-common ({e}); {EXTRA}") from None
    import onnx

    block = list(dict.fromkeys([*float16.DEFAULT_OP_BLOCK_LIST, *keep_fp32]))
    nodes = readout_nodes(model) if readout_fp32 else []
    model = onnx.shape_inference.infer_shapes(model)  # a new ModelProto: the caller's stays as it was
    if nodes:
        nodes = [*nodes, *_readout_inputs_fp32(model, set(nodes))]
    _own_initializers(model, set(block), set(nodes))
    # convert_float_to_float16 (onnxconverter-common 1.16, onnxconverter_common/float16.py):
    # keep_io_types inserts Casts at the graph's inputs and outputs; op_block_list replaces the
    # default list, hence the defaults joined above; node_block_list names nodes (in If bodies too).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model16 = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=block, node_block_list=nodes)
    if nodes:
        log.info("fp16 conversion keeps %d read-out nodes in FP32", len(nodes))
    if caught:  # "the float32 number 3.8e-08 will be truncated to 1e-07": tiny weights, harmless
        log.info("fp16 conversion clamped %d weight tensors to FP16's range (%s)", len(caught), str(caught[0].message)[:80])
    # The converter appends value_info for the tensors around blocked ops (Cast in, Cast out) but
    # keeps the stale entries of the same names (an FP16 and an FP32 one for a Resize output), and
    # ONNX Runtime refuses the file. The types follow from the graph: drop them all (If bodies too).
    _drop_value_info(model16.graph)
    return model16


def _readout_inputs_fp32(model, readout: set[str]) -> list[str]:
    """Give every FP32 input of a read-out node that the read-out does not make itself (the
    decoders' last features, a graph input such as the luminance, a weight of an outer graph) its
    own ``Cast(to=FLOAT)``, in place (``model`` after shape inference); returns the casts' names.

    Kept in FP32 with the read-out, those casts turn whatever the converter made of their input
    into FP32. Without them the converter (1.16) hands the read-out FP16 where it reads a name of
    an outer graph (an If body reading the graph input ``luma``): it renames such reads to its FP16
    cast of the input and, lacking the body's value types, inserts no cast back.
    """
    from onnx import TensorProto, helper

    casts: list[str] = []

    def walk(g, outer: dict) -> None:
        types = _value_types(g, outer)
        own = {t.name for t in g.initializer}
        made = {o for n in g.node if n.name in readout for o in n.output}
        nodes = []
        for n in g.node:
            for body in _bodies(n):
                walk(body, types)
            if n.name in readout:
                for k, name in enumerate(n.input):
                    if name and name not in made and name not in own and types.get(name) == TensorProto.FLOAT:
                        cast = helper.make_node("Cast", [name], [f"{name}__fp32_for_{n.name}"], name=f"{n.name}__fp32_in{k}", to=TensorProto.FLOAT)
                        nodes.append(cast)
                        casts.append(cast.name)
                        n.input[k] = cast.output[0]
            nodes.append(n)
        del g.node[:]
        g.node.extend(nodes)

    walk(model.graph, {})
    return casts


def _own_initializers(model, block_ops: set[str], block_nodes: set[str]) -> None:
    """Give FP32-kept nodes their own copies of the initializers they share with converted nodes,
    in place. The converter keeps an initializer in FP32 when any consumer is kept in FP32, and the
    converted consumers then get FP32 where they expect FP16 (a ``Clip`` bound shared by the
    encoder's head and the read-out's final clamp)."""

    def kept(node) -> bool:
        return node.op_type in block_ops or node.name in block_nodes

    def walk(g) -> None:
        inits = {t.name: t for t in g.initializer}
        users: dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                if i in inits:
                    users.setdefault(i, []).append(n)
            for body in _bodies(n):
                walk(body)
        for name, nodes in users.items():
            if any(kept(n) for n in nodes) and not all(kept(n) for n in nodes):
                twin = copy.deepcopy(inits[name])
                twin.name = f"{name}__fp32"
                g.initializer.append(twin)
                for n in nodes:
                    if kept(n):
                        n.input[:] = [twin.name if i == name else i for i in n.input]

    walk(model.graph)


def _drop_value_info(graph) -> None:
    del graph.value_info[:]
    for node in graph.node:
        for body in _bodies(node):
            _drop_value_info(body)


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
        types = _value_types(g, outer)
        nodes = []
        for node in g.node:
            for body in _bodies(node):
                rewrite(body, types)
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
    from sdk.images import IMAGE_SUFFIXES

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
    """Per candidate backend, separately for photos and random inputs, in 8-bit levels of the final
    images over all cases: the largest and the mean |reference - candidate|, the share of pixels
    off by more than 4 levels in any channel (%), and the lowest PSNR of a case (dB, capped at 99).

    The jobs are prepared and the reference run and finished once; every backend runs the same jobs
    through :func:`sdk.stages.infer` (one call per working shape) and :func:`sdk.stages.finish`.
    """
    from sdk import stages

    jobs = [stages.prepare(img, stages.check_options(task, params, manifest), label) for label, img, task, params in cases]
    # PIL (path in) or array out, uint8 -> int16 for differences
    ref_imgs = [np.asarray(stages.finish(job, out, workers), dtype=np.int16) for job, out in zip(jobs, stages.infer(reference, jobs))]
    reports: dict[str, dict] = {}
    for key, candidate in candidates.items():
        report: dict[str, dict] = {}
        for (label, *_), job, x, b in zip(cases, jobs, ref_imgs, stages.infer(candidate, jobs)):
            err = np.abs(x - np.asarray(stages.finish(job, b, workers), dtype=np.int16))
            pixel = err.max(axis=-1) if err.ndim == 3 else err
            mse = float(np.mean(err.astype(np.float64) ** 2))
            psnr = min(99.0, 10 * np.log10(255.0**2 / mse)) if mse > 0 else 99.0
            kind = "random" if label.startswith("random") else "photos"
            r = report.setdefault(kind, {"max_levels": 0.0, "mean_levels": 0.0, "over_4_levels_pct": 0.0, "min_psnr_db": 99.0,
                                         "cases": 0, "worst_case": "", "_sum": 0.0, "_n": 0, "_over": 0, "_px": 0})
            if psnr < r["min_psnr_db"] or not r["worst_case"]:
                r["min_psnr_db"], r["worst_case"] = round(psnr, 2), label
            r["max_levels"] = max(r["max_levels"], float(err.max()))
            r["_sum"] += float(err.sum())
            r["_n"] += err.size
            r["_over"] += int((pixel > 4).sum())
            r["_px"] += pixel.size
            r["cases"] += 1
        for r in report.values():
            r["mean_levels"] = r.pop("_sum") / max(r.pop("_n"), 1)
            r["over_4_levels_pct"] = round(100 * r.pop("_over") / max(r.pop("_px"), 1), 4)
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
    model16 = convert(onnx.load(str(manifest.model_path)), tuple(cfg.keep_fp32), cfg.readout_fp32)
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
            log.info("fp16 parity (%s, emulated): mean %.3f levels, lowest PSNR %.1f dB (%s), max %.0f levels, %.2f %% of pixels "
                     "off by > 4, over %d cases", kind, r["mean_levels"], r["min_psnr_db"], r["worst_case"], r["max_levels"],
                     r["over_4_levels_pct"], r["cases"])
            ok = (r["mean_levels"] < cfg.mean_levels and r["min_psnr_db"] >= cfg.min_psnr
                  and (cfg.max_levels is None or r["max_levels"] < cfg.max_levels))
            if not ok:
                limit = f", max < {cfg.max_levels:g} levels" if cfg.max_levels is not None else ""
                raise ParityError(
                    f"FP16 differs from FP32 on {kind} by mean {r['mean_levels']:.3f} 8-bit levels, PSNR down to "
                    f"{r['min_psnr_db']:.1f} dB (worst: {r['worst_case']}), max {r['max_levels']:.0f} levels; the tolerance is "
                    f"mean < {cfg.mean_levels:g}, PSNR >= {cfg.min_psnr:g} dB{limit}; keep more ops in FP32 "
                    "(--keep-fp32 Softmax,MatMul,...) or ship the FP32 model only")
        os.replace(tmp_model, target)
    try:
        import onnxconverter_common

        conv_v = onnxconverter_common.__version__
    except (ImportError, AttributeError):  # pragma: no cover
        conv_v = None
    art = _onnx_artifact(out, target, "fp16", manifest.primary.opset, manifest.sha256)
    record = {"file": art.file, "converter": f"onnxconverter-common {conv_v}", "keep_io_types": True,
              "keep_fp32_ops": list(cfg.keep_fp32), "readout_fp32": cfg.readout_fp32, "photos": [p.name for p in photos],
              "tolerance": {"mean_levels": cfg.mean_levels, "min_psnr_db": cfg.min_psnr, "max_levels": cfg.max_levels},
              "parity_levels": report, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    updated = manifest.with_artifact(art)
    write_manifest(dataclasses.replace(updated, extra={**updated.extra, "fp16": record}))
    return record
