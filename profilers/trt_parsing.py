"""TensorRT output parsing that needs no TensorRT: per-layer timing aggregation, engine-inspector JSON,
and the mapping from fused engine layers back to the ONNX nodes they came from.

Formats handled (as TensorRT 10 and 11 emit them):
- IProfiler: `report_layer_time(layer_name, ms)` once per layer per execution.
- Engine inspector (`get_engine_information(LayerInformationFormat.JSON)`): {"Layers": [...],
  "Bindings": [names]} on TensorRT 10, {"Layers": [...], "I/O Tensors": [{...}]} on 11. Each layer is a
  dict at DETAILED verbosity, a bare name at LAYER_NAMES_ONLY, or (from get_layer_information) a JSON
  string per layer. Tensors carry "Format/Datatype" (10) or "Format" and "DataType" (11).
- Layer "Metadata": "[ONNX Layer: <node>]" entries separated by \\x1e or \\x1f (TensorRT >= 8.6).
- Fused layer names: "/conv1/Conv + /relu/Relu", "PWN(/act/Sigmoid, /act/Mul)", nested PWN(...),
  "{ForeignNode[/first/Node.../last/Node]}" (Myelin), "Reformatting CopyNode for Input Tensor 0 to <layer>",
  and a " [profile N]" suffix for optimisation profiles after the first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import numpy as np

from .common import ProfilerError

TRT_PROVIDER = "TensorRT"
METADATA_SEPARATORS = ("\x1e", "\x1f")
_ONNX_LAYER_RE = re.compile(r"\[ONNX Layer:\s*(.*?)\](?=\s*(?:\[ONNX Layer:|$))", re.S)
_PROFILE_SUFFIX_RE = re.compile(r"\s*\[profile\s+(\d+)\]\s*$")
_FOREIGN_RE = re.compile(r"^\{ForeignNode\[(.*)\]\}$", re.S)
_PWN_RE = re.compile(r"^PWN\((.*)\)$", re.S)
_REFORMAT_INPUT_RE = re.compile(r"^Reformatting CopyNode for Input Tensor \d+ to (.+)$", re.S)

# bytes per element, by the type words TensorRT prints in formats and weight records
_TYPE_SIZES: dict[str, float] = {
    "fp32": 4,
    "float": 4,
    "float32": 4,
    "fp16": 2,
    "half": 2,
    "float16": 2,
    "bf16": 2,
    "bfloat16": 2,
    "fp8": 1,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
    "int32": 4,
    "uint32": 4,
    "int64": 8,
    "uint64": 8,
    "int16": 2,
    "uint16": 2,
    "double": 8,
    "fp64": 8,
    "int4": 0.5,
    "fp4": 0.5,
}
# canonical dtype names for the words above
_TYPE_NAMES: dict[str, str] = {
    "fp32": "float32",
    "float": "float32",
    "float32": "float32",
    "fp16": "float16",
    "half": "float16",
    "float16": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp8": "fp8",
    "int8": "int8",
    "uint8": "uint8",
    "bool": "bool",
    "int32": "int32",
    "uint32": "uint32",
    "int64": "int64",
    "uint64": "uint64",
    "int16": "int16",
    "uint16": "uint16",
    "double": "float64",
    "fp64": "float64",
    "int4": "int4",
    "fp4": "fp4",
}


# ---------------------------------------------------------------------------------------------------
# IProfiler callbacks


class LayerTimeAggregator:
    """Collects `report_layer_time` callbacks run by run.

    Call `begin_run()` before each execution; callbacks then land in that run. A layer reported more
    than once in a run (loops, or a profiler that reports per kernel) is summed within the run.
    """

    def __init__(self) -> None:
        self._runs: list[dict[str, list[float]]] = []
        self._order: dict[str, int] = {}

    def begin_run(self) -> None:
        self._runs.append({})

    def record(self, layer_name: str, ms: float) -> None:
        if not self._runs:
            self.begin_run()
        self._runs[-1].setdefault(layer_name, []).append(float(ms))
        self._order.setdefault(layer_name, len(self._order))

    @property
    def n_runs(self) -> int:
        return len(self._runs)

    def summary(self, skip_runs: int = 0) -> list[dict[str, Any]]:
        """Per layer, in first-report order: median over runs (after `skip_runs`) of the per-run total,
        calls per run, and min/max of the per-run totals. A run without the layer counts as 0 ms."""
        runs = [r for r in self._runs[skip_runs:] if r] or [r for r in self._runs if r]
        if not runs:
            return []
        out = []
        for name in sorted(self._order, key=self._order.__getitem__):
            totals = [sum(r.get(name, ())) for r in runs]
            counts = [len(r.get(name, ())) for r in runs]
            if not any(counts):
                continue
            out.append(
                {
                    "name": name,
                    "latency_ms": float(np.median(totals)),
                    "calls": int(round(float(np.median(counts)))),
                    "min_ms": float(min(totals)),
                    "max_ms": float(max(totals)),
                    "runs": len(runs),
                }
            )
        return out


def aggregate_layer_times(
    runs: Iterable[Iterable[tuple[str, float]]], skip_runs: int = 0
) -> list[dict[str, Any]]:
    """Aggregate recorded callbacks given as one list of (layer_name, ms) per run."""
    agg = LayerTimeAggregator()
    for run in runs:
        agg.begin_run()
        for name, ms in run:
            agg.record(name, ms)
    return agg.summary(skip_runs=skip_runs)


# ---------------------------------------------------------------------------------------------------
# ONNX node names from layer metadata and fused layer names


def metadata_onnx_nodes(metadata: str | None) -> list[str]:
    """'[ONNX Layer: /a/Conv]\\x1e[ONNX Layer: /a/Relu]' -> ['/a/Conv', '/a/Relu']."""
    if not metadata:
        return []
    text = str(metadata)
    for sep in METADATA_SEPARATORS:
        text = text.replace(sep, "\n")
    names: list[str] = []
    for part in text.split("\n"):
        part = part.strip()
        if part:
            names.extend(m.strip() for m in _ONNX_LAYER_RE.findall(part))
    return _dedupe(n for n in names if n)


def _split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside (), [] and {}."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def strip_profile_suffix(name: str) -> tuple[str, int]:
    """'/conv/Conv [profile 1]' -> ('/conv/Conv', 1); names without a suffix belong to profile 0."""
    m = _PROFILE_SUFFIX_RE.search(name)
    if not m:
        return name, 0
    return name[: m.start()], int(m.group(1))


def split_fused_name(name: str) -> dict[str, Any]:
    """Parse a TensorRT layer name into the ONNX-side names it mentions.

    Returns {"names": [...], "kind": "plain"|"fused"|"pointwise"|"foreign"|"reformat"}. For a Myelin
    "ForeignNode" only the first and last node of the range are named ("range": [first, last]).
    """
    base, _ = strip_profile_suffix(name.strip())
    m = _REFORMAT_INPUT_RE.match(base)
    if m:
        target = split_fused_name(m.group(1))
        return {"names": target["names"], "kind": "reformat", "range": target.get("range")}
    if base.startswith("Reformatting CopyNode"):
        return {"names": [], "kind": "reformat", "range": None}
    names: list[str] = []
    kinds: set[str] = set()
    rng: list[str] | None = None
    for part in _split_top(base, " + "):
        fm = _FOREIGN_RE.match(part)
        pm = _PWN_RE.match(part)
        if fm:
            ends = [e.strip() for e in fm.group(1).split("...") if e.strip()]
            names.extend(ends)
            rng = [ends[0], ends[-1]] if ends else None
            kinds.add("foreign")
        elif pm:
            inner = []
            for piece in _split_top(pm.group(1), ", "):
                inner.extend(split_fused_name(piece)["names"])
            names.extend(inner)
            kinds.add("pointwise")
        else:
            names.append(part)
    parts = len(_split_top(base, " + "))
    if "foreign" in kinds:
        kind = "foreign"
    elif parts > 1:
        kind = "fused"
    elif "pointwise" in kinds:
        kind = "pointwise"
    else:
        kind = "plain"
    return {"names": _dedupe(names), "kind": kind, "range": rng}


def onnx_nodes_for_layer(
    name: str,
    metadata: str | None = None,
    known_nodes: Collection[str] | None = None,
    node_order: Sequence[str] | None = None,
) -> tuple[list[str], str | None]:
    """ONNX node names one engine layer came from, and where they were read ("metadata" or "name").

    Metadata wins when present. Names read from the layer name are kept only if they are ONNX node names
    (when `known_nodes` is given: fused names also carry weight tensors, e.g. "conv.weight + Conv_9").
    A ForeignNode range is expanded through `node_order` (the ONNX graph's node order) when given.
    """
    from_meta = metadata_onnx_nodes(metadata)
    if from_meta:
        names, source = from_meta, "metadata"
    else:
        parsed = split_fused_name(name)
        names, source = list(parsed["names"]), "name"
        if parsed["range"] and node_order:
            first, last = parsed["range"]
            try:
                i, j = node_order.index(first), node_order.index(last)
            except ValueError:
                pass
            else:
                names = list(node_order[min(i, j) : max(i, j) + 1])
    if known_nodes is not None:
        known = set(known_nodes)
        names = [n for n in names if n in known]
    names = _dedupe(names)
    return names, (source if names else None)


def _dedupe(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for it in items:
        seen.setdefault(it, None)
    return list(seen)


# ---------------------------------------------------------------------------------------------------
# engine inspector JSON


def _type_word(text: str | None) -> str | None:
    """The element type named in a TensorRT format/type string ('Row major linear FP16 format' -> fp16)."""
    if not text:
        return None
    for word in re.findall(r"[A-Za-z]+[0-9]*", str(text)):
        low = word.lower()
        if low in _TYPE_SIZES:
            return low
    return None


def parse_tensor(raw: dict[str, Any] | str) -> dict[str, Any]:
    """An inspector tensor record -> {name, shape, dtype, format, location}."""
    if isinstance(raw, str):
        return {"name": raw, "shape": None, "dtype": None, "format": None, "location": None}
    fmt = raw.get("Format/Datatype", raw.get("Format"))
    word = _type_word(raw.get("DataType")) or _type_word(fmt)
    dims = raw.get("Dimensions")
    shape = [int(d) for d in dims] if isinstance(dims, list) else None
    return {
        "name": raw.get("Name"),
        "shape": shape,
        "dtype": _TYPE_NAMES.get(word) if word else None,
        "format": fmt,
        "location": raw.get("Location"),
    }


def tensor_bytes(t: dict[str, Any]) -> int | None:
    """Dense size of a parsed tensor; None when its shape or dtype is unknown or dynamic."""
    if not t.get("shape") or t.get("dtype") is None or any(d < 0 for d in t["shape"]):
        return None
    word = next((k for k, v in _TYPE_NAMES.items() if v == t["dtype"]), None)
    if word is None:
        return None
    return int(np.prod(t["shape"], dtype=np.int64) * _TYPE_SIZES[word])


def _const_bytes(rec: Any) -> int:
    """{"Type": "Half", "Count": 864} -> 1728."""
    if not isinstance(rec, dict):
        return 0
    word = _type_word(rec.get("Type"))
    count = rec.get("Count") or 0
    if word is None:
        return 0
    return int(int(count) * _TYPE_SIZES[word])


def parse_layer(raw: dict[str, Any] | str) -> dict[str, Any]:
    """One inspector layer (dict, JSON string, or bare name) -> a normalised record."""
    if isinstance(raw, str):
        text = raw.strip()
        # a JSON object opens with {"...; a bare name may open with { too ("{ForeignNode[...]}")
        if re.match(r'\{\s*"', text):
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ProfilerError(f"engine inspector layer is not valid JSON: {exc}") from None
        else:
            raw = {"Name": text}
    if not isinstance(raw, dict):
        raise ProfilerError(f"engine inspector layer has unexpected type {type(raw).__name__}")
    name = str(raw.get("Name", raw.get("LayerName", "")))
    base, profile = strip_profile_suffix(name)
    inputs = [parse_tensor(t) for t in raw.get("Inputs", []) or []]
    outputs = [parse_tensor(t) for t in raw.get("Outputs", []) or []]
    weights, bias = _const_bytes(raw.get("Weights")), _const_bytes(raw.get("Bias"))
    return {
        "name": name,
        "base_name": base,
        "profile": profile,
        "type": raw.get("ParameterType") or raw.get("LayerType"),
        "layer_type": raw.get("LayerType"),
        "inputs": inputs,
        "outputs": outputs,
        "metadata": raw.get("Metadata"),
        "origin": raw.get("Origin"),
        "tactic": raw.get("TacticName") or raw.get("TacticValue"),
        "parameter_bytes": weights + bias,
        "detailed": len(raw) > 1,
    }


def parse_engine_information(info: str | dict[str, Any] | list[Any]) -> dict[str, Any]:
    """Parse `get_engine_information(JSON)` output (or a list of per-layer JSON strings).

    Returns {"layers": [...], "io_tensors": [...], "detailed": bool}. `detailed` is False when the
    engine was built without ProfilingVerbosity.DETAILED (layers are bare names then).
    """
    data: Any = info
    if isinstance(info, (str, bytes)):
        try:
            data = json.loads(info)
        except json.JSONDecodeError as exc:
            raise ProfilerError(f"engine inspector output is not valid JSON: {exc}") from None
    if isinstance(data, list):
        raw_layers, io_raw, bindings = data, [], []
    elif isinstance(data, dict):
        raw_layers = data.get("Layers", []) or []
        io_raw = data.get("I/O Tensors", []) or []
        bindings = data.get("Bindings", []) or []
    else:
        raise ProfilerError(f"engine inspector output has unexpected type {type(data).__name__}")
    layers = [parse_layer(r) for r in raw_layers]
    io_tensors = []
    for t in io_raw:  # TensorRT 11
        if isinstance(t, dict):
            io_tensors.append(
                {
                    "name": t.get("Name"),
                    "mode": (t.get("IOMode") or "").lower() or None,
                    "dtype": _TYPE_NAMES.get(_type_word(t.get("DataType")) or "", None),
                    "shape": t.get("Dimensions"),
                }
            )
    for b in bindings:  # TensorRT 10: names only
        io_tensors.append(
            {"name": b if isinstance(b, str) else str(b), "mode": None, "dtype": None, "shape": None}
        )
    return {
        "layers": layers,
        "io_tensors": io_tensors,
        "detailed": any(layer["detailed"] for layer in layers),
    }


def map_layers_to_onnx(
    layers: Sequence[dict[str, Any]],
    known_nodes: Collection[str] | None = None,
    node_order: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Layer name -> {"onnx_nodes": [...], "source": "metadata"|"name"|None} for every parsed layer."""
    out = {}
    for layer in layers:
        names, source = onnx_nodes_for_layer(layer["name"], layer.get("metadata"), known_nodes, node_order)
        out[layer["name"]] = {"onnx_nodes": names, "source": source}
    return out


def build_trt_nodes(
    timings: Sequence[dict[str, Any]],
    layers: Sequence[dict[str, Any]],
    known_nodes: Collection[str] | None = None,
    node_order: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Join per-layer timings (LayerTimeAggregator.summary) with inspector layers into profile nodes.

    Order follows the timings (execution order). A timed layer missing from the inspector output (e.g.
    an engine built without DETAILED verbosity) keeps its time and name-derived ONNX nodes.
    """
    by_name = {layer["name"]: layer for layer in layers}
    by_base: dict[str, dict[str, Any]] = {}
    for layer in layers:
        if layer["profile"] == 0:
            by_base.setdefault(layer["base_name"], layer)
    nodes = []
    for t in timings:
        layer = by_name.get(t["name"]) or by_base.get(strip_profile_suffix(t["name"])[0])
        onnx_nodes, source = onnx_nodes_for_layer(
            t["name"], layer.get("metadata") if layer else None, known_nodes, node_order
        )
        memory: dict[str, int] = {}
        if layer:
            memory["parameter_bytes"] = int(layer["parameter_bytes"])
            ins = [tensor_bytes(x) for x in layer["inputs"]]
            outs = [tensor_bytes(x) for x in layer["outputs"]]
            if ins and all(b is not None for b in ins):
                memory["activation_bytes"] = int(sum(ins))
            if outs and all(b is not None for b in outs):
                memory["output_bytes"] = int(sum(outs))
        nodes.append(
            {
                "name": t["name"],
                "op": (layer or {}).get("type") or split_fused_name(t["name"])["kind"],
                "provider": TRT_PROVIDER,
                "latency_ms": float(t["latency_ms"]),
                "calls": int(t.get("calls", 1)),
                "input_shapes": [x["shape"] for x in layer["inputs"]] if layer else [],
                "output_shapes": [x["shape"] for x in layer["outputs"]] if layer else [],
                "input_dtypes": [x["dtype"] for x in layer["inputs"]] if layer else [],
                "output_dtypes": [x["dtype"] for x in layer["outputs"]] if layer else [],
                "onnx_nodes": onnx_nodes,
                "onnx_nodes_source": source,
                "tactic": (layer or {}).get("tactic"),
                "memory": memory,
            }
        )
    return nodes
