"""Folder jobs: collect input images, plan where each result goes, skip existing outputs, process
in batches, save atomically, and collect per-file errors instead of stopping at the first.

Every file is attempted: a file that cannot be read, processed or written is recorded in
:attr:`Summary.failed` with its reason and the run goes on, so a re-run (existing outputs are
skipped) finishes the rest. Temporary files left by a killed run (``.NAME.PID.tmp`` beside a
target, from a process that no longer exists) are removed when the next run starts.

The CLI runs every folder command through :func:`run`; a distributed executor can hand each worker a
slice of :func:`plan`'s items and call :func:`run` with its own ``process``. Nothing here prints:
progress goes to a callback.

Example:
    >>> items = plan(["old_photos/"], "coloured/", "png")
    >>> summary = run(items, pipeline_process(pipe, "colorize"), batch_size=8)
    >>> summary.as_dict()
    {'written': 12, 'skipped_existing': 0, 'failed': []}
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk.errors import ChromaforgeError, InvalidArgumentError, OutputExistsError, OutputWriteError
from sdk.images import FOLDER_SUFFIXES

OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
"""Output suffix -> Pillow format name."""

Process = Callable[[list[Path]], list[Any]]
"""Turns a batch of input paths into one result each, in order: a PIL image to save, or the
exception that file raised (a per-file error). An exception raised by the call itself (a broken
backend) stops the whole run."""


@dataclass(frozen=True)
class Item:
    """One file of a folder job.

    Attributes:
        source: the input image.
        relative: its path relative to the folder it was found in (its name for a file argument).
        target: where its result goes.
    """

    source: Path
    relative: Path
    target: Path


@dataclass
class Summary:
    """What a :func:`run` did.

    Attributes:
        written: results saved.
        skipped_existing: items whose target existed (and ``overwrite`` was off).
        failed: (input, error message) per file that could not be read, processed or saved.
        stale_removed: temporary files of a killed earlier run that were removed.
    """

    written: int = 0
    skipped_existing: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    stale_removed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the counts, ``failed`` (input and reason per file, empty when none failed),
        and ``stale_removed`` when a killed run's temporary files were cleaned up."""
        d: dict[str, Any] = {"written": self.written, "skipped_existing": self.skipped_existing,
                             "failed": [{"input": str(p), "error": msg} for p, msg in self.failed]}
        if self.stale_removed:
            d["stale_removed"] = self.stale_removed
        return d


def collect_inputs(paths: Iterable[str]) -> list[tuple[Path, Path]]:
    """Expand files and folders into (path, relative path) pairs.

    Folders are read recursively, keeping every file with a raster image suffix
    (:data:`sdk.images.FOLDER_SUFFIXES`, GIF, AVIF and HEIC included: one that does not decode is
    reported as failed, never skipped silently); macOS AppleDouble files (``._name``) are not
    images and are left out. A file named directly is taken whatever its suffix.

    Raises:
        InvalidArgumentError: a path does not exist or cannot be used, or no image was found.
    """
    paths = list(paths)
    found = []
    for raw in paths:
        try:
            p = Path(raw)
            is_dir, is_file = p.is_dir(), p.is_file()
        except (OSError, ValueError) as e:  # name too long, NUL byte
            raise InvalidArgumentError(f"input {raw!r} cannot be used as a path ({e}); expected image files or folders") from e
        if is_dir:
            for f in sorted(p.rglob("*")):
                if f.suffix.lower() in FOLDER_SUFFIXES and not f.name.startswith("._") and f.is_file():
                    found.append((f, f.relative_to(p)))
        elif is_file:
            found.append((p, Path(p.name)))
        else:
            raise InvalidArgumentError(f"input {raw!r} does not exist; expected image files or folders")
    if not found:
        raise InvalidArgumentError(f"no images found in {paths}; expected files ending in {sorted(FOLDER_SUFFIXES)}")
    return found


def plan_outputs(inputs: Sequence[tuple[Path, Path]], out: str, fmt: str) -> list[Path]:
    """Where each input's result goes.

    ``out`` naming a file (a writable image suffix, :data:`OUTPUT_FORMATS`) with a single input is
    that file; otherwise ``out`` is a folder and each result keeps its relative path with the
    ``fmt`` suffix.

    Raises:
        OutputExistsError: an output would replace an input, or ``out`` is an existing file where
            a folder is needed.
        InvalidArgumentError: a file ``out`` for several inputs, an image suffix that cannot be
            written (``-o x.gif``), or two inputs mapping to one output (both are named).
    """
    o = Path(out)
    suffix = o.suffix.lower()
    writable = sorted(OUTPUT_FORMATS)
    if suffix in FOLDER_SUFFIXES and suffix not in OUTPUT_FORMATS and not o.is_dir():
        raise InvalidArgumentError(f"-o {out}: cannot write {suffix} files; expected a file ending in {writable} or a folder")
    if len(inputs) == 1 and suffix in OUTPUT_FORMATS and not o.is_dir():
        targets = [o]
    else:
        if suffix in OUTPUT_FORMATS and len(inputs) > 1:
            raise InvalidArgumentError(f"-o {out} looks like a file but there are {len(inputs)} inputs; give a folder")
        if o.exists() and not o.is_dir():
            raise OutputExistsError(f"-o {out} is an existing file, but the output is a folder here; "
                                    f"give a folder, or for one input a file name ending in {writable}")
        targets = [o / rel.with_suffix("." + fmt) for _, rel in inputs]
    input_set = {p.resolve() for p, _ in inputs}
    for t in targets:
        if t.resolve() in input_set:
            raise OutputExistsError(f"output {t} is also an input; choose another -o so inputs are never overwritten")
    seen: dict[Path, Path] = {}
    for (src, _), t in zip(inputs, targets):
        other = seen.setdefault(t.resolve(), src)
        if other != src:
            raise InvalidArgumentError(f"{other} and {src} both map to the output {t}; process them separately or rename one")
    return targets


