"""Float32 -> float16 conversion of an ONNX graph, for runtimes that take precision from the model itself.

TensorRT 11 builds strongly typed networks only (no FP16 builder flag): an FP16 engine needs an FP16 ONNX.
The pass converts float32 initializers, constants and computed tensors to float16, keeps every op it does
not know to be safe in float16 running in float32 (with Cast nodes around it), and by default keeps the
graph's inputs and outputs float32 (Cast nodes at the boundary), so callers feed and read the same arrays
as before. Non-float tensors (shapes, indices, masks) are never touched.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import EdgepruneError

FP16_MAX = float(np.finfo(np.float16).max)  # 65504

# Standard-domain ops whose float inputs and outputs may all be float16 (one float type per node).
FP16_OPS = frozenset({
    "Abs", "Add", "ArgMax", "ArgMin", "AveragePool", "BatchNormalization", "Cast", "CastLike", "Ceil", "Celu",
    "Clip", "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "DepthToSpace", "Div",
    "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "Flatten", "Floor", "Gather",
    "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Greater",
    "GreaterOrEqual", "GroupNormalization", "HardSigmoid", "HardSwish", "Identity", "InstanceNormalization",
    "IsInf", "IsNaN", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax",
    "LpNormalization", "LRN", "MatMul", "Max", "MaxPool", "Mean", "Min", "Mish", "Mul", "Neg", "Pad", "Pow",
    "PRelu", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
    "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "Round", "ScatterElements",
    "ScatterND", "Selu", "Shape", "Sigmoid", "Sign", "Sin", "Size", "Slice", "Softmax", "Softplus",
    "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "Tile", "TopK", "Transpose",
    "Trilu", "Unsqueeze", "Upsample", "Where",
})
# Inputs that the ONNX spec types as tensor(float) only, whatever the node's data type.
FP32_INPUTS: dict[str, frozenset[int]] = {"Resize": frozenset({2}), "Upsample": frozenset({1})}
_STANDARD_DOMAINS = ("", "ai.onnx")


@dataclass
class Fp16Report:
    """What the conversion did, for the sidecar."""

    keep_io_types: bool
    initializers_converted: int = 0
    constants_converted: int = 0
    casts_added: int = 0
    values_clamped: int = 0
    kept_fp32: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "keep_io_types": self.keep_io_types,
            "initializers_converted": self.initializers_converted,
            "constants_converted": self.constants_converted,
            "casts_added": self.casts_added,
            "values_clamped": self.values_clamped,
            "kept_fp32": dict(self.kept_fp32),
        }


def _to_fp16_array(arr: np.ndarray, report: Fp16Report) -> np.ndarray:
    """float32 -> float16, clamping finite values beyond float16's range instead of turning them into inf."""
    finite = np.isfinite(arr)
    over = finite & (np.abs(arr) > FP16_MAX)
    report.values_clamped += int(over.sum())
    return np.where(over, np.sign(arr) * FP16_MAX, arr).astype(np.float16)


def _tensor_to_fp16(tensor, report: Fp16Report):
    from onnx import numpy_helper

    out = numpy_helper.from_array(_to_fp16_array(numpy_helper.to_array(tensor), report), tensor.name)
    return out


