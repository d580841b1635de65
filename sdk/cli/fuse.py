"""``chromaforge fuse``: blend stylized images with their originals (files or folders paired by name)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sdk import folder
from sdk.cli import _args
from sdk.errors import InvalidArgumentError
from sdk.fusion import FUSE_METHODS
from sdk.images import FOLDER_SUFFIXES

NAME = "fuse"
EXAMPLES = (
    "chromaforge fuse photo.jpg art.png -o fused.png --method luminance",
    "chromaforge fuse photos/ art/ -o fused/                     # pairs files by relative path, any image suffix",
    "chromaforge fuse night.jpg art.png -o fused.png --method tone --weight 1",
)


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = _args.add_command(sub, NAME, "blend a stylized image with its original", EXAMPLES, parents=[common])
    p.add_argument("content", help="original image (or folder)")
    p.add_argument("stylized", help="stylized image (or folder with the same file names, any image suffix)")
    p.add_argument("--method", default="laplacian", choices=list(FUSE_METHODS), help="how to fuse (default laplacian)")
    p.add_argument("--detail", type=float, default=0.7, help="detail restored by --method laplacian, 0..1 (default 0.7)")
    p.add_argument("--weight", type=float, default=0.5,
                   help="weight of --method weighted / luminance / tone / colour (default 0.5)")
    _args.outputs(p)
    return p


def match_stem(root: Path, rel: Path) -> Path:
    """The file in ``root`` at ``rel`` with any image suffix (stylize writes .png for a .jpg)."""
    exact = root / rel
    if exact.is_file():
        return exact
    for suffix in sorted(FOLDER_SUFFIXES):
        candidate = (root / rel).with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return exact


def run(args: argparse.Namespace) -> int:
    from sdk import fusion

    max_pixels = _args.pixel_limit(args)
    params = fusion.FuseParams(args.method, detail=args.detail, weight=args.weight)
    items = folder.plan([args.content], args.out, args.format)
    base = Path(args.stylized)
    pairs = {it.source: (match_stem(base, it.relative) if base.is_dir() else base) for it in items}
    for src, sty in pairs.items():
        if not sty.is_file():
            raise InvalidArgumentError(f"no stylized image {sty} for {src}; expected a file with the same name (any image suffix) in {base}")
    return _args.run_folder(args, items, folder.each_file(lambda src: fusion.fuse(
        src, pairs[src], params.method, params.detail, params.detail_levels, params.levels, params.weight, workers=args.threads,
        max_pixels=max_pixels)), NAME)
