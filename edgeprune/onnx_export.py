"""Export a PyTorch module to ONNX, and map every ONNX node back to the module that produced it."""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import EdgepruneError

INPUT_NAME = "input"
OUTPUT_NAME = "output"
# Most specific first: the dynamo exporter names the OpOverload it has no ONNX function for; the legacy
# exporter names the op with its namespace ("aten::foo", "mylib::bar").
_OP_PATTERNS = (
    re.compile(r"OpOverload\(op='([A-Za-z0-9_]+\.[A-Za-z0-9_]+)'"),
    re.compile(r"target=torch\.ops\.([A-Za-z0-9_]+\.[A-Za-z0-9_]+)"),
    re.compile(r"unrecognized namespace ([A-Za-z0-9_]+::[A-Za-z0-9_]+)"),
    re.compile(r"(aten[.:]{1,2}[A-Za-z0-9_]+)"),
    re.compile(r"operator '?([A-Za-z0-9_]+::[A-Za-z0-9_.]+)'?"),
)


@dataclass
class ExportResult:
    path: Path
    exporter: str
    opset: int | None
    input_names: list[str]
    output_names: list[str]


def _failing_op(message: str) -> str | None:
    """The op an exporter error names, as `namespace::name` (overload dropped), or None."""
    for pattern in _OP_PATTERNS:
        match = pattern.search(message)
        if match:
            return _op_key(match.group(1))
    return None


def _op_key(name: str) -> str:
    """'aten.linalg_eig.default', 'aten::linalg_eig' -> 'aten::linalg_eig'."""
    name = name.replace("::", ".")
    parts = name.split(".")
    return "::".join(parts[:2]) if len(parts) >= 2 else name


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _key_line(errors: list[str], op: str | None) -> str:
    """The most telling line of the exporters' errors: the one naming the op, else the first."""
    lines = [_ANSI.sub("", line).strip() for e in errors for line in e.splitlines() if line.strip()]
    if op:
        short = op.split("::")[-1]
        for line in lines:
            if short in line and "Torch IR" not in line and not line.startswith("%"):
                return line[:300]
    return lines[0][:300] if lines else "unknown error"


def module_calling_op(module, example, op: str) -> str | None:
    """The innermost submodule whose forward runs `op` (`namespace::name`) on `example`, or None.

    Exporter errors name the op but rarely the module; one eager forward under a dispatch mode, with
    hooks keeping the module stack, finds who calls it.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    stack: list[str] = []
    found: list[str] = []

    class _Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not found and _op_key(str(func)) == op:
                found.append(stack[-1] if stack else "")
            return func(*args, **(kwargs or {}))

    def enter(name: str):
        def hook(_m, _i) -> None:
            stack.append(name)

        return hook

    def leave(_m, _i, _o) -> None:  # returning anything but None would replace the module's output
        if stack:
            stack.pop()

    handles = []
    for name, sub in module.named_modules():
        if name:
            handles.append(sub.register_forward_pre_hook(enter(name)))
            handles.append(sub.register_forward_hook(leave))
    try:
        with torch.no_grad(), _Spy():
            module(example)
    except Exception:  # the forward itself failing is reported elsewhere; we only look for the caller
        pass
    finally:
        for h in handles:
            h.remove()
    if not found:
        return None
    name = found[0]
    if not name:
        return f"the top-level {type(module).__name__}.forward"
    return f"{name} ({type(module.get_submodule(name)).__name__})"


@contextlib.contextmanager
def _stdout_to_devnull():
    """Silence fd 1 itself: the legacy exporter dumps its IR graph from C++ on failure, past sys.stdout."""
    import os
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _export(module, example, path: Path, exporter: str, opset: int | None, dynamic_batch: bool) -> None:
    import torch

    kwargs: dict = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    if opset is not None:
        kwargs["opset_version"] = opset
    if exporter == "dynamo":
        if dynamic_batch:
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
        # The exporter prints progress on stdout; stdout belongs to our machine-readable output.
        with _stdout_to_devnull(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (example,), dynamo=True, **kwargs)
            program.save(str(path))
    else:
        if dynamic_batch:
            kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
        with _stdout_to_devnull(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(path), dynamo=False, **kwargs)


def export_onnx(
    module,
    input_shape: tuple[int, ...],
    path: Path,
    *,
    opset: int | None = None,
    dynamic_batch: bool = False,
    exporter: str = "dynamo",
    model_name: str = "model",
) -> ExportResult:
    """Export `module` (eval mode, float32 NCHW input) to `path`; weights may go to `path.data` beside it.

    The dynamo exporter is the supported one and keeps weight names and module scopes in the graph;
    where it fails the legacy TorchScript exporter is tried. Nothing is left at `path` on failure.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(input_shape)
    module.eval()
    order = [exporter] + [e for e in ("dynamo", "legacy") if e != exporter]
    errors: list[str] = []
    for name in order:
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp:
            tmp_path = Path(tmp) / path.name
            try:
                _export(module, example, tmp_path, name, opset, dynamic_batch)
            except Exception as exc:  # any exporter failure: try the next, then report
                errors.append(f"{name}: {type(exc).__name__}: {str(exc).strip()[:2000]}")
                continue
            for produced in Path(tmp).iterdir():
                produced.replace(path.parent / produced.name.replace(tmp_path.name, path.name, 1))
            import onnx

            graph = onnx.load(str(path), load_external_data=False)
            return ExportResult(
                path=path,
                exporter=name,
                opset=next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), None),
                input_names=[i.name for i in graph.graph.input],
                output_names=[o.name for o in graph.graph.output],
            )
    op = next((o for o in map(_failing_op, errors) if o), None)
    first = _key_line(errors, op)
    if op:
        caller = module_calling_op(module, example, op)
        where = f"operator {op} (called in {caller})" if caller else f"operator {op}"
        raise EdgepruneError(
            f"{model_name}: ONNX cannot express {where} ({first}); replace that op in the module, "
            "or give an .onnx file"
        )
    raise EdgepruneError(f"{model_name}: ONNX export failed ({first}); replace the failing op or give an .onnx file")


