"""Join runtime per-node times back to the PyTorch modules that produced them.

Runtimes rename and fuse nodes: onnxruntime's NCHWc transformer names a fused Conv(+Add)+Relu after its
output tensor plus `_nchwc` and inserts Reorder nodes; TensorRT fuses layers and lists their ONNX nodes
in the engine inspector. So the join works on the original exported graph, never on names alone:
  1. a runtime node whose name is an original node's name keeps that node;
  2. otherwise its name, with known suffixes stripped, is read as a tensor name and traced back to the
     producing node, walking back through weightless element-wise ops to the Conv/Gemm whose weight shape
     matches the one the runtime reports;
  3. layout nodes (Reorder*) are charged to the neighbouring node in execution order;
  4. TensorRT layers carry the ONNX node names they came from.
An original node's module comes from its weight's name (`layer1.0.conv1.weight` -> `layer1.0.conv1`,
the reliable key), else from the exporter's recorded name scopes, else from a legacy scoped node name.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

_PARAM_SUFFIXES = (".weight", ".bias", ".running_mean", ".running_var")
_WEIGHTED_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "FusedConv", "BatchNormalization"}
_PASS_THROUGH_OPS = {"Relu", "Clip", "Add", "Sum", "Sigmoid", "Mul", "HardSigmoid", "HardSwish",
                     "BatchNormalization", "LeakyRelu", "Identity", "Tanh"}
_SUFFIX_RE = re.compile(r"(_nchwc|_token_\d+|_output_\d+|_kernel_time)$")


@dataclass
class NodeInfo:
    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    module: str | None
    weight_shape: list[int] | None = None


@dataclass
class GraphIndex:
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    producer: dict[str, str] = field(default_factory=dict)

    def module_of_tensor(self, tensor: str) -> str | None:
        node = self.producer.get(tensor)
        return self.nodes[node].module if node else None


def _module_from_param(param: str, modules: set[str] | None) -> str | None:
    for suffix in _PARAM_SUFFIXES:
        if param.endswith(suffix):
            stem = param[: -len(suffix)]
            if modules is None or stem in modules:
                return stem
    return None


def _module_from_scopes(node, modules: set[str] | None) -> str | None:
    meta = {p.key: p.value for p in node.metadata_props}
    raw = meta.get("pkg.torch.onnx.name_scopes")
    if raw:
        try:
            scopes = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            scopes = []
        candidates = [s for s in scopes if s and (modules is None or s in modules)]
        if modules is None:
            candidates = candidates[:-1]  # the last scope names the op, not a module
        if candidates:
            return candidates[-1]
    if node.name.startswith("/"):  # legacy exporter: /layer1/layer1.0/conv1/Conv
        current = ""
        for part in node.name.split("/")[1:-1]:
            for candidate in (part, f"{current}.{part}" if current else part):
                if modules is None or candidate in modules:
                    current = candidate
                    break
        return current or None
    return None


def index_graph(onnx_path: Path, module_names: set[str] | None = None) -> GraphIndex:
    """Index the exported graph: every node with its module and weight shape, and tensor producers."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    index = GraphIndex()
    for node in model.graph.node:
        module = None
        weight_shape = None
        for name in node.input[1:]:
            if name in inits:
                module = module or _module_from_param(name, module_names)
                weight_shape = weight_shape or inits[name]
        module = module or _module_from_scopes(node, module_names)
        info = NodeInfo(node.name, node.op_type, list(node.input), list(node.output), module, weight_shape)
        index.nodes[node.name] = info
        for out in node.output:
            index.producer[out] = node.name
    return index


def _weight_shape_of(profile_node: dict) -> list[int] | None:
    shapes = profile_node.get("input_shapes") or []
    if len(shapes) >= 2 and isinstance(shapes[1], list) and len(shapes[1]) >= 2:
        return shapes[1]
    return None


def _trace_back(index: GraphIndex, start: str, want_shape: list[int] | None, depth: int = 4) -> NodeInfo | None:
    """From the node producing a fused output, find the weighted node it was fused from."""
    frontier, seen, found = [start], set(), []
    for _ in range(depth):
        nxt = []
        for name in frontier:
            if name in seen or name not in index.nodes:
                continue
            seen.add(name)
            info = index.nodes[name]
            if info.op in _WEIGHTED_OPS and info.weight_shape is not None:
                found.append(info)
                if want_shape is None or info.weight_shape == want_shape:
                    return info
                continue
            if info.op in _PASS_THROUGH_OPS or name == start:
                nxt.extend(index.producer[t] for t in info.inputs if t in index.producer)
        frontier = nxt
    return found[0] if found else None


def _resolve(index: GraphIndex, pnode: dict) -> tuple[NodeInfo | None, str]:
    name = pnode["name"]
    onnx_names = pnode.get("onnx_nodes") or []
    for onnx_name in onnx_names:  # TensorRT: inspector-listed ONNX nodes, weighted first
        info = index.nodes.get(onnx_name)
        if info is not None and info.op in _WEIGHTED_OPS:
            return info, "tensorrt-layer"
    for onnx_name in onnx_names:
        if onnx_name in index.nodes:
            return index.nodes[onnx_name], "tensorrt-layer"
    if name in index.nodes:
        info = index.nodes[name]
        return info, "name"
    stripped = name
    while True:
        shorter = _SUFFIX_RE.sub("", stripped)
        if shorter == stripped:
            break
        stripped = shorter
    if stripped in index.nodes:
        return index.nodes[stripped], "name"
    if stripped in index.producer:
        start = index.producer[stripped]
        if pnode.get("op") in ("Conv", "FusedConv", "Gemm"):
            found = _trace_back(index, start, _weight_shape_of(pnode))
            if found is not None:
                return found, "fused-output"
        return index.nodes[start], "output-tensor"
    return None, "unresolved"


def attribute(profile_nodes: list[dict], index: GraphIndex) -> list[dict]:
    """Return copies of the runtime's nodes with `module`, `onnx_node` and `attribution` (how) added."""
    out: list[dict] = []
    for pnode in profile_nodes:
        info, how = _resolve(index, pnode)
        item = dict(pnode)
        item["onnx_node"] = info.name if info else None
        item["module"] = info.module if info else None
        item["attribution"] = how
        out.append(item)
    # Layout conversions belong to the layer they feed (ReorderInput) or drain (ReorderOutput).
    for i, item in enumerate(out):
        if item["module"] is not None or not str(item.get("op", "")).startswith("Reorder"):
            continue
        order = range(i + 1, len(out)) if item["op"] == "ReorderInput" else range(i - 1, -1, -1)
        for j in order:
            if out[j]["module"] is not None:
                item["module"], item["attribution"] = out[j]["module"], "adjacent-layout"
                break
    return out


def attributed_share(nodes: list[dict]) -> float:
    """Share of the summed per-node time charged to some module (the join's quality)."""
    total = sum(n.get("latency_ms", 0.0) for n in nodes)
    covered = sum(n.get("latency_ms", 0.0) for n in nodes if n.get("module"))
    return covered / total if total > 0 else 0.0