def plan(paths: Iterable[str], out: str, fmt: str = "png") -> list[Item]:
    """:func:`collect_inputs` and :func:`plan_outputs` in one: the items of a folder job."""
    inputs = collect_inputs(paths)
    return [Item(src, rel, dst) for (src, rel), dst in zip(inputs, plan_outputs(inputs, out, fmt))]


_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


def _tmp_path(target: Path) -> Path:
    """The temporary file :func:`save_atomic` writes before renaming to ``target``."""
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def save_atomic(image, target: Path) -> None:
    """Write a PIL image to ``target`` through a temporary file in the same folder, then rename.

    Raises:
        OutputWriteError: the folder cannot be created or written (read-only, full disk, a file
            where a folder is needed) or the image cannot be encoded; no temporary file is left.
    """
    tmp = _tmp_path(target)
    fmt = OUTPUT_FORMATS[target.suffix.lower()]
    if fmt == "JPEG" and image.mode == "RGBA":
        image = image.convert("RGB")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(tmp, format=fmt)
        os.replace(tmp, target)
    except (OSError, ValueError) as e:
        raise OutputWriteError(f"could not write {target} ({type(e).__name__}: {e}); expected a writable folder with free space: "
                               "check permissions and disk space, or choose another -o") from e
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (POSIX; elsewhere every pid counts as alive)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def clean_stale(items: Sequence[Item]) -> int:
    """Remove temporary files that a killed run left beside these items' targets.

    Only ``.NAME.PID.tmp`` files whose NAME is one of the targets and whose PID is not a running
    process (nor this one) are removed.

    Returns:
        How many were removed.
    """
    names: dict[Path, set[str]] = {}
    for it in items:
        names.setdefault(it.target.parent, set()).add(it.target.name)
    removed = 0
    for folder_, wanted in names.items():
        try:
            entries = list(os.scandir(folder_))
        except OSError:
            continue
        for entry in entries:
            m = _TMP.match(entry.name)
            if not m or m["name"] not in wanted or int(m["pid"]) == os.getpid() or _alive(int(m["pid"])):
                continue
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass
    return removed


def each_file(fn: Callable[[Path], Any]) -> Process:
    """A :data:`Process` calling ``fn`` on one file at a time; a file's ChromaforgeError is its result."""

    def process(sources: list[Path]) -> list[Any]:
        results: list[Any] = []
        for src in sources:
            try:
                results.append(fn(src))
            except ChromaforgeError as e:
                results.append(e)
        return results

    return process


def pipeline_process(pipeline, task: str, params=None) -> Process:
    """A :data:`Process` running a batch through ``pipeline.process`` (prepare -> infer -> finish):
    equal working shapes share one generator call; unreadable files come back as their error."""

    def process(sources: list[Path]) -> list[Any]:
        return pipeline.process(sources, task, params, names=[str(s) for s in sources], on_error="return")

    return process


def run(items: Sequence[Item], process: Process, overwrite: bool = False, batch_size: int = 8,
        save_threads: int = 2, progress: Callable[[str], None] | None = None) -> Summary:
    """Process the items in batches and save each result atomically to its target.

    Saving (image encoding, mostly) runs on ``save_threads`` background threads while the next
    batch is processed; at most two batches of results wait to be saved.

    Args:
        items: from :func:`plan` (or a slice of them).
        process: turns a batch of sources into results (see :data:`Process`).
        overwrite: replace existing targets (inputs are never targets: :func:`plan_outputs`).
        batch_size: sources per ``process`` call.
        save_threads: threads encoding and writing results.
        progress: called once per item, in the calling thread, with a short note.

    Returns:
        The :class:`Summary`; per-file failures are in ``failed`` (with their reasons), the run
        goes on past them; a killed earlier run's temporary files are removed first.

    Raises:
        InvalidArgumentError: batch_size or save_threads below 1.
    """
    for name, v in (("batch_size", batch_size), ("save_threads", save_threads)):
        if not isinstance(v, int) or v < 1:
            raise InvalidArgumentError(f"{name} is {v!r}; expected an integer >= 1")
    step = progress or (lambda note: None)
    summary = Summary(stale_removed=clean_stale(items))
    pending = []
    for item in items:
        if item.target.exists() and not overwrite:
            summary.skipped_existing += 1
            step(f"skip {item.target.name}")
        else:
            pending.append(item)
    saving: deque[tuple[Item, Future]] = deque()

    def settle(limit: int) -> None:
        while len(saving) > limit:
            item, fut = saving.popleft()
            try:
                fut.result()
            except ChromaforgeError as e:
                summary.failed.append((item.source, str(e)))
                step(f"failed {item.source.name}")
                continue
            summary.written += 1
            step(item.target.name)

    with ThreadPoolExecutor(max_workers=save_threads, thread_name_prefix="chromaforge-save") as pool:
        try:
            for start in range(0, len(pending), batch_size):
                batch = pending[start:start + batch_size]
                for item, result in zip(batch, process([it.source for it in batch])):
                    if isinstance(result, BaseException):
                        summary.failed.append((item.source, str(result)))
                        step(f"failed {item.source.name}")
                    else:
                        saving.append((item, pool.submit(save_atomic, result, item.target)))
                settle(2 * batch_size)
        finally:
            settle(0)
    return summary
