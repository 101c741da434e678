"""`edgeprune export`: a deployable artifact for a target, checked against PyTorch, with a metadata sidecar.

SRC is a model spec or a prune run directory. The artifact is one of
- `onnx`: the exported (and, where it helps, onnxslim-simplified) ONNX, fp32 or fp16;
- `ort`: an onnxruntime-format model optimised for the target's execution provider;
- `engine`: a TensorRT engine built on this machine (TensorRT targets).
Every artifact is run on the same inputs as the PyTorch model and must match within the precision's
tolerance; its latency is measured through the target's runner; everything is staged in a hidden
directory beside the output and renamed into place only when all of that succeeded.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EdgepruneError
from .loading import is_run_dir, load_run
from .models import LoadedModel, load_model
from .onnx_export import export_onnx, save_onnx, simplify_onnx
from .parity import (
    check_artifact,
    open_session,
    parity_inputs,
    run_session,
    tolerance_for,
    top1_accuracy,
    torch_outputs,
)
from .sidecar import build_sidecar, model_hash, sidecar_path
from .targets import TargetSpec, runtime_importable, usability

PRECISIONS = ("fp32", "fp16", "int8")
# the deployable kind of each runtime. onnxruntime: the plain ONNX, because onnxruntime optimises it at
# load time for the machine it runs on (the configuration the profiler measured), while a saved .ort is
# tied to the onnxruntime version and the execution provider it was optimised for.
DEFAULT_FORMAT = {"onnxruntime": "onnx", "tensorrt": "engine"}


@dataclass
class ExportConfig:
    """Options of `edgeprune export`, as the CLI parses them."""

    source: str
    output: str
    target: str | TargetSpec = "cpu"
    to: str | None = None
    weights: str | None = None
    shape: tuple[int, ...] | None = None
    allow_pickle: bool = False
    host: str | None = None
    accept_new_host_key: bool = False
    precision: str | None = None
    opset: int | None = None
    dynamic_batch: bool = False
    min_shape: tuple[int, ...] | None = None
    opt_shape: tuple[int, ...] | None = None
    max_shape: tuple[int, ...] | None = None
    simplify: bool = True
    data: str | None = None
    samples: int = 32
    val_data: str | None = None
    val_limit: int | None = None
    atol: float | None = None
    rtol: float | None = None
    workspace: str | None = None
    timing_cache: str | None = None
    measure: bool = True
    warmup: int | None = None
    iterations: int | None = None
    min_time_s: float | None = None
    force: bool = False
    seed: int = 0


@dataclass
class ExportResult:
    """Where the artifact and its sidecar went, and what the sidecar says."""

    artifact: Path
    sidecar: Path
    format: str
    precision: str
    metadata: dict[str, Any] = field(repr=False)
    wall_s: float = 0.0

    @property
    def parity(self) -> dict[str, Any]:
        return self.metadata["parity"]

    @property
    def latency(self) -> dict[str, Any] | None:
        return self.metadata["latency"]

    @property
    def accuracy(self) -> dict[str, Any] | None:
        return self.metadata["accuracy"]

    def to_dict(self) -> dict[str, Any]:
        return {"artifact_path": str(self.artifact), "sidecar_path": str(self.sidecar),
                "wall_s": round(self.wall_s, 3), **self.metadata}


@dataclass
class BuildContext:
    """What a format's builder gets: the model, the target, the staged base ONNX, where to write."""

    loaded: LoadedModel
    target: TargetSpec
    config: ExportConfig
    precision: str
    base_onnx: Path  # fp32, simplified, with the final input/output names
    dest: Path  # the artifact's path inside the staging directory (final file name)
    work: Path  # scratch directory
    calibration: np.ndarray | None
    input_name: str


@dataclass
class Built:
    path: Path
    session_kwargs: dict[str, Any]
    checked_with: str
    build: dict[str, Any]
    extra_files: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class ArtifactFormat:
    name: str
    suffixes: tuple[str, ...]
    runtimes: tuple[str, ...]
    precisions: tuple[str, ...]
    build: Callable[[BuildContext], Built]
    needs_local_runtime: bool = False


# ---------------------------------------------------------------------------------------------------
# builders


def _fp16_onnx(src: Path, dest: Path) -> dict[str, Any]:
    import onnx

    from .onnx_fp16 import convert_to_fp16

    half, report = convert_to_fp16(onnx.load(str(src)), keep_io_types=True)
    save_onnx(half, dest)
    return report.to_dict()


