"""Layer signatures, and the small ONNX graphs that measure one layer at many channel widths.

A layer's latency depends only on what its kernel sees: op, widths, kernel geometry, input size, batch,
dtype, and what the runtime fuses into it (a folded BatchNorm becomes a bias; a following ReLU, and the
residual Add before it, are fused into the conv by onnxruntime's NCHWc and FusedConv passes). That is the
`LayerSignature`; layers with equal signatures share one latency table.

Variants are written directly with onnx.helper (re-exporting a model per width is far too slow). Many
variants are packed into one model as independent branches; every node of branch i is named `L{i}__*`,
so the per-node profile can be read back per branch whatever the runtime renames or fuses (onnxruntime
names a fused NCHWc conv after a tensor of the branch, e.g. `L3__c_nchwc`). Each branch gets its own
graph inputs, passed through a 1x1 MaxPool (named `P{i}__*`, not counted) so that the conv reads a freshly
written tensor in the runtime's native layout, as it does inside the real model. A few trivial `Q{j}__`
probe nodes measure the profiler's fixed per-node cost, which is subtracted from every counted node.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("edgeprune.costmodel")

# Activations a runtime fuses into a conv/gemm: torch module class name -> our name
_ACT_MODULES = {
    "ReLU": "relu", "ReLU6": "relu6", "Sigmoid": "sigmoid", "Hardswish": "hardswish", "SiLU": "silu",
    "LeakyReLU": "leaky_relu", "Tanh": "tanh",
}
_ACT_FUNCTIONS = {"relu": "relu", "relu_": "relu", "relu6": "relu6", "sigmoid": "sigmoid",
                  "hardswish": "hardswish", "silu": "silu", "leaky_relu": "leaky_relu", "tanh": "tanh"}
ACTIVATIONS = ("none", *sorted(set(_ACT_MODULES.values())))
_ONNX_DTYPES = {"float32": 1, "float16": 10}  # TensorProto.FLOAT, FLOAT16
OPSET = 17
IR_VERSION = 8  # what onnxruntime >= 1.12 and TensorRT 8.5+ all read
PROBES_PER_PACK = 6
BRANCH_RE = re.compile(r"L(\d+)__")
PROBE_RE = re.compile(r"Q(\d+)__")
METADATA_KEY = "edgeprune.costmodel.branches"


@dataclass(frozen=True)
class LayerSignature:
    """Everything that decides one layer's kernel time (channel widths are the full, dense ones)."""

    op: str  # "conv" | "linear"
    in_channels: int
    out_channels: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    height: int = 1  # input H (1 for linear)
    width: int = 1
    batch: int = 1  # for linear: every leading dim folded in
    bias: bool = False  # the conv has a bias or a BatchNorm folds into one
    activation: str = "none"  # fused activation after the (optional) residual add
    residual: bool = False  # an Add of a same-shape tensor right after the conv (+BN), fused by runtimes
    dtype: str = "float32"

    @property
    def depthwise(self) -> bool:
        return self.op == "conv" and self.groups > 1 and self.groups == self.in_channels == self.out_channels

    def output_hw(self) -> tuple[int, int]:
        if self.op == "linear":
            return 1, 1
        kh, kw = self.kernel
        pt, pl, pb, pr = self.padding
        oh = (self.height + pt + pb - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        ow = (self.width + pl + pr - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        return oh, ow

    def macs(self, out_channels: int | None = None, in_channels: int | None = None) -> int:
        """Multiply-accumulates at the given widths (an estimate of work, used only to size packs)."""
        o = out_channels or self.out_channels
        i = in_channels or self.in_channels
        if self.op == "linear":
            return self.batch * o * i
        oh, ow = self.output_hw()
        groups = o if self.depthwise else self.groups
        return self.batch * oh * ow * o * (i // max(1, groups)) * self.kernel[0] * self.kernel[1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerSignature:
        d = dict(d)
        for key in ("kernel", "stride", "padding", "dilation"):
            d[key] = tuple(d[key])
        return cls(**d)


@dataclass
class LayerRecord:
    """One prunable layer of a model as seen in a forward pass."""

    path: str
    signature: LayerSignature
    fixed_in: bool = False  # reads the model input: its input width cannot be pruned
    fixed_out: bool = False  # writes the model output: its output width cannot be pruned
    calls: int = 1


# ---------------------------------------------------------------------------------------------------
# signature extraction


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _conv_padding(conv: Any) -> tuple[int, int, int, int]:
    pad = conv.padding
    if isinstance(pad, str):
        if pad == "valid":
            return (0, 0, 0, 0)
        totals = [d * (k - 1) for d, k in zip(_pair(conv.dilation), _pair(conv.kernel_size), strict=True)]
        return (totals[0] // 2, totals[1] // 2, totals[0] - totals[0] // 2, totals[1] - totals[1] // 2)
    ph, pw = _pair(pad)
    return (ph, pw, ph, pw)


def _fusions_from_fx(model: Any, paths: set[str]) -> dict[str, tuple[bool, str, bool]] | None:
    """(bn, activation, residual) per layer path from the traced graph; None when tracing fails."""
    import warnings

    import torch
    from torch import fx, nn

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm = fx.symbolic_trace(model)
    except Exception as exc:  # any untraceable model: fall back to the module call order
        log.debug("torch.fx cannot trace the model (%s); fusions read from the module call order", exc)
        return None
    modules = dict(gm.named_modules())
    adds = {operator.add, operator.iadd, torch.add}

    def single_user(node: fx.Node) -> fx.Node | None:
        users = list(node.users)
        return users[0] if len(users) == 1 else None

    def activation_of(node: fx.Node | None) -> str | None:
        if node is None:
            return None
        if node.op == "call_module":
            mod = modules.get(str(node.target))
            name = type(mod).__name__
            if isinstance(mod, nn.Hardtanh) and (mod.min_val, mod.max_val) == (0.0, 6.0):
                return "relu6"
            return _ACT_MODULES.get(name)
        if node.op in ("call_function", "call_method"):
            fname = getattr(node.target, "__name__", str(node.target))
            return _ACT_FUNCTIONS.get(fname)
        return None

    def is_add(node: fx.Node | None) -> bool:
        if node is None:
            return False
        if node.op == "call_function" and node.target in adds:
            return True
        return node.op == "call_method" and node.target in ("add", "add_")

    out: dict[str, tuple[bool, str, bool]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or str(node.target) not in paths:
            continue
        cur, bn = node, False
        nxt = single_user(cur)
        if nxt is not None and nxt.op == "call_module" and isinstance(
            modules.get(str(nxt.target)), (nn.BatchNorm1d, nn.BatchNorm2d)
        ):
            cur, bn, nxt = nxt, True, single_user(nxt)
        residual = False
        # The runtime fuses an Add into a conv producing one of its operands that nothing else reads;
        # when both qualify (a projection shortcut), it is charged to the first operand.
        if is_add(nxt) and len(nxt.args) >= 2 and (
            nxt.args[0] is cur or (nxt.args[1] is cur and not _is_layer_output(nxt.args[0], modules, paths))
        ):
            residual, nxt = True, single_user(nxt)
        act = activation_of(nxt) or "none"
        out[str(node.target)] = (bn, act, residual)
    return out


def _is_layer_output(arg: Any, modules: dict, paths: set[str]) -> bool:
    """Whether an fx argument is a conv/linear output (possibly through its BatchNorm) used only once,
    i.e. one a runtime could fuse an Add into."""
    from torch import fx, nn

    if not isinstance(arg, fx.Node) or arg.op != "call_module" or len(arg.users) != 1:
        return False
    if str(arg.target) in paths:
        return True
    if isinstance(modules.get(str(arg.target)), (nn.BatchNorm1d, nn.BatchNorm2d)) and arg.args:
        src = arg.args[0]
        return isinstance(src, fx.Node) and src.op == "call_module" and str(src.target) in paths
    return False


def inspect_layers(model: Any, example_input: Any) -> list[LayerRecord]:
    """Every Conv2d and Linear of `model` with its signature, in the order a forward pass calls them."""
    import torch
    from torch import nn

    if not isinstance(example_input, torch.Tensor):
        example_input = torch.zeros(tuple(example_input))
    layer_types = (nn.Conv2d, nn.Linear)
    names = {m: n for n, m in model.named_modules()}
    seen: dict[str, dict[str, Any]] = {}
    call_order: list[tuple[str, nn.Module]] = []
    hooks = []

    def leaf_hook(mod: nn.Module, inp: tuple, out: Any) -> None:
        path = names.get(mod, "")
        call_order.append((path, mod))
        if isinstance(mod, layer_types) and inp and isinstance(inp[0], torch.Tensor):
            rec = seen.get(path)
            if rec is None:
                seen[path] = {"shape": tuple(inp[0].shape), "input": inp[0], "output": out, "calls": 1,
                              "dtype": str(inp[0].dtype).replace("torch.", "")}
            else:
                rec["calls"] += 1
                if tuple(inp[0].shape) != rec["shape"]:
                    log.warning("layer %s is called with different input shapes; using the first", path)

    for mod in model.modules():
        if len(list(mod.children())) == 0:
            hooks.append(mod.register_forward_hook(leaf_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            result = model(example_input)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    outputs = _flatten_tensors(result)

    fusions = _fusions_from_fx(model, set(seen))
    if fusions is None:
        fusions = _fusions_from_order(call_order, set(seen))

    records: list[LayerRecord] = []
    done: set[str] = set()
    first = True
    for path, mod in ((p, m) for p, m in call_order if p in seen):
        if path in done:
            continue
        done.add(path)
        rec = seen[path]
        bn, act, residual = fusions.get(path, (False, "none", False))
        shape = rec["shape"]
        if isinstance(mod, nn.Conv2d):
            if mod.padding_mode != "zeros":
                log.debug("%s pads with %s; its variants use zero padding", path, mod.padding_mode)
            sig = LayerSignature(
                op="conv", in_channels=mod.in_channels, out_channels=mod.out_channels,
                kernel=_pair(mod.kernel_size), stride=_pair(mod.stride), padding=_conv_padding(mod),
                dilation=_pair(mod.dilation), groups=mod.groups, height=int(shape[-2]), width=int(shape[-1]),
                batch=int(shape[0]) if len(shape) == 4 else 1, bias=mod.bias is not None or bn,
                activation=act, residual=residual, dtype=rec["dtype"],
            )
        else:
            sig = LayerSignature(
                op="linear", in_channels=mod.in_features, out_channels=mod.out_features,
                batch=int(math.prod(shape[:-1])) if len(shape) > 1 else 1, bias=mod.bias is not None or bn,
                activation=act, residual=residual, dtype=rec["dtype"],
            )
        fixed_in = rec["input"] is example_input or (
            first and sig.op == "conv" and example_input.dim() == 4 and sig.in_channels == example_input.shape[1]
        )
        fixed_out = any(rec["output"] is o for o in outputs)
        records.append(LayerRecord(path, sig, fixed_in=fixed_in, fixed_out=fixed_out, calls=rec["calls"]))
        first = False
    return records


def _flatten_tensors(obj: Any) -> list[Any]:
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _flatten_tensors(item)]
    return []


def _fusions_from_order(call_order: list[tuple[str, Any]], paths: set[str]) -> dict[str, tuple[bool, str, bool]]:
    """Fallback: a layer called right before a BatchNorm and/or an activation module is fused with them."""
    from torch import nn

    out: dict[str, tuple[bool, str, bool]] = {}
    for i, (path, _mod) in enumerate(call_order):
        if path not in paths or path in out:
            continue
        j, bn = i + 1, False
        if j < len(call_order) and isinstance(call_order[j][1], (nn.BatchNorm1d, nn.BatchNorm2d)):
            bn, j = True, j + 1
        act = _ACT_MODULES.get(type(call_order[j][1]).__name__, "none") if j < len(call_order) else "none"
        out[path] = (bn, act, False)
    return out


def signatures_from_model(model: Any, example_input: Any) -> dict[str, LayerSignature]:
    """module path -> LayerSignature for every Conv2d and Linear that a forward pass on `example_input` runs."""
    return {r.path: r.signature for r in inspect_layers(model, example_input)}


# ---------------------------------------------------------------------------------------------------
# width grids


def auto_widths(full: int, *, step: int = 8, max_points: int = 8, multiple: int = 1) -> list[int]:
    """Widths to measure for a dimension of `full` channels: the narrowest width the layer allows (1, or
    `multiple`) and a quarter and half of the first step, then multiples of `step` (doubled until at most
    `max_points` remain, kept a multiple of `multiple`), always ending at `full` itself.

    The narrowest width is measured because pruning can go there (the floor model keeps one unit per
    group), and a guess below the grid invented savings: on an NCHWc CPU a conv cut from 8 to 1 output
    channels still computes a padded block of 16."""
    if full <= 0:
        raise ValueError(f"a layer dimension must be positive, got {full}")
    s = max(1, step)
    while math.ceil(full / s) > max_points:
        s *= 2
    s = s * multiple // math.gcd(s, multiple)
    widths = list(range(s, full, s))
    narrowest = max(1, multiple)
    narrow = sorted({w for w in (narrowest, s // 4, s // 2) if narrowest <= w < min(s, full) and w % narrowest == 0})
    return [*narrow, *widths, full]


@dataclass(frozen=True)
class Grid:
    """The widths measured for one layer. `ins` is None for a depthwise layer, whose input width is its
    output width."""

    outs: tuple[int, ...]
    ins: tuple[int, ...] | None

    def cells(self) -> list[tuple[int, int]]:
        if self.ins is None:
            return [(o, o) for o in self.outs]
        return [(o, i) for o in self.outs for i in self.ins]

    def to_dict(self) -> dict[str, Any]:
        return {"outs": list(self.outs), "ins": list(self.ins) if self.ins is not None else None}


def grid_for(record: LayerRecord, widths: Any = "auto") -> Grid:
    """The grid of widths to measure for a layer: `widths` is "auto", an int step, or a mapping
    path -> (out_widths, in_widths)."""
    sig = record.signature
    if isinstance(widths, dict) and record.path in widths:
        outs, ins = widths[record.path]
        outs = tuple(sorted({int(w) for w in outs} | {sig.out_channels}))
        ins = None if sig.depthwise else tuple(sorted({int(w) for w in ins} | {sig.in_channels}))
        return Grid(outs, ins)
    step = int(widths) if isinstance(widths, int) else 8
    if sig.depthwise:
        return Grid(tuple(auto_widths(sig.out_channels, step=step, max_points=16)), None)
    mult = sig.groups if sig.op == "conv" else 1
    outs = [sig.out_channels] if record.fixed_out else auto_widths(sig.out_channels, step=step, multiple=mult)
    ins = [sig.in_channels] if record.fixed_in else auto_widths(sig.in_channels, step=step, multiple=mult)
    if len(outs) == 1 or len(ins) == 1:  # one free dimension: afford a finer 1-D grid
        if not record.fixed_out:
            outs = auto_widths(sig.out_channels, step=step, max_points=16, multiple=mult)
        if not record.fixed_in:
            ins = auto_widths(sig.in_channels, step=step, max_points=16, multiple=mult)
    return Grid(tuple(outs), tuple(ins))


# ---------------------------------------------------------------------------------------------------
# ONNX variant packs


@dataclass
class Branch:
    """One variant in a pack: a layer signature at one (out, in) width pair."""

    index: int
    signature: LayerSignature
    out_channels: int
    in_channels: int
    key: str = ""  # which table it feeds

    @property
    def macs(self) -> int:
        return self.signature.macs(self.out_channels, self.in_channels)


@dataclass
class Pack:
    branches: list[Branch] = field(default_factory=list)

    @property
    def macs(self) -> int:
        return sum(b.macs for b in self.branches)


def plan_packs(branches: Sequence[Branch], *, max_branches: int = 96, max_macs: float = 2e9) -> list[Pack]:
    """Group branches into packs small enough to profile quickly; each branch gets its pack-local index."""
    packs: list[Pack] = []
    cur = Pack()
    for b in sorted(branches, key=lambda b: (b.key, b.out_channels, b.in_channels)):
        if cur.branches and (len(cur.branches) >= max_branches or cur.macs + b.macs > max_macs):
            packs.append(cur)
            cur = Pack()
        cur.branches.append(b)
    if cur.branches:
        packs.append(cur)
    for pack in packs:
        for i, b in enumerate(pack.branches):
            b.index = i
    return packs


def _activation_nodes(helper: Any, act: str, x: str, y: str, prefix: str, inits: list, numpy_helper: Any,
                      np: Any, dtype: Any) -> list:
    if act == "relu":
        return [helper.make_node("Relu", [x], [y], name=f"{prefix}relu")]
    if act == "relu6":
        inits.append(numpy_helper.from_array(np.array(0.0, dtype), f"{prefix}lo"))
        inits.append(numpy_helper.from_array(np.array(6.0, dtype), f"{prefix}hi"))
        return [helper.make_node("Clip", [x, f"{prefix}lo", f"{prefix}hi"], [y], name=f"{prefix}clip")]
    if act == "sigmoid":
        return [helper.make_node("Sigmoid", [x], [y], name=f"{prefix}sigmoid")]
    if act == "tanh":
        return [helper.make_node("Tanh", [x], [y], name=f"{prefix}tanh")]
    if act == "hardswish":
        return [helper.make_node("HardSwish", [x], [y], name=f"{prefix}hardswish")]
    if act == "leaky_relu":
        return [helper.make_node("LeakyRelu", [x], [y], name=f"{prefix}leaky", alpha=0.01)]
    if act == "silu":
        return [helper.make_node("Sigmoid", [x], [f"{prefix}sg"], name=f"{prefix}sigmoid"),
                helper.make_node("Mul", [x, f"{prefix}sg"], [y], name=f"{prefix}mul")]
    return [helper.make_node("Identity", [x], [y], name=f"{prefix}id")]


def write_pack(pack: Pack, path: Path, *, seed: int = 0, probes: int = PROBES_PER_PACK) -> Path:
    """Write `pack` as one ONNX model of independent branches (see the module docstring)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes: list = []
    inits: list = []
    inputs: list = []
    outputs: list = []
    shared: dict[LayerSignature, str] = {}
    for b in pack.branches:
        sig = b.signature
        elem = _ONNX_DTYPES.get(sig.dtype)
        if elem is None:
            raise ValueError(f"no ONNX variants for dtype {sig.dtype}")
        npdt = np.float16 if sig.dtype == "float16" else np.float32
        # one full-size random weight per signature, sliced per branch (ORT constant-folds the slices)
        if sig not in shared:
            tag = f"S{len(shared)}__"
            shared[sig] = tag
            if sig.op == "conv":
                per_group = 1 if sig.depthwise else sig.in_channels // sig.groups
                wshape = (sig.out_channels, per_group, *sig.kernel)
            else:
                wshape = (sig.out_channels, sig.in_channels)
            fan_in = math.prod(wshape[1:])
            w = (rng.standard_normal(wshape) / math.sqrt(fan_in)).astype(npdt)
            inits.append(numpy_helper.from_array(w, f"{tag}w"))
            inits.append(numpy_helper.from_array((rng.standard_normal(sig.out_channels) * 0.1).astype(npdt),
                                                 f"{tag}b"))
        tag = shared[sig]
        p, q = f"P{b.index}__", f"L{b.index}__"
        o, c = b.out_channels, b.in_channels
        if sig.op == "conv":
            groups = o if sig.depthwise else sig.groups
            wcols = 1 if sig.depthwise else c // sig.groups
            inits.append(numpy_helper.from_array(np.array([o, wcols], np.int64), f"{p}we"))
            inits.append(numpy_helper.from_array(np.array([0, 0], np.int64), f"{p}z2"))
            inits.append(numpy_helper.from_array(np.array([0, 1], np.int64), f"{p}ax"))
            nodes.append(helper.make_node("Slice", [f"{tag}w", f"{p}z2", f"{p}we", f"{p}ax"], [f"{p}w"],
                                          name=f"{p}wslice"))
            conv_in = [f"{p}xi", f"{p}w"]
            if sig.bias:
                inits.append(numpy_helper.from_array(np.array([o], np.int64), f"{p}be"))
                inits.append(numpy_helper.from_array(np.array([0], np.int64), f"{p}z1"))
                nodes.append(helper.make_node("Slice", [f"{tag}b", f"{p}z1", f"{p}be", f"{p}z1"], [f"{p}b"],
                                              name=f"{p}bslice"))
                conv_in.append(f"{p}b")
            inputs.append(helper.make_tensor_value_info(f"{p}x", elem, [sig.batch, c, sig.height, sig.width]))
            nodes.append(helper.make_node("MaxPool", [f"{p}x"], [f"{p}xi"], name=f"{p}prep", kernel_shape=[1, 1]))
            nodes.append(helper.make_node(
                "Conv", conv_in, [f"{q}c"], name=f"{q}conv", kernel_shape=list(sig.kernel),
                strides=list(sig.stride), pads=list(sig.padding), dilations=list(sig.dilation), group=groups,
            ))
            oh, ow = sig.output_hw()
            out_shape = [sig.batch, o, oh, ow]
        else:
            inits.append(numpy_helper.from_array(np.array([o, c], np.int64), f"{p}we"))
            inits.append(numpy_helper.from_array(np.array([0, 0], np.int64), f"{p}z2"))
            inits.append(numpy_helper.from_array(np.array([0, 1], np.int64), f"{p}ax"))
            nodes.append(helper.make_node("Slice", [f"{tag}w", f"{p}z2", f"{p}we", f"{p}ax"], [f"{p}w"],
                                          name=f"{p}wslice"))
            gemm_in = [f"{p}x", f"{p}w"]
            if sig.bias:
                inits.append(numpy_helper.from_array(np.array([o], np.int64), f"{p}be"))
                inits.append(numpy_helper.from_array(np.array([0], np.int64), f"{p}z1"))
                nodes.append(helper.make_node("Slice", [f"{tag}b", f"{p}z1", f"{p}be", f"{p}z1"], [f"{p}b"],
                                              name=f"{p}bslice"))
                gemm_in.append(f"{p}b")
            inputs.append(helper.make_tensor_value_info(f"{p}x", elem, [sig.batch, c]))
            nodes.append(helper.make_node("Gemm", gemm_in, [f"{q}c"], name=f"{q}gemm", transB=1))
            out_shape = [sig.batch, o]
        last = f"{q}c"
        if sig.residual:
            inputs.append(helper.make_tensor_value_info(f"{p}s", elem, out_shape))
            skip = f"{p}s"
            if sig.op == "conv":
                nodes.append(helper.make_node("MaxPool", [skip], [f"{p}si"], name=f"{p}sprep", kernel_shape=[1, 1]))
                skip = f"{p}si"
            nodes.append(helper.make_node("Add", [last, skip], [f"{q}a"], name=f"{q}add"))
            last = f"{q}a"
        if sig.activation != "none":
            nodes += _activation_nodes(helper, sig.activation, last, f"{q}y", q, inits, numpy_helper, np, npdt)
            last = f"{q}y"
        outputs.append(helper.make_tensor_value_info(last, elem, out_shape))
    for j in range(probes):
        inputs.append(helper.make_tensor_value_info(f"Q{j}__x", 1, [1, 1]))
        nodes.append(helper.make_node("Relu", [f"Q{j}__x"], [f"Q{j}__y"], name=f"Q{j}__relu"))
        outputs.append(helper.make_tensor_value_info(f"Q{j}__y", 1, [1, 1]))
    graph = helper.make_graph(nodes, "edgeprune_costmodel_pack", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="edgeprune.costmodel")
    meta = [{"index": b.index, "key": b.key, "out": b.out_channels, "in": b.in_channels,
             "signature": b.signature.to_dict()} for b in pack.branches]
    helper.set_model_props(model, {METADATA_KEY: json.dumps(meta)})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def read_branch_times(profile: dict[str, Any], n_branches: int) -> tuple[list[float], float]:
    """Per-branch latency (ms) from a raw profile of a pack, and the per-node profiler cost subtracted.

    A branch's time is the sum over its counted nodes (layout conversions and preparation excluded) of
    the node's time minus the median time of the trivial probe nodes (the profiler's fixed per-node cost,
    which an unprofiled run does not pay)."""
    nodes = profile.get("nodes") or []
    probe_times = [float(n["latency_ms"]) for n in nodes if PROBE_RE.search(str(n.get("name", "")))]
    eps = float(sorted(probe_times)[len(probe_times) // 2]) if probe_times else 0.0
    times = [0.0] * n_branches
    found = [False] * n_branches
    for n in nodes:
        name, op = str(n.get("name", "")), str(n.get("op") or "")
        if op.startswith(("Reorder", "Reformat")) or name.lower().startswith("reformat"):
            continue
        m = BRANCH_RE.search(name)
        if not m:
            continue
        i = int(m.group(1))
        if i < n_branches:
            times[i] += max(0.0, float(n["latency_ms"]) - eps)
            found[i] = True
    missing = [i for i, ok in enumerate(found) if not ok]
    if missing:
        raise ValueError(f"the profile has no node time for variant branch(es) {missing[:5]}")
    return times, eps

