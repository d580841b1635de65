"""Command line: ``chromaforge colorize|stylize|fuse|demo|info`` (also ``python -m sdk``).

Inputs may be files or folders (every image inside, recursively). Outputs never replace an input,
and an existing output is skipped unless ``--overwrite`` is given. Files are written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from sdk.errors import ChromaforgeError, InvalidArgumentError, OutputExistsError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
"""Output suffix -> Pillow format name."""


class Progress:
    """A minimal progress bar on stderr (the SDK depends on nothing beyond numpy/Pillow/ORT)."""

    def __init__(self, total: int, label: str, enabled: bool = True) -> None:
        self.total, self.label, self.done, self.t0 = total, label, 0, time.perf_counter()
        self.enabled = enabled and total > 1

    def step(self, note: str = "") -> None:
        self.done += 1
        if not self.enabled:
            return
        frac = self.done / self.total
        bar = "#" * int(24 * frac)
        rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
        sys.stderr.write(f"\r{self.label} [{bar:<24}] {self.done}/{self.total} {rate:.1f} img/s {note[:40]:<40}")
        if self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def collect_inputs(paths: Iterable[str]) -> list[tuple[Path, Path]]:
    """Expand files and folders into (image path, path relative to its root) pairs."""
    found = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    found.append((f, f.relative_to(p)))
        elif p.is_file():
            found.append((p, Path(p.name)))
        else:
            raise InvalidArgumentError(f"input {raw!r} does not exist; expected image files or folders")
    if not found:
        raise InvalidArgumentError(f"no images found in {list(paths)}; expected files ending in {sorted(IMAGE_SUFFIXES)}")
    return found


def plan_outputs(inputs: list[tuple[Path, Path]], out: str, fmt: str) -> list[Path]:
    """Where each input's result goes.

    ``-o file.png`` for a single input writes that file; otherwise ``-o`` is a folder and each
    result keeps its relative path with the ``fmt`` suffix.
    """
    o = Path(out)
    if len(inputs) == 1 and o.suffix.lower() in _PIL_FORMATS and not o.is_dir():
        targets = [o]
    else:
        if o.suffix.lower() in _PIL_FORMATS and len(inputs) > 1:
            raise InvalidArgumentError(f"-o {out} looks like a file but there are {len(inputs)} inputs; give a folder")
        targets = [o / rel.with_suffix("." + fmt) for _, rel in inputs]
    input_set = {p.resolve() for p, _ in inputs}
    for t in targets:
        if t.resolve() in input_set:
            raise OutputExistsError(f"output {t} is also an input; choose another -o so inputs are never overwritten")
    if len(set(t.resolve() for t in targets)) != len(targets):
        raise InvalidArgumentError("two inputs map to the same output name (e.g. a.jpg and a.png); process them separately")
    return targets


def save_atomic(image, target: Path) -> None:
    """Write a PIL image to ``target`` through a temporary file in the same folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fmt = _PIL_FORMATS[target.suffix.lower()]
    if fmt == "JPEG" and image.mode == "RGBA":
        image = image.convert("RGB")
    try:
        image.save(tmp, format=fmt)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def run_batch(fn: Callable, inputs: list[tuple[Path, Path]], targets: list[Path], overwrite: bool, label: str, quiet: bool) -> dict:
    bar = Progress(len(inputs), label, enabled=not quiet)
    written = skipped = 0
    for (src, _), dst in zip(inputs, targets):
        if dst.exists() and not overwrite:
            skipped += 1
            bar.step(f"skip {dst.name}")
            continue
        save_atomic(fn(src), dst)
        written += 1
        bar.step(dst.name)
    return {"written": written, "skipped_existing": skipped}


def _match_stem(folder: Path, rel: Path) -> Path:
    """The file in ``folder`` at ``rel`` with any image suffix (stylize writes .png for a .jpg)."""
    exact = folder / rel
    if exact.is_file():
        return exact
    for suffix in sorted(IMAGE_SUFFIXES):
        candidate = (folder / rel).with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return exact


