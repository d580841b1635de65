"""Folder jobs on Ray Data: the same items, naming and guarantees as :mod:`sdk.folder`, run by a
pool of Ray actors that each hold one :class:`sdk.Pipeline`.

The driver runs the job through :func:`sdk.folder.run_job`, the runner the local executor uses
too (skip existing outputs, remove a killed run's temporary files, count, list failures, report
progress, Ctrl-C); :class:`RayExecutor` only does the pending items: they become a Ray Dataset of
plain rows (``index``, ``source``, ``target``: an int and two path strings). Each actor
loads the model once, in its constructor, reads its batch's inputs by path, runs them through
``Pipeline.process`` (equal working shapes share one generator call), writes every result with
:func:`sdk.folder.save_atomic` and returns one status row per input: ``written``, ``failed`` with
the reason (unreadable file, write error: the run goes on), or ``fatal`` (the model or backend
cannot run on that actor: the run stops with that error, typed as on the local executor).

Inputs are read and outputs written *by the actors*, by path: on a multi-node cluster the inputs,
the outputs (and a ``model_dir``, if given) must be on a filesystem every node mounts at the same
path, and every node needs chromaforge installed.

Ray is imported only inside these functions: ``import sdk`` never loads it. Install it with
``pip install "chromaforge[ray]"``.

Example:
    >>> from sdk import folder, ray_executor
    >>> items = folder.plan(["old_photos/"], "coloured/", "png")
    >>> summary = ray_executor.run(items, "colorize", actors=2, batch_size=8)
    >>> summary.as_dict()["written"]
    12
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdk import errors
from sdk.errors import BackendUnavailableError, ChromaforgeError, InvalidArgumentError
from sdk.video import is_video
from sdk.folder import Executor, Item, Outcome, Summary, clean_stale, pipeline_process, run_job, save_atomic
from sdk.images import MAX_PIXELS

if TYPE_CHECKING:
    import numpy as np
    import ray.data

    from sdk.stages import Params

INSTALL = errors.install_hint("ray")
"""How to get Ray Data (the ``ray`` extra)."""

WRITTEN, FAILED, FATAL = "written", "failed", "fatal"
"""Status of an output row: saved; this file failed (the run goes on); the actor cannot run (the run stops)."""


@dataclass
class RaySummary(Summary):
    """A :class:`sdk.folder.Summary` of a Ray run, plus how it ran.

    Attributes:
        actors: actors the job ran on (0 when every output already existed and Ray was not started).
        backends: the backend name(s) the actors picked (``auto`` may pick differently per node).
    """

    actors: int = 0
    backends: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """:meth:`Summary.as_dict` plus ``executor`` ("ray"), ``actors`` and ``backend`` (one name,
        a list when actors differ, None when nothing ran)."""
        backend: Any = self.backends[0] if len(self.backends) == 1 else (sorted(self.backends) or None)
        return {**super().as_dict(), "executor": "ray", "actors": self.actors, "backend": backend}


def require_ray():
    """Import Ray and Ray Data and return the ``ray`` module.

    Raises:
        BackendUnavailableError: Ray Data is not importable; the message names the ``ray`` extra.
    """
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise BackendUnavailableError(f"the ray executor needs Ray Data, which is not importable here ({e}); "
                                      f"install it with {INSTALL}, or use the local executor") from e
    return ray


def _positive_int(name: str, value: Any, flag: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidArgumentError(f"{flag} is {value!r:.60}; expected an integer >= 1 ({name})")
    return int(value)


def check_executor_options(actors: int = 1, gpus_per_actor: float = 0, threads: int | None = None, batch_size: int = 8) -> None:
    """Check the Ray executor's own options (no Ray needed, nothing touched).

    Args:
        actors: actors in the pool, each holding one model (>= 1).
        gpus_per_actor: GPUs Ray reserves per actor (>= 0; fractions share a GPU).
        threads: ONNX Runtime / post-processing threads per actor (None or >= 1).
        batch_size: images per actor call (>= 1).

    Raises:
        InvalidArgumentError: a value out of range; the message says what was expected.

    Example:
        >>> check_executor_options(actors=0)
        Traceback (most recent call last):
        sdk.errors.InvalidArgumentError: --actors is 0; expected an integer >= 1 (actors in the Ray pool, each loads the model once)
    """
    _positive_int("actors in the Ray pool, each loads the model once", actors, "--actors")
    if isinstance(gpus_per_actor, bool) or not isinstance(gpus_per_actor, numbers.Real) or not (
            math.isfinite(gpus_per_actor) and gpus_per_actor >= 0):
        raise InvalidArgumentError(f"--gpus-per-actor is {gpus_per_actor!r:.60}; expected a number >= 0 "
                                   "(0: CPU actors; 1: one GPU per actor; 0.5: two actors share a GPU)")
    if threads is not None:
        _positive_int("threads per actor, or leave it out for cores / actors", threads, "--threads")
    _positive_int("images per actor call", batch_size, "--batch-size")


def check_job(task: str, params: Params | None = None, *, model_dir: str | Path | None = None, backend: str = "auto",
              precision: str | None = None, actors: int = 1, gpus_per_actor: float = 0, threads: int | None = None,
              batch_size: int = 8) -> None:
    """Check a whole Ray job on the driver before any file is touched or Ray is started.

    Reads the model's manifest (without hashing the model file: each actor verifies it when it
    loads), checks the task and its options against it (:func:`sdk.stages.check_options`), the
    backend name and precision, and :func:`check_executor_options`.

    Raises:
        InvalidArgumentError, UnknownStyleError: bad options.
        ModelNotFoundError, ModelCorruptError: the model folder is missing or its manifest invalid.
        BackendUnavailableError: an unknown backend name.
    """
    from sdk import backends, stages
    from sdk.manifest import default_model_dir, load_manifest

    check_executor_options(actors, gpus_per_actor, threads, batch_size)
    manifest = load_manifest(model_dir if model_dir is not None else default_model_dir(), verify=False)
    stages.check_options(task, params if params is not None else stages.Params(), manifest)
    if backend != "auto" and backend not in backends.names():
        raise BackendUnavailableError(f"unknown backend {backend!r}; expected 'auto' or one of {backends.names()}")
    if precision is not None and precision not in backends.PRECISIONS:
        raise InvalidArgumentError(f"precision is {precision!r}; expected one of {backends.PRECISIONS} or None for the backend's default")


class PipelineActor:
    """The callable class Ray Data runs in each actor: one :class:`sdk.Pipeline`, created once.

    Ray Data calls it with a batch ``{"index": int64[n], "source": str[n], "target": str[n]}`` and
    gets back ``index``, ``source``, ``status`` (:data:`WRITTEN`, :data:`FAILED`, :data:`FATAL`),
    ``error`` (the reason, empty when written), ``error_type`` (the error class's name) and
    ``backend`` per row. Only errors that are not the SDK's (a bug) escape and fail the Ray job.

    Args:
        task: ``"colorize"`` or ``"stylize"``.
        params: the job's :class:`sdk.stages.Params`.
        model_dir, backend, threads, max_pixels, precision: as :func:`sdk.load`.
        batch_size: images per generator call (``Pipeline.max_batch``).
        save_threads: threads encoding and writing a batch's results.
    """

    def __init__(self, task: str, params: Params | None, model_dir: str | None, backend: str, threads: int | None,
                 max_pixels: int | None, precision: str | None, batch_size: int, save_threads: int = 2) -> None:
        import sdk

        self.pipeline = None
        self.init_error: ChromaforgeError | None = None
        try:
            self.pipeline = sdk.load(model_dir, backend=backend, threads=threads, max_pixels=max_pixels,
                                     max_batch=batch_size, precision=precision)
        except ChromaforgeError as e:  # reported per row as FATAL: the driver raises it, typed
            self.init_error = e
        else:
            self.process = pipeline_process(self.pipeline, task, params)
        # One pool for the actor's life: encoding and writing a batch's results.
        self.saver = ThreadPoolExecutor(max_workers=max(1, save_threads), thread_name_prefix="chromaforge-save")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np

        sources = [str(s) for s in batch["source"]]
        targets = [Path(str(t)) for t in batch["target"]]
        n = len(sources)
        status, error, kind = [WRITTEN] * n, [""] * n, [""] * n

        def fatal(e: ChromaforgeError) -> None:
            status[:] = [FATAL] * n
            error[:] = [str(e)] * n
            kind[:] = [type(e).__name__] * n

        if self.pipeline is None:
            fatal(self.init_error)
        else:
            try:
                results = self.process([Path(s) for s in sources])
            except ChromaforgeError as e:  # options or backend: nothing in this batch can run
                fatal(e)
            else:
                def save(i: int) -> None:
                    result = results[i]
                    try:
                        if isinstance(result, BaseException):
                            raise result
                        save_atomic(result, targets[i])
                    except ChromaforgeError as e:
                        status[i], error[i], kind[i] = FAILED, str(e), type(e).__name__

                list(self.saver.map(save, range(n)))
        backend = self.pipeline.backend_name if self.pipeline is not None else ""
        return {"index": np.asarray(batch["index"], dtype=np.int64), "source": np.array(sources, dtype=object),
                "status": np.array(status, dtype=object), "error": np.array(error, dtype=object),
                "error_type": np.array(kind, dtype=object), "backend": np.array([backend] * n, dtype=object)}


def _compute_args(ray_module, actors: int) -> dict[str, Any]:
    """A fixed pool of ``actors`` for ``map_batches``: ``compute=ActorPoolStrategy(size=n)`` on Ray
    >= 2.51, where ``concurrency`` is deprecated; ``concurrency=n`` before, where ``compute`` was."""
    try:
        major, minor = (int(x) for x in ray_module.__version__.split(".")[:2])
    except ValueError:
        major, minor = 99, 0
    if (major, minor) >= (2, 51):
        return {"compute": ray_module.data.ActorPoolStrategy(size=actors)}
    return {"concurrency": actors}


def default_threads(actors: int, cpus: float | None = None) -> int:
    """Threads per actor when none are given: the CPUs (``cpus``, else this machine's cores)
    shared by the actors, at least 1."""
    total = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, int(total // actors))


def build_dataset(items: Sequence[Item], task: str, params: Params | None = None, *, model_dir: str | Path | None = None,
                  backend: str = "auto", threads: int | None = None, actors: int = 1, gpus_per_actor: float = 0,
                  cpus_per_actor: float | None = None, batch_size: int = 8, max_pixels: int | None = MAX_PIXELS,
                  precision: str | None = None, save_threads: int = 2) -> ray.data.Dataset:
    """The Ray Dataset of a folder job, not yet executed: rows -> ``map_batches(PipelineActor)``.

    Every item is processed and written (there is no skip here; :func:`run` filters existing
    outputs first). Iterating the result (``iter_rows``, ``take_all``) runs the job; each output
    row is one input's status (see :class:`PipelineActor`). Creating the input dataset starts Ray
    with its defaults if it is not running: call ``ray.init`` (or :func:`connect`) first to choose.

    Args:
        items: from :func:`sdk.folder.plan` (their targets are written, existing or not).
        task, params: as ``Pipeline.process``.
        model_dir, backend, threads, max_pixels, precision: as :func:`sdk.load`, per actor
            (``threads`` None: :func:`default_threads` of this machine's cores).
        actors: size of the fixed actor pool; each loads the model once.
        gpus_per_actor: Ray ``num_gpus`` per actor (0: CPU only); with a GPU, pick the backend
            with ``backend`` (``auto`` prefers TensorRT, then CUDA).
        cpus_per_actor: Ray ``num_cpus`` per actor (None: ``threads``).
        batch_size: rows per actor call, and images per generator call.
        save_threads: threads per actor encoding and writing results.

    Returns:
        A lazy ``ray.data.Dataset`` with columns ``index``, ``source``, ``status``, ``error``,
        ``error_type``, ``backend``.

    Raises:
        BackendUnavailableError: Ray Data is not installed.
        InvalidArgumentError: ``actors``, ``gpus_per_actor``, ``threads`` or ``batch_size`` out of range.

    Example:
        >>> ds = build_dataset(folder.plan(["in/"], "out/"), "stylize", Params("ukiyoe"), actors=2)
        >>> [r["status"] for r in ds.iter_rows()]
        ['written', 'written', 'failed']
    """
    check_executor_options(actors, gpus_per_actor, threads, batch_size)
    ray = require_ray()
    threads = threads if threads is not None else default_threads(actors)
    rows = [{"index": i, "source": str(it.source), "target": str(it.target)} for i, it in enumerate(items)]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / batch_size)))
    return ds.map_batches(
        PipelineActor, batch_size=batch_size, batch_format="numpy",
        fn_constructor_kwargs=dict(task=task, params=params, model_dir=None if model_dir is None else str(model_dir), backend=backend,
                                   threads=threads, max_pixels=max_pixels, precision=precision, batch_size=batch_size,
                                   save_threads=save_threads),
        num_cpus=float(cpus_per_actor if cpus_per_actor is not None else threads), num_gpus=gpus_per_actor or None,
        **_compute_args(ray, actors))


def connect(address: str | None = None, *, quiet: bool = False) -> bool:
    """Start a local Ray instance, or connect to a cluster, unless Ray is already initialised.

    A local instance gets this machine's cores (``num_cpus=os.cpu_count()``), no dashboard, and
    keeps the workers' output in its log folder (``log_to_driver=False``: per-file errors come
    back as rows, not as log lines).

    Args:
        address: None for a new local instance; ``"auto"`` for the cluster this machine joined
            (``ray start``); ``"HOST:PORT"`` (the head's GCS address) or ``"ray://HOST:10001"``.
        quiet: Ray's own Python logging at ERROR instead of WARNING.

    Returns:
        True if this call started or connected Ray (then call ``ray.shutdown()`` when done),
        False if Ray was already initialised (its settings are kept, ``address`` is ignored).

    Raises:
        BackendUnavailableError: Ray is not installed, or the cluster cannot be reached.
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    local = {"num_cpus": os.cpu_count() or 1} if address is None else {}
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR if quiet else logging.WARNING, **local)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise BackendUnavailableError(f"could not start or reach Ray at address {address!r} ({type(e).__name__}: {e}); "
                                      "expected a running cluster (`ray start --head` on the head node) for 'auto' or HOST:PORT, "
                                      "or no --address for a local instance") from e
    return True


class _HideNotice(logging.Filter):
    """Drops Ray Data's notice that its progress bars are off (we show our own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Progress bars")


@contextmanager
def _quiet_data(quiet: bool) -> Iterator[None]:
    """Ray Data's progress bars and start/finish notices off, its log at WARNING (ERROR if
    quiet), for the duration of one run; the caller's settings are restored after."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = {k: getattr(ctx, k) for k in ("enable_progress_bars", "print_on_execution_start") if hasattr(ctx, k)}
    log = logging.getLogger("ray.data")
    level, hide = log.level, _HideNotice()
    for k in saved:
        setattr(ctx, k, False)
    log.setLevel(logging.ERROR if quiet else logging.WARNING)
    log.addFilter(hide)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(ctx, k, v)
        log.setLevel(level)
        log.removeFilter(hide)


class _RayPrintsToStderr:
    """``sys.stdout`` while a Ray run is open: what Ray's own driver threads print goes to stderr,
    every other thread's writes to the real stdout.

    Ray's driver prints the raylet's messages ("(raylet) WARNING: 4 PYTHON worker processes have
    been started...", a worker killed for memory) to ``sys.stdout`` from its
    ``ray_listen_error_messages`` thread, whatever ``log_to_driver`` says (``log_to_driver=False``
    only stops the workers' output), and ``ray.init`` has no option for it. Scripts parse the
    CLI's stdout (one JSON summary line), so those lines must not land there.
    """

    def __init__(self, out: Any, err: Any) -> None:
        self._out, self._err = out, err

    def _target(self) -> Any:
        return self._err if threading.current_thread().name.startswith("ray_") else self._out

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        for stream in (self._out, self._err):
            with contextlib.suppress(Exception):
                stream.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno...: the real stdout's
        return getattr(self._out, name)


def _typed(kind: str, message: str) -> ChromaforgeError:
    """The SDK error class named ``kind`` (ChromaforgeError if unknown), built from ``message``."""
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, ChromaforgeError)):
        cls = ChromaforgeError
    return cls(message)


