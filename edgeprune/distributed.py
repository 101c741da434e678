"""Running under ``torchrun``: process group, DistributedDataParallel, and who writes files.

Launched as ``torchrun --nproc_per_node=K -m edgeprune.cli prune ...`` (or any script), every process runs
the same program; `init_from_env()` joins them (nccl when CUDA is available, gloo on CPU). Fine-tuning wraps
the model in DistributedDataParallel and gives each rank a disjoint shard of every epoch; everything else
(pruning decisions, evaluation) runs identically on all ranks, and only the main process writes files.
Without torchrun's environment every function here is a cheap single-process no-op.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .errors import EdgepruneError


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher using its variables) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def context() -> DistContext:
    """The current context, without initialising anything."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                           dist.get_backend())
    return DistContext()


def init_from_env(backend: str | None = None) -> DistContext:
    """Join the process group torchrun describes (idempotent); single-process context otherwise."""
    if dist.is_available() and dist.is_initialized():
        return context()
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return DistContext()
    if not dist.is_available():
        raise EdgepruneError("this PyTorch build has no torch.distributed; run without torchrun")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(backend=backend)
    except (RuntimeError, ValueError) as exc:
        raise EdgepruneError(f"could not join the torchrun process group ({backend}): {exc}") from exc
    return context()


def shutdown() -> None:
    """Leave the process group once every rank has reached this point.

    Without the barrier, a rank that tears gloo down while another is still in its last collective can abort
    in gloo's threads ("terminate called without an active exception", SIGABRT): seen once in this project's
    CI in session 20 (test_torchrun_two_ranks_match_one_process); no earlier CI log here shows it."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def is_main_process() -> bool:
    """Only the main process writes files (checkpoints, reports, models)."""
    return context().is_main


def barrier() -> None:
    if context().enabled:
        dist.barrier()


def device_for(requested: str, ctx: DistContext | None = None) -> torch.device:
    """'auto' -> this rank's GPU when CUDA is available, else CPU; 'cpu'/'cuda'/'cuda:N' as given."""
    ctx = ctx or context()
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise EdgepruneError(f"device {requested!r} asked for but CUDA is not available; use cpu")
        if device.index is None:
            device = torch.device("cuda", ctx.local_rank if ctx.enabled else torch.cuda.current_device())
    return device


def _comm_device(ctx: DistContext) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if ctx.backend == "nccl" else torch.device("cpu")


def all_reduce_mean(value: float) -> float:
    """The mean of `value` over all ranks (the value itself when not distributed)."""
    ctx = context()
    if not ctx.enabled:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device(ctx))
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s object on every rank (e.g. a pruning decision, a path)."""
    ctx = context()
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device(ctx))
    return box[0]


def broadcast_module_state(module: nn.Module, src: int = 0) -> None:
    """Make every rank hold rank `src`'s parameters and buffers (BatchNorm statistics drift per rank)."""
    ctx = context()
    if not ctx.enabled:
        return
    comm = _comm_device(ctx)
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if t.device == comm:
                dist.broadcast(t.data, src=src)
            else:
                tmp = t.data.to(comm)
                dist.broadcast(tmp, src=src)
                t.data.copy_(tmp)


def wrap_model(model: nn.Module, device: torch.device, ctx: DistContext | None = None) -> nn.Module:
    """DistributedDataParallel around `model` when distributed (it syncs rank 0's state on construction)."""
    ctx = ctx or context()
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, output_device=device.index if ids else None)


def unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model) if type(model).__name__ == "DistributedDataParallel" else model


@contextmanager
def main_process_first() -> Iterator[None]:
    """Let rank 0 do something (e.g. create a directory) before the others proceed."""
    ctx = context()
    if ctx.enabled and not ctx.is_main:
        dist.barrier()
    yield
    if ctx.enabled and ctx.is_main:
        dist.barrier()