def _parse_style(text: str):
    """``ukiyoe`` or ``ukiyoe=0.6,rococo=0.4``."""
    if "=" not in text:
        return text
    blend = {}
    for part in text.split(","):
        name, _, w = part.partition("=")
        try:
            blend[name.strip()] = float(w)
        except ValueError as e:
            raise InvalidArgumentError(f"style weight {part!r} is not NAME=NUMBER; e.g. --style ukiyoe=0.6,rococo=0.4") from e
    return blend


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chromaforge", description="Colorize grey photos and render them in painting styles.")
    p.add_argument("--model-dir", default=None, help="model folder (default: the bundled model)")
    p.add_argument("--backend", default="auto", help="auto, onnxruntime-cpu, onnxruntime-cuda, onnxruntime-tensorrt")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for inference")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    sub = p.add_subparsers(dest="command", required=True)

    def outputs(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-o", "--out", required=True, help="output file (one input) or folder")
        sp.add_argument("--format", default="png", choices=["png", "jpg", "webp"], help="output format for folders")
        sp.add_argument("--overwrite", action="store_true", help="replace outputs that exist (never inputs)")

    c = sub.add_parser("colorize", help="colorize grey photos")
    c.add_argument("inputs", nargs="+", help="image files or folders")
    outputs(c)
    s = sub.add_parser("stylize", help="render photos in a painting style")
    s.add_argument("inputs", nargs="+")
    s.add_argument("--style", default="ukiyoe", help="a style name or a blend: ukiyoe=0.6,rococo=0.4")
    s.add_argument("--strength", type=float, default=1.0)
    s.add_argument("--fuse", choices=["laplacian", "weighted", "luminance"], default=None, help="fuse the result with the input")
    s.add_argument("--detail", type=float, default=0.7, help="detail restored by --fuse laplacian")
    outputs(s)
    f = sub.add_parser("fuse", help="blend a stylized image with its original")
    f.add_argument("content", help="original image (or folder)")
    f.add_argument("stylized", help="stylized image (or folder with the same file names)")
    f.add_argument("--method", default="laplacian", choices=["laplacian", "weighted", "luminance"])
    f.add_argument("--detail", type=float, default=0.7)
    f.add_argument("--weight", type=float, default=0.5)
    outputs(f)
    d = sub.add_parser("demo", help="colorize and stylize the bundled example photo")
    d.add_argument("-o", "--out", default="chromaforge-demo", help="output folder")
    d.add_argument("--overwrite", action="store_true")
    sub.add_parser("info", help="show the model, its styles and the backend auto picks")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ChromaforgeError as e:
        print(f"chromaforge: error: {e}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    import sdk

    if args.command == "fuse":
        inputs = collect_inputs([args.content])
        base = Path(args.stylized)
        pairs = {src: (_match_stem(base, rel) if base.is_dir() else base) for src, rel in inputs}
        for src, sty in pairs.items():
            if not sty.is_file():
                raise InvalidArgumentError(f"no stylized image {sty} for {src}; expected a file with the same name (any image suffix) in {base}")
        targets = plan_outputs(inputs, args.out, args.format)
        summary = run_batch(lambda src: sdk.fuse(src, pairs[src], method=args.method, detail=args.detail, weight=args.weight),
                            inputs, targets, args.overwrite, "fuse", args.quiet)
        print(json.dumps(summary))
        return 0

    pipe = sdk.load(args.model_dir, backend=args.backend, threads=args.threads)
    if args.command == "info":
        m = pipe.manifest
        print(json.dumps({"model_dir": str(m.directory), "styles": pipe.styles(), "work_size": m.work_size,
                          "precision": m.precision, "backend": pipe.backend, "reason": pipe.backend_reason}, indent=2))
        return 0
    if args.command == "demo":
        out = Path(args.out)
        example = sdk.example_image()
        from PIL import Image

        grey = Image.open(example).convert("L")
        jobs = {"input_grey.png": lambda: grey, "colorized.png": lambda: pipe.colorize(grey)}
        for style in pipe.styles()[1:]:
            jobs[f"{style}.png"] = lambda s=style: pipe.stylize(example, s)
        bar = Progress(len(jobs), "demo", enabled=not args.quiet)
        for name, make in jobs.items():
            target = out / name
            if target.exists() and not args.overwrite:
                raise OutputExistsError(f"{target} exists; pass --overwrite or another -o")
            save_atomic(make(), target)
            bar.step(name)
        print(json.dumps({"out": str(out), "files": sorted(jobs), "backend": pipe.backend}))
        return 0

    inputs = collect_inputs(args.inputs)
    targets = plan_outputs(inputs, args.out, args.format)
    if args.command == "colorize":
        fn = pipe.colorize
    else:
        style = _parse_style(args.style)
        pipe.style_vector(style, args.strength)  # fail before touching any file

        def fn(src):
            out = pipe.stylize(src, style, args.strength)
            return pipe.fuse(src, out, method=args.fuse, detail=args.detail) if args.fuse else out

    summary = run_batch(fn, inputs, targets, args.overwrite, args.command, args.quiet)
    print(json.dumps({**summary, "backend": pipe.backend}))
    return 0
