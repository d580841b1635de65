"""Multi-process training with PyTorch DDP, started by ``torchrun``.

``torchrun --nproc-per-node N -m training ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
the rendezvous address in each process's environment; :func:`setup` reads them, opens the process
group (``gloo`` on CPU, ``nccl`` on CUDA, one GPU per process by local rank) and returns a
:class:`Dist`. Without those variables (``python -m training``) it returns a single-process
:class:`Dist` and every helper below is a no-op, so the trainer has one code path.

What the trainer does with it (training/train.py): each rank loads only its share of the photos
and paintings (:func:`shard`, a :class:`torch.utils.data.DistributedSampler` over the file list),
draws crops with its own seed, runs the generator step through
:class:`torch.nn.parallel.DistributedDataParallel` (gradients averaged in backward), and reduces
everything that must agree (colour-bin prior, style targets, logged losses) with collectives.
EMA, validation, logging, sample grids and checkpoints happen on rank 0 only; checkpoints hold the
unwrapped generator, so export and resume do not care how a run was trained.

Example:
    >>> d, device = setup("auto")
    >>> files = shard(all_files, d)          # this rank's share
    >>> total = d.all_reduce_sum(torch.tensor([len(files)]))
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """Where this process stands in the job.

    Attributes:
        rank: global rank (0 for a single process).
        world_size: number of processes.
        local_rank: rank on this node (selects the GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when there is more than one process (a process group is open)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, validates and writes checkpoints."""
        return self.rank == 0

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over all ranks in place (identical result everywhere); returns ``t``.
        A CPU tensor under nccl (which reduces CUDA tensors only) goes through this rank's GPU."""
        if self.enabled:
            if not t.is_cuda and dist.get_backend() == "nccl":
                on_gpu = t.cuda()
                dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
                t.copy_(on_gpu)
            else:
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise ValueError(f"environment variable {name}={raw!r}; expected an integer (torchrun sets it)") from e


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU; any other name as torch reads it (``cpu``, ``cuda:1``, ``mps``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def setup(device: str = "auto", timeout_s: float = 600.0) -> tuple[Dist, torch.device]:
    """Open the process group described by torchrun's environment, if any.

    Args:
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``. Under
            torchrun with CUDA each process takes the GPU of its local rank.
        timeout_s: how long collectives wait for a missing rank before failing.

    Returns:
        (:class:`Dist`, the torch device this process trains on).

    Raises:
        ValueError: torchrun's variables are malformed, or more local ranks than visible GPUs.
    """
    world = _env_int("WORLD_SIZE", 1)
    d = Dist(_env_int("RANK", 0), world, _env_int("LOCAL_RANK", 0))
    dev = resolve_device(device)
    if dev.type == "cuda" and d.enabled:  # one GPU per process, by local rank
        if d.local_rank >= torch.cuda.device_count():
            raise ValueError(f"local rank {d.local_rank} but {torch.cuda.device_count()} visible GPUs; "
                             "expected --nproc-per-node <= the GPUs of a node (or --device cpu)")
        dev = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(dev)
    if d.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return d, dev


def teardown() -> None:
    """Close the process group if one is open."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(items: Sequence[T], d: Dist) -> list[T]:
    """This rank's share of ``items`` through :class:`torch.utils.data.DistributedSampler`.

    Without shuffling the sampler gives rank r the items r, r + W, r + 2W... (padded with repeats
    from the start so every rank has the same number): each item is loaded by one rank, and the
    shares differ in size by nothing.
    """
    if not d.enabled:
        return list(items)
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(len(items)), num_replicas=d.world_size, rank=d.rank, shuffle=False)
    return [items[i] for i in sampler]
