"""``chromaforge colorize``: grey photos (files or folders) to colour."""

from __future__ import annotations

import argparse

from sdk.cli import _args

NAME = "colorize"
EXAMPLES = (
    "chromaforge colorize grandad_1952.jpg -o grandad_colour.png",
    "chromaforge colorize old_photos/ -o coloured/ --format jpg        # folders recurse; reruns skip what exists",
    "chromaforge colorize grey.jpg -o colour.png --saturation 1.1      # more colour",
    "chromaforge colorize old_film.mp4 -o film_colour.mp4              # video: steady colour, audio copied (video extra)",
)


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = _args.add_command(sub, NAME, "colorize grey photos", EXAMPLES, parents=[common])
    p.add_argument("inputs", nargs="+", help="image or video files, or folders (every image and video inside, recursively)")
    p.add_argument("--saturation", type=float, default=1.0,
                   help="factor on the predicted colour, 0..2 (default 1: the model's; 0: grey)")
    _args.outputs(p)
    _args.video(p)
    _args.executor(p)
    return p


def run(args: argparse.Namespace) -> int:
    from sdk import stages

    return _args.run_task(args, NAME, stages.Params(saturation=args.saturation))
