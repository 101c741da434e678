"""Filter-importance criteria (METHODS.md §1), one score per unit of every channel group.

A criterion is a class registered by name; adding one touches no other file:

    @register_importance("my_criterion")
    class MyImportance(Importance):
        def scores(self, model, graph, groups=None, calib_batches=None):
            return {g.id: ... for g in groups or graph.groups()}

    get_importance("my_criterion", aggregate="sum").scores(model, graph)

Coupled layers: each member layer gives a per-channel value; the values of a unit's channels within one
layer and then of the group's layers are combined with `aggregate` ("mean" or "sum").
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from edgeprune.errors import EdgepruneError

from .graph import ChannelGroup, PruningGraph

__all__ = [
    "Importance",
    "available_importances",
    "get_importance",
    "normalise_per_layer",
    "register_importance",
]

Scores = dict[str, np.ndarray]
_REGISTRY: dict[str, type[Importance]] = {}
AGGREGATES = ("mean", "sum")


def register_importance(name: str):
    """Class decorator: make an `Importance` subclass available as `get_importance(name)`."""

    def deco(cls: type[Importance]) -> type[Importance]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"importance {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_importances() -> list[str]:
    return sorted(_REGISTRY)


def get_importance(name: str, **options: Any) -> Importance:
    """The criterion `name` configured with `options` (e.g. `p=2`, `num_images=512`, `aggregate="sum"`)."""
    if name not in _REGISTRY:
        raise EdgepruneError(
            f"unknown importance {name!r}; choose one of: {', '.join(available_importances())}"
        )
    cls = _REGISTRY[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise EdgepruneError(
            f"importance {name!r} has no option {', '.join(unknown)}; it takes: {', '.join(sorted(accepted))}"
        )
    return cls(**options)


def normalise_per_layer(scores: Mapping[str, np.ndarray]) -> Scores:
    """Divide each group's scores by the group's mean, so one global threshold fits every layer (AIAP)."""
    out: Scores = {}
    for gid, s in scores.items():
        s = np.asarray(s, dtype=np.float64)
        mean = float(s.mean()) if s.size else 0.0
        out[gid] = s / mean if mean > 0 else np.zeros_like(s)
    return out


def _combine(values: Sequence[np.ndarray], how: str) -> np.ndarray:
    stacked = np.stack(values)
    return stacked.sum(axis=0) if how == "sum" else stacked.mean(axis=0)


def _per_unit(per_channel: np.ndarray, units: Sequence[tuple[int, ...]], how: str) -> np.ndarray:
    """One value per unit from per-channel values (a unit spans several channels in some layers)."""
    if len({len(u) for u in units}) == 1:  # the usual case: a rectangular gather
        picked = np.asarray(per_channel)[np.asarray(units)]
        return picked.sum(axis=1) if how == "sum" else picked.mean(axis=1)
    pick = [per_channel[list(u)] for u in units]
    return np.array([v.sum() if how == "sum" else v.mean() for v in pick])


class Importance:
    """Base class: `scores(model, graph, groups, calib_batches) -> {group id: array of one score per unit}`.

    Higher means more important. `requires_calibration` tells the caller to pass calibration batches;
    `requires_labels` that they must be (inputs, targets) pairs, not bare inputs.
    """

    name: ClassVar[str] = ""
    requires_calibration: ClassVar[bool] = False
    requires_labels: ClassVar[bool] = False

    def __init__(self, aggregate: str = "mean"):
        if aggregate not in AGGREGATES:
            raise EdgepruneError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        self.aggregate = aggregate

    def scores(
        self,
        model: nn.Module,
        graph: PruningGraph,
        groups: Sequence[ChannelGroup] | None = None,
        calib_batches: Iterable[torch.Tensor] | None = None,
    ) -> Scores:
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """The resolved options, for reports."""
        return {k: getattr(self, k) for k in inspect.signature(type(self).__init__).parameters if k != "self"}


def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd)


def _is_depthwise(m: nn.Module) -> bool:
    return _is_conv(m) and m.groups == m.out_channels and m.out_channels > 1


def _out_weight(m: nn.Module) -> torch.Tensor:
    """Weight with output channels on dim 0."""
    w = m.weight.detach()
    if _is_conv(m) and m.transposed:
        if m.groups != 1:
            raise EdgepruneError(f"grouped transposed convolution {type(m).__name__} is not supported")
        w = w.transpose(0, 1)
    return w


def _filter_norms(m: nn.Module, ord_: int) -> np.ndarray:
    w = _out_weight(m).flatten(1).double()
    return (w.abs().sum(1) if ord_ == 1 else w.norm(dim=1)).cpu().numpy()


def _input_column_norms(m: nn.Module) -> np.ndarray:
    """||W[:, c]|| for every input channel c (for grouped convs, over the filters that read c)."""
    w = m.weight.detach().double()
    if isinstance(m, nn.Linear):
        return w.norm(dim=0).cpu().numpy()
    if m.transposed:
        if m.groups != 1:
            raise EdgepruneError("grouped transposed convolution is not supported")
        return w.flatten(1).norm(dim=1).cpu().numpy()
    g, out_per, in_per = m.groups, m.out_channels // m.groups, m.in_channels // m.groups
    norms = np.empty(m.in_channels)
    for q in range(g):
        block = w[q * out_per : (q + 1) * out_per].transpose(0, 1).flatten(1)  # [in_per, out_per*k]
        norms[q * in_per : (q + 1) * in_per] = block.norm(dim=1).cpu().numpy()
    return norms


def _bn_scale(model: nn.Module, graph: PruningGraph, path: str) -> np.ndarray | None:
    nxt = graph.next_module(path)
    bn = model.get_submodule(nxt) if nxt else None
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.running_var is None:
        return None
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(bn.running_var).double()
    return (gamma.abs() / torch.sqrt(bn.running_var.double() + bn.eps)).cpu().numpy()


@register_importance("l1")
class L1Importance(Importance):
    """ILP: s_c = sum |W[c]| over the group's conv/linear filters producing channel c."""

    def scores(self, model, graph, groups=None, calib_batches=None) -> Scores:
        out: Scores = {}
        for g in groups if groups is not None else graph.groups():
            per_layer = [
                _per_unit(_filter_norms(model.get_submodule(p), 1), g.index_map[(p, "out")], self.aggregate)
                for p in g.layers
            ]
            out[g.id] = _combine(per_layer, self.aggregate)
        return out


