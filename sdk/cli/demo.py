"""``chromaforge demo``: colorize and stylize the bundled example photo.

Writes ``input_grey.png``, ``colorized.png`` and one PNG per style to ``-o`` (default: a
``chromaforge-demo`` folder in the system's temporary directory, so a source checkout stays clean).
Each file is marked as the demo's own (a PNG text chunk); a rerun replaces those, and refuses to
replace a file of the same name that the demo did not write (unless ``--overwrite``). Nothing else
in the folder is touched.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from sdk.cli import _args
from sdk.errors import OutputExistsError

NAME = "demo"
DEFAULT_OUT = Path(tempfile.gettempdir()) / "chromaforge-demo"
MARK = ("chromaforge", "demo output")
"""PNG text chunk (key, value) in every file the demo writes: how a rerun knows a file is its own."""
EXAMPLES = (
    "chromaforge demo                              # into the temp dir; prints where",
    "chromaforge demo -o chromaforge-demo          # into ./chromaforge-demo",
    "chromaforge demo --model-dir my-model -o my-demo",
)


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = _args.add_command(sub, NAME, "colorize and stylize the bundled example photo", EXAMPLES, parents=[common],
                          description="Colorize and stylize the bundled example photo (NASA's astronaut portrait): the grey "
                                      "input, its colorization and one PNG per style. A rerun replaces the demo's own earlier "
                                      "files and leaves everything else alone.")
    p.add_argument("-o", "--out", default=str(DEFAULT_OUT), metavar="DIR", help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--overwrite", action="store_true",
                   help="also replace files of the demo's names that the demo did not write (its own are always replaced)")
    return p


def is_demo_output(path: Path) -> bool:
    """Whether ``path`` is a PNG an earlier ``chromaforge demo`` wrote (its text chunk says so)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.format == "PNG" and getattr(im, "text", {}).get(MARK[0]) == MARK[1]
    except Exception:  # noqa: BLE001  (unreadable: not ours)
        return False


def save_png(image, target: Path) -> None:
    """Write ``image`` as a marked PNG, atomically (:func:`sdk.folder.save_atomic`)."""
    from PIL.PngImagePlugin import PngInfo

    from sdk.folder import save_atomic

    info = PngInfo()
    info.add_text(*MARK)
    save_atomic(image, target, pnginfo=info)


def run(args: argparse.Namespace) -> int:
    import sdk
    from PIL import Image

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"-o {out} is an existing file; expected a folder for the demo's images: give another -o")
    pipe = sdk.load(args.model_dir, backend=args.backend, threads=args.threads, max_pixels=_args.pixel_limit(args),
                    precision=args.precision)
    example = sdk.example_image()
    grey = Image.open(example).convert("L")
    jobs = {"input_grey.png": lambda: grey, "colorized.png": lambda: pipe.colorize(grey)}
    for style in pipe.styles()[1:]:
        jobs[f"{style}.png"] = lambda s=style: pipe.stylize(example, s)
    foreign = [out / n for n in jobs if (out / n).exists() and not is_demo_output(out / n)]
    if foreign and not args.overwrite:  # before writing anything
        names = ", ".join(p.name for p in foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise OutputExistsError(f"{out} holds {names}, not written by chromaforge demo; pass --overwrite to replace "
                                f"{'them' if len(foreign) > 1 else 'it'}, or another -o")
    replaced = sum((out / n).exists() for n in jobs)
    with _args.Progress(len(jobs), NAME, enabled=not args.quiet) as bar:
        for name, make in jobs.items():
            save_png(make(), out / name)
            bar.step(name)
    print(json.dumps({"out": str(out), "files": sorted(jobs), "replaced": replaced, "backend": pipe.backend_name}))
    print(f"chromaforge: the demo's {len(jobs)} images are in {out}", file=sys.stderr)
    return 0