def _elem_types(model) -> dict[str, int]:
    """Element type of every tensor name, from shape inference over the whole graph."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:  # onnx raises several types for a malformed graph
        raise EdgepruneError(f"fp16 conversion: ONNX type inference failed ({exc})") from exc
    types: dict[str, int] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    return types


def convert_to_fp16(model, *, keep_io_types: bool = True, keep_fp32_ops: tuple[str, ...] = ()):
    """Return (float16 model, Fp16Report). `model` (an onnx.ModelProto) is not modified.

    Ops outside FP16_OPS (and those in `keep_fp32_ops`) run in float32 between Cast nodes. Graphs with
    control flow (If/Loop/Scan subgraphs) are refused: converting their subgraphs is not supported.
    """
    import onnx
    from onnx import TensorProto, helper

    float32, float16 = TensorProto.FLOAT, TensorProto.FLOAT16
    src = onnx.ModelProto()
    src.CopyFrom(model)
    types = _elem_types(src)
    g = src.graph
    report = Fp16Report(keep_io_types=keep_io_types)

    for node in g.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise EdgepruneError(
                f"fp16 conversion: node {node.name or node.op_type!r} ({node.op_type}) has a subgraph; "
                "control flow is not supported: export without it or build in fp32"
            )

    def is_float(name: str, node=None) -> bool:
        if not name:
            return False
        if name not in types:
            where = f" (input/output of {node.op_type} node {node.name!r})" if node is not None else ""
            raise EdgepruneError(f"fp16 conversion: the type of tensor {name!r}{where} cannot be inferred")
        return types[name] == float32

    def runs_fp16(node) -> bool:
        return (node.domain in _STANDARD_DOMAINS and node.op_type in FP16_OPS
                and node.op_type not in keep_fp32_ops)

    # which precisions each float initializer is read in
    inits = {t.name: t for t in g.initializer}
    wanted: dict[str, set[int]] = {}
    for node in g.node:
        fp16 = runs_fp16(node)
        for i, name in enumerate(node.input):
            if name in inits and inits[name].data_type == float32:
                fp32_only = not fp16 or i in FP32_INPUTS.get(node.op_type, ())
                wanted.setdefault(name, set()).add(float32 if fp32_only else float16)

    graph_outputs = {vi.name for vi in g.output if is_float(vi.name)}
    # (tensor, element type) -> name of the tensor holding it in that type
    available: dict[tuple[str, int], str] = {}
    new_inits = []
    for t in g.initializer:
        uses = wanted.get(t.name, set())
        if t.data_type != float32 or uses == {float32} or not uses:
            new_inits.append(t)
            available[(t.name, t.data_type)] = t.name
            continue
        half = _tensor_to_fp16(t, report)
        report.initializers_converted += 1
        if float32 in uses:  # read in both precisions: keep the original, add a float16 copy
            half.name = f"{t.name}__fp16"
            new_inits.append(t)
            available[(t.name, float32)] = t.name
        new_inits.append(half)
        available[(t.name, float16)] = half.name
    for vi in g.input:
        if vi.name in inits:  # an initializer also listed as an input (IR < 4): follow the initializer
            if available.get((vi.name, float16)) == vi.name:
                vi.type.tensor_type.elem_type = float16
            continue
        if is_float(vi.name):
            if keep_io_types:
                available[(vi.name, float32)] = vi.name
            else:
                vi.type.tensor_type.elem_type = float16
                available[(vi.name, float16)] = vi.name

    out_nodes = []
    used_names = {n.name for n in g.node}

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in used_names:
            k += 1
            name = f"{base}_{k}"
        used_names.add(name)
        return name

    def get(tensor: str, want: int) -> str:
        """The name of `tensor` in type `want`, adding a Cast from the other float type if needed."""
        if (tensor, want) in available:
            return available[(tensor, want)]
        other = float32 if want == float16 else float16
        if (tensor, other) not in available:
            raise EdgepruneError(f"fp16 conversion: tensor {tensor!r} is used before it is produced")
        suffix = "fp16" if want == float16 else "fp32"
        cast_out = fresh(f"{tensor}__{suffix}")
        out_nodes.append(helper.make_node("Cast", [available[(tensor, other)]], [cast_out], to=want,
                                          name=fresh(f"{tensor}__cast_{suffix}")))
        report.casts_added += 1
        available[(tensor, want)] = cast_out
        return cast_out

    def convert_attributes(node) -> None:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == float32:
                attr.i = float16
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == float32:
                attr.t.CopyFrom(_tensor_to_fp16(attr.t, report))
                report.constants_converted += 1
        if node.op_type == "Constant":
            for attr in list(node.attribute):
                if attr.name in ("value_float", "value_floats"):
                    values = np.asarray([attr.f] if attr.name == "value_float" else list(attr.floats),
                                        dtype=np.float32)
                    if attr.name == "value_float":
                        values = values.reshape(())
                    node.attribute.remove(attr)
                    tensor = onnx.numpy_helper.from_array(_to_fp16_array(values, report))
                    node.attribute.append(helper.make_attribute("value", tensor))
                    report.constants_converted += 1

    kept = Counter()
    for node in g.node:
        fp16 = runs_fp16(node)
        if not fp16 and any(is_float(n, node) for n in list(node.input) + list(node.output)):
            kept[node.op_type if node.domain in _STANDARD_DOMAINS else f"{node.domain}.{node.op_type}"] += 1
        for i, name in enumerate(node.input):
            if is_float(name, node):
                want = float32 if (not fp16 or i in FP32_INPUTS.get(node.op_type, ())) else float16
                node.input[i] = get(name, want)
        if fp16:
            convert_attributes(node)
        produced = float16 if fp16 else float32
        for j, name in enumerate(node.output):
            if not is_float(name, node):
                continue
            boundary = float32 if keep_io_types else float16
            if name in graph_outputs and produced != boundary:
                # the graph output keeps its name and boundary type; the node writes an internal tensor
                inner = fresh(f"{name}__{'fp16' if produced == float16 else 'fp32'}")
                node.output[j] = inner
                available[(name, produced)] = inner
            else:
                available[(name, produced)] = name
        out_nodes.append(node)

    for vi in g.output:
        if vi.name not in graph_outputs:
            continue
        boundary = float32 if keep_io_types else float16
        vi.type.tensor_type.elem_type = boundary
        if available.get((vi.name, boundary)) == vi.name:
            continue
        other = float16 if boundary == float32 else float32
        out_nodes.append(helper.make_node("Cast", [available[(vi.name, other)]], [vi.name], to=boundary,
                                          name=fresh(f"{vi.name}__cast_out")))
        report.casts_added += 1

    del g.node[:]
    g.node.extend(out_nodes)
    del g.initializer[:]
    g.initializer.extend(new_inits)
    # float value_info entries are stale now; inference below recomputes them
    kept_vi = [vi for vi in g.value_info if types.get(vi.name) != float32]
    del g.value_info[:]
    g.value_info.extend(kept_vi)
    report.kept_fp32 = dict(kept)
    try:
        onnx.checker.check_model(src)
        result = onnx.shape_inference.infer_shapes(src, strict_mode=True)
    except Exception as exc:
        raise EdgepruneError(f"fp16 conversion produced an invalid graph ({str(exc).splitlines()[0][:300]})") from exc
    return result, report
