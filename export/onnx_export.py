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


@dataclass(frozen=True)
class ExportConfig:
    """Options of ``python -m export onnx``.

    Args:
        checkpoint: training checkpoint (``last.pt``) written by ``python -m training``.
        out: folder to write ``model.onnx`` and ``manifest.json`` into.
        use_ema: export the EMA generator weights (recommended).
        opset: ONNX opset.
        simplify: run onnxslim on the exported graph.
        tolerance: largest allowed |ONNX Runtime - PyTorch| on any output element.
        parity_images: folder of real images for the parity check (besides random inputs).
        work_size: working resolution (long side) recorded in the manifest.
        name: model name recorded in the manifest.
        force: replace an existing model in ``out``.
        temperature: annealed-mean temperature of the colour read-out baked into the graph
            (0 keeps the checkpoint's; choose it on validation photos, lower = more colourful).
        chroma_blur: box-filter side over the read-out chroma (-1 keeps the checkpoint's).
        chroma_scale: factor on the read-out chroma (0 keeps the checkpoint's).
        prior_correction: share of the class rebalancing taken back at read-out (-1 keeps the
            checkpoint's; see GeneratorConfig).
        chroma_gain, chroma_gain_ref: exponent of the per-image chroma gain (-1 keeps the
            checkpoint's; 0: none) and its reference magnitude (0: measured on the colour run's
            training photos at ``work_size``; see GeneratorConfig).
        ink_style: a painting style printed in flat inks ("": none; see GeneratorConfig); its
            palette comes from the style run's paintings.
        inks: ink colours.
        ink_saturation: the palette's k-means weights each pixel by its chroma to this power (-1
            keeps the checkpoint's; 0: plain k-means; see GeneratorConfig).
        ink_fields, ink_fields_eps: radius (at half the working size) and regulariser of the
            edge-aware ink vote (-1 / 0 keep the checkpoint's; 0 radius: no vote; see GeneratorConfig).
        chroma_guide, chroma_guide_eps: guided chroma upsampling radius (-1 keeps the checkpoint's;
            0: bilinear) and regulariser (0 keeps the checkpoint's; see GeneratorConfig).
        ink_lines, ink_lines_sigma, ink_lines_threshold: key lines over the inked style, strength
            (-1 keeps the checkpoint's; 0: none), width and threshold (0 keep the checkpoint's; see
            GeneratorConfig).
        style_checkpoint: a style-only training run whose style branch joins ``checkpoint``'s
            encoder and colour decoder ("" = the checkpoint's own style branch).
        style_work_size: long side for stylize calls (0: ``work_size``), written to the manifest.
        style_pad: reflect padding (px, a multiple of the size multiple) around stylize's
            working-size input, cropped off the output (manifest ``style_pad``; model card,
            "Edge bands"): the image's border lies inside what the generator sees.
        task_switch: build the graph so that natural-only calls (colorize) skip the style branch
            and calls without natural weight (stylize at full strength) the colour decoder
            (:mod:`export.switch`: same inputs, output and numbers; one file).
    """

    checkpoint: str
    out: str
    use_ema: bool = True
    opset: int = OPSET
    simplify: bool = True
    tolerance: float = 1e-4
    parity_images: str = ""
    work_size: int = contract.WORK_SIZE
    name: str = "chromaforge"
    force: bool = False
    temperature: float = 0.0
    chroma_blur: int = -1
    chroma_scale: float = 0.0
    prior_correction: float = -1.0
    chroma_gain: float = -1.0
    chroma_gain_ref: float = 0.0
    ink_style: str = ""
    inks: int = 8
    ink_saturation: float = -1.0
    ink_fields: int = -1
    ink_fields_eps: float = 0.0
    ink_lines: float = -1.0
    ink_lines_sigma: float = 0.0
    ink_lines_threshold: float = 0.0
    chroma_guide: int = -1
    chroma_guide_eps: float = 0.0
    style_checkpoint: str = ""
    style_work_size: int = 0
    style_pad: int = 0
    task_switch: bool = True


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


