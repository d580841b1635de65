"""Style comparison sheets: photo, previous release, this model and the Gatys optimisation, per style.

    python docs/make_style_sheet.py --prev-rev 244abe9 --gatys-steps 150

Writes ``docs/styles_<style>.jpg`` (six photos from ``photos/val``: portrait, landscape, street,
animal, interior, night; columns: grey photo, previous release, this model, Gatys) and
``docs/styles_crop.jpg`` (a 1024 x 1024 crop of a photo upscaled to 2048 px, each style through
``sdk.stylize`` and ``sdk.fuse(method="laplacian")``). The Gatys column optimises the pixels of
each photo against the same losses and exemplar targets the style path was trained with
(:mod:`training.style_train`): what those losses reach without a network. Its outputs are cached
in ``--gatys-cache`` (they do not depend on the model). Photos are read from ``../shared`` and
only rendered into the sheets, scaled down.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import sdk
from make_comparison import previous_release  # docs/: the previous release's bundled model from git

REPO = Path(__file__).resolve().parents[1]
PHOTOS = {"portrait": "imagenet_sample/n03763968_military_uniform.jpg", "landscape": "bsds500/14037.jpg",
          "street": "imagenet_sample/n04146614_school_bus.jpg", "animal": "imagenet_sample/n02088094_Afghan_hound.jpg",
          "interior": "bsds500/24077.jpg", "night": "imagenet_sample/n03982430_pool_table.jpg"}


def gatys(photo: np.ndarray, styles: list[str], steps: int, cache: Path, key: str) -> dict[str, np.ndarray]:
    """Every style for one photo by pixel optimisation (Adam, lr 0.02, from the grey photo), cached as PNGs."""
    paths = {s: cache / f"{key}_{s}.png" for s in styles}
    if all(p.is_file() for p in paths.values()):
        return {s: np.asarray(Image.open(p).convert("RGB")) for s, p in paths.items()}
    if steps <= 0:  # cached results only: an empty tile where there are none
        return {s: np.full_like(photo, 255) for s in styles}
    import torch
    import torch.nn.functional as F

    from training import losses
    from training.style_train import StyleTrainConfig, exemplar_files, luma_of, read_paintings, style_target

    cfg = StyleTrainConfig(styles=tuple(styles))
    vgg = losses.VGGFeatures(cfg.vgg)
    files = exemplar_files(cfg)
    targets = [style_target(vgg, read_paintings(files[s])) for s in styles]
    rgb = torch.from_numpy(np.array(photo, np.float32)).permute(2, 0, 1)[None] / 255.0
    luma = luma_of(rgb)
    with torch.no_grad():
        content = vgg(luma.expand(-1, 3, -1, -1))[2]
    tgt = [torch.stack([t[k] for t in targets]) for k in range(6)]
    x = luma.expand(len(styles), 3, -1, -1).clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.02)
    for _ in range(steps):
        img = x.clamp(0.0, 1.0)
        feats, coarse = vgg(img), vgg(F.avg_pool2d(img, 2))
        loss = (cfg.w_content * losses.content_loss(feats[2], content) + cfg.w_style * (losses.gram_loss(feats, tgt[:3])
                + cfg.w_coarse * losses.gram_loss(coarse, tgt[3:])))
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = (x.detach().clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    cache.mkdir(parents=True, exist_ok=True)
    for s, img in zip(styles, out):
        Image.fromarray(img).save(paths[s])
    return dict(zip(styles, out))


def _fit(img: np.ndarray, h: int) -> np.ndarray:
    im = Image.fromarray(img)
    return np.asarray(im.resize((round(im.width * h / im.height), h), Image.LANCZOS))


def _sheet(rows: list[list[np.ndarray]], header: list[str], labels: list[str], h: int, path: Path) -> None:
    rows = [[_fit(c, h) for c in row] for row in rows]
    widths = [max(row[i].shape[1] for row in rows) for i in range(len(header))]
    canvas = Image.new("RGB", (sum(widths) + 70, len(rows) * (h + 2) + 18), "white")
    draw = ImageDraw.Draw(canvas)
    x = 70
    for w, name in zip(widths, header):
        draw.text((x + 4, 3), name, fill="black")
        x += w
    for r, (row, label) in enumerate(zip(rows, labels)):
        y = 18 + r * (h + 2)
        draw.text((4, y + h // 2), label, fill="black")
        x = 70
        for w, tile in zip(widths, row):
            canvas.paste(Image.fromarray(tile), (x, y))
            x += w
    canvas.save(path, quality=88)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", default=None, help="model to judge (default: the bundled one)")
    p.add_argument("--prev-rev", default=None, help="git revision whose bundled model is the previous release (column left out if not given)")
    p.add_argument("--photos", default=str(REPO.parent / "shared" / "datasets" / "photos" / "val"))
    p.add_argument("--gatys-steps", type=int, default=150, help="Adam steps of the Gatys column (0: cached results only)")
    p.add_argument("--gatys-cache", default=str(REPO / "runs" / "gatys"))
    p.add_argument("--out", default=str(REPO / "docs"))
    p.add_argument("--height", type=int, default=150, help="tile height in the sheets")
    args = p.parse_args(argv)

    pipe = sdk.load(args.model_dir)
    styles = [s for s in pipe.styles()[1:]]
    prev = None
    if args.prev_rev:
        tmp = Path(tempfile.mkdtemp())
        prev = sdk.load(previous_release(args.prev_rev, tmp))
    photos = {k: np.asarray(Image.open(Path(args.photos) / v).convert("RGB")) for k, v in PHOTOS.items()}
    work = {}
    for k, img in photos.items():  # the working size: what the networks see, and what Gatys optimises
        im = Image.fromarray(img)
        s = 256 / max(im.size)
        work[k] = np.asarray(im.resize((round(im.width * s), round(im.height * s)), Image.BICUBIC))
    g = {k: gatys(work[k], styles, args.gatys_steps, Path(args.gatys_cache), Path(PHOTOS[k]).stem) for k in photos}
    for style in styles:
        header = ["photo (grey in)"] + (["previous release"] if prev and style in prev.styles() else []) + ["this model"] + (["Gatys"] if g else [])
        rows = []
        for k, img in work.items():
            grey = np.repeat(np.asarray(Image.fromarray(img).convert("L"))[..., None], 3, 2)
            row = [grey]
            if prev and style in prev.styles():
                row.append(prev.stylize(img, style))
            row.append(pipe.stylize(img, style))
            if g:
                row.append(g[k][style])
            rows.append(row)
        _sheet(rows, header, list(work), args.height, Path(args.out) / f"styles_{style}.jpg")
    big = Image.fromarray(photos["landscape"]).resize((2048, round(2048 * photos["landscape"].shape[0] / photos["landscape"].shape[1])), Image.BICUBIC)
    big = np.asarray(big)
    y0 = max(0, (big.shape[0] - 1024) // 2)
    tiles = []
    for style in styles:
        art = pipe.stylize(big, style)
        fused = sdk.fuse(big, art, method="laplacian", detail=0.7)
        tiles.append(np.concatenate([art[y0 : y0 + 1024, 512:1536], fused[y0 : y0 + 1024, 512:1536]], axis=1))
    _sheet([[t] for t in tiles], ["stylized (left) and fuse laplacian detail 0.7 (right), 1024 x 1024 crop of a 2048 px photo"],
           styles, 400, Path(args.out) / "styles_crop.jpg")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
