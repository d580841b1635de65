"""What the commands share: the global options, output and executor options, the progress bar,
the help layout, and the glue that runs a folder job and reports it."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence

from sdk import folder
from sdk.errors import InvalidArgumentError, JobInterrupted
from sdk.images import MAX_PIXELS

INTERRUPTED = 130
"""Exit code after Ctrl-C (128 + SIGINT), as shells report it."""


# ------------------------------------------------------------------------------------ help
def pixels_text(pixels: int = MAX_PIXELS) -> str:
    """``8192x8192 = 67 MP`` for a square limit, ``50,000,000 = 50 MP`` otherwise."""
    side = math.isqrt(pixels)
    shape = f"{side}x{side}" if side * side == pixels else f"{pixels:,}"
    return f"{shape} = {pixels / 1e6:.0f} MP"


def add_command(sub: argparse._SubParsersAction, name: str, help: str, examples: Sequence[str],
                description: str | None = None, **kwargs) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` ends with example command lines (kept as written)."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    return sub.add_parser(name, help=help, description=description or help[:1].upper() + help[1:] + ".",
                          epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def global_options(p: argparse.ArgumentParser, defaults: bool) -> None:
    """The options accepted before the command and, repeated (``defaults=False``), after it."""
    def d(value):
        return value if defaults else argparse.SUPPRESS  # after the command: only what is given overrides

    p.add_argument("--model-dir", default=d(None), metavar="DIR", help="model folder (default: the bundled model)")
    p.add_argument("--backend", default=d("auto"),
                   help="auto (default), tensorrt, onnxruntime-tensorrt, onnxruntime-cuda or onnxruntime-cpu; "
                        "`chromaforge info` shows what auto picks and why")
    p.add_argument("--precision", choices=["fp32", "fp16"], default=d(None),
                   help="ask the backend for this precision (fp16: the FP16 ONNX or engine; default: the backend's own)")
    p.add_argument("--threads", type=int, default=d(None), metavar="N",
                   help="CPU threads for inference, post-processing and fusion (default: one per core)")
    p.add_argument("--batch-size", type=int, default=d(8), metavar="N", help="images per generator call when processing folders (default 8)")
    p.add_argument("--max-pixels", type=int, default=d(None), metavar="N",
                   help=f"refuse inputs with more pixels (default {pixels_text()}; 0 for no limit)")
    p.add_argument("--quiet", action="store_true", default=d(False), help="no progress bar")


def check_global_options(args: argparse.Namespace) -> None:
    """The global options' ranges, said in the CLI's own terms (flags, not keyword arguments)."""
    if args.batch_size < 1:
        raise InvalidArgumentError(f"--batch-size is {args.batch_size}; expected an integer >= 1 (images per generator call): "
                                   "leave it out for the default 8")
    if args.threads is not None and args.threads < 1:
        raise InvalidArgumentError(f"--threads is {args.threads}; expected an integer >= 1 (CPU threads): "
                                   "leave --threads out for one per core")
    if args.max_pixels is not None and args.max_pixels < 0:
        raise InvalidArgumentError(f"--max-pixels is {args.max_pixels}; expected an integer >= 1, or 0 for no limit "
                                   f"(default {pixels_text()})")


def pixel_limit(args: argparse.Namespace) -> int | None:
    """``--max-pixels`` as the SDK takes it: the default, a number, or None for no limit (0)."""
    return MAX_PIXELS if args.max_pixels is None else (args.max_pixels or None)


def outputs(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("-o", "--out", required=True, metavar="PATH",
                    help="output file (one input) or folder (results keep their relative paths)")
    sp.add_argument("--format", default="png", choices=["png", "jpg", "webp"], help="file format of the results in an output folder (default png)")
    sp.add_argument("--overwrite", action="store_true", help="replace outputs that exist (never inputs); by default they are skipped")


def video(sp: argparse.ArgumentParser) -> None:
    g = sp.add_argument_group("video", "video files (.mp4, .mkv, .mov, .webm...; the video extra) among the inputs")
    g.add_argument("--codec", default="libx264", help="encoder of the output video (default libx264: H.264; libx265, libvpx-vp9...)")
    g.add_argument("--crf", type=int, default=18, help="quality of x264/x265/VP9, 0..63, lower is better and larger (default 18)")
    g.add_argument("--preset", default="veryfast", help="x264/x265 speed preset, ultrafast..veryslow (default veryfast)")
    g.add_argument("--stabilize", action=argparse.BooleanOptionalAction, default=True,
                   help="keep colour steady from frame to frame along the motion (default on; --no-stabilize: frame by frame)")
    g.add_argument("--audio", action=argparse.BooleanOptionalAction, default=True, help="copy the audio streams (default on)")


def video_options(args: argparse.Namespace):
    """:class:`sdk.video.VideoOptions` from the video flags."""
    from sdk.video import VideoOptions

    return VideoOptions(codec=args.codec, crf=args.crf, preset=args.preset, batch=args.batch_size, stabilize=args.stabilize,
                        copy_audio=args.audio)


def executor(sp: argparse.ArgumentParser) -> None:
    g = sp.add_argument_group("executor", "where the images are processed (the fuse command always runs locally)")
    g.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: this process (default); ray: a pool of Ray Data actors, one model each (the ray extra)")
    g.add_argument("--address", default=None,
                   help="--executor ray: 'auto' (the cluster this machine joined), HOST:PORT of the head, or leave out for a local Ray instance")
    g.add_argument("--actors", type=int, default=None, metavar="N",
                   help="--executor ray: actors in the pool, each loads the model once (default 1)")
    g.add_argument("--gpus-per-actor", type=float, default=None, metavar="G",
                   help="--executor ray: GPUs Ray reserves per actor (default 0; 1 with --backend onnxruntime-cuda or auto on GPU nodes)")


def check_executor(args: argparse.Namespace) -> None:
    """The Ray options only with ``--executor ray`` (their ranges: :func:`sdk.ray_executor.run`)."""
    ray_only = {"--address": args.address, "--actors": args.actors, "--gpus-per-actor": args.gpus_per_actor}
    if args.executor != "ray":
        given = [flag for flag, v in ray_only.items() if v is not None]
        if given:
            raise InvalidArgumentError(f"{', '.join(given)} only apply to --executor ray, got --executor {args.executor}; "
                                       "add --executor ray or drop them")


# -------------------------------------------------------------------------------- progress
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


class FrameBar:
    """A video's progress on stderr: frames done, frames per second and the time left."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled, self.t0, self.name = enabled, time.perf_counter(), ""

    def start(self, name: str) -> None:
        self.t0, self.name = time.perf_counter(), name

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled or (done % 5 and done != total):
            return
        fps = done / max(time.perf_counter() - self.t0, 1e-9)
        if total:
            bar = "#" * int(24 * min(done / total, 1.0))
            eta = (total - done) / max(fps, 1e-9)
            line = f"\r{self.name[:32]} [{bar:<24}] {done}/{total} frames {fps:.1f} fps ETA {eta:.0f} s   "
        else:
            line = f"\r{self.name[:32]} {done} frames {fps:.1f} fps   "
        sys.stderr.write(line + ("\n" if done == total else ""))
        sys.stderr.flush()