def load_generator(checkpoint: str | Path, use_ema: bool = True, temperature: float = 0.0, style_checkpoint: str | Path | None = None,
                   chroma_blur: int = -1, chroma_scale: float = 0.0, prior_correction: float = -1.0,
                   ink_style: str = "", inks: int = 8, ink_saturation: float = -1.0, ink_fields: int = -1,
                   ink_fields_eps: float = 0.0, chroma_guide: int = -1, chroma_guide_eps: float = 0.0,
                   ink_lines: float = -1.0, ink_lines_sigma: float = 0.0, ink_lines_threshold: float = 0.0,
                   chroma_gain: float = -1.0, chroma_gain_ref: float = 0.0, work_size: int = contract.WORK_SIZE):
    """Rebuild the generator from a training checkpoint; returns (model in eval mode, checkpoint dict).

    Args:
        checkpoint: ``last.pt`` of a run (colour, style, or both).
        use_ema: take the EMA weights.
        temperature: > 0 replaces the colour read-out's annealed-mean temperature.
        chroma_blur: >= 0 replaces the read-out's box-filter side (see GeneratorConfig).
        chroma_scale: > 0 replaces the read-out's chroma factor.
        prior_correction: >= 0 replaces the read-out's prior correction; when the result is > 0 the
            class weights come from the checkpoint or are recomputed from the run's training photos.
        ink_style, inks: the ink read-out (see GeneratorConfig); the palette is computed
            from the style run's paintings (its config's ``styles_root``).
        ink_saturation, ink_fields, ink_fields_eps, chroma_guide, chroma_guide_eps, ink_lines, ink_lines_sigma,
            ink_lines_threshold, chroma_gain: further read-out overrides, as in :class:`ExportConfig`.
        chroma_gain_ref: > 0 sets the chroma gain's reference; 0 keeps the checkpoint's, or, when
            the gain is given here, measures it on the colour run's training photos at ``work_size``.
        style_checkpoint: a style-only run (``--no-colour``) whose style branch replaces the
            checkpoint's: colour and style share only the frozen encoder, so two runs join.

    Raises:
        ExportError: a missing or foreign checkpoint, or one of an older generator design.
    """
    import torch

    from training.model import STYLE_PREFIX, Generator, GeneratorConfig

    path = Path(checkpoint)
    ck = _read_checkpoint(path)
    try:
        gcfg = dataclasses.asdict(GeneratorConfig.from_dict(ck["generator"]))
    except ValueError as e:
        raise ExportError(f"{path} was written by an older generator design ({e}); "
                          "export it with the chromaforge release that trained it, or retrain") from None
    # Read-out overrides, (value, given?): the CLI defaults (0 or -1, outside each field's range) keep the checkpoint's.
    overrides = {"temperature": (temperature, temperature > 0), "chroma_blur": (chroma_blur, chroma_blur >= 0),
                 "chroma_scale": (chroma_scale, chroma_scale > 0), "prior_correction": (prior_correction, prior_correction >= 0),
                 "ink_saturation": (ink_saturation, ink_saturation >= 0), "ink_fields": (ink_fields, ink_fields >= 0), "ink_fields_eps": (ink_fields_eps, ink_fields_eps > 0),
                 "chroma_guide": (chroma_guide, chroma_guide >= 0), "chroma_guide_eps": (chroma_guide_eps, chroma_guide_eps > 0),
                 "ink_lines": (ink_lines, ink_lines >= 0), "ink_lines_sigma": (ink_lines_sigma, ink_lines_sigma > 0),
                 "ink_lines_threshold": (ink_lines_threshold, ink_lines_threshold > 0),
                 "chroma_gain": (chroma_gain, chroma_gain >= 0), "chroma_gain_ref": (chroma_gain_ref, chroma_gain_ref > 0)}
    gcfg.update({name: value for name, (value, given) in overrides.items() if given})
    if ink_style:
        gcfg.update(ink_style=ink_style, inks=inks)
    key = "G_ema" if use_ema else "G"
    weights = ck[key]
    if style_checkpoint is not None:
        sk = _read_checkpoint(style_checkpoint)
        gcfg["widths"] = gcfg["widths"][:3] + tuple(sk["generator"]["widths"][3:])
        gcfg["style_widths"] = tuple(sk["generator"].get("style_widths", GeneratorConfig.style_widths))
        # The style branch reads the encoder's stride-4 and -8 features: those layers must match; the
        # colour run's layers past them (fine-tuned with --encoder-tune-stride 16) are the colour decoder's own.
        shared = set(Generator(GeneratorConfig(**gcfg)).encoder_keys_read_by_style())
        differ = [k for k in sorted(shared) if k in weights and k in sk[key] and not torch.equal(weights[k], sk[key][k])]
        if differ:
            raise ExportError(f"{path} and {style_checkpoint} were trained on different encoder weights ({differ[0]} differs, "
                              f"{len(differ)} tensors in all); the style branch reads the encoder's stride-4 and -8 features, so both "
                              "runs must share those layers: fine-tune the colour run's encoder with --encoder-tune-stride 16 at most")
        weights = {k: v for k, v in weights.items() if not k.startswith(STYLE_PREFIX)}
        weights.update({k: v for k, v in sk[key].items() if k.startswith(STYLE_PREFIX)})
        ck = {**ck, "style_checkpoint": {"path": str(style_checkpoint), "step": sk.get("step"), "config": sk.get("config", {})}}
    try:
        G = Generator(GeneratorConfig(**gcfg))
    except ValueError as e:
        raise ExportError(f"read-out options do not fit: {e}") from None
    own = G.state_dict()
    if style_checkpoint is not None:  # the colour run may carry an older style branch: keep what this design has
        weights = {k: v for k, v in weights.items() if k in own}
    try:
        G.load_state_dict(weights)
    except RuntimeError as e:
        detail = " ".join(line.strip() for line in str(e).splitlines()[1:3])[:400]
        raise ExportError(f"{path} does not fit this generator design: {detail}") from None
    if G.cfg.prior_correction > 0:
        from training.train import colour_class_weights

        w = ck.get("class_weights")
        if w is None:
            try:
                w = colour_class_weights(ck.get("config", {}), G.bins)
            except (FileNotFoundError, KeyError) as e:
                raise ExportError(f"prior correction needs the colour run's class weights: {path} has none saved and "
                                  f"they cannot be recomputed ({e})") from None
        G.class_log_weights.copy_(torch.log(w.float()))
    if G.cfg.chroma_gain > 0 and chroma_gain >= 0 and not chroma_gain_ref > 0:
        try:
            ref = chroma_gain_reference(G.eval(), ck.get("config", {}).get("photos", ""), work_size)
        except FileNotFoundError as e:
            raise ExportError(f"the chroma gain's reference is measured on the colour run's training photos: {e}; "
                              "or give it (--chroma-gain-ref)") from None
        G.cfg = dataclasses.replace(G.cfg, chroma_gain_ref=ref)
    if G.cfg.ink_style:
        from training.train import TrainConfig, ink_palette

        styles_root = (ck.get("style_checkpoint") or {}).get("config", ck.get("config", {})).get("styles_root", TrainConfig.styles_root)
        try:
            G.ink_palette.copy_(ink_palette(styles_root, G.cfg.ink_style, G.cfg.inks, saturation=G.cfg.ink_saturation))
        except FileNotFoundError as e:
            raise ExportError(f"the ink read-out needs the {G.cfg.ink_style} paintings: {e}") from None
    return G.eval(), ck


