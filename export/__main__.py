"""``python -m export onnx --checkpoint CK --out DIR``: export a checkpoint for the SDK."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from export.onnx_export import OPSET, ExportConfig, ExportError, export_onnx


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export", description="Export the chromaforge generator.")
    sub = p.add_subparsers(dest="command", required=True)
    o = sub.add_parser("onnx", help="checkpoint -> model.onnx + manifest.json (checked, simplified, parity-tested)")
    o.add_argument("--checkpoint", required=True, help="last.pt written by `python -m training`")
    o.add_argument("--out", required=True, help="folder for model.onnx and manifest.json")
    o.add_argument("--ema", dest="use_ema", action=argparse.BooleanOptionalAction, default=True, help="export EMA weights")
    o.add_argument("--opset", type=int, default=OPSET)
    o.add_argument("--simplify", action=argparse.BooleanOptionalAction, default=True, help="run onnxslim")
    o.add_argument("--tolerance", type=float, default=1e-4, help="max |ORT - PyTorch| allowed")
    o.add_argument("--parity-images", default="", help="folder of real images for the parity check")
    o.add_argument("--work-size", type=int, default=ExportConfig.work_size)
    o.add_argument("--name", default="chromaforge")
    o.add_argument("--force", action="store_true", help="replace a model already in --out")
    o.add_argument("--style-checkpoint", default="", help="last.pt of a style-only run (--no-colour) to join with --checkpoint's colour")
    o.add_argument("--temperature", type=float, default=0.0,
                   help="colour read-out temperature baked into the graph (0: the checkpoint's; lower = more colourful)")
    sub.add_parser("trt", help="build an FP16 TensorRT engine (not in this release)")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "trt":
        print("error: TensorRT engine export is planned for a later release; use the ONNX model with "
              "backend='onnxruntime-tensorrt' meanwhile", file=sys.stderr)
        return 2
    cfg = ExportConfig(**{k: v for k, v in vars(args).items() if k != "command"})
    try:
        manifest = export_onnx(cfg)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"out": cfg.out, "sha256": manifest["sha256"], "parity": manifest["parity"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
