"""Channel groups on torch-pruning's DependencyGraph, and physical removal of their channels.

Vocabulary
----------
*channel class*  the set of (module, role, index) entries that must go when one output channel of a
                 conv/linear goes (torch-pruning traces this: BN, residual adds, concat, depthwise convs,
                 the consumers' input channels, ...).
*unit*           one or more classes that can only be removed together (a grouped conv needs the same
                 position removed from every group; the option-A shortcut keeps its zero padding
                 symmetric). A unit is what the pruner removes and what a criterion scores.
*group*          (`ChannelGroup`) the units that touch the same set of layers, e.g. the channels of one
                 block's inner conv, or the residual-stream channels that enter a CIFAR ResNet in stage 2.

Index spaces: a group's units are numbered 0..size-1 in the current model; `index_map` gives, for every
member (module path, role), the channel indices each unit occupies there.

The option-A shortcut (`edgeprune.models.cifar_resnet.PadShortcut`) is taught to torch-pruning as a
customised layer: its channels are addressed in *output* coordinates, input channel i is output channel
i + pad, and the zero-padding channels couple only downstream. Other parameter-free channel maps can be
taught the same way with `register_custom_layer`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.pruner.function import BasePruningFunc

from edgeprune.errors import EdgepruneError
from edgeprune.models.cifar_resnet import PadShortcut

ConvNd = nn.modules.conv._ConvNd
Entry = tuple[str, str, int]  # (module path, "out" | "in", channel index)
UnitRule = Callable[[nn.Module, str, set[int]], Iterable[frozenset[int]]]

__all__ = [
    "ChannelGroup",
    "PruneStep",
    "PruningGraph",
    "count_params_flops",
    "register_custom_layer",
]


# --------------------------------------------------------------------------- customised layers


class PadShortcutPruner(BasePruningFunc):
    """Option-A shortcut: `out = pad(x[:, :, ::2, ::2])` with `pad` zero channels on each side.

    Indices reaching this layer are in output coordinates (see `_pad_index_maps`). Removing input channel
    i removes output channel i + pad; removing padding channels shrinks the padding, which the module can
    only represent symmetrically — the unit rule below pairs front and back padding channels.
    """

    TARGET_MODULES = (PadShortcut,)

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        front = sum(1 for i in idxs if i < layer.pad)
        back = sum(1 for i in idxs if i >= layer.pad + layer.in_channels)
        if front != back:
            raise RuntimeError(
                f"PadShortcut can only lose padding channels in front/back pairs (got {front} front, {back} back)"
            )
        layer.pad -= front
        layer.in_channels -= len(idxs) - front - back
        return layer

    prune_in_channels = prune_out_channels  # one index space (output coordinates) for both sides

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.in_channels + 2 * layer.pad

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.in_channels


class _ShiftMapping:
    """Index mapping across a PadShortcut; reads the live module so it stays right after pruning."""

    def __init__(self, layer: nn.Module, to_output: bool):
        self.layer = layer
        self.to_output = to_output

    def __call__(self, idxs: list) -> list:
        HybridIndex = tp._helpers._HybridIndex
        pad, n = self.layer.pad, self.layer.in_channels
        if self.to_output:
            return [HybridIndex(idx=i.idx + pad, root_idx=i.root_idx) for i in idxs]
        return [HybridIndex(idx=i.idx - pad, root_idx=i.root_idx) for i in idxs if pad <= i.idx < pad + n]


def _pad_index_maps(dg: tp.DependencyGraph, node: Any) -> None:
    for in_node in node.inputs:
        for dep in in_node.dependencies:
            if dep.target is node:
                dep.index_mapping[0] = _ShiftMapping(node.module, to_output=True)
        for dep in node.dependencies:
            if dep.target is in_node:
                dep.index_mapping[0] = _ShiftMapping(node.module, to_output=False)


def _pad_units(layer: nn.Module, role: str, idxs: set[int]) -> Iterable[frozenset[int]]:
    back0 = layer.pad + layer.in_channels
    for j in range(layer.pad):
        yield frozenset({j, back0 + j})


@dataclass
class _CustomLayer:
    pruner: BasePruningFunc
    wire: Callable[[tp.DependencyGraph, Any], None] | None  # sets index mappings on the built graph
    unit_rule: UnitRule | None  # which of its channels must be removed together


_CUSTOM_LAYERS: dict[type, _CustomLayer] = {
    PadShortcut: _CustomLayer(PadShortcutPruner(), _pad_index_maps, _pad_units),
}


def register_custom_layer(
    layer_type: type,
    pruner: BasePruningFunc,
    wire: Callable[[tp.DependencyGraph, Any], None] | None = None,
    unit_rule: UnitRule | None = None,
) -> None:
    """Teach the graph a parameter-free (or custom) layer type torch-pruning does not know.

    `pruner` is a torch-pruning `BasePruningFunc`; `wire(dg, node)` may set index mappings on the node's
    dependencies after tracing; `unit_rule(module, role, indices)` yields sets of channel indices of the
    module that can only be removed together.
    """
    _CUSTOM_LAYERS[layer_type] = _CustomLayer(pruner, wire, unit_rule)


def _grouped_conv_units(conv: nn.Module, role: str, idxs: set[int]) -> Iterable[frozenset[int]]:
    # Conv2d needs equal-sized groups: a removed position must go from every group at once.
    n = conv.in_channels if role == "in" else conv.out_channels
    per_group = n // conv.groups
    for r in range(per_group):
        yield frozenset(r + k * per_group for k in range(conv.groups))


def _unit_rule(module: nn.Module) -> UnitRule | None:
    custom = _CUSTOM_LAYERS.get(type(module))
    if custom is not None:
        return custom.unit_rule
    if isinstance(module, ConvNd) and module.groups > 1 and not _is_depthwise(module):
        return _grouped_conv_units
    return None


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, ConvNd) and m.groups == m.out_channels and m.out_channels > 1


def _is_layer(m: Any) -> bool:
    return isinstance(m, (ConvNd, nn.Linear))


# --------------------------------------------------------------------------- public records


@dataclass
class ChannelGroup:
    """Prunable channels that touch the same layers; one score per unit, units removed whole.

    `id` is the root's module path (stable across rounds; `#k` is appended if one root starts several
    groups). `members` are the (module path, "out" | "in") pairs the group touches. `layers` are the
    conv/linear modules whose *output* channels are in the group (charge latency to these).
    `index_map[(path, role)][u]` are the channel indices unit u occupies in that module now.
    `params_per_unit`/`flops_per_unit` are what removing one unit saves (MACs at the example input).
    """

    id: str
    root: str
    members: list[tuple[str, str]]
    size: int
    layers: list[str]
    index_map: dict[tuple[str, str], list[tuple[int, ...]]] = field(repr=False)
    params_per_unit: int = 0
    flops_per_unit: int = 0
    channels_per_unit: int = 1
    # per unit: (root module path, root channel index) of each class in the unit; used to prune
    _roots: list[tuple[tuple[str, int], ...]] = field(default_factory=list, repr=False)

    @property
    def params_per_channel(self) -> int:
        return self.params_per_unit

    @property
    def flops_per_channel(self) -> int:
        return self.flops_per_unit

    def root_indices(self, units: Iterable[int]) -> dict[str, list[int]]:
        """Root-module channel indices (torch-pruning's coordinates) of the given units."""
        out: dict[str, list[int]] = {}
        for u in units:
            for path, idx in self._roots[u]:
                out.setdefault(path, []).append(idx)
        return {p: sorted(set(v)) for p, v in out.items()}


@dataclass
class PruneStep:
    """One physical pruning step: what was removed, in the coordinates of the model before the step."""

    round: int
    groups: dict[str, list[int]]  # group id -> removed unit indices
    roots: dict[str, list[int]]  # root module path -> removed output-channel indices (replayable)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PruneStep:
        return cls(
            round=int(d["round"]),
            groups={k: [int(i) for i in v] for k, v in d["groups"].items()},
            roots={k: [int(i) for i in v] for k, v in d["roots"].items()},
        )


# --------------------------------------------------------------------------- the graph


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class _Class:
    root: tuple[str, int]
    entries: set[Entry]
    prunable: bool


class PruningGraph:
    """Prunable channel groups of `model` and the means to remove them physically.

    `ignored`: modules (or their paths) whose output channels must stay. The model's outputs (whatever
    module produces them) and the last `nn.Linear` (the classifier) are always protected. Pruning keeps the
    model runnable; every step is recorded in `history` (replayable by `edgeprune.pruning.manifest`).
    The loop may set `current_round` before pruning; it is stored with each step.

    `verify=True` checks every step against the dense model with the removed channels silenced (their BN
    gamma/beta, else their filters, zeroed): the outputs on the example input must agree. It costs a model
    copy and two forward passes per step, and assumes activations map 0 to 0 and no normalisation mixes
    channels (true of conv-BN-ReLU/ReLU6/SiLU/hardswish networks, not of LayerNorm-over-channels ones).
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor | tuple[torch.Tensor, ...],
        ignored: Iterable[nn.Module | str] | None = None,
        verify: bool = False,
    ):
        self.model = model
        self.example_input = example_input
        self.verify = verify
        self.current_round = 0
        self._ignored_spec = list(ignored or [])
        self._history: list[PruneStep] = []
        self.rebuild()

    # ---- building

    def rebuild(self) -> None:
        """Re-trace the dependency graph; call after changing the model's structure outside this object."""
        was_training = self.model.training
        self._names = {m: n for n, m in self.model.named_modules()}
        self._modules = dict(self.model.named_modules())
        ignored: set[str] = set()
        for item in self._ignored_spec:
            if isinstance(item, str):
                if item not in self._modules:
                    raise ValueError(f"ignored module {item!r} is not in the model")
                ignored.add(item)
            elif item in self._names:
                ignored.add(self._names[item])
            else:
                raise ValueError(f"ignored module {type(item).__name__} is not part of the model")
        linears = [n for n, m in self._modules.items() if isinstance(m, nn.Linear)]
        if linears:
            ignored.add(linears[-1])
        self.ignored = ignored
        # Output sizes (for MAC counts) are recorded during the tracer's own forward pass.
        self._spatial: dict[str, int] = {}
        hooks = [m.register_forward_hook(self._record_size) for m in self._modules.values() if _is_layer(m)]
        outputs: list[Any] = []

        def forward(model: nn.Module, x: Any) -> Any:
            outputs.append(_forward(model, x))
            return outputs[-1]

        try:
            with torch.enable_grad():  # the tracer follows autograd
                self.dg = tp.DependencyGraph().build_dependency(
                    self.model,
                    example_inputs=self.example_input,
                    forward_fn=forward,
                    customized_pruners={t: c.pruner for t, c in _CUSTOM_LAYERS.items()},
                    verbose=False,
                )
        except Exception as exc:
            raise EdgepruneError(
                f"cannot trace the channel dependencies of {type(self.model).__name__} "
                f"({type(exc).__name__}: {exc}); this architecture is not supported for structured pruning"
            ) from exc
        finally:
            for h in hooks:
                h.remove()
            self.model.train(was_training)
        self.output_shapes = [tuple(t.shape) for t in tp.utils.flatten_as_list(outputs[-1])]
        for module, node in self.dg.module2node.items():
            custom = _CUSTOM_LAYERS.get(type(module))
            if custom is not None and custom.wire is not None:
                custom.wire(self.dg, node)
        self._groups: list[ChannelGroup] | None = None

    def _record_size(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        """Output positions per sample (H*W for 2-d convs; tokens for linears) of a conv/linear."""
        inner = output.shape[2:] if isinstance(module, ConvNd) else output.shape[1:-1]
        self._spatial[self._names[module]] = math.prod(inner)

    def _role(self, dep: Any) -> str:
        pruner = self.dg.get_pruner_of_module(dep.target.module)
        return "out" if dep.handler == pruner.prune_out_channels else "in"

    def _dg_group(self, path: str, idxs: Sequence[int]) -> Any:
        module = self._modules[path]
        pruner = self.dg.get_pruner_of_module(module)
        return self.dg.get_pruning_group(module, pruner.prune_out_channels, list(idxs))

    def _classes(self) -> list[_Class]:
        classes: list[_Class] = []
        claimed: set[tuple[str, int]] = set()
        for path, module in self._modules.items():
            if not _is_layer(module) or module not in self.dg.module2node:
                continue
            n_out = module.out_channels if isinstance(module, ConvNd) else module.out_features
            todo = [c for c in range(n_out) if (path, c) not in claimed]
            if not todo:
                continue
            group = self._dg_group(path, todo)
            per_root: dict[int, _Class] = {c: _Class((path, c), set(), True) for c in todo}
            for item in group:
                dep = item.dep
                target = dep.target.module
                if dep.target.type == tp.ops.OPTYPE.OUTPUT:
                    for r in item.root_idxs:
                        per_root[r].prunable = False
                    continue
                name = self._names.get(target) if isinstance(target, nn.Module) else None
                if name is None:
                    continue  # functional ops (add, cat, slice, reshape) carry no weights
                role = self._role(dep)
                for idx, r in zip(item.idxs, item.root_idxs, strict=True):
                    cls = per_root[r]
                    cls.entries.add((name, role, idx))
                    if role == "out" and name in self.ignored:
                        cls.prunable = False
            for c in todo:
                cls = per_root[c]
                for name, role, idx in cls.entries:
                    if role == "out" and _is_layer(self._modules[name]):
                        claimed.add((name, idx))
                classes.append(cls)
        return classes

    def _build_groups(self) -> list[ChannelGroup]:
        classes = self._classes()
        where: dict[Entry, int] = {}
        for k, cls in enumerate(classes):
            for e in cls.entries:
                where[e] = k
        uf = _UnionFind(len(classes))
        pinned: set[int] = set()  # unions that would need channels no class can remove
        by_member: dict[tuple[str, str], set[int]] = {}
        for name, role, idx in where:
            by_member.setdefault((name, role), set()).add(idx)
        for (name, role), idxs in by_member.items():
            rule = _unit_rule(self._modules[name])
            if rule is None:
                continue
            for tied in rule(self._modules[name], role, idxs):
                ks = [where.get((name, role, i)) for i in tied]
                present = [k for k in ks if k is not None]
                for k in present[1:]:
                    uf.union(present[0], k)
                if present and len(present) < len(ks):
                    pinned.add(present[0])
        components: dict[int, list[int]] = {}
        for k in range(len(classes)):
            components.setdefault(uf.find(k), []).append(k)
        bad_roots = {uf.find(k) for k in pinned}
        order = {name: i for i, name in enumerate(self._modules)}

        buckets: dict[frozenset[tuple[str, str]], list[list[int]]] = {}
        for rep, ks in components.items():
            if rep in bad_roots or not all(classes[k].prunable for k in ks):
                continue
            sig = frozenset((n, r) for k in ks for (n, r, _) in classes[k].entries)
            if not any(r == "out" and _is_layer(self._modules[n]) for n, r in sig):
                continue
            buckets.setdefault(sig, []).append(ks)

        groups: list[ChannelGroup] = []
        for sig, units in buckets.items():
            members = sorted(sig, key=lambda nr: (order[nr[0]], nr[1]))
            layers = [n for n, r in members if r == "out" and _is_layer(self._modules[n])]
            root = layers[0]

            def first_root_index(ks: list[int], root: str = root) -> int:
                return min(i for k in ks for (n, r, i) in classes[k].entries if n == root and r == "out")

            units.sort(key=first_root_index)
            index_map: dict[tuple[str, str], list[tuple[int, ...]]] = {m: [] for m in members}
            for ks in units:
                per_member: dict[tuple[str, str], list[int]] = {m: [] for m in members}
                for k in ks:
                    for n, r, i in classes[k].entries:
                        per_member[(n, r)].append(i)
                for m in members:
                    index_map[m].append(tuple(sorted(per_member[m])))
            params, flops = self._unit_cost(index_map)
            groups.append(
                ChannelGroup(
                    id=root,
                    root=root,
                    members=members,
                    size=len(units),
                    layers=layers,
                    index_map=index_map,
                    params_per_unit=params,
                    flops_per_unit=flops,
                    channels_per_unit=len(index_map[(root, "out")][0]),
                    _roots=[tuple(sorted(classes[k].root for k in ks)) for ks in units],
                )
            )
        groups.sort(key=lambda g: (order[g.root], g._roots[0]))
        seen: dict[str, int] = {}
        for g in groups:
            n = seen.get(g.root, 0)
            seen[g.root] = n + 1
            if n:
                g.id = f"{g.root}#{n}"
        return groups

    def _unit_cost(self, index_map: Mapping[tuple[str, str], list[tuple[int, ...]]]) -> tuple[int, int]:
        """Parameters and MACs one unit (the first; units of a group are alike) accounts for."""
        params = flops = 0
        for (name, role), per_unit in index_map.items():
            n = len(per_unit[0])
            m = self._modules[name]
            pos = self._spatial.get(name, 1)
            if isinstance(m, ConvNd):
                k = int(torch.tensor(m.kernel_size).prod().item())
                if _is_depthwise(m):
                    per = k * (m.in_channels // m.groups)
                    params += n * (per + (m.bias is not None))
                    flops += n * per * pos
                elif role == "out":
                    per = k * m.in_channels // m.groups
                    params += n * (per + (m.bias is not None))
                    flops += n * per * pos
                else:
                    per = k * m.out_channels // m.groups
                    params += n * per
                    flops += n * per * pos
            elif isinstance(m, nn.Linear):
                per = m.in_features if role == "out" else m.out_features
                params += n * (per + (role == "out" and m.bias is not None))
                flops += n * per * pos
            else:
                weight = getattr(m, "weight", None)
                if isinstance(weight, torch.Tensor) and weight.dim() == 1:
                    params += n * (1 + (getattr(m, "bias", None) is not None))
        return params, flops

    # ---- queries

    def groups(self) -> list[ChannelGroup]:
        """The prunable channel groups of the model as it is now; ids stay stable across pruning steps.

        A group down to one unit stays listed (pruning must leave every group at least one unit). Ids
        change only where a step changes the coupling itself: a grouped conv cut to one input channel per
        group becomes depthwise, which ties its outputs to its inputs and merges the two groups.
        """
        if self._groups is None:
            self._groups = self._build_groups()
        return list(self._groups)

    def group(self, group_id: str) -> ChannelGroup:
        for g in self.groups():
            if g.id == group_id:
                return g
        raise KeyError(f"no prunable group {group_id!r}")

    @property
    def history(self) -> list[PruneStep]:
        return list(self._history)

    def next_module(self, path: str) -> str | None:
        """The module that directly consumes `path`'s output, if it is a single named module (e.g. its BN)."""
        node = self.dg.module2node.get(self._modules[path])
        if node is None or len(node.outputs) != 1:
            return None
        return (
            self._names.get(node.outputs[0].module) if isinstance(node.outputs[0].module, nn.Module) else None
        )

    # ---- pruning

    def prune(self, group_id: str, indices: Iterable[int]) -> PruneStep:
        """Remove units `indices` of one group from every coupled layer."""
        return self.prune_many({group_id: indices})

    def prune_many(self, plan: Mapping[str, Iterable[int]]) -> PruneStep:
        """Remove units from several groups at once (all indices refer to the model before this call)."""
        by_id = {g.id: g for g in self.groups()}
        removed: dict[str, list[int]] = {}
        roots: dict[str, set[int]] = {}
        for gid, idxs in plan.items():
            if gid not in by_id:
                raise KeyError(f"no prunable group {gid!r}")
            g = by_id[gid]
            units = sorted({int(i) for i in idxs})
            if not units:
                continue
            if units[0] < 0 or units[-1] >= g.size:
                raise IndexError(f"group {gid!r} has units 0..{g.size - 1}, got {units}")
            if len(units) >= g.size:
                raise ValueError(f"group {gid!r} must keep at least one of its {g.size} units")
            removed[gid] = units
            for path, ri in g.root_indices(units).items():
                roots.setdefault(path, set()).update(ri)
        step = PruneStep(self.current_round, removed, {p: sorted(v) for p, v in roots.items()})
        if removed:
            reference = self.silenced_copy(removed) if self.verify else None
            self._apply(step.roots)
            if reference is not None:
                self._check_against(reference)
            self._history.append(step)
        return step

    def silenced_copy(self, plan: Mapping[str, Iterable[int]]) -> nn.Module:
        """A copy of the model in which the planned units produce zeros (BN gamma/beta, else filters, zeroed)."""
        by_id = {g.id: g for g in self.groups()}
        dense = copy.deepcopy(self.model)
        modules = dict(dense.named_modules())
        with torch.no_grad():
            for gid, units in plan.items():
                for (path, role), per_unit in by_id[gid].index_map.items():
                    m = modules[path]
                    if role != "out" or not isinstance(
                        m, (nn.modules.batchnorm._BatchNorm, nn.Linear, ConvNd)
                    ):
                        continue
                    idx = [i for u in units for i in per_unit[u]]
                    weight = m.weight.transpose(0, 1) if isinstance(m, ConvNd) and m.transposed else m.weight
                    if weight is not None:
                        weight[idx] = 0
                    if m.bias is not None:
                        m.bias[idx] = 0
        return dense

    def _check_against(self, reference: nn.Module) -> None:
        was_training = self.model.training
        self.model.eval()
        reference.eval()
        try:
            with torch.no_grad():
                got = tp.utils.flatten_as_list(_forward(self.model, self.example_input))
                want = tp.utils.flatten_as_list(_forward(reference, self.example_input))
        finally:
            self.model.train(was_training)
        for g, w in zip(got, want, strict=True):
            scale = float(w.abs().max()) if w.numel() else 0.0
            if not torch.allclose(g, w, rtol=1e-3, atol=1e-4 * max(scale, 1e-6)):
                raise RuntimeError(
                    "the pruned model differs from the dense model with those channels silenced "
                    f"(max difference {float((g - w).abs().max()):.3g}): the dependency graph mis-couples "
                    f"channels of {type(self.model).__name__}"
                )

    def replay(self, steps: Iterable[PruneStep]) -> None:
        """Apply recorded steps (from `history` of a graph on an identical model) to this model."""
        for step in steps:
            for path, idxs in step.roots.items():
                if path not in self._modules:
                    raise ValueError(f"recorded root {path!r} is not a module of this model")
                n = self.dg.get_pruner_of_module(self._modules[path]).get_out_channels(self._modules[path])
                if any(not 0 <= i < n for i in idxs):
                    raise ValueError(f"recorded indices for {path!r} exceed its {n} channels")
            self._apply(step.roots)
            self._history.append(step)

    def _apply(self, roots: Mapping[str, Sequence[int]]) -> None:
        # One merged torch-pruning group, so every layer is cut once, in pre-step coordinates.
        merged: dict[tuple[Any, Any], tuple[Any, set[int]]] = {}
        for path, idxs in roots.items():
            for item in self._dg_group(path, idxs):
                key = (item.dep.target, item.dep.handler)
                merged.setdefault(key, (item.dep, set()))[1].update(item.idxs)
        group = tp.dependency.Group()
        group._DG = self.dg
        for dep, idxs in merged.values():
            group.add_dep(dep, sorted(idxs))
        group.prune(record_history=False)
        before = self.output_shapes
        try:
            self.rebuild()
        except EdgepruneError as exc:  # a coupling torch-pruning got wrong: say so, do not blame the user
            raise RuntimeError(f"the pruning step left the model unrunnable: {exc.__cause__}") from exc
        if self.output_shapes != before:
            raise RuntimeError(
                f"the pruning step changed the model's output shapes {before} -> {self.output_shapes}"
            )


def _forward(model: nn.Module, example_input: Any) -> Any:
    if isinstance(example_input, (tuple, list)):
        return model(*example_input)
    return model(example_input)


def count_params_flops(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    """(parameters, FLOPs) of `model`; FLOPs are multiply-accumulates as torch-pruning counts them.

    torch-pruning counts on a copy, so hooks and mode changes do not leak into `model`.
    """
    macs, params = tp.utils.count_ops_and_params(model, example_input)
    return int(params), int(macs)
