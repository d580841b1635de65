"""The video figures of the docs: a before/after strip of a real film and a stability sheet.

- ``docs/video_strip.jpg``: four frames of ``bw_chaplin`` (a real 1910s black-and-white film), the
  film above, colorized (stabilised) below.
- ``docs/video_stability.jpg``: consecutive frames of a colour clip made grey (rows: original
  colour, per-frame colorization, stabilised), then the frames around a scene cut (two clips
  concatenated: the stabilised colour must not carry the first shot into the second).

Usage:
    python docs/make_video_sheet.py [--video-root ../shared/datasets/video]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DOCS = Path(__file__).resolve().parent


def label(img: Image.Image, text: str) -> Image.Image:
    d = ImageDraw.Draw(img)
    d.rectangle((0, 0, 8 * len(text) + 8, 16), fill=(0, 0, 0))
    d.text((4, 2), text, fill=(255, 255, 255))
    return img


def grid(rows: list[list[np.ndarray]], names: list[str], width: int = 300) -> Image.Image:
    tiles = [[Image.fromarray(f if f.ndim == 3 else np.repeat(f[..., None], 3, -1)) for f in row] for row in rows]
    h = int(round(tiles[0][0].height * width / tiles[0][0].width))
    sheet = Image.new("RGB", (width * len(tiles[0]) + 4 * (len(tiles[0]) - 1), h * len(tiles) + 4 * (len(tiles) - 1)), "white")
    for r, row in enumerate(tiles):
        for c, t in enumerate(row):
            tile = t.resize((width, h), Image.BICUBIC)
            if c == 0:
                label(tile, names[r])
            sheet.paste(tile, (c * (width + 4), r * (h + 4)))
    return sheet


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python docs/make_video_sheet.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--video-root", type=Path, default=DOCS.parent.parent / "shared" / "datasets" / "video")
    args = p.parse_args(argv)
    import sdk
    from sdk import video
    from training.video_eval import grey, read_clip

    pipe = sdk.load()
    film = read_clip(args.video_root / "bw_chaplin", 120)
    out = list(video.frames(pipe, [grey(f) for f in film], "colorize"))
    pick = [10, 40, 80, 119]
    grid([[film[i] for i in pick], [out[i] for i in pick]], ["film (1910s, b/w)", "colorized, stabilised"]).save(
        DOCS / "video_strip.jpg", quality=88)

    clip = read_clip(args.video_root / "davis_bmx-trees", 40)
    greys = [grey(f) for f in clip]
    per = list(video.frames(pipe, greys, "colorize", options=video.VideoOptions(stabilize=False)))
    stab = list(video.frames(pipe, greys, "colorize"))
    span = [20, 21, 22, 23]
    second = read_clip(args.video_root / "davis_blackswan", 4)
    cut_in = greys[-3:] + [grey(f) for f in second]
    cut_out = list(video.frames(pipe, cut_in, "colorize"))
    around = [1, 2, 3, 4]
    rows = [[clip[i] for i in span], [per[i] for i in span], [stab[i] for i in span], [cut_out[i] for i in around]]
    grid(rows, ["original colour", "per frame", "stabilised", "scene cut (stabilised)"], width=260).save(
        DOCS / "video_stability.jpg", quality=88)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
