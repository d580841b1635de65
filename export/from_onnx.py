"""A training checkpoint rebuilt from an exported model: fine-tune a shipped model without its runs.

The ONNX graph holds every trained weight of the generator, but under the exporter's names (the
FiLM layers' weights as ``onnx::MatMul_N``, transposed) and split over the task switch's branches
(``export/switch.py``). To read them back, this module exports a *probe*: the same generator
design (the manifest's ``generator`` entry) with distinct random values in every parameter,
through the same exporter. Each weight of the probe's graph is then found among the probe's
parameters (as is, or transposed), which names the tensor at the same place in the shipped graph;
a parameter the graph holds more than once (in several branches) must agree everywhere. The
colour read-out's class weights come back from the constant they are folded into, located the
same way (distinct values in the probe's buffer). Finally the rebuilt generator is checked against the shipped graph with the exporter's
own parity test, so a probe that does not line up with the shipped export (another torch or
exporter version) fails loudly instead of giving wrong weights.

The checkpoint has the generator (``G`` and ``G_ema`` both the shipped weights), the class
weights and a config naming the data the model card gives; it has no discriminator or optimiser
state, so use it with ``--init`` (``--init-ema`` makes no difference), not ``--resume``.

Example:
    python -m export.from_onnx --model-dir sdk/models/default --out runs/recovered/recovered.pt
    python -m export onnx --checkpoint runs/recovered/recovered.pt --style-checkpoint runs/stylenet/last.pt ...
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4
"""Max |rebuilt PyTorch - shipped ONNX| over the exporter's parity cases (exports pass at 5e-5 or less)."""


class RecoveryError(RuntimeError):
    """The shipped graph's weights could not be read back into the generator."""


@dataclass(frozen=True)
class RecoverConfig:
    """What to read and where to write it."""

    model_dir: str = "sdk/models/default"
    out: str = "runs/recovered/recovered.pt"
    parity_images: str = "../shared/datasets/photos/val"
    force: bool = False