@register_importance("lookahead")
class LookaheadImportance(Importance):
    """Structured LAP: ||W[c]|| · ||W_next[:, c]||, optionally times the BN scale |γ_c|/sqrt(var_c+eps).

    Parallel producers of a channel (the convs feeding a residual stream) are aggregated, and so are its
    consumers; a depthwise conv in between multiplies in its own filter norm. A missing side counts as 1.
    """

    def __init__(self, bn_scale: bool = True, aggregate: str = "mean"):
        super().__init__(aggregate)
        self.bn_scale = bn_scale

    def _produce(self, model, graph, path) -> np.ndarray:
        norms = _filter_norms(model.get_submodule(path), 2)
        scale = _bn_scale(model, graph, path) if self.bn_scale else None
        return norms * scale if scale is not None else norms

    def scores(self, model, graph, groups=None, calib_batches=None) -> Scores:
        out: Scores = {}
        for g in groups if groups is not None else graph.groups():
            producers, chain, consumers = [], [], []
            for path, role in g.members:
                m = model.get_submodule(path)
                units = g.index_map[(path, role)]
                if not isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
                    continue
                if _is_depthwise(m):
                    chain.append(_per_unit(self._produce(model, graph, path), units, self.aggregate))
                elif role == "out":
                    producers.append(_per_unit(self._produce(model, graph, path), units, self.aggregate))
                else:
                    consumers.append(_per_unit(_input_column_norms(m), units, self.aggregate))
            s = np.ones(g.size)
            for part in (producers, consumers):
                if part:
                    s = s * _combine(part, self.aggregate)
            for c in chain:
                s = s * c
            out[g.id] = s
        return out


