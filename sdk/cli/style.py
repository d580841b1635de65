"""``chromaforge style add``: learn a new painting style into a new model folder (train and export extras)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from sdk.cli import _args
from sdk.style_add import StyleAddConfig

NAME = "style"
EXAMPLES = (
    "chromaforge style add fauvism ../shared/datasets/styles_extra/fauvism/train -o my-model",
    "chromaforge style add mine paintings/ -o my-model --steps 400        # a shorter run",
    "chromaforge stylize photo.jpg -o art.png --model-dir my-model --style fauvism",
)


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    st = _args.add_command(sub, NAME, "add your own painting style to a model (train and export extras)", EXAMPLES)
    st_sub = st.add_subparsers(dest="style_command", required=True, metavar="{add}")
    a = _args.add_command(st_sub, "add", "learn a new style from 1-30 paintings into a new model folder", EXAMPLES, parents=[common],
                          description="Learn a new style from 1-30 paintings (files or folders): only the new style's normalisation "
                                      "parameters train, so every shipped style and colorization stay bit-identical. Writes a complete "
                                      "model folder for --model-dir. Resumes after an interrupt (state in OUT.partial/).")
    a.add_argument("name", help="the new style's name: lower-case letter, then letters, digits, _ or - (e.g. fauvism)")
    a.add_argument("paintings", nargs="+", help="painting files or folders (1-30 paintings; more are thinned evenly)")
    a.add_argument("-o", "--out", required=True, metavar="DIR", help="the new model folder (must not exist)")
    a.add_argument("--photos", default=StyleAddConfig.photos, help=f"folder of colour photos to learn on (default: {StyleAddConfig.photos})")
    a.add_argument("--vgg", default=StyleAddConfig.vgg, help=f"the VGG19 loss network (default: {StyleAddConfig.vgg})")
    a.add_argument("--steps", type=int, default=StyleAddConfig.steps,
                   help=f"optimisation steps (default {StyleAddConfig.steps}: under 30 min on 2 CPU cores)")
    a.add_argument("--lr", type=float, default=StyleAddConfig.lr, help=f"learning rate (default {StyleAddConfig.lr})")
    a.add_argument("--seed", type=int, default=StyleAddConfig.seed, help=f"random seed of the photo crops (default {StyleAddConfig.seed})")
    return st


def run(args: argparse.Namespace) -> int:
    """A progress line with steps/s and ETA on stderr, the JSON summary on stdout."""
    from sdk.style_add import add_style

    cfg = StyleAddConfig(name=args.name, paintings=tuple(args.paintings), out=args.out, model_dir=args.model_dir, photos=args.photos,
                         vgg=args.vgg, steps=args.steps, lr=args.lr, seed=args.seed, threads=args.threads or 0)
    t0, first = time.perf_counter(), [None]

    def bar(step: int, total: int, stats: dict) -> None:
        if args.quiet:
            return
        if first[0] is None:
            first[0] = step - 1
        done = step - first[0]
        rate = done / max(time.perf_counter() - t0, 1e-9)
        eta = (total - step) / max(rate, 1e-9)
        frac = step / total
        sys.stderr.write(f"\rstyle add {args.name} [{'#' * int(24 * frac):<24}] {step}/{total} {rate:.2f} steps/s "
                         f"ETA {int(eta // 60)}:{int(eta % 60):02d} style loss {stats.get('style', 0):.3f}  ")
        if step == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    if not args.quiet:
        sys.stderr.write(f"style add {args.name}: reading the base model and the paintings...\n")
    try:
        summary = add_style(cfg, progress=bar)
    except KeyboardInterrupt:
        sys.stderr.write(f"\nstyle add: interrupted; run the same command again to resume from {args.out}.partial\n")
        return _args.INTERRUPTED
    print(json.dumps(summary))
    return 0