def _ort_checker(provider: str) -> str:
    import onnxruntime as ort

    return f"onnxruntime {ort.__version__} {provider} on this machine"


def _ort_settings(target: TargetSpec) -> tuple[str, int, str]:
    """(execution provider, threads, optimisation level) to run an ONNX/.ort artifact here."""
    import onnxruntime as ort

    if target.runtime == "onnxruntime" and target.execution_provider in ort.get_available_providers():
        return target.execution_provider, 0, target.graph_optimization_level
    return "CPUExecutionProvider", 0, "all"


def _build_onnx(ctx: BuildContext) -> Built:
    info: dict[str, Any] = {}
    if ctx.precision == "fp16":
        info["fp16_conversion"] = _fp16_onnx(ctx.base_onnx, ctx.dest)
    else:
        import onnx

        save_onnx(onnx.load(str(ctx.base_onnx)), ctx.dest)
    extra = [p for p in [ctx.dest.with_name(ctx.dest.name + ".data")] if p.is_file()]
    provider, threads, level = _ort_settings(ctx.target)
    return Built(ctx.dest, {"provider": provider, "threads": threads, "opt_level": level},
                 _ort_checker(provider), info, extra)


def _build_ort(ctx: BuildContext) -> Built:
    import onnxruntime as ort

    target = ctx.target
    provider = target.execution_provider
    if provider not in ort.get_available_providers():
        raise EdgepruneError(
            f"target {target.name} runs {provider}, which onnxruntime {ort.__version__} here lacks; a .ort model "
            "is optimised for the execution provider that runs it: export --to onnx, or export on a machine "
            f"with {provider}"
        )
    src = ctx.base_onnx
    info: dict[str, Any] = {}
    if ctx.precision == "fp16":
        src = ctx.work / "fp16.onnx"
        info["fp16_conversion"] = _fp16_onnx(ctx.base_onnx, src)
    level = target.graph_optimization_level
    # NCHWc is an x86 layout chosen for this machine's CPU: keep it only when this machine is the target
    disabled = ["NchwcTransformer"] if target.is_remote else []
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    so.optimized_model_filepath = str(ctx.dest)
    so.add_session_config_entry("session.save_model_format", "ORT")
    so.log_severity_level = 3
    try:
        ort.InferenceSession(str(src), sess_options=so, providers=[provider], disabled_optimizers=disabled or None)
    except Exception as exc:  # onnxruntime's own exception types
        raise EdgepruneError(f"onnxruntime cannot optimise the model for {provider}: {' '.join(str(exc).split())[:300]}") from exc
    if not ctx.dest.is_file():
        raise EdgepruneError(f"onnxruntime {ort.__version__} did not write the optimised model")
    info.update({"onnxruntime_version": ort.__version__, "execution_provider": provider,
                 "graph_optimization_level": level, "disabled_optimizers": disabled})
    return Built(ctx.dest, {"provider": provider, "threads": 0, "opt_level": level}, _ort_checker(provider), info)


def _build_engine(ctx: BuildContext) -> Built:
    import onnx

    from .trt_engine import (
        build_engine_file,
        onnx_has_qdq,
        plan_engine_build,
        profile_shapes,
        tensorrt_version,
    )

    cfg = ctx.config
    version = tensorrt_version()
    plan = plan_engine_build(ctx.precision, version, onnx_has_qdq=onnx_has_qdq(onnx.load(str(ctx.base_onnx),
                             load_external_data=False)), has_calibration_data=ctx.calibration is not None)
    shapes = profile_shapes(ctx.loaded.input_shape, dynamic_batch=cfg.dynamic_batch, min_shape=cfg.min_shape,
                            opt_shape=cfg.opt_shape, max_shape=cfg.max_shape)
    src, info = ctx.base_onnx, {}
    if plan.fp16_onnx:
        src = ctx.work / "fp16.onnx"
        info["fp16_conversion"] = _fp16_onnx(ctx.base_onnx, src)
    workspace = cfg.workspace or ctx.target.tensorrt.get("workspace") or "1G"
    info.update(build_engine_file(
        src, ctx.dest, plan, input_name=ctx.input_name, input_shape=ctx.loaded.input_shape, shapes=shapes,
        workspace=workspace, timing_cache=Path(cfg.timing_cache) if cfg.timing_cache else None,
        calibration=ctx.calibration,
    ))
    return Built(ctx.dest, {}, f"TensorRT {version} on this machine", info)


FORMATS: dict[str, ArtifactFormat] = {
    "onnx": ArtifactFormat("onnx", (".onnx",), ("onnxruntime", "tensorrt"), ("fp32", "fp16"), _build_onnx),
    "ort": ArtifactFormat("ort", (".ort",), ("onnxruntime",), ("fp32", "fp16"), _build_ort),
    "engine": ArtifactFormat("engine", (".engine", ".plan", ".trt"), ("tensorrt",), PRECISIONS, _build_engine,
                             needs_local_runtime=True),
}


# ---------------------------------------------------------------------------------------------------
# checks before any work


def _choose_format(config: ExportConfig, target: TargetSpec) -> ArtifactFormat:
    name = config.to or DEFAULT_FORMAT[target.runtime]
    if name not in FORMATS:
        raise EdgepruneError(f"--to {name!r}: choose one of {', '.join(FORMATS)}")
    fmt = FORMATS[name]
    if target.runtime not in fmt.runtimes:
        kinds = [k for k, f in FORMATS.items() if target.runtime in f.runtimes]
        raise EdgepruneError(f"--to {name} does not run on target {target.name} ({target.runtime}); "
                             f"use --to {' or --to '.join(kinds)}")
    return fmt


def _choose_precision(config: ExportConfig, target: TargetSpec, fmt: ArtifactFormat) -> str:
    # An ONNX for a TensorRT target stays fp32 unless asked: the target's builder applies its precision.
    default = "fp32" if (fmt.name == "onnx" and target.runtime == "tensorrt") else target.precision
    precision = config.precision or default
    if precision not in PRECISIONS:
        raise EdgepruneError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision not in fmt.precisions:
        raise EdgepruneError(
            f"{precision} is not available for --to {fmt.name} (it offers {', '.join(fmt.precisions)}); "
            "for INT8 quantize with onnxruntime.quantization, or export a TensorRT engine"
        )
    return precision


def _check_output(out: Path, fmt: ArtifactFormat, force: bool) -> None:
    if out.suffix.lower() not in fmt.suffixes:
        raise EdgepruneError(f"-o {out}: a {fmt.name} artifact's name must end in {' or '.join(fmt.suffixes)}")
    if out.is_dir():
        raise EdgepruneError(f"-o {out} is a directory: give the artifact's file name")
    existing = [p for p in (out, sidecar_path(out), out.with_name(out.name + ".data")) if p.exists()]
    if existing and not force:
        raise EdgepruneError(f"{existing[0]} already exists; pass --force to replace it")


def _check_runtime(target: TargetSpec, fmt: ArtifactFormat, measure: bool) -> None:
    if fmt.needs_local_runtime:
        if target.is_remote:
            raise EdgepruneError(
                f"a TensorRT engine only runs on the GPU and TensorRT version that built it: run edgeprune export "
                f"on {target.host.address} itself, or export --to onnx here"  # type: ignore[union-attr]
            )
        ok, why = runtime_importable(target.runtime)
        if ok:
            ok, why = usability(dataclasses.replace(target, host=None, requires_host=False))
        if not ok:
            raise EdgepruneError(
                f"target {target.name} cannot build an engine here ({why}): engines are built on the NVIDIA "
                "machine that runs them; run edgeprune export there (with the 'tensorrt' extra), or export "
                "--to onnx here"
            )
    if measure:
        ok, why = usability(target)
        if not ok:
            raise EdgepruneError(f"target {target.name} cannot be measured here: {why} "
                                 "(or pass --no-measure to export without a latency measurement)")


def _load_source(config: ExportConfig) -> tuple[LoadedModel, dict[str, Any] | None]:
    if is_run_dir(config.source):
        if config.weights:
            raise EdgepruneError("--weights does not apply to a prune run directory (its weights.pt is used)")
        loaded = load_run(config.source, allow_pickle=config.allow_pickle or None)
        return loaded, loaded.info.get("manifest")
    if Path(config.source).is_dir():
        raise EdgepruneError(f"{config.source} is a directory without manifest.json: not a prune run directory")
    loaded = load_model(config.source, weights=config.weights, shape=config.shape, allow_pickle=config.allow_pickle)
    if loaded.module is None:
        raise EdgepruneError(
            f"{config.source} is an ONNX file: export needs the PyTorch model to check the artifact against; "
            "give the model spec (and --weights)"
        )
    return loaded, None


# ---------------------------------------------------------------------------------------------------
# the pipeline


def _io(onnx_path: Path) -> dict[str, Any]:
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph

    def describe(vi: Any) -> dict[str, Any]:
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
        return {"name": vi.name, "shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name}

    return {"inputs": [describe(i) for i in graph.input], "outputs": [describe(o) for o in graph.output]}


def _accuracy(config: ExportConfig, loaded: LoadedModel, session: Any) -> dict[str, Any] | None:
    if not config.val_data:
        return None
    from .parity import load_images, normalise_images

    images, labels, desc = load_images(config.val_data, loaded.input_shape, loaded.num_classes, config.val_limit)
    x = normalise_images(images, loaded.mean, loaded.std)
    first = session.output_names[0]
    acc_torch = top1_accuracy(lambda b: torch_outputs(loaded.module, b, 256)[0], x, labels)
    acc_artifact = top1_accuracy(lambda b: run_session(session, b, 256)[first], x, labels)
    return {"data": config.val_data, "samples": len(labels), "description": desc, "metric": "top1",
            "torch": acc_torch, "artifact": acc_artifact, "delta": acc_artifact - acc_torch}


def _measure(target: TargetSpec, artifact: Path, input_name: str, input_shape: tuple[int, ...],
             dynamic: bool) -> dict[str, Any]:
    from .runners import open_runner

    extra = ["--shape", f"{input_name}=" + "x".join(map(str, input_shape))] if dynamic else []
    with open_runner(target) as runner:
        raw = runner.measure(artifact, per_node=False, extra_args=extra)
    lat = raw.get("latency_ms") or {}
    if not lat:
        raise EdgepruneError(f"the {target.name} profiler returned no latency for {artifact.name}")
    return {
        "measured": True,
        "how": f"{target.runtime} profiler through the target's runner "
               + (f"on {target.host.address}" if target.host else "on this machine"),
        "metric": target.metric,
        "value_ms": lat.get(target.metric),
        "latency_ms": lat,
        "samples_ms": raw.get("samples_ms"),  # raw samples: a later check can run its statistics on them
        "settings": raw.get("settings"),
        "conditions": raw.get("conditions"),
        "remote": raw.get("remote"),
    }


_QUOTED = re.compile(r"['\"]([^'\"]{1,200})['\"]")


def explain_nodes(message: str, index: Any) -> str:
    """Append the PyTorch module of every ONNX node a runtime's error message names (quoted)."""
    found = []
    for name in dict.fromkeys(_QUOTED.findall(message)):
        node = index.nodes.get(name) if index is not None else None
        if node is not None and node.module:
            found.append(f"node {name} ({node.op}) comes from module {node.module}")
    return f"{message} [{'; '.join(found)}]" if found else message


def _commit(stage_files: list[tuple[Path, Path]]) -> None:
    """Rename staged files into place; the sidecar goes last, and a failure takes back what moved."""
    moved: list[Path] = []
    try:
        for src, dst in stage_files:
            os.replace(src, dst)
            moved.append(dst)
    except BaseException:
        for dst in moved:
            dst.unlink(missing_ok=True)
        raise


def export_model(loaded: LoadedModel, target: TargetSpec, config: ExportConfig, *,
                 manifest: dict[str, Any] | None = None, log: Callable[[str], None] | None = None) -> ExportResult:
    """Export an already loaded model (the library entry `prune` uses); see `export` for the steps."""
    started = time.perf_counter()
    say = log or (lambda _msg: None)
    fmt = _choose_format(config, target)
    precision = _choose_precision(config, target, fmt)
    out = Path(config.output)
    _check_output(out, fmt, config.force)
    _check_runtime(target, fmt, config.measure)
    tolerance = tolerance_for(precision, config.atol, config.rtol)
    if loaded.module is None or loaded.input_shape is None:
        raise EdgepruneError(f"{loaded.spec}: export needs a PyTorch module with a known input shape")
    if not config.dynamic_batch and any(s is not None for s in (config.min_shape, config.opt_shape, config.max_shape)):
        raise EdgepruneError("--min-shape/--opt-shape/--max-shape need --dynamic-batch")

    x, labels, inputs_desc = parity_inputs(loaded.input_shape, loaded.mean, loaded.std, data=config.data,
                                           samples=config.samples, num_classes=loaded.num_classes, seed=config.seed)
    calibration = None
    if precision == "int8" and fmt.name == "engine" and config.data:
        from .parity import load_images, normalise_images

        images, _, _ = load_images(config.data, loaded.input_shape, loaded.num_classes, 512)
        calibration = normalise_images(images, loaded.mean, loaded.std)

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.staging-"))
    try:
        (stage / "base").mkdir()
        (stage / "work").mkdir()
        (stage / "artifact").mkdir()
        say(f"exporting {loaded.spec} to ONNX ...")
        exported = export_onnx(loaded.module, loaded.input_shape, stage / "base" / "model.onnx", opset=config.opset,
                               dynamic_batch=config.dynamic_batch, model_name=loaded.spec)
        from .attribution import index_graph

        # indexed before simplification, which drops the exporter's module scopes
        nodes = index_graph(exported.path, {n for n, _ in loaded.module.named_modules() if n})
        simplified = simplify_onnx(exported.path) if config.simplify else {"applied": False, "reason": "--no-simplify"}
        ctx = BuildContext(loaded, target, config, precision, exported.path, stage / "artifact" / out.name,
                           stage / "work", calibration, exported.input_names[0])
        say(f"building the {fmt.name} artifact ({precision}) ...")
        try:
            built = fmt.build(ctx)
            say(f"checking parity with PyTorch on {len(x)} samples ...")
            session = open_session(fmt.name, built.path, **built.session_kwargs)
        except EdgepruneError as exc:  # an op the runtime cannot run: say which module it came from
            raise EdgepruneError(explain_nodes(str(exc), nodes)) from exc
        try:
            report = check_artifact(session, loaded.module, x, tolerance, artifact=out.name, precision=precision,
                                    inputs=inputs_desc, labels=labels)
            report.raise_if_failed()
            if config.val_data:
                say(f"measuring accuracy on {config.val_data} ...")
            accuracy = _accuracy(config, loaded, session)
        finally:
            session.close()
        parity = {**report.to_dict(), "checked_with": built.checked_with}

        latency: dict[str, Any] | None = None
        if config.measure:
            say(f"measuring latency on target {target.name} ...")
            latency = _measure(target, built.path, ctx.input_name, loaded.input_shape, config.dynamic_batch)
        else:
            latency = {"measured": False, "reason": "--no-measure"}

        source = {**loaded.describe(), "model_hash": model_hash(loaded.module)}
        if loaded.info.get("run_dir"):
            source["run_dir"] = loaded.info["run_dir"]
            source["original"] = loaded.info.get("source")
        build = {
            "exporter": exported.exporter,
            "opset": exported.opset,
            "dynamic_batch": config.dynamic_batch,
            "input_shape": list(loaded.input_shape),
            "simplify": simplified,
            **built.build,
        }
        meta = build_sidecar(
            artifact=built.path, fmt=fmt.name, precision=precision, source=source, manifest=manifest,
            target={"name": target.name, "spec": target.to_dict()}, io=_io(exported.path), build=build,
            parity=parity, accuracy=accuracy, latency=latency, extra_files=built.extra_files,
        )
        from .io import write_json_atomic

        staged_sidecar = sidecar_path(built.path)
        write_json_atomic(staged_sidecar, meta)
        moves = [(built.path, out)] + [(p, out.with_name(p.name)) for p in built.extra_files]
        _commit(moves + [(staged_sidecar, sidecar_path(out))])
        stale = out.with_name(out.name + ".data")  # weights of a replaced (--force) export
        if stale.exists() and stale not in [dst for _, dst in moves]:
            stale.unlink()
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return ExportResult(out, sidecar_path(out), fmt.name, precision, meta, time.perf_counter() - started)


def export(config: ExportConfig, log: Callable[[str], None] | None = None) -> ExportResult:
    """Export `config.source` for `config.target`: build, check parity (and accuracy), measure, write.

    Steps: resolve the target and the artifact kind; refuse an existing output (unless force) and a target
    that cannot build or measure here; load the model (spec or run directory); export ONNX (simplified);
    build the artifact; compare it with PyTorch on the same inputs (fail -> EdgepruneError naming the
    output and the error); with val_data, both models' accuracy; measure its latency through the target's
    runner; write artifact + `<artifact>.json` sidecar atomically.
    """
    from .profiling import resolve_target

    target = resolve_target(config.target, config.host, config.accept_new_host_key, warmup=config.warmup,
                            iterations=config.iterations, min_time_s=config.min_time_s)
    fmt = _choose_format(config, target)
    _choose_precision(config, target, fmt)
    _check_output(Path(config.output), fmt, config.force)
    _check_runtime(target, fmt, config.measure)
    if config.shape is None and target.input_shape is not None and not is_run_dir(config.source):
        config = dataclasses.replace(config, shape=target.input_shape)
    loaded, manifest = _load_source(config)
    return export_model(loaded, target, config, manifest=manifest, log=log)