def simplify_onnx(path: Path) -> dict:
    """Simplify the ONNX at `path` in place with onnxslim where that shrinks the graph.

    Returns what was done (node counts before and after, or why it was skipped). The input and output
    names are kept; a simplification that fails or does not help leaves the file untouched.
    """
    import onnx

    path = Path(path)
    try:
        import onnxslim
    except ImportError:
        return {"applied": False, "reason": "onnxslim is not installed"}
    model = onnx.load(str(path))
    before = len(model.graph.node)
    try:
        with _stdout_to_devnull(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slim = onnxslim.slim(model)
    except Exception as exc:  # a simplifier bug must not cost the user the export
        return {"applied": False, "reason": f"onnxslim failed: {type(exc).__name__}: {str(exc)[:200]}",
                "nodes_before": before}
    after = len(slim.graph.node) if slim is not None else before
    same_io = slim is not None and (
        [i.name for i in slim.graph.input] == [i.name for i in model.graph.input]
        and [o.name for o in slim.graph.output] == [o.name for o in model.graph.output]
    )
    if not same_io or after >= before:
        return {"applied": False, "reason": "no smaller graph" if same_io else "io names changed",
                "nodes_before": before, "nodes_after": after}
    slim.ir_version = min(slim.ir_version, model.ir_version) or model.ir_version
    save_onnx(slim, path)
    return {"applied": True, "tool": f"onnxslim {onnxslim.__version__}", "nodes_before": before,
            "nodes_after": after}


_PROTOBUF_LIMIT = 2 * 1024**3 - 1024 * 1024  # stay clear of protobuf's 2 GiB message cap


def save_onnx(model, path: Path) -> None:
    """Save as one self-contained file where protobuf allows, else with `<name>.data` beside it."""
    import onnx

    path = Path(path)
    large = model.ByteSize() > _PROTOBUF_LIMIT if _tensors_inline(model) else True
    onnx.save_model(model, str(path), save_as_external_data=large, all_tensors_to_one_file=True,
                    location=path.name + ".data" if large else None)


def _tensors_inline(model) -> bool:
    return not any(t.data_location == 1 for t in model.graph.initializer)