@register_importance("random")
class RandomImportance(Importance):
    """A control: uniform random scores from `seed` (same seed, same groups -> same scores)."""

    def __init__(self, seed: int = 0, aggregate: str = "mean"):
        super().__init__(aggregate)
        self.seed = seed

    def scores(self, model, graph, groups=None, calib_batches=None) -> Scores:
        rng = np.random.default_rng(self.seed)
        return {g.id: rng.random(g.size) for g in (groups if groups is not None else graph.groups())}


@register_importance("activation")
class ActivationImportance(Importance):
    """IAP: s_c = mean over images and positions of |A[n, c, h, w]|^p.

    A is the activation where the channel is *used*: the input of each layer that consumes the channel
    (the output of the producing conv's BN+ReLU, or of a residual block after its add+ReLU, as the next
    conv sees it). A group whose channels feed no prunable consumer is observed at its BN (else conv)
    outputs. Statistics run over the first `num_images` calibration images, in eval mode, without grad.
    """

    requires_calibration = True

    def __init__(self, p: float = 1.0, num_images: int = 256, aggregate: str = "mean"):
        super().__init__(aggregate)
        if p <= 0:
            raise EdgepruneError(f"activation power p must be > 0, got {p}")
        if num_images < 1:
            raise EdgepruneError(f"num_images must be >= 1, got {num_images}")
        self.p = p
        self.num_images = num_images

    @staticmethod
    def _points(model: nn.Module, g: ChannelGroup) -> list[tuple[str, str, str]]:
        """(path, role, "input" | "output") observation points of a group."""
        pts = []
        for path, role in g.members:
            m = model.get_submodule(path)
            if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and (role == "in" or _is_depthwise(m)):
                pts.append((path, role, "input"))
        if not pts:
            bns = [
                (p, r)
                for p, r in g.members
                if isinstance(model.get_submodule(p), nn.modules.batchnorm._BatchNorm)
            ]
            pts = [(p, r, "output") for p, r in (bns or [(p, "out") for p in g.layers])]
        return pts

    def scores(self, model, graph, groups=None, calib_batches=None) -> Scores:
        if calib_batches is None:
            raise EdgepruneError("the activation criterion needs calibration data (calib_batches)")
        groups = list(groups if groups is not None else graph.groups())
        points = {g.id: self._points(model, g) for g in groups}
        wanted = {(path, where) for pts in points.values() for path, _, where in pts}
        sums: dict[tuple[str, str], torch.Tensor] = {}
        counts: dict[tuple[str, str], int] = {}

        def observe(key: tuple[str, str], module: nn.Module, t: torch.Tensor) -> None:
            # channels on dim 1 for convs (and BN), last dim for linears; per-batch sums in float32,
            # the running total in float64
            t = t.detach()
            t = t.movedim(-1, 1) if isinstance(module, nn.Linear) else t
            a = t.abs() if self.p == 1 else t.abs().pow(self.p)
            dims = [d for d in range(a.dim()) if d != 1]
            sums[key] = sums.get(key, 0) + a.sum(dim=dims).double()
            counts[key] = counts.get(key, 0) + a.numel() // a.shape[1]

        hooks = []
        for path, where in wanted:
            m = model.get_submodule(path)
            if where == "input":
                hooks.append(
                    m.register_forward_pre_hook(lambda mod, inp, k=(path, where): observe(k, mod, inp[0]))
                )
            else:
                hooks.append(
                    m.register_forward_hook(lambda mod, inp, out, k=(path, where): observe(k, mod, out))
                )
        was_training = model.training
        model.eval()
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        seen = 0
        try:
            with torch.no_grad():
                for batch in calib_batches:
                    x = batch[0] if isinstance(batch, (tuple, list)) else batch
                    x = x[: self.num_images - seen].to(device)
                    model(x)
                    seen += x.shape[0]
                    if seen >= self.num_images:
                        break
        finally:
            for h in hooks:
                h.remove()
            model.train(was_training)
        if seen == 0:
            raise EdgepruneError("the calibration data given to the activation criterion is empty")

        out: Scores = {}
        for g in groups:
            per_point = []
            for path, role, where in points[g.id]:
                mean = (sums[(path, where)] / counts[(path, where)]).cpu().numpy()
                per_point.append(_per_unit(mean, g.index_map[(path, role)], self.aggregate))
            out[g.id] = _combine(per_point, self.aggregate)
        return out