class RayExecutor(Executor):
    """The :class:`sdk.folder.Executor` of a Ray job: a pool of :class:`PipelineActor` over the pending items.

    :meth:`open` starts or joins Ray (:func:`connect`) and checks its GPUs only when something is
    pending; :meth:`results` runs :func:`build_dataset` and turns each status row into an
    outcome (a ``fatal`` row raises the actor's error, typed); :meth:`stop` (Ctrl-C) stops the
    pool's remaining work (each actor's writes are atomic: a file is whole or absent);
    :meth:`close` shuts Ray down if :meth:`open` started it, and removes temporary files its
    stopped actors left. From :meth:`open` to :meth:`close`, what Ray prints goes to stderr, never
    to stdout (:class:`_RayPrintsToStderr`): stdout is left to the caller (the CLI's JSON summary).

    Args:
        task, params, model_dir, backend, threads, actors, gpus_per_actor, batch_size, max_pixels,
            precision, address, quiet: as :func:`run`.
    """

    def __init__(self, task: str, params: Params | None = None, *, model_dir: str | Path | None = None, backend: str = "auto",
                 threads: int | None = None, actors: int = 1, gpus_per_actor: float = 0, batch_size: int = 8,
                 max_pixels: int | None = MAX_PIXELS, precision: str | None = None, address: str | None = None,
                 quiet: bool = False) -> None:
        check_executor_options(actors, gpus_per_actor, threads, batch_size)
        self.task, self.params, self.model_dir, self.backend, self.threads = task, params, model_dir, backend, threads
        self.actors, self.gpus_per_actor, self.batch_size, self.max_pixels = actors, gpus_per_actor, batch_size, max_pixels
        self.precision, self.address, self.quiet = precision, address, quiet
        self._ray: Any = None
        self._started = False
        self._cpus = 0.0
        self._pool = 0
        self._pending: Sequence[Item] = ()
        self._rows: Any = None
        self._backends: set[str] = set()
        self._stdout: Any = None

    def new_summary(self) -> RaySummary:
        return RaySummary()

    def open(self, pending: Sequence[Item]) -> None:
        """Start or join Ray and check the cluster's GPUs (only when something is pending).

        Raises:
            BackendUnavailableError: Ray is missing or unreachable.
            InvalidArgumentError: the cluster has fewer GPUs than ``actors * gpus_per_actor``.
        """
        self._pending = pending
        if not pending:  # every output exists: Ray is not started
            return
        videos = [str(it.source) for it in pending if is_video(it.source)]
        if videos:
            raise InvalidArgumentError(f"{len(videos)} video file(s) ({videos[0]}...) in a --executor ray job; videos run on the local "
                                       "executor (each streams through one model): drop --executor ray for them")
        self._ray = require_ray()
        self._stdout = sys.stdout  # Ray's prints go to stderr until close (_RayPrintsToStderr)
        sys.stdout = _RayPrintsToStderr(self._stdout, sys.stderr)
        self._started = connect(self.address, quiet=self.quiet)
        resources = self._ray.cluster_resources()
        self._cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        if self.gpus_per_actor and self.actors * self.gpus_per_actor > gpus + 1e-9:
            raise InvalidArgumentError(f"--actors {self.actors} with --gpus-per-actor {self.gpus_per_actor:g} needs "
                                       f"{self.actors * self.gpus_per_actor:g} GPUs; the Ray cluster has {gpus:g}: lower --actors or "
                                       "--gpus-per-actor, or add GPU nodes (`ray start --address=HEAD:6379` on each)")

    def results(self, pending: Sequence[Item]) -> Iterator[Outcome]:
        """Run the pool over ``pending``; one outcome per status row, as rows arrive.

        Raises:
            The SDK error an actor reported as ``fatal`` (it cannot load the model or create its
            backend); BackendUnavailableError when the Ray job itself failed.
        """
        if not pending:
            return
        ray = self._ray
        self._pool = min(self.actors, math.ceil(len(pending) / self.batch_size))
        per_actor = self.threads if self.threads is not None else default_threads(self.actors, self._cpus or None)
        reserve = min(float(per_actor), self._cpus / self._pool) if self._cpus else float(per_actor)  # every actor fits
        ds = build_dataset(pending, self.task, self.params, model_dir=self.model_dir, backend=self.backend, threads=per_actor,
                           actors=self._pool, gpus_per_actor=self.gpus_per_actor, cpus_per_actor=reserve,
                           batch_size=self.batch_size, max_pixels=self.max_pixels, precision=self.precision)
        with _quiet_data(self.quiet):
            self._rows = iter(ds.iter_rows())
            try:
                for row in self._rows:
                    if row["status"] == FATAL:
                        raise _typed(str(row["error_type"]), str(row["error"]))
                    self._backends.add(str(row["backend"]))
                    yield int(row["index"]), None if row["status"] == WRITTEN else str(row["error"])
            except ray.exceptions.RayError as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise BackendUnavailableError(f"the Ray job failed ({type(e).__name__}: {first[:300]}); "
                                              "see the worker logs in /tmp/ray/session_latest/logs on each node") from e
            finally:  # a fatal row or Ctrl-C stops early: closing the iterator stops the pool's remaining work
                self._close_rows()

    def _close_rows(self) -> None:
        rows, self._rows = self._rows, None
        close = getattr(rows, "close", None)
        if close is not None:
            close()

    def stop(self) -> Iterator[Outcome]:
        """Ctrl-C: stop the pool. Rows the driver has not received yet are lost: :func:`run_job`
        counts their targets that exist (whole: the actors write atomically)."""
        self._close_rows()
        return iter(())

    def finish(self, summary: Summary) -> None:
        summary.actors = self._pool
        summary.backends = sorted(self._backends)

    def close(self) -> None:
        try:
            if self._started:
                self._started = False
                with contextlib.redirect_stdout(sys.stderr):  # shutdown prints Ray's held-back repeated lines from this thread
                    self._ray.shutdown()
                clean_stale(self._pending)  # temporaries of actors stopped mid-write (their processes are gone)
        finally:
            if self._stdout is not None:
                if isinstance(sys.stdout, _RayPrintsToStderr):
                    sys.stdout = self._stdout
                self._stdout = None


