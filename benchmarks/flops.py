"""FLOPs and bytes per image for the bundled generator, from its ONNX graph (the floor estimate).

Usage: ``python benchmarks/flops.py [--size 256] [--batch 1] [--gpu "NVIDIA H100 80GB HBM3"]`` (needs the
``export`` extra: onnx). ``--gpu`` adds the floor on that GPU from its datasheet peaks (:data:`GPU_PEAKS`).

Counts 2 FLOPs per multiply-accumulate for Conv / ConvTranspose / MatMul / Gemm and one FLOP per
output element for every other node. Bytes: weights read once, plus every intermediate tensor
written once and read once, plus the input and output; in fp32 and fp16. This is the
"each tensor touches memory once" floor; kernels that fuse ops move fewer bytes, and launch
overhead (one launch per node) often dominates a network this small on a GPU.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np


def count(model_path: str, size: int, batch: int) -> dict:
    try:
        import onnx
        from onnx import numpy_helper, shape_inference
    except ImportError as e:  # pragma: no cover - import guard
        raise SystemExit("benchmarks/flops.py needs onnx: pip install 'chromaforge[export]'") from e
    m = onnx.load(model_path)
    # Fix the dynamic axes, then infer every intermediate shape.
    for vi in list(m.graph.input) + list(m.graph.output):
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param in ("N",):
                d.dim_value = batch
            elif d.dim_param in ("H", "W"):
                d.dim_value = size
    m = shape_inference.infer_shapes(m, data_prop=True)
    shapes = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    flops = 0
    unknown = 0
    act_elems = 0
    per_op: dict[str, int] = {}
    for n in m.graph.node:
        out = shapes.get(n.output[0])
        if not out or any(d is None for d in out):
            unknown += 1
            continue
        elems = math.prod(out)
        if n.op_type in ("Conv", "ConvTranspose"):
            w = inits.get(n.input[1])
            wshape = list(w.shape) if w is not None else shapes.get(n.input[1])
            groups = next((a.i for a in n.attribute if a.name == "group"), 1)
            macs_per_out = math.prod(wshape[1:]) if n.op_type == "Conv" else wshape[0] // groups * math.prod(wshape[2:])
            f = 2 * elems * macs_per_out
        elif n.op_type in ("MatMul", "Gemm"):
            a = shapes.get(n.input[0]) or list(inits[n.input[0]].shape)
            f = 2 * elems * a[-1]
        else:
            f = elems
        flops += f
        per_op[n.op_type] = per_op.get(n.op_type, 0) + f
        act_elems += elems
    weights = sum(v.size for v in inits.values())
    io = batch * size * size * (1 + 3) + batch * 5
    return {
        "size": size, "batch": batch, "nodes": len(m.graph.node), "nodes_without_shape": unknown,
        "gflops": flops / 1e9, "gflops_by_op": {k: round(v / 1e9, 4) for k, v in sorted(per_op.items(), key=lambda t: -t[1])},
        "params": int(weights),
        "mbytes_fp32": (4 * (weights + 2 * act_elems + io)) / 1e6,
        "mbytes_fp16": (2 * (weights + 2 * act_elems + io)) / 1e6,
    }


GPU_PEAKS = {
    # name substring: (dense FP16 tensor-core TFLOP/s, FP32 TFLOP/s without tensor cores, memory TB/s);
    # vendor datasheets, no sparsity. Matched against the CUDA device name, first hit wins.
    "H200": (989.0, 67.0, 4.8),
    "H100 PCIe": (756.0, 51.0, 2.0),
    "H100": (989.0, 67.0, 3.35),
    "A100": (312.0, 19.5, 2.04),
    "L4": (121.0, 30.3, 0.3),
    "T4": (65.0, 8.1, 0.32),
}


def gpu_floor(counts: dict, gpu_name: str) -> dict | None:
    """The floor of one generator call on a GPU: max(FLOPs / peak, bytes / bandwidth), in fp32 and fp16.

    Args:
        counts: :func:`count`'s result (for the batch and size measured).
        gpu_name: the CUDA device name (``"NVIDIA H100 80GB HBM3"``).

    Returns:
        Floors in microseconds and which bound sets them; None for a GPU missing from :data:`GPU_PEAKS`.
    """
    key = next((k for k in GPU_PEAKS if k.lower() in gpu_name.lower()), None)
    if key is None:
        return None
    fp16_tflops, fp32_tflops, tbps = GPU_PEAKS[key]
    out = {"gpu": gpu_name, "peaks": {"fp16_tflops": fp16_tflops, "fp32_tflops": fp32_tflops, "tb_per_s": tbps}}
    for prec, tflops in (("fp32", fp32_tflops), ("fp16", fp16_tflops)):
        compute_us = counts["gflops"] * 1e9 / (tflops * 1e12) * 1e6
        memory_us = counts[f"mbytes_{prec}"] * 1e6 / (tbps * 1e12) * 1e6
        out[prec] = {"compute_us": compute_us, "memory_us": memory_us, "floor_us": max(compute_us, memory_us),
                     "bound": "memory" if memory_us > compute_us else "compute"}
    return out


def main(argv: list[str] | None = None) -> int:
    import sdk

    p = argparse.ArgumentParser(prog="python benchmarks/flops.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--gpu", default="", help="also print the floor on this GPU (a CUDA device name, e.g. 'NVIDIA H100 80GB HBM3')")
    a = p.parse_args(argv)
    man = sdk.load().manifest
    counts = count(str(man.model_path), a.size, a.batch)
    if a.gpu:
        counts["gpu_floor"] = gpu_floor(counts, a.gpu) or f"no peak figures for {a.gpu!r}; known: {list(GPU_PEAKS)}"
    print(json.dumps(counts, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
