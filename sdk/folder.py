"""Folder jobs: collect input images, plan where each result goes, skip existing outputs, process
in batches, save atomically, and collect per-file errors instead of stopping at the first.

Every file is attempted: a file that cannot be read, processed or written is recorded in
:attr:`Summary.failed` with its reason and the run goes on, so a re-run (existing outputs are
skipped) finishes the rest. Temporary files left by a killed run (``.NAME.PID.tmp`` beside a
target, from a process that no longer exists) are removed when the next run starts. Ctrl-C stops
submitting work, lets the saves in flight finish and raises :class:`sdk.errors.JobInterrupted`
with the summary of what was done.

One runner, :func:`run_job`, holds all of that (skip-existing and the overwrite rule, stale
temporaries, counting, the failure list, progress, Ctrl-C); an :class:`Executor` only processes
the items it is given and reports each one's outcome. :class:`LocalExecutor` is this process's
pipeline with background save threads (:func:`run`); ``sdk.ray_executor.RayExecutor`` is a pool of
Ray Data actors (``sdk.ray_executor.run``). Nothing here prints: progress goes to a callback.

Example:
    >>> items = plan(["old_photos/"], "coloured/", "png")
    >>> summary = run(items, pipeline_process(pipe, "colorize"), batch_size=8)
    >>> summary.as_dict()
    {'written': 12, 'skipped_existing': 0, 'failed': []}
"""

from __future__ import annotations

import errno
import os
import queue
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk.errors import ChromaforgeError, InvalidArgumentError, JobInterrupted, OutputExistsError, OutputWriteError
from sdk.images import FOLDER_SUFFIXES
from sdk.video import VIDEO_SUFFIXES, is_video

INPUT_SUFFIXES = FOLDER_SUFFIXES | VIDEO_SUFFIXES
"""What a folder job takes from a folder: images and videos (:data:`sdk.video.VIDEO_SUFFIXES`)."""

RAW_VIDEO_SUFFIXES = frozenset({".264", ".h264"})
"""Video inputs without a container: their results are written as ``.mp4``."""

OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
"""Output suffix -> Pillow format name."""

