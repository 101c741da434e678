"""`edgeprune inspect`: what a model, engine, profile or run directory holds.

Recognised: an ONNX model, an onnxruntime `.ort` model, a TensorRT engine (`.engine`/`.plan`/`.trt`; read
through its sidecar, since TensorRT may be absent), edgeprune JSON (profiles, sidecars, manifests, source
records, reports) and prune run directories. Anything else, or a truncated file, is a clear user error.
FLOPs count Conv/ConvTranspose/Gemm/MatMul only, as 2 x multiply-accumulates, per input at the model's
declared shape (a symbolic batch counts as 1).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import EdgepruneError

ONNX_SUFFIXES = (".onnx",)
ORT_SUFFIXES = (".ort",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
_ORT_MAGIC = b"ORTM"  # flatbuffers file identifier of the ORT format, at byte offset 4
_WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


# ---------------------------------------------------------------------------------------------------
# ONNX


def _dims(vi: Any) -> list[int | str | None]:
    tt = vi.type.tensor_type
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]


def _dtype(elem_type: int) -> str:
    import onnx

    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
    except (KeyError, ValueError):
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _load_onnx(path: Path) -> Any:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path))
    except (DecodeError, RuntimeError, ValueError, UnicodeDecodeError) as exc:
        raise EdgepruneError(f"{path.name} is not a readable ONNX model (truncated or not ONNX): "
                             f"{' '.join(str(exc).split())[:200]}") from exc
    except FileNotFoundError as exc:
        raise EdgepruneError(f"{path.name}: its external weights file is missing ({exc.filename}); keep "
                             f"{path.name}.data next to it") from exc
    except OSError as exc:
        raise EdgepruneError(f"{path} cannot be read: {exc}") from exc
    if model.ir_version <= 0 or not model.graph.node or not model.graph.output:
        raise EdgepruneError(f"{path.name} is not an ONNX model (no graph, nodes or outputs): truncated or a "
                             "different kind of file")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise EdgepruneError(f"{path.name} is not a valid ONNX model: {str(exc).splitlines()[0][:200]}") from exc
    return model


def _module_of(weight: str) -> str | None:
    for suffix in (".weight", ".weight_fp16", ".weight__fp16"):
        if weight.endswith(suffix):
            return weight[: -len(suffix)]
    return None


def _numel(shape: list[int | str | None] | None) -> int:
    return math.prod(d if isinstance(d, int) and d > 0 else 1 for d in (shape or []))


def summarize_onnx_model(model: Any) -> dict[str, Any]:
    """Inputs, outputs, params, FLOPs and the channels of each weighted layer of an onnx.ModelProto."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # inference is a nicety here: fall back to declared shapes only
        inferred = model
    g = inferred.graph
    shapes = {vi.name: _dims(vi) for vi in list(g.input) + list(g.output) + list(g.value_info)}
    inits = {t.name: list(t.dims) for t in g.initializer}
    # weights reached through a Cast (fp16 models keep fp32 IO) or DequantizeLinear still name the layer
    alias = {n.output[0]: n.input[0] for n in g.node if n.op_type in ("Cast", "DequantizeLinear") and n.input}
    for vi in g.input:
        shapes.setdefault(vi.name, _dims(vi))

    def weight_of(name: str) -> str | None:
        seen = 0
        while name not in inits and name in alias and seen < 4:
            name, seen = alias[name], seen + 1
        return name if name in inits else None

    layers = []
    for node in g.node:
        if node.op_type not in _WEIGHTED or len(node.input) < 2:
            continue
        w = weight_of(node.input[1])
        if w is None:
            continue
        wshape = inits[w]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        out_shape = shapes.get(node.output[0])
        bias = weight_of(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        params = math.prod(wshape) + (math.prod(inits[bias]) if bias else 0)
        row: dict[str, Any] = {"name": node.name or node.output[0], "op": node.op_type, "module": _module_of(w),
                               "weight": w, "params": params}
        if node.op_type in ("Conv", "ConvTranspose") and len(wshape) >= 3:
            group = int(attrs.get("group", 1))
            per_position = wshape[1] * math.prod(wshape[2:])  # (channels / group) x kernel
            if node.op_type == "Conv":  # weight: out x in/g x k...; MACs per output element
                cout, cin = wshape[0], wshape[1] * group
                macs = _numel(out_shape) * per_position
            else:  # ConvTranspose weight: in x out/g x k...; MACs per input element
                cin, cout = wshape[0], wshape[1] * group
                macs = _numel(shapes.get(node.input[0])) * per_position
            row.update(in_channels=cin, out_channels=cout, kernel=wshape[2:], groups=group)
        else:
            trans_b = int(attrs.get("transB", 0)) if node.op_type == "Gemm" else 0
            k, n = (wshape[1], wshape[0]) if trans_b else (wshape[0], wshape[-1])
            macs = _numel(out_shape) * k if out_shape else k * n
            row.update(in_channels=k, out_channels=n)
        row["output_shape"] = out_shape
        row["flops"] = 2 * macs
        layers.append(row)
    params = sum(math.prod(t.dims) for t in g.initializer if t.data_type not in (6, 7))  # not int32/int64
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    return {
        "ir_version": model.ir_version,
        "opsets": opsets,
        "producer": f"{model.producer_name} {model.producer_version}".strip() or None,
        "inputs": [{"name": i.name, "shape": _dims(i), "dtype": _dtype(i.type.tensor_type.elem_type)}
                   for i in model.graph.input if i.name not in inits],
        "outputs": [{"name": o.name, "shape": _dims(o), "dtype": _dtype(o.type.tensor_type.elem_type)}
                    for o in model.graph.output],
        "nodes": len(model.graph.node),
        "op_counts": _op_counts(model),
        "params": params,
        "flops": sum(r["flops"] for r in layers),
        "flops_note": "2 x MACs of Conv/ConvTranspose/Gemm/MatMul per input at the declared shape",
        "layers": layers,
    }


def _op_counts(model: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _sidecar_if_any(path: Path) -> dict[str, Any] | None:
    from .sidecar import read_sidecar, sidecar_path, verify_artifact

    if not sidecar_path(path).is_file():
        return None
    side = read_sidecar(path)
    verify_artifact(path, side)
    return side


def inspect_onnx(path: Path) -> dict[str, Any]:
    model = _load_onnx(path)
    return {"kind": "onnx", "path": str(path), "file_bytes": path.stat().st_size, **summarize_onnx_model(model),
            "sidecar": _sidecar_if_any(path)}


# ---------------------------------------------------------------------------------------------------
# .ort and engines


def inspect_ort(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head[4:8] != _ORT_MAGIC:
        raise EdgepruneError(f"{path.name} is not an onnxruntime .ort model (no ORT file identifier)")
    side = _sidecar_if_any(path)
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.load_model_format", "ORT")  # whatever the file is called
    try:
        sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types
        raise EdgepruneError(f"onnxruntime {ort.__version__} cannot load {path.name} (truncated, or written by a "
                             f"newer onnxruntime?): {' '.join(str(exc).split())[:200]}") from exc
    io = {
        "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.type} for i in sess.get_inputs()],
        "outputs": [{"name": o.name, "shape": list(o.shape), "dtype": o.type} for o in sess.get_outputs()],
    }
    return {"kind": "ort", "path": str(path), "file_bytes": path.stat().st_size, **io, "sidecar": side,
            "params": None, "flops": None, "layers": []}


def inspect_engine(path: Path) -> dict[str, Any]:
    from .sidecar import read_sidecar, sidecar_path, verify_artifact

    if not sidecar_path(path).is_file():
        raise EdgepruneError(
            f"{path.name}: no sidecar {sidecar_path(path).name} beside it, and engines are opaque without TensorRT; "
            "inspect the engine where TensorRT is installed (e.g. trtexec --loadEngine), or re-export it with "
            "edgeprune export"
        )
    side = read_sidecar(path)
    verify_artifact(path, side)
    if side["artifact"].get("format") != "engine":
        raise EdgepruneError(f"{path.name}: its sidecar describes a {side['artifact'].get('format')} artifact, not an engine")
    io = side.get("io") or {}
    return {"kind": "engine", "path": str(path), "file_bytes": path.stat().st_size,
            "inputs": io.get("inputs"), "outputs": io.get("outputs"), "precision": side.get("precision"),
            "params": None, "flops": None, "layers": [], "read_from": "sidecar (TensorRT not used)",
            "sidecar": side}


# ---------------------------------------------------------------------------------------------------
# JSON documents


def _profile_summary(doc: dict[str, Any]) -> dict[str, Any]:
    layers = sorted(doc.get("layers") or [], key=lambda r: -(r.get("latency_ms") or 0))[:10]
    return {"kind": "profile", "model": doc.get("model"), "target": (doc.get("target") or {}).get("spec", {}).get("name"),
            "latency_ms": doc.get("latency_ms"), "memory": doc.get("memory"),
            "conditions": (doc.get("target") or {}).get("conditions"),
            "slowest_layers": [{k: r.get(k) for k in ("name", "module", "op", "latency_ms", "share")} for r in layers]}


def _raw_profile_summary(doc: dict[str, Any]) -> dict[str, Any]:
    nodes = sorted(doc.get("nodes") or [], key=lambda r: -(r.get("latency_ms") or 0))[:10]
    model = doc.get("model") or {}
    return {"kind": "raw_profile", "runtime": doc.get("runtime"), "inputs": model.get("inputs"),
            "outputs": model.get("outputs"), "latency_ms": doc.get("latency_ms"), "memory": doc.get("memory"),
            "conditions": doc.get("conditions"), "settings": doc.get("settings"),
            "slowest_nodes": [{k: r.get(k) for k in ("name", "op", "latency_ms")} for r in nodes]}


def _manifest_summary(doc: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "manifest", "model_class": doc.get("model_class"), "input_shape": doc.get("input_shape"),
            "steps": len(doc.get("steps") or []), "weights": doc.get("weights"),
            "channels": manifest_channels(doc)}


def manifest_channels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Per prunable layer: output channels (or features) before and after pruning."""
    rows = []
    for name, entry in (doc.get("layers") or {}).items():
        before, after = entry.get("before") or {}, entry.get("after") or {}
        key = next((k for k in ("out_channels", "out_features", "num_features") if k in before), None)
        if key is None:
            continue
        rows.append({"module": name, "attribute": key, "before": before[key], "after": after.get(key),
                     "in_before": before.get("in_channels", before.get("in_features")),
                     "in_after": after.get("in_channels", after.get("in_features"))})
    return rows


def _sidecar_summary(doc: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "sidecar", "artifact": doc.get("artifact"), "precision": doc.get("precision"),
            "inputs": (doc.get("io") or {}).get("inputs"), "outputs": (doc.get("io") or {}).get("outputs"),
            "sidecar": doc}


# edgeprune JSON kind (or manifest format) -> summariser
JSON_KINDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "edgeprune.profile": _profile_summary,
    "edgeprune.raw_profile": _raw_profile_summary,
    "edgeprune.sidecar": _sidecar_summary,
    "edgeprune.pruned-model": _manifest_summary,
    "edgeprune.source": lambda doc: {"kind": "source", "source": doc},
}


def inspect_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except UnicodeDecodeError as exc:
        raise EdgepruneError(f"{path.name} is not a text JSON file") from exc
    except json.JSONDecodeError as exc:
        raise EdgepruneError(f"{path.name} is not valid JSON (truncated?): {exc}") from exc
    kind = (doc.get("kind") or doc.get("format")) if isinstance(doc, dict) else None
    if kind in JSON_KINDS:
        out = JSON_KINDS[kind](doc)
    elif isinstance(kind, str) and kind.startswith("edgeprune."):
        out = {"kind": kind.removeprefix("edgeprune."), "keys": sorted(doc), "document": doc}
    else:
        raise EdgepruneError(
            f"{path.name} is JSON but not an edgeprune document (no edgeprune 'kind'): inspect reads profiles, "
            "sidecars, manifests and reports written by edgeprune"
        )
    return {"path": str(path), **out}


# ---------------------------------------------------------------------------------------------------
# run directories


def inspect_run_dir(path: Path) -> dict[str, Any]:
    from .loading import MANIFEST_NAME, read_manifest, read_source

    manifest = read_manifest(path)
    if manifest.get("format") != "edgeprune.pruned-model":
        raise EdgepruneError(f"{path / MANIFEST_NAME} is not an edgeprune pruned-model manifest")
    out: dict[str, Any] = {"kind": "run", "path": str(path), "manifest": _manifest_summary(manifest)}
    out["channels"] = out["manifest"]["channels"]
    try:
        out["source"] = read_source(path)
    except EdgepruneError as exc:  # a run without (or with a broken) source.json still has much to show
        out["source"] = {"error": str(exc)}
    report = path / "report.json"
    if report.is_file():
        try:
            out["report"] = inspect_json(report)
        except EdgepruneError as exc:
            out["report"] = {"error": str(exc)}
    onnx_path = path / "model.onnx"
    if onnx_path.is_file():
        out["model"] = inspect_onnx(onnx_path)
        out["inputs"], out["outputs"] = out["model"]["inputs"], out["model"]["outputs"]
        out["params"], out["flops"] = out["model"]["params"], out["model"]["flops"]
        out["layers"] = out["model"]["layers"]
    artifacts = []
    for f in sorted(path.iterdir()):
        if f.suffix.lower() in ONNX_SUFFIXES + ORT_SUFFIXES + ENGINE_SUFFIXES and f.name != "model.onnx":
            try:
                artifacts.append({"file": f.name, **{k: v for k, v in inspect_path(f).items() if k != "layers"}})
            except EdgepruneError as exc:
                artifacts.append({"file": f.name, "error": str(exc)})
    out["artifacts"] = artifacts
    return out


# ---------------------------------------------------------------------------------------------------
# dispatch


def _kind_of(path: Path) -> str:
    if path.is_dir():
        if (path / "manifest.json").is_file():
            return "run"
        raise EdgepruneError(f"{path} is a directory without manifest.json: not a prune run directory")
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in ORT_SUFFIXES:
        return "ort"
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    if suffix == ".json":
        return "json"
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head[4:8] == _ORT_MAGIC:
        return "ort"
    if head.lstrip()[:1] == b"{":
        return "json"
    raise EdgepruneError(
        f"{path.name}: unknown kind of file; inspect reads .onnx, .ort, .engine/.plan/.trt (with sidecar), "
        "edgeprune JSON and prune run directories"
    )


INSPECTORS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "run": inspect_run_dir,
    "onnx": inspect_onnx,
    "ort": inspect_ort,
    "engine": inspect_engine,
    "json": inspect_json,
}


def inspect_path(path: str | Path) -> dict[str, Any]:
    """Summarise a model, engine, profile or run directory as a JSON-ready dict (key `kind` says which)."""
    path = Path(path)
    if not path.exists():
        raise EdgepruneError(f"{path} does not exist")
    if path.is_file() and path.stat().st_size == 0:
        raise EdgepruneError(f"{path.name} is empty (truncated?)")
    return INSPECTORS[_kind_of(path)](path)