def run(items: Sequence[Item], task: str, params: Params | None = None, *, overwrite: bool = False,
        model_dir: str | Path | None = None, backend: str = "auto", threads: int | None = None, actors: int = 1,
        gpus_per_actor: float = 0, batch_size: int = 8, max_pixels: int | None = MAX_PIXELS, precision: str | None = None,
        address: str | None = None, quiet: bool = False, progress: Callable[[str], None] | None = None) -> RaySummary:
    """Run a folder job on Ray: :func:`sdk.folder.run_job` with a :class:`RayExecutor`.

    Options are checked first (:func:`check_job`); existing targets are skipped (unless
    ``overwrite``) on the driver; if anything is left, Ray is started or joined (:func:`connect`)
    and its GPUs checked. Only then are a killed run's temporary files removed and the pool of
    ``actors`` set to work on the rest (:func:`build_dataset`); Ray is shut down again if this call
    started it. When every output exists, Ray is not started at all.

    Args:
        items: from :func:`sdk.folder.plan`.
        task, params: ``"colorize"`` / ``"stylize"`` and their :class:`sdk.stages.Params`.
        overwrite: replace existing targets (inputs are never targets).
        model_dir, backend, precision, max_pixels: as :func:`sdk.load`, on every actor.
        threads: threads per actor (None: the cluster's CPUs / actors, at least 1).
        actors: actors in the pool (at most one per batch of work is started).
        gpus_per_actor: GPUs Ray reserves per actor; the cluster must have ``actors * gpus_per_actor``.
        batch_size: images per actor call and per generator call.
        address: see :func:`connect` (ignored when Ray is already initialised).
        quiet: keep Ray's own logging to errors.
        progress: called once per item on the driver, as results arrive, with a short note.

    Returns:
        A :class:`RaySummary`: ``failed`` lists each unreadable or unwritable file with its reason,
        in the items' order; the run goes on past them.

    Raises:
        InvalidArgumentError, UnknownStyleError, ModelNotFoundError, ModelCorruptError: before
            anything is touched (:func:`check_job`); InvalidArgumentError also when the cluster
            has fewer GPUs than ``actors * gpus_per_actor``.
        BackendUnavailableError: Ray is missing or unreachable, the backend cannot run on an
            actor, or the Ray job failed (worker logs: ``/tmp/ray/session_latest/logs``).
        ModelNotFoundError, ModelCorruptError: an actor could not load the model.
        JobInterrupted: Ctrl-C; the pool was stopped, ``summary`` says what the driver had heard of.
    """
    check_job(task, params, model_dir=model_dir, backend=backend, precision=precision, actors=actors,
              gpus_per_actor=gpus_per_actor, threads=threads, batch_size=batch_size)
    require_ray()
    executor = RayExecutor(task, params, model_dir=model_dir, backend=backend, threads=threads, actors=actors,
                           gpus_per_actor=gpus_per_actor, batch_size=batch_size, max_pixels=max_pixels, precision=precision,
                           address=address, quiet=quiet)
    return run_job(items, executor, overwrite=overwrite, progress=progress)
