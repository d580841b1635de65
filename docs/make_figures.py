"""Make docs/samples.jpg: public-domain photos, made grey, colorized and stylized by the bundled model.

    python docs/make_figures.py            # needs the dev extras (scikit-image ships the photos)

Photos (from scikit-image's bundled sample data): NASA's astronaut Eileen Collins (public
domain), coffee (CC0, Rachel Michetti), Chelsea the cat (CC0, Stefan van der Walt), DSCOVR
launch (SpaceX, CC0). Columns: grey input, colorized, the four styles, the original.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageDraw

import sdk


def main(out: str = "docs/samples.jpg", model_dir: str | None = None, tile: int = 192) -> None:
    from skimage import data

    pipe = sdk.load(model_dir)
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    header = ["grey input", "colorized"] + pipe.styles()[1:] + ["original"]
    rows = []
    for rgb in photos:
        grey = np.asarray(Image.fromarray(rgb).convert("L"))
        cells = [np.repeat(grey[:, :, None], 3, 2), pipe.colorize(grey)]
        cells += [pipe.stylize(grey, s) for s in pipe.styles()[1:]]
        cells.append(rgb)
        resized = []
        for c in cells:
            im = Image.fromarray(c)
            s = min(im.size)
            im = im.crop(((im.width - s) // 2, (im.height - s) // 2, (im.width + s) // 2, (im.height + s) // 2))
            resized.append(np.asarray(im.resize((tile, tile), Image.LANCZOS)))
        rows.append(np.concatenate(resized, axis=1))
    grid = Image.fromarray(np.concatenate(rows, axis=0))
    canvas = Image.new("RGB", (grid.width, grid.height + 20), "white")
    canvas.paste(grid, (0, 20))
    draw = ImageDraw.Draw(canvas)
    for i, h in enumerate(header):
        draw.text((i * tile + 6, 4), h, fill="black")
    canvas.save(out, quality=88)


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--out", default="docs/samples.jpg", help="image file to write (.jpg or .png)")
    cli.add_argument("--model-dir", default=None, help="model folder (default: the bundled model)")
    cli.add_argument("--tile", type=int, default=192, help="side of each cell in pixels")
    args = cli.parse_args()
    main(args.out, args.model_dir, args.tile)
