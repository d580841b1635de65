"""``chromaforge stylize``: photos rendered in a painting style or a blend of styles."""

from __future__ import annotations

import argparse

from sdk.cli import _args
from sdk.fusion import FUSE_METHODS

NAME = "stylize"
DEFAULT_STYLE = "ukiyoe"
EXAMPLES = (
    "chromaforge stylize photo.jpg -o art.png --style impressionism",
    "chromaforge stylize photo.jpg -o art.png --style ukiyoe=0.6,rococo=0.4 --fuse laplacian --detail 0.8",
    "chromaforge stylize photos/ -o art/ --style rococo --strength 0.7 --fuse colour --fuse-weight 1",
    "chromaforge stylize clip.mp4 -o art.mp4 --style impressionism     # video (video extra)",
)


def style_help(model_dir=None) -> str:
    """``--style``'s help: the style names of a model's manifest (default: the bundled model) and the default.

    Reads only ``manifest.json`` (no checksum): building the parser stays fast, and a missing or
    broken model folder gives a generic text here (the command itself then reports the problem).
    """
    blend = f"a style name or a blend NAME=WEIGHT,... (e.g. {DEFAULT_STYLE}=0.6,rococo=0.4); default {DEFAULT_STYLE}"
    try:
        from sdk.manifest import default_model_dir, load_manifest

        styles = load_manifest(model_dir if model_dir is not None else default_model_dir(), verify=False).styles
    except Exception:  # noqa: BLE001  (help text must never fail the parser)
        return f"{blend}; `chromaforge info` lists the model's styles"
    return f"{blend}. The bundled model's styles: {', '.join(styles)} (another --model-dir: see `chromaforge info`)"


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = _args.add_command(sub, NAME, "render photos in a painting style", EXAMPLES, parents=[common])
    p.add_argument("inputs", nargs="+", help="image files or folders (every image inside, recursively)")
    p.add_argument("--style", default=DEFAULT_STYLE, help=style_help())
    p.add_argument("--strength", type=float, default=1.0,
                   help="how much of the style, 0..1 (default 1; 0: the natural colorization of the same input)")
    p.add_argument("--saturation", type=float, default=1.0, help="factor on the result's colour, 0..2 (default 1: the model's)")
    p.add_argument("--fuse", choices=list(FUSE_METHODS), default=None,
                   help="fuse the result with the input photo (default: no fusion): laplacian restores its fine detail, "
                        "tone its tonal layout, colour its colours")
    p.add_argument("--detail", type=float, default=0.7, help="detail restored by --fuse laplacian, 0..1 (default 0.7)")
    p.add_argument("--fuse-weight", type=float, default=0.5,
                   help="weight of --fuse weighted / luminance / tone / colour (default 0.5; tone: the photo's share of the "
                        "tonal layout; colour: of the colour)")
    _args.outputs(p)
    _args.video(p)
    _args.executor(p)
    return p


def run(args: argparse.Namespace) -> int:
    from sdk import fusion, stages

    fuse = fusion.FuseParams(args.fuse, detail=args.detail, weight=args.fuse_weight) if args.fuse else None
    return _args.run_task(args, NAME, stages.Params(stages.parse_style(args.style), args.strength, fuse, args.saturation))
