"""Command line: ``chromaforge colorize|stylize|fuse|demo|info|style add|serve`` (also ``python -m sdk``).

Inputs may be files or folders (every image inside, recursively). Outputs never replace an input,
and an existing output is skipped unless ``--overwrite`` is given (stderr says how many were).
Files are written atomically. Folders run through :mod:`sdk.folder`: images go through the
pipeline ``--batch-size`` at a time (equal working shapes share one generator call), results are
saved on background threads, and a file that cannot be read or written is reported at the end
(exit code 2) without stopping the rest. ``colorize`` and ``stylize`` take ``--executor ray``
(:mod:`sdk.ray_executor`: a pool of Ray Data actors, one model each, ``--actors``,
``--gpus-per-actor``, ``--address``) with the same outputs, skipping, summary line (plus
``"executor": "ray"`` and ``actors``) and exit codes. Ctrl-C during a folder job finishes the saves
in flight, prints the summary so far (with ``"interrupted": true``) and exits 130; a rerun resumes.

Layout: one module per command (``colorize``, ``stylize``, ``fuse``, ``demo``, ``info``, ``style``,
``serve``), each with ``NAME``, ``add_parser(sub, common)`` and ``run(args) -> int``, listed in
:data:`COMMANDS`; :mod:`sdk.cli._args` holds what they share. Global options (``--model-dir``,
``--threads``, ``--quiet``...) go before or after the command. Every error the CLI can foresee,
filesystem errors included (read-only folder, full disk, ``-o`` naming a file), ends in
``chromaforge: error: ...`` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from sdk import __version__
from sdk.cli import _args, colorize, demo, fuse, info, serve, style, stylize
from sdk.errors import ChromaforgeError, JobInterrupted

COMMANDS = (colorize, stylize, fuse, demo, info, style, serve)
"""The command modules, in ``--help`` order: each has ``NAME``, ``add_parser(sub, common)`` and ``run(args) -> int``."""

EXAMPLES = (
    "chromaforge demo                                            # the bundled photo, colorized and in every style",
    "chromaforge colorize old_photos/ -o coloured/",
    "chromaforge stylize photo.jpg -o art.png --style ukiyoe=0.6,rococo=0.4 --fuse laplacian",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chromaforge", description="Colorize grey photos and render them in painting styles.",
                                epilog="examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES)
                                + "\n\n`chromaforge COMMAND --help` shows a command's options and examples.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"chromaforge {__version__}", help="print the version and exit")
    _args.global_options(p, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _args.global_options(common, defaults=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub, common).set_defaults(run=command.run)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command line; returns the exit code (0 done, 2 an error or a failed file, 130 Ctrl-C)."""
    args = None
    try:
        args = build_parser().parse_args(argv)
        _args.check_global_options(args)
        return args.run(args)
    except ChromaforgeError as e:
        print(f"chromaforge: error: {e}", file=sys.stderr)
        return 2
    except JobInterrupted as e:  # a runner that did not go through _args.run_folder still says what it did
        _args.report(e.summary, getattr(args, "overwrite", False), interrupted=True)
        return _args.INTERRUPTED
    except KeyboardInterrupt:
        print("chromaforge: interrupted", file=sys.stderr)
        return _args.INTERRUPTED
    except BrokenPipeError:  # stdout closed early (`| head`): nothing left to tell
        return 1
    except OSError as e:  # a filesystem error no step above foresaw: still a message, not a traceback
        reason = e.strerror or str(e)
        where = f" ({e.filename})" if e.filename else ""
        print(f"chromaforge: error: {reason}{where}; check the paths, their permissions and the free disk space", file=sys.stderr)
        return 2
