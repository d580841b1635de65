"""FLOPs and bytes per image for the bundled generator, from its ONNX graph (the floor estimate).

Usage: ``python benchmarks/flops.py [--size 256] [--batch 1]`` (needs the ``export`` extra: onnx).

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


def main(argv: list[str] | None = None) -> int:
    import sdk

    p = argparse.ArgumentParser(prog="python benchmarks/flops.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    a = p.parse_args(argv)
    man = sdk.load().manifest
    print(json.dumps(count(str(man.model_path), a.size, a.batch), indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
