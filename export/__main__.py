"""``python -m export {onnx,fp16,trt,triton}``: export a checkpoint for the SDK, then derive the GPU artifacts.

Exit status: 0 done, 1 export error (the message says what to fix), 2 TensorRT / a GPU is
missing for ``trt`` (nothing can be built on this machine).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from export.onnx_export import ExportConfig, ExportError, export_onnx
from training.config import config_flags, config_from_args


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export", description="Export the chromaforge generator.")
    sub = p.add_subparsers(dest="command", required=True)
    o = sub.add_parser("onnx", help="checkpoint -> model.onnx + manifest.json (checked, simplified, parity-tested)",
                       description="Export a colour checkpoint (and a style-path checkpoint) to one ONNX model with its manifest.")
    config_flags(o, ExportConfig)

    f = sub.add_parser("fp16", help="FP32 ONNX -> model.fp16.onnx (FP32 inputs/outputs), parity in 8-bit levels, manifest artifact")
    f.add_argument("--model-dir", required=True, help="model folder written by `python -m export onnx`")
    f.add_argument("--out", required=True, help="the same folder (adds the FP16 file) or a new one (copies the model first)")
    f.add_argument("--photos", default="", help="folder of real photos for the parity check (default: the bundled example photo)")
    f.add_argument("--n-photos", type=int, default=8, help="photos used from --photos")
    f.add_argument("--keep-fp32", default="Softmax", help="comma-separated op types kept in FP32 besides the converter's defaults ('' for none)")
    f.add_argument("--readout-fp32", action=argparse.BooleanOptionalAction, default=True,
                   help="keep the read-out (every node after its graph's last convolution) in FP32")
    f.add_argument("--mean-levels", type=float, default=0.5, help="tolerance: mean error in 8-bit levels must stay below this")
    f.add_argument("--min-psnr", type=float, default=40.0, help="tolerance: every case's PSNR against FP32 (dB) must reach this")
    f.add_argument("--max-levels", type=float, default=None,
                   help="tolerance: largest single-pixel error in 8-bit levels must stay below this (default: reported only)")
    f.add_argument("--threads", type=int, default=None, help="CPU threads for the parity runs")
    f.add_argument("--force", action="store_true", help="replace an existing FP16 file or a model in --out")

    t = sub.add_parser("trt", help="build a TensorRT engine for this GPU (+ sidecar JSON and manifest artifact)")
    t.add_argument("--model-dir", required=True, help="model folder written by `python -m export onnx` (and `fp16` for --fp16)")
    t.add_argument("--out", required=True, help="the same folder (adds the engine) or a new one (copies the model first)")
    t.add_argument("--fp16", action="store_true", help="build from the FP16 ONNX (strongly typed FP16 engine)")
    t.add_argument("--shapes", default="dynamic", help="'dynamic' (one profile for every working shape, default) or buckets HxW[,HxW...]")
    t.add_argument("--max-batch", type=int, default=8, help="largest batch the engine accepts")
    t.add_argument("--timing-cache", default="", help="timing cache file to reuse and extend (default: ~/.cache/chromaforge/trt/timing.cache)")
    t.add_argument("--workspace-gb", type=float, default=4.0, help="builder workspace limit in GiB")
    t.add_argument("--force", action="store_true", help="replace an existing engine for this GPU and TensorRT version")

    r = sub.add_parser("triton", help="Triton Inference Server model repository (ONNX, and a TensorRT plan with --engine)")
    r.add_argument("--model-dir", required=True, help="model folder written by `python -m export onnx`")
    r.add_argument("--out", required=True, help="repository folder (tritonserver --model-repository OUT)")
    r.add_argument("--name", default="chromaforge", help="model name prefix: NAME_onnx, NAME_trt")
    r.add_argument("--max-batch", type=int, default=8, help="max_batch_size")
    r.add_argument("--instances", type=int, default=1, help="model instances per device (instance_group count)")
    r.add_argument("--kind", choices=["gpu", "cpu"], default="gpu", help="instance kind")
    r.add_argument("--engine", default="", help="a .plan from `python -m export trt` (adds NAME_trt)")
    r.add_argument("--precision", choices=["fp32", "fp16"], default="fp32", help="which ONNX file NAME_onnx serves")
    r.add_argument("--queue-delay-us", type=int, default=500, help="dynamic batching: longest wait for a fuller batch")
    r.add_argument("--force", action="store_true", help="replace model folders already in --out")
    return p


def _options(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k != "command"}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "onnx":
            cfg = config_from_args(ExportConfig, args)
            manifest = export_onnx(cfg)
            print(json.dumps({"out": cfg.out, "sha256": manifest["sha256"], "parity": manifest["parity"]}, indent=2))
        elif args.command == "fp16":
            from export.fp16 import Fp16Config, export_fp16

            opts = _options(args)
            opts["keep_fp32"] = tuple(s.strip() for s in opts["keep_fp32"].split(",") if s.strip())
            record = export_fp16(Fp16Config(**opts))
            print(json.dumps({"out": args.out, "file": record["file"], "parity_levels": record["parity_levels"]}, indent=2))
        elif args.command == "trt":
            from export.trt_engine import TensorRTUnavailableError, TrtConfig, build_engine, with_shapes

            opts = _options(args)
            shapes = opts.pop("shapes")
            try:
                car = build_engine(with_shapes(TrtConfig(**opts), shapes))
            except TensorRTUnavailableError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            print(json.dumps(car, indent=2))
        else:
            from export.triton import TritonConfig, write_repository

            written = write_repository(TritonConfig(**_options(args)))
            print(json.dumps({"repository": args.out, "models": written}, indent=2))
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
