"""Command line: ``chromaforge colorize|stylize|fuse|demo|info`` (also ``python -m sdk``).

Inputs may be files or folders (every image inside, recursively). Outputs never replace an input,
and an existing output is skipped unless ``--overwrite`` is given. Files are written atomically.
Folders run through :mod:`sdk.folder`: images go through the pipeline ``--batch-size`` at a time
(equal working shapes share one generator call), results are saved on background threads, and a
file that cannot be read or written is reported at the end (exit code 2) without stopping the rest.
``colorize`` and ``stylize`` take ``--executor ray`` (:mod:`sdk.ray_executor`: a pool of Ray Data actors,
one model each, ``--actors``, ``--gpus-per-actor``, ``--address``) with the same outputs, skipping,
summary line (plus ``"executor": "ray"`` and ``actors``) and exit codes.

Global options (``--model-dir``, ``--threads``, ``--quiet``...) go before or after the command.
Every error the CLI can foresee, filesystem errors included (read-only folder, full disk, ``-o``
naming a file), ends in ``chromaforge: error: ...`` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sdk import __version__, folder
from sdk.errors import ChromaforgeError, InvalidArgumentError, OutputExistsError
from sdk.folder import collect_inputs, plan_outputs, save_atomic  # noqa: F401  (sdk.cli's older public names)
from sdk.fusion import FUSE_METHODS
from sdk.images import FOLDER_SUFFIXES
from sdk.style_add import StyleAddConfig


class Progress:
    """A minimal progress bar on stderr (the SDK depends on nothing beyond numpy/Pillow/ORT)."""

    def __init__(self, total: int, label: str, enabled: bool = True) -> None:
        self.total, self.label, self.done, self.t0 = total, label, 0, time.perf_counter()
        self.enabled = enabled and total > 1
        self.open = False  # a bar line without its newline is on stderr

    def step(self, note: str = "") -> None:
        self.done += 1
        if not self.enabled:
            return
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(24 * frac)
        rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
        sys.stderr.write(f"\r{self.label} [{bar:<24}] {self.done}/{self.total} {rate:.1f} img/s {note[:40]:<40}")
        self.open = self.done < self.total
        if not self.open:
            sys.stderr.write("\n")
        sys.stderr.flush()

    def close(self) -> None:
        """End the bar's line, so that what follows on stderr (an error) starts on its own."""
        if self.open:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.open = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _match_stem(root: Path, rel: Path) -> Path:
    """The file in ``root`` at ``rel`` with any image suffix (stylize writes .png for a .jpg)."""
    exact = root / rel
    if exact.is_file():
        return exact
    for suffix in sorted(FOLDER_SUFFIXES):
        candidate = (root / rel).with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return exact


