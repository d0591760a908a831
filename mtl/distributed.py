"""Several processes, one run: ``torchrun --nproc_per_node N train.py ...`` (DistributedDataParallel).

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them :class:`Dist` describes a single
process and every helper here is a no-op, so library code calls them unconditionally.

How a run is split (the same run as on one process, up to float summation order):

- every rank builds the same seeded schedule of (task, batch) steps; step k's batch is split across
  ranks (``indices[rank::world]``) and each rank's loss is weighted by its share, so the averaged
  gradient is the gradient of the whole batch. ``--batch-size`` is therefore the global batch size;
- evaluation: each rank predicts every ``world``-th evaluation batch, predictions are summed
  across ranks (each example is filled in by exactly one rank);
- importance scoring: each rank scores every ``world``-th scoring batch, the raw sums are all-reduced;
- only rank 0 writes files and prints.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as tdist

from basics.errors import UserError
from mtl.launch import env_ranks

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place in the run. ``backend`` is None for a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items``: every ``world_size``-th item starting at ``rank``."""
        return list(items[self.rank::self.world_size])

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (a new tensor on ``tensor``'s device; the input itself when single)."""
        if not self.enabled:
            return tensor
        comm = tensor.detach().to(self._comm_device(), copy=True)
        tdist.all_reduce(comm, op=tdist.ReduceOp.SUM)
        return comm.to(tensor.device)

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; tensors come back on the CPU)."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        tdist.broadcast_object_list(box, src=0, device=self._comm_device())
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out

    def _comm_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")


SINGLE = Dist()


def device_name(device: torch.device) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H200)``: where a measurement ran, for its record."""
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def pick_device(name: str, local_rank: int = 0, distributed: bool = False) -> torch.device:
    """``auto``: CUDA if available, else CPU. Under torchrun, ``auto``/``cuda`` mean ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine")
        if distributed and device.index is None:
            if local_rank >= torch.cuda.device_count():
                raise UserError(f"LOCAL_RANK {local_rank} but this machine has {torch.cuda.device_count()} GPU(s): "
                                "use --nproc_per_node <= the number of GPUs")
            device = torch.device("cuda", local_rank)
    return device


@contextlib.contextmanager
def session(device_name: str) -> Iterator[tuple[Dist, torch.device]]:
    """``(dist, device)`` for this process. Under torchrun the process group is created here (gloo on
    CPU, nccl on CUDA) and destroyed on exit, unless the caller had already created one."""
    rank, world, local = env_ranks()
    device = pick_device(device_name, local, distributed=world > 1)
    if world <= 1:
        yield SINGLE, device
        return
    created = not tdist.is_initialized()
    if created:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        tdist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield Dist(rank=tdist.get_rank(), world_size=tdist.get_world_size(), local_rank=local,
                   backend=tdist.get_backend()), device
    finally:
        if created and tdist.is_initialized():
            tdist.destroy_process_group()