# ------------------------------------------------------------------------------ folder jobs
def report(summary: folder.Summary, overwrite: bool, interrupted: bool = False, **extra) -> None:
    """The JSON summary on stdout; each failed file, skipped outputs and an interrupt on stderr."""
    d = {**summary.as_dict(), **extra}
    if interrupted:
        d["interrupted"] = True
    print(json.dumps(d), flush=True)
    for src, msg in summary.failed:
        print(f"chromaforge: error: {msg if str(src) in msg else f'{src}: {msg}'}", file=sys.stderr)
    n = summary.skipped_existing
    if n and not overwrite:
        print(f"chromaforge: skipped {n} existing output{'s' if n != 1 else ''} (use --overwrite to replace them)", file=sys.stderr)
    if interrupted:
        print(f"chromaforge: interrupted after {summary.written} written; run the same command again to resume "
              "(finished outputs are skipped)", file=sys.stderr)


def run_folder(args: argparse.Namespace, items: list[folder.Item], process: folder.Process | None, label: str,
               runner: Callable[[Callable[[str], None]], folder.Summary] | None = None, video: folder.VideoProcess | None = None,
               **extra) -> int:
    """Run a folder job with a progress bar and :func:`report` it: 0, 2 if a file failed, 130 after Ctrl-C.

    ``runner`` (given the bar's step) replaces the local :func:`sdk.folder.run` of ``process``: the
    Ray executor reports through the same bar, summary line and exit code.
    """
    try:
        with Progress(len(items), label, enabled=not args.quiet) as bar:
            if runner is not None:
                summary = runner(bar.step)
            else:
                summary = folder.run(items, process, overwrite=args.overwrite, batch_size=args.batch_size, progress=bar.step, video=video)
    except JobInterrupted as e:  # Ctrl-C: the runner finished what was in flight; say what is done
        report(e.summary, args.overwrite, interrupted=True, **extra)
        return INTERRUPTED
    report(summary, args.overwrite, **extra)
    return 2 if summary.failed else 0


def run_task(args: argparse.Namespace, task: str, params) -> int:
    """colorize / stylize over files and folders, on this process or (``--executor ray``) on Ray actors."""
    import sdk
    from sdk import stages

    check_executor(args)
    max_pixels = pixel_limit(args)
    if args.executor == "ray":  # the actors load the model
        return _run_ray(args, task, params, max_pixels)
    pipe = sdk.load(args.model_dir, backend=args.backend, threads=args.threads, max_pixels=max_pixels, precision=args.precision)
    stages.check_options(task, params, pipe.manifest)  # fail before touching any file
    items = folder.plan(args.inputs, args.out, args.format)
    frames = FrameBar(enabled=not args.quiet)
    return run_folder(args, items, folder.pipeline_process(pipe, task, params), task, backend=pipe.backend_name,
                      video=folder.pipeline_video(pipe, task, params, video_options(args), progress=frames))


def _run_ray(args: argparse.Namespace, task: str, params, max_pixels: int | None) -> int:
    """On the Ray executor: plan (reads only), then the actor pool (:func:`sdk.ray_executor.run` checks first)."""
    from sdk import ray_executor

    options = dict(model_dir=args.model_dir, backend=args.backend, precision=args.precision, threads=args.threads,
                   actors=1 if args.actors is None else args.actors,
                   gpus_per_actor=0.0 if args.gpus_per_actor is None else args.gpus_per_actor, batch_size=args.batch_size)
    items = folder.plan(args.inputs, args.out, args.format)  # reads only; run() checks the options and Ray before any write
    return run_folder(args, items, None, task, runner=lambda step: ray_executor.run(
        items, task, params, overwrite=args.overwrite, max_pixels=max_pixels, address=args.address,
        quiet=args.quiet, progress=step, **options))