VideoProcess = Callable[[Path, Path], Any]
"""Processes one video file (source, target) and writes the target itself, atomically
(:func:`pipeline_video`); raises its ChromaforgeError for a per-file failure."""

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
    """What a folder job did.

    Attributes:
        written: results saved.
        skipped_existing: items whose target existed (and ``overwrite`` was off).
        failed: (input, error message) per file that could not be read, processed or saved, in
            the items' order.
        stale_removed: temporary files of a killed earlier run that were removed.
        skipped: (path, reason) per entry of an input folder that has an image name but is not a
            regular file (a FIFO, a socket, a broken symbolic link, a link loop): never opened.
        interrupted: the job was stopped by Ctrl-C (:class:`sdk.errors.JobInterrupted` carries it).
    """

    written: int = 0
    skipped_existing: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    stale_removed: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    interrupted: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the counts, ``failed`` (input and reason per file, empty when none failed),
        ``stale_removed`` when a killed run's temporary files were cleaned up, ``skipped`` (input
        and reason per special file) when there were any, and ``"interrupted": true`` after Ctrl-C."""
        d: dict[str, Any] = {"written": self.written, "skipped_existing": self.skipped_existing,
                             "failed": [{"input": str(p), "error": msg} for p, msg in self.failed]}
        if self.stale_removed:
            d["stale_removed"] = self.stale_removed
        if self.skipped:
            d["skipped"] = [{"input": str(p), "reason": why} for p, why in self.skipped]
        if self.interrupted:
            d["interrupted"] = True
        return d


class Plan(list):
    """The items of a folder job (a ``list`` of :class:`Item`), plus what was left out.

    Attributes:
        skipped: (path, reason) per special file found in an input folder (see
            :attr:`Summary.skipped`); :func:`run_job` copies them into its summary. A slice of a
            plan is a plain list: its runs do not repeat them.
    """

    def __init__(self, items: Iterable[Item] = (), skipped: Iterable[tuple[Path, str]] = ()) -> None:
        super().__init__(items)
        self.skipped: list[tuple[Path, str]] = list(skipped)


ONLY_REGULAR = "only regular image files are read"


def describe_special(path: Path) -> str | None:
    """What ``path`` is when it is neither a regular file nor a folder (for a message), else None.

    Never opens the path (opening a FIFO would block until something writes to it).

    Returns:
        ``"a FIFO (named pipe)"``, ``"a socket"``, ``"a character device"``, ``"a block device"``,
        ``"a broken symbolic link (to X)"``, ``"a symbolic link loop"``, ``"a path that cannot be
        examined (reason)"``; None for a regular file, a folder, or a path that does not exist.
    """
    try:
        mode = path.stat().st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop"
        if path.is_symlink():
            try:
                to = os.readlink(path)
            except OSError:
                to = "?"
            return f"a broken symbolic link (to {to})"
        if isinstance(e, FileNotFoundError):
            return None
        return f"a path that cannot be examined ({e.strerror or e})"
    for test, what in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return None


def _collect(paths: Sequence[str]) -> tuple[list[tuple[Path, Path, Path | None]], list[tuple[Path, str]]]:
    """(path, relative path, the folder argument it was found in or None) per input, and (path,
    reason) per special file found in a folder."""
    found: list[tuple[Path, Path, Path | None]] = []
    skipped: list[tuple[Path, str]] = []
    for raw in paths:
        try:
            p = Path(raw)
            is_dir, is_file = p.is_dir(), p.is_file()
        except (OSError, ValueError) as e:  # name too long, NUL byte
            raise InvalidArgumentError(f"input {raw!r} cannot be used as a path ({e}); expected image files or folders") from e
        if is_dir:
            for f in sorted(p.rglob("*")):
                if f.suffix.lower() not in INPUT_SUFFIXES or f.name.startswith("._"):
                    continue
                if f.is_file():
                    found.append((f, f.relative_to(p), p))
                else:
                    what = describe_special(f)
                    if what is not None:  # a folder named like an image is walked, not reported
                        skipped.append((f, f"not a regular file: {what}; {ONLY_REGULAR}"))
        elif is_file:
            found.append((p, Path(p.name), None))
        else:
            what = describe_special(p)
            if what is not None:
                raise InvalidArgumentError(f"input {raw!r} is {what}, not a regular file; {ONLY_REGULAR} (or folders of them): "
                                           "give the image file itself")
            raise InvalidArgumentError(f"input {raw!r} does not exist; expected image files or folders")
    if not found:
        note = (f" ({len(skipped)} with an image name {'is' if len(skipped) == 1 else 'are'} not a regular file; "
                f"{skipped[0][0]}: {skipped[0][1].removeprefix('not a regular file: ')})" if skipped else "")
        raise InvalidArgumentError(f"no images or videos found in {list(paths)}{note}; expected files ending in {sorted(INPUT_SUFFIXES)}")
    return found, skipped


def collect_inputs(paths: Iterable[str]) -> list[tuple[Path, Path]]:
    """Expand files and folders into (path, relative path) pairs.

    Folders are read recursively, keeping every regular file with a raster image suffix
    (:data:`sdk.images.FOLDER_SUFFIXES`, GIF, AVIF and HEIC included: one that does not decode is
    reported as failed, never skipped silently); macOS AppleDouble files (``._name``) are not
    images and are left out. A file named directly is taken whatever its suffix. Special files
    with an image name in a folder are left out here; :func:`plan` lists them
    (:attr:`Plan.skipped`).

    Raises:
        InvalidArgumentError: a path does not exist, is not a regular file or folder (a FIFO: the
            message says what it is), cannot be used, or no image was found.
    """
    return [(src, rel) for src, rel, _ in _collect(list(paths))[0]]


def target_rel(rel: Path, fmt: str) -> Path:
    """The relative output path of the input at ``rel`` in an output folder: an image gets the
    ``fmt`` suffix, a video keeps its own (raw H.264 streams become ``.mp4``)."""
    if is_video(rel):
        return rel.with_suffix(".mp4") if rel.suffix.lower() in RAW_VIDEO_SUFFIXES else rel
    return rel.with_suffix("." + fmt)


def plan_outputs(inputs: Sequence[tuple[Path, Path]], out: str, fmt: str) -> list[Path]:
    """Where each input's result goes.

    ``out`` naming a file (a writable image suffix, :data:`OUTPUT_FORMATS`, or a video suffix for
    a video) with a single input is that file; otherwise ``out`` is a folder and each result keeps
    its relative path (:func:`target_rel`: images with the ``fmt`` suffix, videos their own).

    Raises:
        OutputExistsError: an output would replace an input, or ``out`` is an existing file where
            a folder is needed.
        InvalidArgumentError: a file ``out`` for several inputs, an image suffix that cannot be
            written (``-o x.gif``), an image written as a video or the reverse, or two inputs
            mapping to one output (both are named).
    """
    o = Path(out)
    suffix = o.suffix.lower()
    writable = sorted(OUTPUT_FORMATS)
    file_suffixes = set(OUTPUT_FORMATS) | (VIDEO_SUFFIXES - RAW_VIDEO_SUFFIXES)
    if suffix in FOLDER_SUFFIXES and suffix not in OUTPUT_FORMATS and not o.is_dir():
        raise InvalidArgumentError(f"-o {out}: cannot write {suffix} files; expected a file ending in {writable} or a folder")
    if len(inputs) == 1 and suffix in file_suffixes and not o.is_dir():
        src_video, out_video = is_video(inputs[0][0]), suffix in VIDEO_SUFFIXES
        if src_video != out_video:
            what = "a video" if src_video else "an image"
            want = "a video suffix such as .mp4, .mkv or .webm" if src_video else f"an image suffix {writable}"
            raise InvalidArgumentError(f"-o {out}: the input {inputs[0][0]} is {what}; expected an output file with {want}, or a folder")
        targets = [o]
    else:
        if suffix in file_suffixes and len(inputs) > 1:
            raise InvalidArgumentError(f"-o {out} looks like a file but there are {len(inputs)} inputs; give a folder")
        if o.exists() and not o.is_dir():
            raise OutputExistsError(f"-o {out} is an existing file, but the output is a folder here; "
                                    f"give a folder, or for one input a file name ending in {writable} (a video: .mp4, .mkv...)")
        targets = [o / target_rel(rel, fmt) for _, rel in inputs]
    input_set = {p.resolve() for p, _ in inputs}
    for t in targets:
        if t.resolve() in input_set:
            raise OutputExistsError(f"output {t} is also an input; choose another -o so inputs are never overwritten "
                                    "(a new subfolder of the input folder will do: its results are never taken as inputs)")
    seen: dict[Path, Path] = {}
    for (src, _), t in zip(inputs, targets):
        other = seen.setdefault(t.resolve(), src)
        if other != src:
            raise InvalidArgumentError(f"{other} and {src} both map to the output {t}; process them separately or rename one")
    return targets


def _earlier_outputs(found: Sequence[tuple[Path, Path, Path | None]], out: str, fmt: str) -> set[int]:
    """Indexes of inputs found in a folder that lie inside ``-o`` at a planned output path: results
    of an earlier run of the same job, which are never inputs.

    Applies only where ``-o`` is strictly inside that input folder (``-o`` equal to it is left to
    :func:`plan_outputs`, which refuses what would overwrite an input). Inputs are decided
    shallowest first: an original found inside ``-o`` stays an input, and its own planned output
    is then recognised too.
    """
    o = Path(out)
    try:
        o_res = o.resolve()
        res = [src.resolve() for src, _, _ in found]
        roots = {root: root.resolve() for _, _, root in found if root is not None}
    except (OSError, RuntimeError):  # a path that cannot be resolved: nothing is recognised
        return set()
    under = [i for i, (_, _, root) in enumerate(found)
             if root is not None and roots[root] != o_res and o_res.is_relative_to(roots[root])]
    if (o.suffix.lower() in OUTPUT_FORMATS or is_video(o)) and not o.is_dir():  # -o FILE: an earlier result of the one other input
        same = {i for i in under if res[i] == o_res}
        return same if same and len(found) - len(same) == 1 else set()
    inside = {i for i in under if res[i].is_relative_to(o_res)}
    if not inside:
        return set()
    planned = {(o / target_rel(rel, fmt)).resolve() for i, (_, rel, _) in enumerate(found) if i not in inside}
    earlier: set[int] = set()
    for i in sorted(inside, key=lambda i: len(res[i].parts)):  # a result lies deeper than its source
        if res[i] in planned:
            earlier.add(i)
        else:
            planned.add((o / target_rel(found[i][1], fmt)).resolve())
    return earlier


def plan(paths: Iterable[str], out: str, fmt: str = "png") -> Plan:
    """The items of a folder job: :func:`collect_inputs` and :func:`plan_outputs` in one.

    When ``-o`` lies inside an input folder, files there at a planned output path (an earlier
    run's results) are not inputs, so the job can be re-run to resume it.

    Args:
        paths: image files and folders.
        out: the output folder, or for one input a file with an image suffix.
        fmt: the output suffix in a folder (``"png"``, ``"jpg"``...).

    Returns:
        A :class:`Plan`: the items, and in ``skipped`` each special file found in a folder.

    Raises:
        InvalidArgumentError, OutputExistsError: as :func:`collect_inputs` and :func:`plan_outputs`.
    """
    found, skipped = _collect(list(paths))
    earlier = _earlier_outputs(found, out, fmt)
    inputs = [(src, rel) for i, (src, rel, _) in enumerate(found) if i not in earlier]
    return Plan((Item(src, rel, dst) for (src, rel), dst in zip(inputs, plan_outputs(inputs, out, fmt))), skipped)


_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


def _tmp_path(target: Path) -> Path:
    """The temporary file :func:`save_atomic` writes before renaming to ``target``."""
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def save_atomic(image, target: Path, **save_options: Any) -> None:
    """Write a PIL image to ``target`` through a temporary file in the same folder, then rename.

    Args:
        save_options: passed to ``Image.save`` (e.g. ``pnginfo``).

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
        image.save(tmp, format=fmt, **save_options)
        os.replace(tmp, target)
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise OutputWriteError(f"could not write {target} ({reason}); expected a writable folder with free space: "
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


def pipeline_video(pipeline, task: str, params=None, options=None, progress: Callable[[int, int | None], None] | None = None) -> VideoProcess:
    """A :data:`VideoProcess` running one video through :func:`sdk.video.process` (stabilised,
    streamed, written atomically); the runner has already applied the overwrite rule.

    ``progress`` gets (frames done, frames in the video or None) and, if it has a ``start``
    method, is told each video's name first."""
    from sdk import video

    opts = options if options is not None else video.VideoOptions()

    def process(source: Path, target: Path) -> Any:
        if progress is not None and hasattr(progress, "start"):
            progress.start(source.name)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputWriteError(f"cannot create the output folder {target.parent} ({e.strerror or e}); choose a writable -o") from None
        return video.process(pipeline, source, target, task, params, opts, overwrite=True, progress=progress)

    return process


def pipeline_process(pipeline, task: str, params=None) -> Process:
    """A :data:`Process` running a batch through ``pipeline.process`` (prepare -> infer -> finish):
    equal working shapes share one generator call; unreadable files come back as their error."""

    from sdk import stages

    options = stages.check_options(task, params or stages.Params(), pipeline.manifest)  # once per job

    def process(sources: list[Path]) -> list[Any]:
        return pipeline.process_resolved(sources, options, names=[str(s) for s in sources], on_error="return")

    return process


Outcome = tuple[int, "str | None"]
"""One item done by an :class:`Executor`: (its index in the pending list, None when its result was
written, else the reason it failed)."""


class Executor:
    """How a folder job's pending items get done; :func:`run_job` does everything else.

    Subclasses implement :meth:`results`; the other hooks default to nothing. The runner calls
    :meth:`open`, then (after removing stale temporaries) iterates :meth:`results`; on Ctrl-C it
    calls :meth:`stop`, and in every case :meth:`finish` and :meth:`close` at the end.
    """

    def new_summary(self) -> Summary:
        """An empty summary of this executor's kind (a subclass may add fields)."""
        return Summary()

    def open(self, pending: Sequence[Item]) -> None:
        """Get ready for ``pending`` (start a cluster, check its resources). Nothing under ``-o``
        has been touched yet; raising here stops the job before anything is written."""

    def results(self, pending: Sequence[Item]) -> Iterator[Outcome]:
        """Process and save every pending item; yield one :data:`Outcome` per item as it finishes.

        Raises:
            ChromaforgeError: the job cannot go on (a broken backend): it stops with that error.
        """
        raise NotImplementedError

    def stop(self) -> Iterator[Outcome]:
        """After Ctrl-C: submit nothing new, wait for the saves in flight, yield their outcomes."""
        return iter(())

    def finish(self, summary: Summary) -> None:
        """Add what only this executor knows to ``summary`` (actors, backends)."""

    def close(self) -> None:
        """Release what :meth:`open` and :meth:`results` acquired (threads, a cluster)."""


class LocalExecutor(Executor):
    """This process: ``process`` on batches, finished images saved on background threads.

    At most two batches of results wait to be saved while the next batch is processed.

    Args:
        process: turns a batch of sources into results (see :data:`Process`).
        batch_size: sources per ``process`` call.
        save_threads: threads encoding and writing results.
        video: processes a video item (see :data:`VideoProcess`); None: video items fail with
            the reason.

    Raises:
        InvalidArgumentError: batch_size or save_threads below 1.
    """

    def __init__(self, process: Process, batch_size: int = 8, save_threads: int = 2, video: VideoProcess | None = None) -> None:
        for name, v in (("batch_size", batch_size), ("save_threads", save_threads)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidArgumentError(f"{name} is {v!r}; expected an integer >= 1")
        self.process, self.batch_size, self.save_threads, self.video = process, batch_size, save_threads, video
        self._pool: ThreadPoolExecutor | None = None
        self._done: queue.SimpleQueue = queue.SimpleQueue()  # (index, None | message | exception), put by the savers
        self._in_flight = 0

    def _save(self, index: int, image: Any, target: Path) -> None:
        try:
            save_atomic(image, target)
        except ChromaforgeError as e:
            self._done.put((index, str(e)))
        except BaseException as e:  # not the SDK's: a bug, raised again in the calling thread
            self._done.put((index, e))
        else:
            self._done.put((index, None))

    def _settle(self, limit: int) -> Iterator[Outcome]:
        """Outcomes of finished saves, waiting while more than ``limit`` are in flight."""
        while self._in_flight > limit or not self._done.empty():
            index, outcome = self._done.get()
            self._in_flight -= 1
            if isinstance(outcome, BaseException):
                raise outcome
            yield index, outcome

    def results(self, pending: Sequence[Item]) -> Iterator[Outcome]:
        self._pool = ThreadPoolExecutor(max_workers=self.save_threads, thread_name_prefix="chromaforge-save")
        images = [i for i, it in enumerate(pending) if not is_video(it.source)]
        for start in range(0, len(images), self.batch_size):
            idx = images[start:start + self.batch_size]
            for i, result in zip(idx, self.process([pending[i].source for i in idx])):
                if isinstance(result, BaseException):
                    yield i, str(result)
                else:
                    self._in_flight += 1
                    self._pool.submit(self._save, i, result, pending[i].target)
            yield from self._settle(2 * self.batch_size)
        yield from self._settle(0)
        for i, it in enumerate(pending):  # videos one at a time: each streams through the pipeline on its own threads
            if not is_video(it.source):
                continue
            if self.video is None:
                yield i, "videos are not processed by this job (a video job: sdk.folder.pipeline_video, or the CLI)"
                continue
            try:
                self.video(it.source, it.target)
            except ChromaforgeError as e:
                yield i, str(e)
            else:
                yield i, None

    def stop(self) -> Iterator[Outcome]:
        if self._pool is not None:  # saves not yet started are dropped; running ones finish
            self._pool.shutdown(wait=True, cancel_futures=True)
        while not self._done.empty():
            index, outcome = self._done.get()
            self._in_flight -= 1
            yield index, (f"{type(outcome).__name__}: {outcome}" if isinstance(outcome, BaseException) else outcome)

    def close(self) -> None:
        if self._pool is not None:  # no save thread outlives the run
            self._pool.shutdown(wait=True)


def run_job(items: Sequence[Item], executor: Executor, *, overwrite: bool = False,
            progress: Callable[[str], None] | None = None) -> Summary:
    """Run a folder job's items on ``executor``: the part every executor shares.

    Existing targets are skipped unless ``overwrite``; :meth:`Executor.open` runs before anything
    is touched; then a killed earlier run's temporary files are removed and the rest goes to the
    executor. A file that fails is listed (in the items' order) and the run goes on; an error the
    executor raises stops it. On Ctrl-C (KeyboardInterrupt) no new work is submitted, the saves in
    flight finish (never a half-written file at a final path: writes are atomic), a pending target
    that now exists counts as written (unless ``overwrite``: then only reported ones do), and
    JobInterrupted carries the summary.

    Args:
        items: from :func:`plan` (or a slice of them); a :class:`Plan`'s ``skipped`` go into the summary.
        executor: what processes and saves the items.
        overwrite: replace existing targets (inputs are never targets: :func:`plan_outputs`).
        progress: called once per item, in the calling thread, with a short note.

    Returns:
        The executor's :class:`Summary`.

    Raises:
        JobInterrupted: Ctrl-C; its ``summary`` (``interrupted`` set) says what was done.
        ChromaforgeError: what :meth:`Executor.open` or :meth:`Executor.results` raised.
    """
    step = progress or (lambda note: None)
    todo = [overwrite or not it.target.exists() for it in items]
    pending = [it for it, do in zip(items, todo) if do]
    summary = executor.new_summary()
    summary.skipped = list(getattr(items, "skipped", ()))
    failed: list[tuple[int, Path, str]] = []
    reported: set[int] = set()

    def record(index: int, error: str | None) -> None:
        reported.add(index)
        item = pending[index]
        if error is None:
            summary.written += 1
            step(item.target.name)
        else:
            failed.append((index, item.source, error))
            step(f"failed {item.source.name}")

    outcomes: Iterator[Outcome] | None = None
    try:
        try:
            executor.open(pending)
            summary.stale_removed = clean_stale(items)
            for it, do in zip(items, todo):
                if not do:
                    summary.skipped_existing += 1
                    step(f"skip {it.target.name}")
            outcomes = executor.results(pending)
            for index, error in outcomes:
                record(index, error)
        except KeyboardInterrupt:
            summary.interrupted = True
            try:
                for index, error in executor.stop():
                    record(index, error)
                if not overwrite:  # written but never reported (a Ray actor stopped after its write): whole files
                    for index, item in enumerate(pending):
                        if index not in reported and item.target.exists():
                            record(index, None)
            except KeyboardInterrupt:  # a second Ctrl-C: stop waiting (writes stay atomic)
                pass
        finally:
            try:
                if outcomes is not None:
                    outcomes.close()
                summary.failed = [(src, msg) for _, src, msg in sorted(failed, key=lambda f: f[0])]
                executor.finish(summary)
            finally:
                executor.close()
    except KeyboardInterrupt:  # Ctrl-C while closing: the summary is still what was done
        summary.interrupted = True
    if summary.interrupted:
        raise JobInterrupted(summary)
    return summary


def run(items: Sequence[Item], process: Process, overwrite: bool = False, batch_size: int = 8,
        save_threads: int = 2, progress: Callable[[str], None] | None = None, video: VideoProcess | None = None) -> Summary:
    """Process the items in batches in this process and save each result atomically to its target.

    :func:`run_job` on a :class:`LocalExecutor`: saving (image encoding, mostly) runs on
    ``save_threads`` background threads while the next batch is processed; at most two batches of
    results wait to be saved.

    Args:
        items: from :func:`plan` (or a slice of them).
        process: turns a batch of sources into results (see :data:`Process`).
        overwrite: replace existing targets (inputs are never targets: :func:`plan_outputs`).
        batch_size: sources per ``process`` call.
        save_threads: threads encoding and writing results.
        progress: called once per item, in the calling thread, with a short note.
        video: processes the video items (:func:`pipeline_video`); None: they fail with the reason.

    Returns:
        The :class:`Summary`; per-file failures are in ``failed`` (with their reasons), the run
        goes on past them; a killed earlier run's temporary files are removed first.

    Raises:
        InvalidArgumentError: batch_size or save_threads below 1 (before anything is touched).
        JobInterrupted: Ctrl-C; the saves in flight were finished first, ``summary`` says what was done.
    """
    return run_job(items, LocalExecutor(process, batch_size, save_threads, video), overwrite=overwrite, progress=progress)
