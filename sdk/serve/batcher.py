"""Dynamic batching: jobs from many requests share generator calls.

Requests :meth:`Batcher.submit` prepared :class:`sdk.stages.Job` s; the batcher groups them by
the shape they run at (any mix of styles and tasks), and sends a group to
:func:`sdk.stages.infer` once it holds ``max_batch`` jobs or its oldest job has waited
``max_wait_s``. Inference runs on one worker thread, off the event loop; while it runs, new
requests queue up and form the next batch. The number of waiting jobs is bounded: beyond
``capacity`` :meth:`submit` raises :class:`QueueFullError` (the server answers 503).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from sdk import stages
from sdk.backends import Backend
from sdk.errors import ChromaforgeError


class QueueFullError(Exception):
    """The batcher holds ``capacity`` waiting jobs already; retry later."""


@dataclass
class _Item:
    job: stages.Job
    future: asyncio.Future
    t: float = field(default_factory=time.monotonic)


class Batcher:
    """Collects jobs into shared generator calls (see the module docstring).

    Args:
        runner: the backend that runs the generator (``Pipeline.runner``).
        max_batch: most jobs per batch (1 turns batching off).
        max_wait_s: longest a job waits for others to join its batch.
        capacity: most jobs waiting at once.
        on_batch: called with each batch's size (metrics).

    Example:
        >>> b = Batcher(pipe.runner, max_batch=8, max_wait_s=0.005, capacity=64)
        >>> task = asyncio.create_task(b.run())
        >>> output = await b.submit(job)          # float32 [3, h, w] at job.shape
    """

    def __init__(self, runner: Backend, max_batch: int, max_wait_s: float, capacity: int,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.runner, self.max_batch, self.max_wait_s, self.capacity = runner, max_batch, max_wait_s, capacity
        self.on_batch = on_batch or (lambda n: None)
        self._items: list[_Item] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="chromaforge-infer")

    @property
    def depth(self) -> int:
        """Jobs waiting for a batch (not yet sent to the generator)."""
        return len(self._items)

    def submit(self, job: stages.Job) -> asyncio.Future:
        """Queue ``job``; the future resolves to its generator output (or the batch's error).

        Raises:
            QueueFullError: ``capacity`` jobs are waiting already, or the batcher is stopping.
        """
        if self._stopping or len(self._items) >= self.capacity:
            raise QueueFullError(f"{len(self._items)} jobs waiting (capacity {self.capacity})")
        fut = asyncio.get_running_loop().create_future()
        self._items.append(_Item(job, fut))
        self._wake.set()
        return fut

    def _key(self, job: stages.Job) -> tuple[int, int]:
        try:
            return self.runner.capabilities.run_shape(job.shape)
        except ChromaforgeError:
            return job.shape  # infer reports it, for this job's batch only

    def _next_batch(self, now: float) -> tuple[list[_Item], float]:
        """A batch ready to run now (or []), and how long to wait for one otherwise."""
        self._items = [i for i in self._items if not i.future.done()]  # timed-out requests cancel theirs
        groups: dict[tuple[int, int], list[_Item]] = {}
        for item in self._items:
            groups.setdefault(self._key(item.job), []).append(item)
        if not groups:
            return [], 3600.0
        # Ready: a full group, or one whose oldest job has waited max_wait; the oldest ready one goes
        # first, so a shape that keeps filling up cannot starve the others.
        ready = [g for g in groups.values() if len(g) >= self.max_batch or now - g[0].t >= self.max_wait_s or self._stopping]
        oldest = min(groups.values(), key=lambda g: g[0].t)
        if ready:
            batch = min(ready, key=lambda g: g[0].t)[: self.max_batch]
            taken = {id(i) for i in batch}
            self._items = [i for i in self._items if id(i) not in taken]
            return batch, 0.0
        return [], oldest[0].t + self.max_wait_s - now

    async def run(self) -> None:
        """Form and run batches until :meth:`stop`; then run what is still waiting and return."""
        loop = asyncio.get_running_loop()
        while True:
            batch, wait = self._next_batch(time.monotonic())
            if not batch:
                if self._stopping:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except asyncio.TimeoutError:
                    pass
                continue
            self.on_batch(len(batch))
            try:
                outputs = await loop.run_in_executor(self._executor, stages.infer, self.runner, [i.job for i in batch])
            except Exception as e:  # the backend's failure goes to the batch's requests, not the loop
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(e)
                continue
            for item, out in zip(batch, outputs):
                if not item.future.done():
                    item.future.set_result(np.ascontiguousarray(out))
        self._executor.shutdown(wait=True)

    def stop(self) -> None:
        """Refuse new jobs; :meth:`run` finishes the waiting ones, then returns."""
        self._stopping = True
        self._wake.set()