def chroma_gain_reference(G, photos: str | Path, work_size: int, limit: int = 200) -> float:
    """Median over up to ``limit`` photos (evenly spaced, sorted) of the generator's mean expected
    chroma magnitude (:meth:`Generator.annealed_mean`), each photo's luminance at ``work_size``
    as the SDK runs it: the reference of the per-image chroma gain, rounded to 4 decimals.

    Raises:
        FileNotFoundError: ``photos`` is not a folder of images.
    """
    import torch
    from PIL import Image

    from sdk import processing
    from training.data import select_files
    from training.model import one_hot_style

    files = select_files(photos, limit) if str(photos) else []
    if not files:
        raise FileNotFoundError(f"no photos in {str(photos)!r} (run from the folder the colour run was started in, beside ../shared)")
    style = one_hot_style(torch.zeros(1, dtype=torch.long), G.cfg.n_styles)  # natural: the colour decoder
    values = []
    with torch.no_grad():
        for f in files:
            luma = np.asarray(Image.open(f).convert("L"))
            x = processing.resize_luma(luma, processing.work_shape(*luma.shape, work_size, contract.SIZE_MULTIPLE))
            logits = G.colour_logits(G.encoder(torch.from_numpy(np.ascontiguousarray(x))[None, None]), style)
            values.append(float(G.annealed_mean(logits)[1][0]))
    return round(float(np.median(values)), 4)


def _parity_inputs(cfg: ExportConfig, n_styles: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Random and real (luma, style) pairs at several shapes and batch sizes."""
    from PIL import Image

    from sdk import processing
    from sdk.io import IMAGE_SUFFIXES, decode

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
        shape = processing.work_shape(*d.size, cfg.work_size, contract.SIZE_MULTIPLE)
        luma = processing.resize_luma(d.luma, shape)[None, None]
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
    read_out = ("temperature", "chroma_blur", "chroma_scale", "chroma_gain", "chroma_gain_ref", "prior_correction", "ink_style", "inks", "ink_saturation",
                "ink_fields", "ink_fields_eps",
                "chroma_guide", "chroma_guide_eps", "ink_lines", "ink_lines_sigma", "ink_lines_threshold")
    G, ck = load_generator(cfg.checkpoint, cfg.use_ema, style_checkpoint=cfg.style_checkpoint or None, work_size=cfg.work_size,
                           **{name: getattr(cfg, name) for name in read_out})
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
        styles=contract.STYLES[: G.cfg.n_styles],
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
                # a checkpoint rebuilt from an exported model (training.from_onnx): that model and its provenance
                **({"recovered_from": {k: v for k, v in ck["recovered_from"].items() if k != "parity"}} if "recovered_from" in ck else {}),
            },
            "parity": {**report, "tolerance": cfg.tolerance},
            "graph": ("task-switch: natural-only calls skip the style branch, calls without natural weight the colour decoder "
                      "and the encoder past stride 8"
                      + (f", and calls without {G.cfg.ink_style} weight the ink read-out" if G.cfg.ink_style else "")) if cfg.task_switch else "plain",
            "versions": {"chromaforge": sdk.__version__, "torch": torch_v, "onnx": onnx_v, "onnxruntime": ort_v, "onnxslim": slim_v},
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )
