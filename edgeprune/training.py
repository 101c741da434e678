"""Retraining between pruning rounds: fine-tuning, learning-rate rewinding, weight rewinding.

- ``finetune``: fresh SGD optimizer, the configured schedule over ``epochs`` (cheap default).
- ``lr-rewind``: keep the pruned, trained weights; fresh optimizer; replay the schedule from
  ``rewind_epoch`` (default 0, the start) — the form that produced the published AAP tables.
- ``weight-rewind``: reset the surviving weights to a `RewindPoint` (weights saved at epoch k of a training
  edgeprune ran, or a user's early snapshot) and replay the schedule from k. Without a snapshot it warns,
  keeps the current weights, and says so in the result.

The schedule always spans ``start + epochs`` epochs of which the last ``epochs`` are run, so ``epochs`` is
always the budget actually spent. Learning rates change every batch. Runs unchanged under torchrun: the
model is wrapped in DistributedDataParallel and each rank trains on its shard of every epoch; the batch
size is global.
"""

from __future__ import annotations

import io
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed
from .data import TaskData, set_epoch, top1
from .errors import EdgepruneError
from .io import write_bytes_atomic

log = logging.getLogger(__name__)

MODES = ("finetune", "lr-rewind", "weight-rewind")


def _cosine(frac: float, cfg: TrainConfig) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * frac))


def _step(frac: float, cfg: TrainConfig) -> float:
    return cfg.gamma ** sum(frac >= m for m in cfg.milestones)


# name -> multiplier of the base lr at a fraction (0..1) of the schedule; adding one touches only this table
SCHEDULES: dict[str, Callable[[float, TrainConfig], float]] = {
    "constant": lambda frac, cfg: 1.0,
    "cosine": _cosine,
    "step": _step,
}


@dataclass
class TrainConfig:
    """One retraining budget. `batch_size` is global (split across torchrun processes)."""

    epochs: int = 1
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 2e-4
    batch_size: int = 128
    schedule: str = "cosine"
    mode: str = "finetune"
    rewind_epoch: int | None = None
    milestones: tuple[float, ...] = (0.5, 0.75)  # step schedule: fractions of the schedule, x gamma each
    gamma: float = 0.1
    train_limit: int | None = None
    seed: int = 0
    max_batches: int | None = None  # per epoch; a cap for tests and smoke runs
    device: str = "auto"
    bn_batches: int = 50  # after training, BatchNorm statistics recomputed over this many batches (0: off)

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise EdgepruneError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.mode not in MODES:
            raise EdgepruneError(f"unknown retraining mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.epochs < 0 or self.lr < 0 or self.batch_size <= 0 or self.weight_decay < 0:
            raise EdgepruneError("epochs, lr and weight decay must be >= 0 and the batch size positive")
        if self.rewind_epoch is not None and self.rewind_epoch < 0:
            raise EdgepruneError(f"rewind epoch must be >= 0, got {self.rewind_epoch}")
        if self.bn_batches < 0:
            raise EdgepruneError(f"bn-batches must be >= 0, got {self.bn_batches}")
        for name in ("train_limit", "max_batches"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise EdgepruneError(f"{name.replace('_', '-')} must be positive, got {value}")
        self.milestones = tuple(float(m) for m in self.milestones)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainProgress:
    """Passed to the `progress` callback after every batch."""

    epoch: int
    epochs: int
    batch: int
    batches: int | None
    loss: float
    lr: float


@dataclass
class RewindPoint:
    """Weights (and buffers) at `epoch` of a training run, for weight rewinding."""

    epoch: int
    state_dict: dict[str, torch.Tensor]
    source: str = "trained by edgeprune"

    @classmethod
    def capture(cls, model: nn.Module, epoch: int, source: str = "trained by edgeprune") -> RewindPoint:
        state = distributed.unwrap(model).state_dict()
        return cls(epoch, {k: v.detach().to("cpu", copy=True) for k, v in state.items()}, source)

    def save(self, path: str | Path) -> None:
        """Write atomically (main process only: other ranks return without writing)."""
        if not distributed.is_main_process():
            return
        buf = io.BytesIO()
        torch.save({"epoch": self.epoch, "state_dict": self.state_dict, "source": self.source}, buf)
        write_bytes_atomic(Path(path), buf.getvalue())

    @classmethod
    def load(cls, path: str | Path, epoch: int | None = None) -> RewindPoint:
        """A snapshot saved by `save`, or a user's state_dict (optionally {'state_dict': ..., 'epoch': ...})."""
        path = Path(path)
        if not path.is_file():
            raise EdgepruneError(f"rewind snapshot {path} not found")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise EdgepruneError(
                f"{path} is not a loadable state_dict snapshot ({type(exc).__name__}: {exc}); "
                "save one with torch.save(model.state_dict(), path)"
            ) from exc
        state, saved_epoch = obj, None
        if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
            state, saved_epoch = obj["state_dict"], obj.get("epoch")
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise EdgepruneError(f"{path} holds no state_dict of tensors")
        epoch = epoch if epoch is not None else saved_epoch
        if epoch is None:
            raise EdgepruneError(f"{path} does not record its epoch; give the epoch it was saved at (--rewind-epoch)")
        return cls(int(epoch), _strip_module_prefix(state), source=str(path))


@dataclass
class TrainResult:
    """What one (re)training did: the budget spent and how it went."""

    mode: str
    epochs_run: int
    steps: int
    samples_seen: int  # global, all ranks together
    seconds: float
    epoch_losses: list[float]
    epoch_lrs: list[float]  # learning rate at the start of each epoch run
    schedule_start_epoch: int
    schedule_epochs: int
    world_size: int = 1
    device: str = "cpu"
    rewound: bool = False
    warnings: list[str] = field(default_factory=list)
    rewind_point: RewindPoint | None = None
    bn_recalibrated_batches: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "rewind_point"}
        out["rewind_point_epoch"] = self.rewind_point.epoch if self.rewind_point else None
        return out


def configure_threads(n: int | None = None) -> int:
    """Use this process's share of the cores for intra-op parallelism (all of them when alone).

    An explicit OMP_NUM_THREADS (torchrun sets 1 per process) wins. Returns the thread count.
    """
    if n is None:
        pinned = os.environ.get("OMP_NUM_THREADS", "").strip()
        if pinned.isdigit() and int(pinned) > 0:
            n = int(pinned)
        else:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            n = max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def evaluate(
    model: nn.Module,
    loader: Iterable,
    metric: Callable[[nn.Module, Iterable], float] | None = None,
    *,
    device: str | torch.device | None = None,
) -> float:
    """The metric (top-1 percent by default) in eval mode without gradients; model mode and device restored."""
    configure_threads()
    metric = metric or top1
    was_training = model.training
    home = _device_of(model)
    if device is not None:
        model.to(device)
    model.eval()
    try:
        with torch.no_grad():
            return float(metric(model, loader))
    finally:
        model.train(was_training)
        if device is not None:
            model.to(home)


def lr_at(config: TrainConfig, epoch_position: float, schedule_epochs: float) -> float:
    """Learning rate at a (fractional) epoch of a schedule lasting `schedule_epochs`."""
    frac = min(max(epoch_position / schedule_epochs, 0.0), 1.0) if schedule_epochs > 0 else 0.0
    return config.lr * SCHEDULES[config.schedule](frac, config)


def finetune(
    model: nn.Module,
    task_data: TaskData,
    config: TrainConfig,
    *,
    progress: Callable[[TrainProgress], None] | None = None,
    rewind_point: RewindPoint | None = None,
    kept_indices: KeptIndices | None = None,
) -> TrainResult:
    """Retrain a (pruned) model in place by `config.mode`; see the module docstring."""
    warnings: list[str] = []
    rewound = False
    if config.mode == "weight-rewind":
        if rewind_point is None:
            msg = ("weight rewinding asked for, but no weight snapshot exists (edgeprune did not train this model "
                   "and no early snapshot was given): kept the current weights and replayed the schedule instead")
            log.warning(msg)
            warnings.append(msg)
            start = config.rewind_epoch or 0
        else:
            rewind_weights(model, rewind_point.state_dict, kept_indices or {})
            rewound = True
            start = rewind_point.epoch
    elif config.mode == "lr-rewind":
        start = config.rewind_epoch or 0
    else:
        start = 0
    result = _train(model, task_data, config, start_epoch=start, progress=progress)
    result.rewound = rewound
    result.warnings.extend(warnings)
    return result


def train_from_scratch(
    model: nn.Module,
    task_data: TaskData,
    config: TrainConfig,
    save_rewind_at: int | None = None,
    *,
    progress: Callable[[TrainProgress], None] | None = None,
) -> TrainResult:
    """Train a model edgeprune owns (demo, LeNet benchmark) over the full schedule.

    With `save_rewind_at=k` (0 <= k <= epochs) the weights at the start of epoch k are kept in
    `result.rewind_point` for later weight rewinding (k=0: the initial weights).
    """
    if save_rewind_at is not None and not 0 <= save_rewind_at <= config.epochs:
        raise EdgepruneError(f"rewind epoch {save_rewind_at} lies outside the {config.epochs}-epoch training")
    holder: dict[str, RewindPoint] = {}

    def snapshot(epoch: int, net: nn.Module) -> None:
        if epoch == save_rewind_at:
            distributed.broadcast_module_state(distributed.unwrap(net))
            holder["point"] = RewindPoint.capture(net, epoch)

    result = _train(model, task_data, config, start_epoch=0, progress=progress, on_epoch_start=snapshot)
    result.mode = "scratch"
    result.rewind_point = holder.get("point")
    return result


def _train(
    model: nn.Module,
    task_data: TaskData,
    config: TrainConfig,
    *,
    start_epoch: int,
    progress: Callable[[TrainProgress], None] | None,
    on_epoch_start: Callable[[int, nn.Module], None] | None = None,
) -> TrainResult:
    ctx = distributed.init_from_env()
    configure_threads()
    device = distributed.device_for(config.device, ctx)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise EdgepruneError("the model has no trainable parameters")
    torch.manual_seed(config.seed + ctx.rank)
    loader = task_data.train_loader(batch_size=config.batch_size, limit=config.train_limit, rank=ctx.rank,
                                    world_size=ctx.world_size, seed=config.seed)
    n_batches = _num_batches(loader, config.max_batches)
    total = start_epoch + config.epochs
    home, was_training = _device_of(model), model.training
    model.to(device)
    net = distributed.wrap_model(model, device, ctx)
    optimizer = torch.optim.SGD(params, lr=lr_at(config, start_epoch, total), momentum=config.momentum,
                                weight_decay=config.weight_decay)
    losses: list[float] = []
    lrs: list[float] = []
    steps = samples = 0
    t0 = time.perf_counter()
    try:
        for e in range(config.epochs):
            epoch = start_epoch + e
            if on_epoch_start:
                on_epoch_start(epoch, net)
            set_epoch(loader, epoch)
            net.train()
            loss_sum = torch.zeros((), device=device)
            seen = 0
            lrs.append(lr_at(config, epoch, total))
            for b, batch in enumerate(loader):
                if config.max_batches is not None and b >= config.max_batches:
                    break
                lr = lr_at(config, epoch + (b / n_batches if n_batches else 0.0), total)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x, y = _to(batch[0], device), _to(batch[1], device)
                loss = task_data.loss(net(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach()
                seen += 1
                samples += _batch_len(y) * ctx.world_size
                if progress is not None:
                    progress(TrainProgress(epoch - start_epoch, config.epochs, b, n_batches, loss.item(), lr))
            if seen == 0:
                raise EdgepruneError("the training data yields no batches")
            steps += seen
            mean_loss = distributed.all_reduce_mean(float(loss_sum) / seen)
            if not math.isfinite(mean_loss):
                raise EdgepruneError(
                    f"training diverged (loss {mean_loss} in epoch {epoch}); lower the learning rate (now {config.lr})"
                )
            losses.append(mean_loss)
        if on_epoch_start:
            on_epoch_start(total, net)
        bn_batches = recalibrate_batchnorm(model, loader, config.bn_batches, device)
        # BatchNorm statistics update locally on every rank: rank 0's become everyone's. Not in `finally`:
        # a collective on the failure path would hang when only one rank failed.
        distributed.broadcast_module_state(model)
    finally:
        model.to(home)
        model.train(was_training)
    return TrainResult(mode=config.mode, epochs_run=config.epochs, steps=steps, samples_seen=samples,
                       seconds=time.perf_counter() - t0, epoch_losses=losses, epoch_lrs=lrs,
                       schedule_start_epoch=start_epoch, schedule_epochs=total, world_size=ctx.world_size,
                       device=str(device), bn_recalibrated_batches=bn_batches)


def recalibrate_batchnorm(model: nn.Module, loader: Iterable, batches: int, device: torch.device | None = None) -> int:
    """Recompute every BatchNorm's running statistics as the plain average over `batches` training batches
    at the final weights; returns how many batches were used (0 when the model has no BatchNorm).

    Training updates them with momentum 0.1, so after a short fine-tune they still mix in the statistics
    of the model before pruning (after 16 batches 0.9^16 = 19% of them), and the evaluation, the
    deadline's accuracy check and the export all see channels normalised by stale numbers."""
    if batches <= 0 or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
                               for m in model.modules()):
        return 0
    import itertools

    from torch.optim.swa_utils import update_bn

    batches_iter = itertools.islice(iter(loader), batches)
    first = next(batches_iter, None)
    if first is None:
        return 0  # update_bn resets the statistics first: with no batch to average they would be lost
    counted = 0

    def inputs() -> Iterable[Any]:
        nonlocal counted
        for batch in itertools.chain([first], batches_iter):
            counted += 1
            yield _to(batch[0], device) if device is not None else batch[0]

    with torch.no_grad():
        update_bn(inputs(), model)
    return counted


def _num_batches(loader: Iterable, cap: int | None) -> int | None:
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        return cap
    return min(n, cap) if cap is not None else n


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(v, device) for v in obj)
    return obj


def _batch_len(y: Any) -> int:
    return len(y) if hasattr(y, "__len__") else 1


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


# ------------------------------------------------------------------------------------- weight rewinding

# module name -> {"out": kept output-channel indices, "in": kept input-channel indices}, in the snapshot's
# (unpruned) numbering
KeptIndices = Mapping[str, Mapping[str, Sequence[int]]]


def kept_from_removed(size: int, removed_per_round: Sequence[Sequence[int]]) -> list[int]:
    """Original indices that survive rounds of removals, each round numbered in the then-current layer."""
    kept = list(range(size))
    for r, removed in enumerate(removed_per_round):
        drop = {int(i) for i in removed}
        bad = [i for i in drop if not 0 <= i < len(kept)]
        if bad:
            raise ValueError(f"round {r} removes index {bad[0]} from a layer of {len(kept)} channels")
        kept = [k for i, k in enumerate(kept) if i not in drop]
    return kept


def _dims_default(module: nn.Module | None, tensor: str, ndim: int) -> dict[str, int]:
    return {"out": 0, "in": 1} if tensor == "weight" and ndim >= 2 else {"out": 0}


def _dims_per_channel(module: nn.Module | None, tensor: str, ndim: int) -> dict[str, int]:
    return {"out": 0, "in": 0}  # norm layers: one channel axis, whichever side pruned it


def _dims_transposed(module: nn.Module | None, tensor: str, ndim: int) -> dict[str, int]:
    return {"in": 0, "out": 1} if tensor == "weight" else {"out": 0}


# module type -> which tensor dimension holds output / input channels; looked up along the MRO
CHANNEL_DIMS: dict[type, Callable[[nn.Module | None, str, int], dict[str, int]]] = {
    nn.modules.batchnorm._NormBase: _dims_per_channel,
    nn.GroupNorm: _dims_per_channel,
    nn.PReLU: _dims_per_channel,
    nn.modules.conv._ConvTransposeNd: _dims_transposed,
}


def _channel_dims(module: nn.Module | None, tensor: str, ndim: int) -> dict[str, int]:
    for cls in type(module).__mro__ if module is not None else ():
        if cls in CHANNEL_DIMS:
            return CHANNEL_DIMS[cls](module, tensor, ndim)
    return _dims_default(module, tensor, ndim)


def rewind_weights(
    pruned_model: nn.Module, snapshot_state_dict: Mapping[str, torch.Tensor], kept_indices_by_layer: KeptIndices
) -> list[str]:
    """Reset a pruned model's tensors to the snapshot's values for the channels it kept (in place).

    `kept_indices_by_layer` maps a module name to ``{"out": [...], "in": [...]}``: the snapshot-numbered
    output / input channels the pruned layer kept (`kept_from_removed` composes per-round removals). Only
    dimensions that shrank need an entry. Parameters and buffers (BatchNorm statistics) are both rewound.
    Returns the names of the tensors that were sliced.
    """
    model = distributed.unwrap(pruned_model)
    snapshot = _strip_module_prefix(snapshot_state_dict)
    modules = dict(model.named_modules())
    current = model.state_dict()
    missing = [k for k in current if k not in snapshot]
    if missing:
        raise ValueError(f"the snapshot lacks {', '.join(missing[:3])}: it was not saved from this model")
    new: dict[str, torch.Tensor] = {}
    sliced: list[str] = []
    for name, cur in current.items():
        src = snapshot[name]
        if src.shape != cur.shape:
            src = _slice_to(name, src, cur, modules, kept_indices_by_layer)
            sliced.append(name)
        new[name] = src
    model.load_state_dict(new)
    return sliced


def _slice_to(
    name: str, src: torch.Tensor, cur: torch.Tensor, modules: Mapping[str, nn.Module], kept: KeptIndices
) -> torch.Tensor:
    if src.ndim != cur.ndim:
        raise ValueError(f"{name}: snapshot has shape {tuple(src.shape)}, the pruned model {tuple(cur.shape)}")
    mod_name, _, tensor = name.rpartition(".")
    module = modules.get(mod_name)
    dims = _channel_dims(module, tensor, src.ndim)
    layer_kept = kept.get(mod_name, {})
    for d in range(src.ndim):
        if src.shape[d] == cur.shape[d]:
            continue
        if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and dims.get("in") == d:
            raise ValueError(f"{name}: cannot rewind a grouped convolution whose per-group inputs were pruned")
        role = next((r for r in ("out", "in") if dims.get(r) == d and r in layer_kept), None)
        if role is None:
            raise ValueError(
                f"{name}: dimension {d} shrank from {src.shape[d]} to {cur.shape[d]} but no kept "
                f"{'/'.join(r for r, dd in dims.items() if dd == d) or 'channel'} indices were given for {mod_name!r}"
            )
        idx = torch.as_tensor(list(layer_kept[role]), dtype=torch.long)
        if len(idx) != cur.shape[d] or (len(idx) and (idx.min() < 0 or idx.max() >= src.shape[d])):
            raise ValueError(
                f"{name}: {len(idx)} kept {role} indices for a dimension of {cur.shape[d]} (snapshot {src.shape[d]})"
            )
        src = src.index_select(d, idx)
    return src


def _strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # checkpoints saved from DataParallel/DDP prefix every key with "module."
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)