def _initializers(graph, found: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Every initializer of ``graph`` and of its subgraphs (If branches), by name."""
    import onnx
    from onnx import numpy_helper

    found = {} if found is None else found
    for t in graph.initializer:
        found[t.name] = numpy_helper.to_array(t)
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                _initializers(a.g, found)
    return found


def _probe_map(G, work: Path, opset: int) -> tuple[dict[str, tuple[str, bool]], dict[str, np.ndarray]]:
    """Fill ``G``'s parameters with distinct random values, export it as the exporter does, and
    return (for each graph weight that is a parameter: (parameter name, transposed?); every weight
    of the probe's graph, by name). ``opset``: the shipped model's, so that both graphs line up."""
    import torch

    from export.switch import switched_model

    gen = torch.Generator().manual_seed(0)
    params = dict(G.named_parameters())
    with torch.no_grad():
        for p in params.values():
            p.copy_(torch.randn(p.shape, generator=gen))
    probe = _initializers(switched_model(G.eval(), opset, work, simplify=True).graph)
    by_size: dict[int, list[tuple[str, np.ndarray]]] = {}
    for name, p in params.items():
        by_size.setdefault(p.numel(), []).append((name, p.detach().numpy()))
    mapping = {}
    for init, arr in probe.items():
        for name, value in by_size.get(arr.size, []):
            if arr.shape == value.shape and np.array_equal(arr, value):
                mapping[init] = (name, False)
            elif arr.ndim == 2 and arr.shape == value.shape[::-1] and np.array_equal(arr, value.T):
                mapping[init] = (name, True)
            else:
                continue
            break
    return mapping, probe


def _buffer(probe: dict[str, np.ndarray], shipped: dict[str, np.ndarray], marker, scale: float, what: str):
    """The constant ``scale * buffer`` the export folds a buffer into, as stored in ``shipped``;
    it is located in the probe's graph by the distinct values ``marker`` the probe's buffer held."""
    import torch

    want = scale * marker.numpy()
    hits = [name for name, arr in probe.items() if arr.shape == want.shape and np.allclose(arr, want, atol=1e-6)]
    if not hits or any(h not in shipped for h in hits):
        raise RecoveryError(f"{what} was not found in the graph (expected a constant of shape {tuple(want.shape)})")
    values = [shipped[h] for h in hits]
    if any(not np.array_equal(v, values[0]) for v in values[1:]):
        raise RecoveryError(f"{what} differs between the graph's branches")
    return torch.from_numpy(values[0].astype(np.float32))


def _class_weights(folded, a: float):
    """Class weights w (float32) whose export folds to exactly ``folded`` = fl(a * fl(log w)):
    the nearest float32 values are searched a few ulps either side of the exact inverse, so that
    re-exporting the checkpoint reproduces the graph bit for bit (else within an ulp)."""
    import torch

    def fold(w):
        return a * torch.log(w)

    w = torch.exp(folded.double() / a).float()
    best = w.clone()
    err = (fold(w) - folded).abs()
    for direction in (float("inf"), 0.0):
        cand = w.clone()
        for _ in range(8):
            cand = torch.nextafter(cand, torch.full_like(cand, direction))
            e = (fold(cand) - folded).abs()
            better = e < err
            best, err = torch.where(better, cand, best), torch.where(better, e, err)
    return best


def recover(cfg: RecoverConfig) -> Path:
    """Rebuild a training checkpoint from the model in ``cfg.model_dir`` and write it to ``cfg.out``.

    Returns:
        The checkpoint's path.

    Raises:
        RecoveryError: the graph's weights do not line up with a probe export of the manifest's
            design, a parameter is missing or disagrees between branches, or the rebuilt
            generator does not reproduce the graph (parity above :data:`PARITY_TOLERANCE`).
        FileExistsError: ``cfg.out`` exists and ``cfg.force`` is not set.
        sdk.errors.ModelCorruptError / ModelNotFoundError: a missing or damaged model folder.
    """
    import onnx
    import torch

    from export.onnx_export import OPSET, ExportConfig, _parity_inputs, parity
    from export.switch import SPLIT_NODE
    from sdk.manifest import load_manifest
    from training.model import Generator, GeneratorConfig

    out = Path(cfg.out)
    if out.exists() and not cfg.force:
        raise FileExistsError(f"{out} already exists; pass --force to replace it, or choose another --out")
    manifest = load_manifest(cfg.model_dir)
    if manifest.precision != "fp32" or not manifest.model_file.endswith(".onnx"):
        raise RecoveryError(f"{cfg.model_dir}: expected an fp32 ONNX model (the exporter's output), got {manifest.precision} {manifest.model_file}")
    gcfg_dict = manifest.extra.get("generator")
    if not gcfg_dict:
        raise RecoveryError(f"{cfg.model_dir}/manifest.json has no 'generator' entry (not written by `python -m export onnx`)")
    try:
        gcfg = GeneratorConfig.from_dict(gcfg_dict)
    except (ValueError, TypeError) as e:
        raise RecoveryError(f"{cfg.model_dir} was exported from another generator design ({e}); read it with the chromaforge release that made it") from None
    shipped_model = onnx.load(str(manifest.model_path))
    shipped = _initializers(shipped_model.graph)

    # The probe: distinct values in every parameter (_probe_map) and in the buffers the export folds.
    probe_G = Generator(gcfg)
    log_w_marker = torch.linspace(-1.0, 1.0, len(probe_G.class_log_weights))
    with torch.no_grad():
        probe_G.class_log_weights.copy_(log_w_marker)
    if not any(n.name == SPLIT_NODE for n in shipped_model.graph.node):
        raise RecoveryError(f"{cfg.model_dir} has the graph layout of release 13 or older; read it with that release's chromaforge")
    with tempfile.TemporaryDirectory() as tmp:
        mapping, probe = _probe_map(probe_G, Path(tmp), manifest.primary.opset or OPSET)
    # The read-out's class log-weights are folded as prior_correction * log w.
    folded = (_buffer(probe, shipped, log_w_marker, gcfg.prior_correction, "the prior correction's class weights")
              if gcfg.prior_correction else None)
    class_w = None if folded is None else _class_weights(folded, gcfg.prior_correction)

    G = Generator(gcfg)
    state = {}
    for init, (name, transposed) in sorted(mapping.items()):
        if init not in shipped:
            raise RecoveryError(f"the shipped graph has no weight {init!r} where a probe export of its design has one; "
                                "it was exported by another exporter or torch version than this checkout's")
        value = torch.from_numpy(np.ascontiguousarray(shipped[init].T if transposed else shipped[init]).astype(np.float32))
        if name in state and not torch.equal(state[name], value):
            raise RecoveryError(f"parameter {name} differs between the graph's branches ({init})")
        state[name] = value
    missing = sorted(set(dict(G.named_parameters())) - set(state))
    if missing:
        raise RecoveryError(f"{len(missing)} parameters were not found in the graph: {missing[:6]}")
    G.load_state_dict(state, strict=False)  # buffers (bins, kernels) are the design's own
    if class_w is not None:
        G.class_log_weights.copy_(torch.log(class_w))  # as the export sets it

    cases = _parity_inputs(ExportConfig(checkpoint="", out="", parity_images=cfg.parity_images, work_size=manifest.work_size), gcfg.n_styles)
    report = parity(manifest.model_path, G.eval(), cases)
    if not report["max_abs"] <= PARITY_TOLERANCE:
        raise RecoveryError(f"the rebuilt generator differs from the graph by up to {report['max_abs']:.3g} "
                            f"(worst: {report['worst_case']}); tolerance {PARITY_TOLERANCE:g}")
    log.info("rebuilt %d parameters from %d graph weights; parity %.3g over %d cases",
             len(state), len(mapping), report["max_abs"], report["cases"])

    training = manifest.extra.get("training", {})
    # The colour run's settings the manifest records (the trainer's config, as far as the model says it).
    config = {k: training[k] for k in ("size", "batch", "photos") if training.get(k)}
    config["generator"] = dataclasses.asdict(gcfg)
    sd = {k: v.clone() for k, v in G.state_dict().items()}
    ck = {
        "G": sd,
        "G_ema": {k: v.clone() for k, v in sd.items()},
        "step": training.get("step") or 0,
        "history": [],
        "config": config,
        "generator": dataclasses.asdict(gcfg),
        # Where the weights came from: the model, and its own training provenance (export copies this into the manifest).
        "recovered_from": {"model_dir": str(cfg.model_dir), "name": manifest.name, "sha256": manifest.sha256, "parity": report,
                           "training": training},
    }
    if class_w is not None:
        ck["class_weights"] = class_w
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".tmp")
    torch.save(ck, tmp_out)
    tmp_out.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    from training.config import parse_config

    p, cfg = parse_config(RecoverConfig, argv, "python -m export.from_onnx", __doc__)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = recover(cfg)
    except (RecoveryError, FileExistsError) as e:
        p.error(str(e))
    log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
