"""Generator checkpoint -> ONNX model + manifest, checked and parity-tested against PyTorch.

The manifest is built as an :class:`sdk.manifest.Manifest` and written by
:func:`sdk.manifest.write_manifest`: the SDK's manifest module is the one owner of the format.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdk import contract
from sdk.manifest import MAX_WORK_SIZE, Artifact, Manifest, sha256_file, write_manifest

log = logging.getLogger(__name__)

OPSET = 17


class ExportError(RuntimeError):
    """Export failed: bad checkpoint, checker failure, or parity outside tolerance."""


class ParityError(ExportError):
    """ONNX Runtime and PyTorch disagree by more than the tolerance."""


READ_OUT = ("temperature", "chroma_blur", "chroma_scale", "chroma_gain", "chroma_gain_ref", "prior_correction", "chroma_guide",
            "chroma_guide_eps")
"""The :class:`training.model.GeneratorConfig` fields an export may change (``--set NAME=VALUE``):
the colour read-out, which changes no weights. They are documented there, and nowhere else."""


@dataclass(frozen=True)
class ExportConfig:
    """Options of ``python -m export onnx`` (its flags are derived from these fields).

    Args:
        checkpoint: training checkpoint (``last.pt``) written by ``python -m training`` (colour).
        out: folder to write ``model.onnx`` and ``manifest.json`` into.
        style_checkpoint: ``last.pt`` of ``python -m training.style_train`` (or of ``chromaforge
            style add``) whose style path joins ``checkpoint``'s encoder and colour decoder
            ("": the checkpoint's own).
        set: read-out changes, ``NAME=VALUE`` for fields of ``GeneratorConfig`` in :data:`READ_OUT`.
        use_ema: export the EMA generator weights of ``checkpoint`` (recommended).
        opset: ONNX opset.
        simplify: run onnxslim on the exported graph.
        tolerance: largest allowed |ONNX Runtime - PyTorch| on any output element.
        parity_images: folder of real images for the parity check (besides random inputs; "": the
            bundled example photo).
        work_size: working resolution (long side) recorded in the manifest.
        style_work_size: long side for stylize calls (0: ``work_size``).
        style_pad: reflect padding (px, a multiple of 32) around stylize's working-size input,
            cropped off the output (manifest ``style_pad``): the image's border lies inside what
            the style path sees.
        name: model name recorded in the manifest.
        force: replace an existing model in ``out``.
        task_switch: build the graph so that natural-only calls (colorize) skip the style path and
            calls without natural weight (stylize at full strength) the encoder and colour decoder
            (:mod:`export.switch`: same inputs, output and numbers; one file).
    """

    checkpoint: str = dataclasses.field(metadata={"help": "last.pt written by `python -m training` (colour)"})
    out: str = dataclasses.field(metadata={"help": "folder for model.onnx and manifest.json"})
    style_checkpoint: str = dataclasses.field(default="", metadata={"help": "last.pt of `python -m training.style_train` to join"})
    set: tuple[str, ...] = dataclasses.field(default=(), metadata={"help": f"read-out changes NAME=VALUE, NAME in {', '.join(READ_OUT)}"})
    use_ema: bool = dataclasses.field(default=True, metadata={"help": "export the colour run's EMA weights"})
    opset: int = OPSET
    simplify: bool = dataclasses.field(default=True, metadata={"help": "run onnxslim"})
    tolerance: float = dataclasses.field(default=1e-4, metadata={"help": "max |ORT - PyTorch| allowed"})
    parity_images: str = dataclasses.field(default="", metadata={"help": "folder of real images for the parity check"})
    work_size: int = dataclasses.field(default=contract.WORK_SIZE, metadata={"help": "long side the generator runs at"})
    style_work_size: int = dataclasses.field(default=0, metadata={"help": "long side stylize runs at (0: --work-size)"})
    style_pad: int = dataclasses.field(default=0, metadata={"help": "reflect padding around stylize's input, cropped off its output (a multiple of 32)"})
    name: str = "chromaforge"
    force: bool = dataclasses.field(default=False, metadata={"help": "replace a model already in --out"})
    task_switch: bool = dataclasses.field(default=True, metadata={"help": "run only the paths a call needs, inside the graph (export/switch.py)"})

    def overrides(self) -> dict:
        """``set`` as {field: value}, each value of its field's type.

        Raises:
            ExportError: not NAME=VALUE, a field outside :data:`READ_OUT`, or a value of the wrong type.
        """
        from training.model import GeneratorConfig

        types = {f.name: type(f.default) for f in dataclasses.fields(GeneratorConfig) if f.name in READ_OUT}
        out = {}
        for item in self.set:
            name, sep, value = item.partition("=")
            if not sep or name not in types:
                raise ExportError(f"--set takes NAME=VALUE with NAME one of {', '.join(READ_OUT)}; got {item!r}")
            try:
                out[name] = types[name](value)
            except ValueError:
                raise ExportError(f"--set {item!r}: {name} takes a {types[name].__name__}") from None
        return out


NOTICE = Path(__file__).with_name("NOTICE-encoder.txt")
"""Attribution and licence of the pretrained encoder weights; export writes it beside every model as NOTICE.txt."""

ENCODER_ATTRIBUTION = (
    "Encoder: MobileNetV2 1.0 (Sandler et al. 2018), ImageNet weights from TensorFlow's hosted model "
    "mobilenet_v2_1.0_224_quant (Copyright Google LLC, Apache License 2.0), dequantized to float32 "
    "and fine-tuned as part of this model's training only where the model card says so."
)


def _read_checkpoint(path: str | Path) -> dict:
    import torch

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"checkpoint {path} does not exist; expected a last.pt written by `python -m training`")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or "generator" not in ck or "G" not in ck:
        raise ExportError(f"{path} is not a chromaforge training checkpoint (no 'generator'/'G' entries)")
    return ck


def load_generator(checkpoint: str | Path, use_ema: bool = True, style_checkpoint: str | Path | None = None,
                   overrides: dict | None = None):
    """Rebuild the generator from a training checkpoint; returns (model in eval mode, checkpoint dict).

    Args:
        checkpoint: ``last.pt`` of a colour run (``python -m training``) or one rebuilt from a
            model (:mod:`export.from_onnx`), with its style path.
        use_ema: take the EMA weights.
        style_checkpoint: ``last.pt`` of ``python -m training.style_train`` whose style network
            (and style names) replace the checkpoint's: colour and style share nothing, so two runs join.
        overrides: read-out fields of ``GeneratorConfig`` to change (:data:`READ_OUT`).

    Raises:
        ExportError: a missing or foreign checkpoint, one of an older generator design, a
            prior correction without the class weights the colour run saved, or overrides that do not fit.
    """
    import torch

    from training.model import STYLE_PREFIX, Generator, GeneratorConfig

    path = Path(checkpoint)
    ck = _read_checkpoint(path)
    try:
        gcfg = dataclasses.asdict(GeneratorConfig.from_dict(ck["generator"]))
    except (ValueError, TypeError) as e:
        raise ExportError(f"{path} was written by an older generator design ({e}); "
                          "export it with the chromaforge release that trained it, or retrain") from None
    unknown = sorted(set(overrides or {}) - set(READ_OUT))
    if unknown:
        raise ExportError(f"only the read-out can change at export ({', '.join(READ_OUT)}); got {unknown}")
    gcfg.update(overrides or {})
    weights = dict(ck["G_ema" if use_ema else "G"])
    if style_checkpoint is not None:
        sk = _read_style_checkpoint(style_checkpoint)
        net = sk["net_config"]
        gcfg.update(styles=(contract.NATURAL, *sk["styles"]), style_widths=tuple(net["widths"]), style_res_blocks=net["res_blocks"])
        weights = {k: v for k, v in weights.items() if not k.startswith(STYLE_PREFIX)}
        weights.update({STYLE_PREFIX + k: v for k, v in sk["net"].items()})
        ck = {**ck, "style_checkpoint": {"path": str(style_checkpoint), "step": sk.get("step"), "config": sk.get("config", {}),
                                         "exemplars": sk.get("exemplars")}}
    try:
        G = Generator(GeneratorConfig(**gcfg))
    except (ValueError, TypeError) as e:
        raise ExportError(f"read-out options do not fit: {e}") from None
    try:
        G.load_state_dict(weights)
    except RuntimeError as e:
        detail = " ".join(line.strip() for line in str(e).splitlines()[1:3])[:400]
        raise ExportError(f"{path} does not fit this generator design: {detail}") from None
    if G.cfg.prior_correction > 0:
        w = ck.get("class_weights")
        if w is None:
            raise ExportError(f"a prior correction needs the colour run's class weights, and {path} has none saved "
                              "(checkpoints of `python -m training` and `export.from_onnx` carry them); or --set prior_correction=0")
        G.class_log_weights.copy_(torch.log(w.float()))
    return G.eval(), ck


def _read_style_checkpoint(path: str | Path) -> dict:
    import torch

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"style checkpoint {path} does not exist; expected a last.pt written by `python -m training.style_train`")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or not {"net", "net_config", "styles"} <= set(ck):
        raise ExportError(f"{path} is not a style-path checkpoint (no 'net'/'net_config'/'styles' entries)")
    return ck


def _parity_inputs(cfg: ExportConfig, n_styles: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Random and real (luma, style) pairs at several shapes and batch sizes."""
    from PIL import Image

    from sdk import resample
    from sdk.images import IMAGE_SUFFIXES, decode

    rng = np.random.default_rng(0)
    cases = []
    for (n, h, w) in [(1, 64, 64), (2, 96, 160), (1, 256, 192)]:
        style = rng.dirichlet(np.ones(n_styles), size=n).astype(np.float32)
        cases.append((f"random {n}x{h}x{w}", rng.random((n, 1, h, w), dtype=np.float32), style))
    natural = np.zeros((2, n_styles), np.float32)
    natural[:, 0] = 1.0  # colorize: the graph's natural-only branch (export/switch.py)
    cases.append(("random natural 2x96x160", rng.random((2, 1, 96, 160), dtype=np.float32), natural))
    if n_styles > 2:
        painting = np.zeros((2, n_styles), np.float32)
        painting[0, 1], painting[1, 2] = 1.0, 1.0  # stylize at full strength: the style-only branch
        cases.append(("random styles 2x96x160", rng.random((2, 1, 96, 160), dtype=np.float32), painting))
    files: list[Path] = []
    if cfg.parity_images:
        root = Path(cfg.parity_images)
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:4]
    if not files:
        files = [Path(__file__).resolve().parents[1] / "sdk" / "examples" / "astronaut.jpg"]
    for f in files:
        d = decode(Image.open(f))
        shape = resample.work_shape(*d.size, cfg.work_size, contract.SIZE_MULTIPLE)
        luma = resample.resize_luma(d.luma, shape)[None, None]
        for k in range(n_styles):
            style = np.zeros((1, n_styles), np.float32)
            style[0, k] = 1.0
            cases.append((f"{f.name} style {k}", luma, style))
    return cases


def parity(model_path: Path, G, cases) -> dict[str, float]:
    """Max and mean |ONNX Runtime - PyTorch| over the cases."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    max_err, sum_err, count = 0.0, 0.0, 0
    worst = ""
    luma_name, style_name = contract.INPUT_NAMES
    for name, luma, style in cases:
        got = sess.run(None, {luma_name: luma, style_name: style})[0]
        with torch.no_grad():
            ref = G(torch.from_numpy(luma), torch.from_numpy(style)).numpy()
        if got.shape != ref.shape:
            raise ParityError(f"{name}: ONNX output shape {got.shape} != PyTorch {ref.shape}")
        err = np.abs(got.astype(np.float64) - ref)
        if err.max() > max_err:
            max_err, worst = float(err.max()), name
        sum_err += float(err.sum())
        count += err.size
    return {"max_abs": max_err, "mean_abs": sum_err / count, "cases": len(cases), "worst_case": worst}


def export_onnx(cfg: ExportConfig) -> dict:
    """Export, check, simplify, parity-test and write ``model.onnx`` + ``manifest.json``.

    Returns:
        The manifest written.

    Raises:
        ExportError: bad checkpoint, existing output without ``force``, checker failure.
        ParityError: outputs differ from PyTorch by more than ``cfg.tolerance``.
    """
    import onnx
    import onnxruntime as ort
    import torch

    out = Path(cfg.out)
    model_path = out / contract.MODEL_NAME
    manifest_path = out / contract.MANIFEST_NAME
    if not contract.SIZE_MULTIPLE <= cfg.work_size <= MAX_WORK_SIZE:  # the manifest would be refused at load
        raise ExportError(f"--work-size is {cfg.work_size}; expected a long side in [{contract.SIZE_MULTIPLE}, {MAX_WORK_SIZE}] pixels")
    if cfg.style_work_size and not contract.SIZE_MULTIPLE <= cfg.style_work_size <= MAX_WORK_SIZE:
        raise ExportError(f"--style-work-size is {cfg.style_work_size}; expected 0 (the --work-size) or a long side in "
                          f"[{contract.SIZE_MULTIPLE}, {MAX_WORK_SIZE}] pixels")
    if cfg.style_pad < 0 or cfg.style_pad % contract.SIZE_MULTIPLE or cfg.style_pad > MAX_WORK_SIZE // 4:
        raise ExportError(f"--style-pad is {cfg.style_pad}; expected 0 or a multiple of {contract.SIZE_MULTIPLE} up to "
                          f"{MAX_WORK_SIZE // 4} (the encoder's grid must stay aligned with the image)")
    if not cfg.force and (model_path.exists() or manifest_path.exists()):
        raise ExportError(f"{out} already holds a model; pass --force to replace it, or choose another --out")
    G, ck = load_generator(cfg.checkpoint, cfg.use_ema, style_checkpoint=cfg.style_checkpoint or None, overrides=cfg.overrides())
    n_styles = G.cfg.n_styles
    out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(dir=out) as tmp:
        from export.switch import export_checked, switched_model

        if cfg.task_switch:
            model = switched_model(G, cfg.opset, Path(tmp), cfg.simplify)
        else:
            style = torch.zeros(1, n_styles)
            style[0, 0] = 1.0
            model = export_checked(G, (torch.rand(1, 1, 64, 64), style), Path(tmp) / "raw.onnx", list(contract.INPUT_NAMES),
                                   list(contract.OUTPUT_NAMES), cfg.opset, cfg.simplify)
        model.doc_string = f"{cfg.name}: unified colorization/style generator (see manifest.json)"
        tmp_model = Path(tmp) / contract.MODEL_NAME
        onnx.save(model, str(tmp_model))
        report = parity(tmp_model, G, _parity_inputs(cfg, n_styles))
        log.info("parity vs PyTorch: max %.3g, mean %.3g over %d cases", report["max_abs"], report["mean_abs"], report["cases"])
        if not report["max_abs"] <= cfg.tolerance:
            raise ParityError(f"ONNX Runtime differs from PyTorch by up to {report['max_abs']:.3g} (worst: {report['worst_case']}), above the tolerance {cfg.tolerance:g}")
        os.replace(tmp_model, model_path)
    shutil.copyfile(NOTICE, out / NOTICE.name.replace("-encoder", ""))  # the encoder's Apache-2.0 attribution travels with the weights

    manifest = build_manifest(cfg, model_path, G, ck, report, onnx.__version__, ort.__version__, torch.__version__)
    write_manifest(manifest)
    return manifest.to_dict()


def build_manifest(cfg: ExportConfig, model_path: Path, G, ck: dict, report: dict, onnx_v: str, ort_v: str, torch_v: str) -> Manifest:
    """The manifest: everything the SDK needs to run the model, and where it came from."""
    import sdk

    try:
        import onnxslim

        slim_v = onnxslim.__version__
    except ImportError:  # pragma: no cover
        slim_v = None
    train_cfg = ck.get("config", {})
    onnx_fp32 = Artifact(file=contract.MODEL_NAME, format="onnx", precision="fp32", sha256=sha256_file(model_path),
                         bytes=model_path.stat().st_size, opset=cfg.opset)
    return Manifest(
        styles=tuple(G.cfg.styles),
        work_size=cfg.work_size,
        style_work_size=cfg.style_work_size,
        style_pad=cfg.style_pad,
        size_multiple=contract.SIZE_MULTIPLE,
        input_names=contract.INPUT_NAMES,
        output_names=contract.OUTPUT_NAMES,
        artifacts=(onnx_fp32,),
        directory=model_path.parent,
        name=cfg.name,
        extra={
            "generator": dataclasses.asdict(G.cfg),
            "licence": {"encoder": ENCODER_ATTRIBUTION},
            "parameters": int(sum(p.numel() for p in G.parameters())),
            "training": {
                "step": ck.get("step"),
                "ema": cfg.use_ema,
                "size": train_cfg.get("size"),
                "batch": train_cfg.get("batch"),
                "photos": train_cfg.get("photos"),
                "styles_root": train_cfg.get("styles_root"),
                "style_run": {k: v for k, v in ck.get("style_checkpoint", {}).items() if k != "config"} or None,
                "style_training": {k: v for k, v in ck.get("style_checkpoint", {}).get("config", {}).items()
                                   if k in ("steps", "size", "batch", "lr", "w_content", "w_style", "w_coarse", "w_tv", "photos")} or None,
                # a checkpoint rebuilt from an exported model (export.from_onnx): that model and its provenance
                **({"recovered_from": {k: v for k, v in ck["recovered_from"].items() if k != "parity"}} if "recovered_from" in ck else {}),
            },
            "parity": {**report, "tolerance": cfg.tolerance},
            "graph": ("task-switch: natural-only calls skip the style path, calls without natural weight the encoder and "
                      "the colour decoder") if cfg.task_switch else "plain",
            "versions": {"chromaforge": sdk.__version__, "torch": torch_v, "onnx": onnx_v, "onnxruntime": ort_v, "onnxslim": slim_v},
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )
