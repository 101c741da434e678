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
_OP_PATTERNS = (
    re.compile(r"aten[.:]{1,2}[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?"),
    re.compile(r"operator '?([A-Za-z0-9_:.]+)'?"),
)


@dataclass
class ExportResult:
    path: Path
    exporter: str
    opset: int | None
    input_names: list[str]
    output_names: list[str]


def _failing_op(message: str) -> str | None:
    for pattern in _OP_PATTERNS:
        match = pattern.search(message)
        if match:
            return match.group(0)
    return None


def _export(module, example, path: Path, exporter: str, opset: int | None, dynamic_batch: bool) -> None:
    import torch

    kwargs: dict = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    if opset is not None:
        kwargs["opset_version"] = opset
    if exporter == "dynamo":
        if dynamic_batch:
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
        # The exporter prints progress on stdout; stdout belongs to our machine-readable output.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (example,), dynamo=True, **kwargs)
            program.save(str(path))
    else:
        if dynamic_batch:
            kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
        with warnings.catch_warnings():
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
    op = _failing_op(errors[0]) if errors else None
    first = errors[0].splitlines()[0][:300] if errors else "unknown error"
    where = f"operator {op} cannot be exported" if op else "export failed"
    raise EdgepruneError(f"{model_name}: ONNX {where} ({first}); replace that op or give an .onnx file")
