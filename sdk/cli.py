"""Command line: ``chromaforge colorize|stylize|fuse|demo|info`` (also ``python -m sdk``).

Inputs may be files or folders (every image inside, recursively). Outputs never replace an input,
and an existing output is skipped unless ``--overwrite`` is given. Files are written atomically.
Folders run through :mod:`sdk.folder`: images go through the pipeline ``--batch-size`` at a time
(equal working shapes share one generator call), results are saved on background threads, and a
file that cannot be read or written is reported at the end (exit code 2) without stopping the rest.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sdk import folder
from sdk.errors import ChromaforgeError, InvalidArgumentError, OutputExistsError
from sdk.folder import collect_inputs, plan_outputs, save_atomic  # noqa: F401  (sdk.cli's older public names)
from sdk.io import IMAGE_SUFFIXES


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


def _match_stem(root: Path, rel: Path) -> Path:
    """The file in ``root`` at ``rel`` with any image suffix (stylize writes .png for a .jpg)."""
    exact = root / rel
    if exact.is_file():
        return exact
    for suffix in sorted(IMAGE_SUFFIXES):
        candidate = (root / rel).with_suffix(suffix)
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
    p.add_argument("--backend", default="auto", help="auto, tensorrt, onnxruntime-tensorrt, onnxruntime-cuda, onnxruntime-cpu")
    p.add_argument("--precision", choices=["fp32", "fp16"], default=None,
                   help="ask the backend for this precision (fp16: the FP16 ONNX or engine; default: the backend's own)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for inference, post-processing and fusion")
    p.add_argument("--batch-size", type=int, default=8, help="images per generator call when processing folders")
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


def _run_folder(args: argparse.Namespace, items: list[folder.Item], process: folder.Process, label: str, **extra) -> int:
    """Run a folder job with a progress bar; print the JSON summary and each failed file."""
    bar = Progress(len(items), label, enabled=not args.quiet)
    summary = folder.run(items, process, overwrite=args.overwrite, batch_size=args.batch_size, progress=bar.step)
    print(json.dumps({**summary.as_dict(), **extra}))
    for src, msg in summary.failed:
        print(f"chromaforge: error: {src}: {msg}", file=sys.stderr)
    return 2 if summary.failed else 0


def _dispatch(args: argparse.Namespace) -> int:
    import sdk
    from sdk import fusion, stages

    if args.batch_size < 1:
        raise InvalidArgumentError(f"--batch-size is {args.batch_size}; expected an integer >= 1")
    if args.command == "fuse":
        params = fusion.FuseParams(args.method, detail=args.detail, weight=args.weight)
        items = folder.plan([args.content], args.out, args.format)
        base = Path(args.stylized)
        pairs = {it.source: (_match_stem(base, it.relative) if base.is_dir() else base) for it in items}
        for src, sty in pairs.items():
            if not sty.is_file():
                raise InvalidArgumentError(f"no stylized image {sty} for {src}; expected a file with the same name (any image suffix) in {base}")
        return _run_folder(args, items, folder.each_file(lambda src: fusion.fuse(
            src, pairs[src], params.method, params.detail, params.detail_levels, params.levels, params.weight, workers=args.threads)), "fuse")

    pipe = sdk.load(args.model_dir, backend=args.backend, threads=args.threads, precision=args.precision)
    if args.command == "info":
        m = pipe.manifest
        print(json.dumps({"model_dir": str(m.directory), "styles": pipe.styles(), "work_size": m.work_size,
                          "precision": pipe.precision, "model_precision": m.precision,
                          "artifacts": [a.to_dict() for a in m.artifacts],
                          "backend": pipe.backend_name, "reason": pipe.backend_reason}, indent=2))
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
        print(json.dumps({"out": str(out), "files": sorted(jobs), "backend": pipe.backend_name}))
        return 0

    if args.command == "colorize":
        params = stages.Params()
    else:
        fuse = fusion.FuseParams(args.fuse, detail=args.detail) if args.fuse else None
        params = stages.Params(_parse_style(args.style), args.strength, fuse)
    stages.check_options(args.command, params, pipe.manifest)  # fail before touching any file
    items = folder.plan(args.inputs, args.out, args.format)
    return _run_folder(args, items, folder.pipeline_process(pipe, args.command, params), args.command, backend=pipe.backend_name)
