"""``chromaforge info``: the model, its styles and the backend auto picks (JSON on stdout)."""

from __future__ import annotations

import argparse
import json

from sdk.cli import _args

NAME = "info"
EXAMPLES = (
    "chromaforge info",
    "chromaforge info --model-dir my-model                 # a model from `chromaforge style add`",
    "chromaforge info --backend onnxruntime-cuda            # can this backend run here, and why not",
)


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return _args.add_command(sub, NAME, "show the model, its styles and the backend auto picks", EXAMPLES, parents=[common])


def run(args: argparse.Namespace) -> int:
    import sdk
    from sdk.describe import describe

    with sdk.load(args.model_dir, backend=args.backend, threads=args.threads, max_pixels=_args.pixel_limit(args),
                  precision=args.precision) as pipe:
        print(json.dumps(describe(pipe), indent=2))
    return 0