_LOSSES = {"cross_entropy": torch.nn.functional.cross_entropy}
_NEEDS_LABELS = (
    "the taylor criterion needs labelled calibration data ((inputs, targets) batches, from --data); "
    "without labels use --importance activation (or l1)"
)


@register_importance("taylor")
class TaylorImportance(Importance):
    """First-order Taylor estimate of the loss change when a channel is removed (Molchanov et al. 2019, HALP).

    Removing channel c of a BN-followed conv is setting the BN's gamma_c and beta_c to zero; to first order
    the loss then changes by gamma_c * dL/dgamma_c + beta_c * dL/dbeta_c. Per calibration batch b that value
    t_c(b) is computed and squared, and the squares are summed over batches: s_c = sum_b t_c(b)^2.
    Squaring per batch (not over the whole data) is what the papers do: a channel whose removal raises the
    loss on some batches and lowers it on others still scores.

    Where a group's producing conv/linear is not followed by an affine BatchNorm (a plain conv, or a BN
    without gamma/beta), the same quantity is taken at the producer's (or that BN's) output A:
    t_c(b) = sum over the batch's images and positions of A[n, c, ...] * dL/dA[n, c, ...]. (For an affine
    BN the two forms are equal: gamma * dL/dgamma + beta * dL/dbeta sums y * dL/dy over the BN output y.)

    Every producer of a group (a residual stream has one per block, each with its BN) gives per-channel
    scores; they are combined per unit and across producers with `aggregate`, as the other criteria do.

    L is `loss(model(inputs), targets)`, a scalar: cross-entropy (mean over the batch) by default, or any
    callable, e.g. the task's training loss. The model runs in eval mode (BN uses its running statistics,
    as it will when deployed) over the first `num_images` calibration images. Gradients are taken with
    `torch.autograd.grad`, so no parameter's `.grad` is written; `requires_grad` flags and train/eval mode
    are restored afterwards. Needs labels: a batch that is a bare input tensor is refused.
    """

    requires_calibration = True
    requires_labels = True

    def __init__(self, num_images: int = 256, loss: str | Any = "cross_entropy", aggregate: str = "mean"):
        super().__init__(aggregate)
        if num_images < 1:
            raise EdgepruneError(f"num_images must be >= 1, got {num_images}")
        if isinstance(loss, str) and loss not in _LOSSES:
            raise EdgepruneError(f"taylor loss must be one of {sorted(_LOSSES)} or a callable, got {loss!r}")
        if not isinstance(loss, str) and not callable(loss):
            raise EdgepruneError(f"taylor loss must be a name or a callable, got {type(loss).__name__}")
        self.num_images = num_images
        self.loss = loss

    @staticmethod
    def _points(model: nn.Module, graph: PruningGraph, g: ChannelGroup) -> list[tuple[str, str, str]]:
        """(module path, kind, index_map key path) per producer: kind "bn" (an affine BN after the producer)
        or "output" (the output of that module: a BN without affine parameters, or the producer itself)."""
        pts = []
        for path in g.layers:
            nxt = graph.next_module(path)
            bn = model.get_submodule(nxt) if nxt else None
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                key = nxt if (nxt, "out") in g.index_map else path
                affine = bn.weight is not None and bn.bias is not None
                pts.append((nxt, "bn" if affine else "output", key))
            else:
                pts.append((path, "output", path))
        return pts

    def _loss_fn(self):
        return _LOSSES[self.loss] if isinstance(self.loss, str) else self.loss

    def scores(self, model, graph, groups=None, calib_batches=None) -> Scores:
        if calib_batches is None:
            raise EdgepruneError(_NEEDS_LABELS)
        groups = list(groups if groups is not None else graph.groups())
        points = {g.id: self._points(model, graph, g) for g in groups}
        bn_paths = sorted({p for pts in points.values() for p, kind, _ in pts if kind == "bn"})
        out_paths = sorted({p for pts in points.values() for p, kind, _ in pts if kind == "output"})
        totals: dict[str, torch.Tensor] = {}
        captured: dict[str, torch.Tensor] = {}

        def keep(path: str, module: nn.Module, out: torch.Tensor) -> torch.Tensor:
            captured[path] = out
            # a later in-place op (ReLU(inplace=True)) would overwrite the captured tensor: hand on a copy
            return out.clone()

        hooks = [
            model.get_submodule(p).register_forward_hook(lambda mod, inp, out, p=p: keep(p, mod, out))
            for p in out_paths
        ]
        params = list(model.parameters())
        flags = [p.requires_grad for p in params]
        was_training = model.training
        model.eval()
        device = next((p.device for p in params), torch.device("cpu"))
        loss_fn = self._loss_fn()
        seen = 0
        try:
            for p in params:  # frozen models too: every activation must depend on something that needs grad
                p.requires_grad_(True)
            with torch.enable_grad():
                for batch in calib_batches:
                    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                        raise EdgepruneError(_NEEDS_LABELS)
                    take = self.num_images - seen
                    x, y = batch[0][:take].to(device), batch[1][:take].to(device)
                    if x.shape[0] == 0:
                        break
                    captured.clear()
                    loss = loss_fn(model(x), y)
                    if loss.dim() != 0:
                        raise EdgepruneError(f"the taylor loss must be a scalar, got shape {tuple(loss.shape)}")
                    bns = [model.get_submodule(p) for p in bn_paths]
                    inputs = [t for bn in bns for t in (bn.weight, bn.bias)] + [captured[p] for p in out_paths]
                    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
                    for i, (p, bn) in enumerate(zip(bn_paths, bns, strict=True)):
                        g_w, g_b = grads[2 * i], grads[2 * i + 1]
                        t = torch.zeros_like(bn.weight, dtype=torch.float64)
                        if g_w is not None:
                            t = t + (bn.weight.detach() * g_w).double()
                        if g_b is not None:
                            t = t + (bn.bias.detach() * g_b).double()
                        totals[p] = totals.get(p, 0) + t.pow(2)
                    for p, a, g_a in zip(out_paths, inputs[2 * len(bns) :], grads[2 * len(bns) :], strict=True):
                        if g_a is None:  # the loss does not depend on this output
                            g_a = torch.zeros_like(a)
                        prod = (a.detach() * g_a).double()
                        if isinstance(model.get_submodule(p), nn.Linear):
                            prod = prod.movedim(-1, 1)
                        t = prod.sum(dim=[d for d in range(prod.dim()) if d != 1])
                        totals[p] = totals.get(p, 0) + t.pow(2)
                    seen += x.shape[0]
                    if seen >= self.num_images:
                        break
        finally:
            for h in hooks:
                h.remove()
            captured.clear()
            for p, flag in zip(params, flags, strict=True):
                p.requires_grad_(flag)
            model.train(was_training)
        if seen == 0:
            raise EdgepruneError("the calibration data given to the taylor criterion is empty")

        out: Scores = {}
        for g in groups:
            per_point = [
                _per_unit(totals[path].cpu().numpy(), g.index_map[(key, "out")], self.aggregate)
                for path, _, key in points[g.id]
            ]
            out[g.id] = _combine(per_point, self.aggregate)
        return out
