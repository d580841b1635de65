"""Folder jobs: collect input images, plan where each result goes, skip existing outputs, process
in batches, save atomically, and collect per-file errors instead of stopping at the first.

The CLI runs every folder command through :func:`run`; a distributed engine can hand each worker a
slice of :func:`plan`'s items and call :func:`run` with its own ``process``. Nothing here prints:
progress goes to a callback.

Example:
    >>> items = plan(["old_photos/"], "coloured/", "png")
    >>> summary = run(items, pipeline_process(pipe, "colorize"), batch_size=8)
    >>> summary.as_dict()
    {'written': 12, 'skipped_existing': 0}
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk.errors import ChromaforgeError, InvalidArgumentError, OutputExistsError
from sdk.io import IMAGE_SUFFIXES

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
    """

    written: int = 0
    skipped_existing: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counts; ``failed`` (input and error per file) only when some file failed."""
        d: dict[str, Any] = {"written": self.written, "skipped_existing": self.skipped_existing}
        if self.failed:
            d["failed"] = [{"input": str(p), "error": msg} for p, msg in self.failed]
        return d


def collect_inputs(paths: Iterable[str]) -> list[tuple[Path, Path]]:
    """Expand files and folders (recursively, image suffixes only) into (path, relative path) pairs.

    Raises:
        InvalidArgumentError: a path does not exist, or no image was found.
    """
    paths = list(paths)
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
        raise InvalidArgumentError(f"no images found in {paths}; expected files ending in {sorted(IMAGE_SUFFIXES)}")
    return found


def plan_outputs(inputs: Sequence[tuple[Path, Path]], out: str, fmt: str) -> list[Path]:
    """Where each input's result goes.

    ``out`` naming a file (a known image suffix) with a single input is that file; otherwise
    ``out`` is a folder and each result keeps its relative path with the ``fmt`` suffix.

    Raises:
        OutputExistsError: an output would replace an input.
        InvalidArgumentError: a file ``out`` for several inputs, or two inputs mapping to one output.
    """
    o = Path(out)
    if len(inputs) == 1 and o.suffix.lower() in OUTPUT_FORMATS and not o.is_dir():
        targets = [o]
    else:
        if o.suffix.lower() in OUTPUT_FORMATS and len(inputs) > 1:
            raise InvalidArgumentError(f"-o {out} looks like a file but there are {len(inputs)} inputs; give a folder")
        targets = [o / rel.with_suffix("." + fmt) for _, rel in inputs]
    input_set = {p.resolve() for p, _ in inputs}
    for t in targets:
        if t.resolve() in input_set:
            raise OutputExistsError(f"output {t} is also an input; choose another -o so inputs are never overwritten")
    if len(set(t.resolve() for t in targets)) != len(targets):
        raise InvalidArgumentError("two inputs map to the same output name (e.g. a.jpg and a.png); process them separately")
    return targets


def plan(paths: Iterable[str], out: str, fmt: str = "png") -> list[Item]:
    """:func:`collect_inputs` and :func:`plan_outputs` in one: the items of a folder job."""
    inputs = collect_inputs(paths)
    return [Item(src, rel, dst) for (src, rel), dst in zip(inputs, plan_outputs(inputs, out, fmt))]


def save_atomic(image, target: Path) -> None:
    """Write a PIL image to ``target`` through a temporary file in the same folder, then rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fmt = OUTPUT_FORMATS[target.suffix.lower()]
    if fmt == "JPEG" and image.mode == "RGBA":
        image = image.convert("RGB")
    try:
        image.save(tmp, format=fmt)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


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
        The :class:`Summary`; per-file failures are in ``failed``, the run goes on past them.

    Raises:
        InvalidArgumentError: batch_size or save_threads below 1.
    """
    for name, v in (("batch_size", batch_size), ("save_threads", save_threads)):
        if not isinstance(v, int) or v < 1:
            raise InvalidArgumentError(f"{name} is {v!r}; expected an integer >= 1")
    step = progress or (lambda note: None)
    summary = Summary()
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
            except (OSError, ValueError) as e:
                summary.failed.append((item.source, f"could not write {item.target}: {e}"))
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