def _global_options(p: argparse.ArgumentParser, defaults: bool) -> None:
    """The options accepted before the command and, repeated (``defaults=False``), after it."""
    def d(value):
        return value if defaults else argparse.SUPPRESS  # after the command: only what is given overrides

    p.add_argument("--model-dir", default=d(None), help="model folder (default: the bundled model)")
    p.add_argument("--backend", default=d("auto"), help="auto, tensorrt, onnxruntime-tensorrt, onnxruntime-cuda, onnxruntime-cpu")
    p.add_argument("--precision", choices=["fp32", "fp16"], default=d(None),
                   help="ask the backend for this precision (fp16: the FP16 ONNX or engine; default: the backend's own)")
    p.add_argument("--threads", type=int, default=d(None), help="CPU threads for inference, post-processing and fusion")
    p.add_argument("--batch-size", type=int, default=d(8), help="images per generator call when processing folders")
    p.add_argument("--max-pixels", type=int, default=d(None),
                   help="refuse inputs with more pixels (default 8192*8192 = 67 MP; 0 for no limit)")
    p.add_argument("--quiet", action="store_true", default=d(False), help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chromaforge", description="Colorize grey photos and render them in painting styles.")
    p.add_argument("--version", action="version", version=f"chromaforge {__version__}")
    _global_options(p, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, defaults=False)
    sub = p.add_subparsers(dest="command", required=True)

    def outputs(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-o", "--out", required=True, help="output file (one input) or folder")
        sp.add_argument("--format", default="png", choices=["png", "jpg", "webp"], help="output format for folders")
        sp.add_argument("--overwrite", action="store_true", help="replace outputs that exist (never inputs)")

    def executor(sp: argparse.ArgumentParser) -> None:
        g = sp.add_argument_group("executor", "where the images are processed (the fuse command always runs locally)")
        g.add_argument("--executor", choices=["local", "ray"], default="local",
                       help="local: this process (default); ray: a pool of Ray Data actors, one model each (the ray extra)")
        g.add_argument("--address", default=None,
                       help="--executor ray: 'auto' (the cluster this machine joined), HOST:PORT of the head, or leave out for a local Ray instance")
        g.add_argument("--actors", type=int, default=None, help="--executor ray: actors in the pool, each loads the model once (default 1)")
        g.add_argument("--gpus-per-actor", type=float, default=None,
                       help="--executor ray: GPUs Ray reserves per actor (default 0; 1 with --backend onnxruntime-cuda or auto on GPU nodes)")

    c = sub.add_parser("colorize", help="colorize grey photos", parents=[common])
    c.add_argument("inputs", nargs="+", help="image files or folders")
    c.add_argument("--saturation", type=float, default=1.0, help="factor on the predicted colour, 0..2 (1: the model's; 0: grey)")
    outputs(c)
    executor(c)
    s = sub.add_parser("stylize", help="render photos in a painting style", parents=[common])
    s.add_argument("inputs", nargs="+")
    s.add_argument("--style", default="ukiyoe", help="a style name or a blend: ukiyoe=0.6,rococo=0.4")
    s.add_argument("--strength", type=float, default=1.0)
    s.add_argument("--saturation", type=float, default=1.0, help="factor on the result's colour, 0..2 (1: the model's)")
    s.add_argument("--fuse", choices=list(FUSE_METHODS), default=None, help="fuse the result with the input")
    s.add_argument("--detail", type=float, default=0.7, help="detail restored by --fuse laplacian")
    s.add_argument("--fuse-weight", type=float, default=0.5, help="weight of --fuse weighted / luminance / tone / colour (tone: the photo's share of the tonal layout; colour: of the colour)")
    outputs(s)
    executor(s)
    f = sub.add_parser("fuse", help="blend a stylized image with its original", parents=[common])
    f.add_argument("content", help="original image (or folder)")
    f.add_argument("stylized", help="stylized image (or folder with the same file names)")
    f.add_argument("--method", default="laplacian", choices=list(FUSE_METHODS))
    f.add_argument("--detail", type=float, default=0.7)
    f.add_argument("--weight", type=float, default=0.5)
    outputs(f)
    d = sub.add_parser("demo", help="colorize and stylize the bundled example photo", parents=[common])
    d.add_argument("-o", "--out", default="chromaforge-demo", help="output folder")
    d.add_argument("--overwrite", action="store_true")
    sub.add_parser("info", help="show the model, its styles and the backend auto picks", parents=[common])
    st = sub.add_parser("style", help="add your own painting style to a model (train and export extras)")
    st_sub = st.add_subparsers(dest="style_command", required=True)
    a = st_sub.add_parser("add", parents=[common], help="learn a new style from 1-30 paintings into a new model folder",
                          description="Learn a new style from 1-30 paintings (files or folders): only the new style's normalisation "
                                      "parameters train, so every shipped style and colorization stay bit-identical. Writes a complete "
                                      "model folder for --model-dir. Resumes after an interrupt (state in OUT.partial/).",
                          epilog="example: chromaforge style add fauvism ../shared/datasets/styles_extra/fauvism/train --out my-model")
    a.add_argument("name", help="the new style's name: lower-case letter, then letters, digits, _ or - (e.g. fauvism)")
    a.add_argument("paintings", nargs="+", help="painting files or folders (1-30 paintings; more are thinned evenly)")
    a.add_argument("-o", "--out", required=True, help="the new model folder (must not exist)")
    a.add_argument("--photos", default=StyleAddConfig.photos, help=f"folder of colour photos to learn on (default: {StyleAddConfig.photos})")
    a.add_argument("--vgg", default=StyleAddConfig.vgg, help=f"the VGG19 loss network (default: {StyleAddConfig.vgg})")
    a.add_argument("--steps", type=int, default=StyleAddConfig.steps, help=f"optimisation steps (default {StyleAddConfig.steps}: under 30 min on 2 CPU cores)")
    a.add_argument("--lr", type=float, default=StyleAddConfig.lr, help=f"learning rate (default {StyleAddConfig.lr})")
    a.add_argument("--seed", type=int, default=StyleAddConfig.seed, help="random seed of the photo crops")
    v = sub.add_parser("serve", help="HTTP service with dynamic batching and a browser page (the serve extra)", parents=[common])
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback by default)")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--max-batch", type=int, default=8, help="most images per generator call (1: no batching)")
    v.add_argument("--max-wait-ms", type=float, default=5.0, help="longest an image waits for others to join its batch")
    v.add_argument("--queue", type=int, default=64, help="most images waiting for a batch; more get 503 with Retry-After")
    v.add_argument("--timeout-s", type=float, default=30.0, help="a request not answered by then gets 504")
    v.add_argument("--max-body-mb", type=float, default=64.0, help="refuse larger request bodies (413)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ChromaforgeError as e:
        print(f"chromaforge: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout closed early (`| head`): nothing left to tell
        return 1
    except OSError as e:  # a filesystem error no step above foresaw: still a message, not a traceback
        print(f"chromaforge: error: {e}; check the paths, their permissions and the free disk space", file=sys.stderr)
        return 2


def _run_folder(args: argparse.Namespace, items: list[folder.Item], process: folder.Process | None, label: str,
                runner: Callable[[Callable[[str], None]], folder.Summary] | None = None, **extra) -> int:
    """Run a folder job with a progress bar; print the JSON summary, then each failed file on stderr.

    ``runner`` (given the bar's step) replaces the local :func:`sdk.folder.run` of ``process``: the
    Ray executor reports through the same bar, summary line and exit code.
    """
    with Progress(len(items), label, enabled=not args.quiet) as bar:
        if runner is not None:
            summary = runner(bar.step)
        else:
            summary = folder.run(items, process, overwrite=args.overwrite, batch_size=args.batch_size, progress=bar.step)
    print(json.dumps({**summary.as_dict(), **extra}))
    for src, msg in summary.failed:
        print(f"chromaforge: error: {msg if str(src) in msg else f'{src}: {msg}'}", file=sys.stderr)
    return 2 if summary.failed else 0


def _check_executor(args: argparse.Namespace) -> None:
    """The Ray options only with ``--executor ray`` (their ranges: :func:`sdk.ray_executor.run`)."""
    ray_only = {"--address": getattr(args, "address", None), "--actors": getattr(args, "actors", None),
                "--gpus-per-actor": getattr(args, "gpus_per_actor", None)}
    if getattr(args, "executor", "local") != "ray":
        given = [flag for flag, v in ray_only.items() if v is not None]
        if given:
            raise InvalidArgumentError(f"{', '.join(given)} only apply to --executor ray, got --executor {getattr(args, 'executor', 'local')}; "
                                       "add --executor ray or drop them")


def _run_ray(args: argparse.Namespace, params, max_pixels: int | None) -> int:
    """colorize / stylize on the Ray executor: plan (reads only), then the actor pool (:func:`sdk.ray_executor.run` checks first)."""
    from sdk import ray_executor

    options = dict(model_dir=args.model_dir, backend=args.backend, precision=args.precision, threads=args.threads,
                   actors=1 if args.actors is None else args.actors,
                   gpus_per_actor=0.0 if args.gpus_per_actor is None else args.gpus_per_actor, batch_size=args.batch_size)
    items = folder.plan(args.inputs, args.out, args.format)  # reads only; run() checks the options and Ray before any write
    return _run_folder(args, items, None, args.command, runner=lambda step: ray_executor.run(
        items, args.command, params, overwrite=args.overwrite, max_pixels=max_pixels, address=args.address,
        quiet=args.quiet, progress=step, **options))


def _serve(args: argparse.Namespace, max_pixels: int | None) -> int:
    """``chromaforge serve``: check the options, then run the service until SIGTERM / Ctrl-C."""
    try:
        from sdk.serve.app import ServeConfig, serve
    except ImportError as e:
        from sdk.errors import BackendUnavailableError

        raise BackendUnavailableError(f"chromaforge serve needs the serve extra ({e}); install it with pip install \"chromaforge[serve]\"") from e
    config = ServeConfig(host=args.host, port=args.port, model_dir=args.model_dir, backend=args.backend, threads=args.threads,
                         precision=args.precision, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, queue=args.queue, max_pixels=max_pixels,
                         max_body_mb=args.max_body_mb, timeout_s=args.timeout_s)
    return serve(config)


def _style_add(args: argparse.Namespace) -> int:
    """``chromaforge style add``: a progress line with steps/s and ETA on stderr, the JSON summary on stdout."""
    from sdk.style_add import add_style

    if args.threads is not None and args.threads < 1:
        raise InvalidArgumentError(f"--threads is {args.threads}; expected a positive integer")
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
        return 130
    print(json.dumps(summary))
    return 0


def _params(args: argparse.Namespace):
    """The :class:`sdk.stages.Params` of a colorize / stylize command line."""
    from sdk import fusion, stages

    if args.command == "colorize":
        return stages.Params(saturation=args.saturation)
    fuse = fusion.FuseParams(args.fuse, detail=args.detail, weight=args.fuse_weight) if args.fuse else None
    return stages.Params(stages.parse_style(args.style), args.strength, fuse, args.saturation)


def _dispatch(args: argparse.Namespace) -> int:
    import sdk
    from sdk import fusion, stages

    if args.batch_size < 1:
        raise InvalidArgumentError(f"--batch-size is {args.batch_size}; expected an integer >= 1")
    _check_executor(args)
    if args.max_pixels is not None and args.max_pixels < 0:
        raise InvalidArgumentError(f"--max-pixels is {args.max_pixels}; expected an integer >= 1, or 0 for no limit")
    max_pixels = sdk.images.MAX_PIXELS if args.max_pixels is None else (args.max_pixels or None)
    if args.command == "style":
        return _style_add(args)
    if args.command == "serve":
        return _serve(args, max_pixels)
    if args.command == "fuse":
        params = fusion.FuseParams(args.method, detail=args.detail, weight=args.weight)
        items = folder.plan([args.content], args.out, args.format)
        base = Path(args.stylized)
        pairs = {it.source: (_match_stem(base, it.relative) if base.is_dir() else base) for it in items}
        for src, sty in pairs.items():
            if not sty.is_file():
                raise InvalidArgumentError(f"no stylized image {sty} for {src}; expected a file with the same name (any image suffix) in {base}")
        return _run_folder(args, items, folder.each_file(lambda src: fusion.fuse(
            src, pairs[src], params.method, params.detail, params.detail_levels, params.levels, params.weight, workers=args.threads,
            max_pixels=max_pixels)), "fuse")

    if getattr(args, "executor", "local") == "ray":  # colorize / stylize: the actors load the model
        return _run_ray(args, _params(args), max_pixels)
    pipe = sdk.load(args.model_dir, backend=args.backend, threads=args.threads, max_pixels=max_pixels, precision=args.precision)
    if args.command == "info":
        m = pipe.manifest
        print(json.dumps({"model_dir": str(m.directory), "styles": pipe.styles(), "work_size": m.work_size,
                          "style_work_size": m.stylize_size, "style_pad": m.style_pad,
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
        with Progress(len(jobs), "demo", enabled=not args.quiet) as bar:
            for name, make in jobs.items():
                target = out / name
                if target.exists() and not args.overwrite:
                    raise OutputExistsError(f"{target} exists; pass --overwrite or another -o")
                save_atomic(make(), target)
                bar.step(name)
        print(json.dumps({"out": str(out), "files": sorted(jobs), "backend": pipe.backend_name}))
        return 0

    params = _params(args)
    stages.check_options(args.command, params, pipe.manifest)  # fail before touching any file
    items = folder.plan(args.inputs, args.out, args.format)
    return _run_folder(args, items, folder.pipeline_process(pipe, args.command, params), args.command, backend=pipe.backend_name)
