"""Row tiles on a thread pool: how the full-resolution steps (:mod:`sdk.colour`, :mod:`sdk.fusion`)
run in parallel at bounded memory, and the thread counts a caller may ask for.

Everything that touches full-resolution pixels runs in row tiles of ~:data:`TILE_PIXELS`, small
enough for the working set (a dozen float32 tiles) to stay in L2, spread over a thread pool (numpy
releases the GIL). At 4096x3072 this is ~4x faster than Pillow resize + whole-plane numpy, and
peak memory is the output array. ``CHROMAFORGE_FAST_PATH=0`` (:data:`FAST_PATH_ENV`) switches the
steps to their whole-plane, single-thread reference code instead.
"""

from __future__ import annotations

import functools
import numbers
import os
import reprlib
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sdk.errors import InvalidArgumentError

TILE_PIXELS = 96 * 1024
"""Pixels per row tile (rows = this / width, at least one)."""
FAST_PATH_ENV = "CHROMAFORGE_FAST_PATH"
"""Set to ``0`` to use the whole-plane single-thread reference path (the benchmark gate's test does)."""


def fast_path_enabled() -> bool:
    """Whether the tiled, threaded code runs.

    Returns:
        False when ``CHROMAFORGE_FAST_PATH=0``: the full-resolution steps then use the reference path.
    """
    return os.environ.get(FAST_PATH_ENV, "1") != "0"


@functools.lru_cache(maxsize=8)
def _pool(workers: int, pid: int) -> ThreadPoolExecutor:
    # Keyed by process id: a forked child (multiprocessing, gunicorn) inherits the executor but
    # not its threads, and would wait forever on it; the child gets its own pool instead.
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chromaforge-post")


def default_workers() -> int:
    """Threads for full-resolution post-processing when the caller gives none.

    Returns:
        The number of cores, at most 8.
    """
    return max(1, min(8, os.cpu_count() or 1))


def max_threads() -> int:
    """The most threads a caller gets: twice the cores this process may use, at least 8. More only
    adds OS threads (``threads=10**6`` would exhaust memory), never speed.

    Returns:
        The cap :func:`check_threads` applies.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(8, 2 * cores)


def check_threads(threads: int | None, name: str = "threads") -> int | None:
    """A thread count checked: None (the default) or a positive integer, capped at :func:`max_threads`.

    Args:
        threads: the caller's value.
        name: the argument's name in messages.

    Returns:
        None, or the count to use (a larger one is capped, with a RuntimeWarning).

    Raises:
        InvalidArgumentError: not None and not an integer >= 1 (``-1``, ``0``, ``"abc"``, ``2.5``).

    Example:
        >>> check_threads(2)
        2
    """
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise InvalidArgumentError(f"{name} is {reprlib.repr(threads)}; expected an integer >= 1, or None for the default (one per core)")
    cap = max_threads()
    if threads > cap:
        warnings.warn(f"{name}={reprlib.repr(threads)} is more than this machine can use; using {cap}", RuntimeWarning, stacklevel=3)
        return cap
    return int(threads)


def run_tiles(height: int, width: int, work: Callable[[int, int], object], workers: int | None, min_rows: int = 1) -> None:
    """Call ``work(start_row, end_row)`` over the row tiles of a ``height`` x ``width`` image.

    Args:
        height, width: the image's size.
        work: fills rows [start, end) of its output; tiles may run concurrently.
        workers: threads (None: :func:`default_workers`).
        min_rows: the smallest tile height (a halo-bound step wants tall tiles).

    Raises:
        Whatever ``work`` raises (a worker's exception is re-raised here).
    """
    rows = max(min_rows, TILE_PIXELS // max(1, width))
    spans = [(s, min(s + rows, height)) for s in range(0, height, rows)]
    n = workers or default_workers()
    if n == 1 or len(spans) == 1:
        for s, e in spans:
            work(s, e)
        return
    for _ in _pool(n, os.getpid()).map(lambda se: work(*se), spans):  # re-raises a worker's exception
        pass
