"""Per-layer latency tables over channel widths, and the whole-model cost model built from them.

Design (why it looks like this):
- Each layer's table is a 2-D grid over (output width, input width): pruning a channel group changes the
  producer's output width and its consumers' input width, and both move a kernel across its steps.
  A depthwise layer has one dimension (its input width is its output width); a dimension tied to the
  model's input or output (the first conv's 3 input channels, the classifier's classes) is not gridded.
- Widths between measured ones take the value of the next measured width up (piecewise constant): a
  kernel's time moves in steps, and interpolating would invent savings nobody measured. On a CPU that
  value is optimistic for widths off the grid: such a conv leaves onnxruntime's NCHWc path (ResNet-18's
  layer3.0.conv1 ran 56% slower at 256x122 than the table's 256x128). The allocator only takes widths on
  step edges, which are measured widths, so the loop never asks for one.
- Step edges are the widths on the lower envelope of the table: those strictly (by `EDGE_TOL`) faster than
  every wider measured width. Elsewhere removing channels saves nothing (a plateau) or even costs time
  (an odd width the runtime handles on a slower path).
- Whole model: sum of its layers + a residual for everything that is not a conv/linear (pooling, layout
  conversions, unfused adds, session overhead). Three ways to carry it (`residual_mode`):
  "constant": the dense model's end-to-end p50 minus its predicted layers, kept fixed in ms (those ops
  hardly change when inner widths shrink); "scaled": that residual shrinks in proportion to the layers;
  "profiled" (default): the residual is the dense model's measured non-layer node time (per-node medians,
  which a busy machine hardly disturbs), and layers + residual together are scaled by one factor mapping
  node time to end-to-end time (D / (layers + residual) of the dense model). On a quiet device that factor
  is about 1 and the residual stays constant; on a busy machine, where end-to-end time is stretched in
  proportion by preemption, the factor carries it. Without a per-node profile "profiled" acts as "constant".
- `calibrate` compares each round's prediction with the next real measurement, records the error, and
  corrects the prediction by a multiplicative factor: the median over the last `CALIBRATION_WINDOW`
  rounds of the factor that would have made the prediction exact (a median, so one noisy round cannot
  swing it).
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import statistics
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EdgepruneError
from ..targets import TargetSpec, load_target
from .cache import LatencyCache, canonical_hash, conditions_key
from .measure import MeasureStats, TableRequest, measure_rounds, nonlayer_node_ms, target_conditions
from .variants import Grid, LayerRecord, LayerSignature, grid_for, inspect_layers

log = logging.getLogger("edgeprune.costmodel")

EDGE_TOL = 0.02
CALIBRATION_WINDOW = 3
FACTOR_BOUNDS = (0.25, 4.0)
RESIDUAL_MODES = ("profiled", "constant", "scaled")
TABLE_KIND = "edgeprune.costmodel.table"
RESIDUAL_KIND = "edgeprune.costmodel.residual"


@dataclass(frozen=True)
class LatencyTable:
    """Latency (ms) of one layer signature on a grid of (out, in) widths; `ins` None = depthwise."""

    outs: tuple[int, ...]
    ins: tuple[int, ...] | None
    values: tuple[tuple[float, ...], ...]  # rows follow outs, columns follow ins (one column if depthwise)

    @staticmethod
    def _up(widths: tuple[int, ...], w: int, what: str) -> int:
        if w < 1 or w > widths[-1]:
            raise ValueError(f"{what} width {w} is outside the measured range 1..{widths[-1]}")
        return bisect.bisect_left(widths, w)

    def lookup(self, out_channels: int, in_channels: int | None = None) -> float:
        """Latency at the next measured widths at or above the given ones."""
        r = self._up(self.outs, int(out_channels), "output")
        if self.ins is None:
            return self.values[r][0]
        c = self._up(self.ins, int(in_channels if in_channels is not None else self.ins[-1]), "input")
        return self.values[r][c]

    def edges(self, side: str = "out", other: int | None = None, tol: float = EDGE_TOL) -> list[int]:
        """Measured widths along `side` (the other dimension at `other`, default full) that are faster
        than every wider measured width by more than `tol`; the widest always counts."""
        if side not in ("out", "in"):
            raise ValueError(f"side must be 'out' or 'in', got {side!r}")
        if self.ins is None or side == "out":
            widths = self.outs
            vals = [self.lookup(w, other) if self.ins is not None else self.lookup(w) for w in widths]
        else:
            widths = self.ins
            o = other if other is not None else self.outs[-1]
            vals = [self.lookup(o, w) for w in widths]
        edges, best = [], float("inf")
        for w, v in zip(reversed(widths), reversed(vals), strict=True):
            if v < best * (1.0 - tol) or best == float("inf"):
                edges.append(w)
                best = v
        return sorted(edges)

    def to_dict(self) -> dict[str, Any]:
        return {"outs": list(self.outs), "ins": list(self.ins) if self.ins is not None else None,
                "latency_ms": [list(r) for r in self.values]}


@dataclass
class LayerEntry:
    path: str
    signature: LayerSignature
    table_key: str
    dense: tuple[int, int]
    fixed_in: bool = False
    fixed_out: bool = False
    calls: int = 1

    @property
    def depthwise(self) -> bool:
        return self.signature.depthwise


def table_key(signature: LayerSignature, grid: Grid) -> str:
    return canonical_hash({"signature": signature.to_dict(), "grid": grid.to_dict()})[:24]


def model_fingerprint(model: Any, records: list[LayerRecord], input_shape: tuple[int, ...], exporter: str) -> str:
    """What decides the dense model's non-layer time: its module tree with every module's plain settings,
    the code of each module type's forward, the layers, the input shape, torch and the exporter."""
    import torch

    modules, code = [], {}
    for name, m in model.named_modules():
        cls = type(m)
        settings = {k: v for k, v in vars(m).items()
                    if not k.startswith("_") and k != "training" and isinstance(v, (int, float, str, bool, tuple))}
        modules.append([name, f"{cls.__module__}.{cls.__qualname__}", settings])
        fwd = getattr(cls, "forward", None)
        if fwd is not None and hasattr(fwd, "__code__"):
            code[cls.__qualname__] = canonical_hash([fwd.__code__.co_code.hex(), repr(fwd.__code__.co_consts)])
    return canonical_hash({
        "modules": modules, "code": code, "input_shape": list(input_shape), "torch": torch.__version__,
        "exporter": exporter, "layers": [[r.path, r.signature.to_dict(), r.fixed_in, r.fixed_out] for r in records],
    })[:24]


def _resolve_cache(cache: Any) -> LatencyCache | None:
    if cache is False:
        return None
    if cache is None or cache is True:
        return LatencyCache()
    if isinstance(cache, LatencyCache):
        return cache
    return LatencyCache(cache)


Channels = Mapping[str, "tuple[int, int] | int"]


@dataclass
class CostModel:
    """Predicts a model's latency on a target from per-layer tables measured there."""

    layers: dict[str, LayerEntry]
    tables: dict[str, LatencyTable]
    dense_ms: float
    nonlayer_ms: float | None = None  # non-layer node time of the dense model's per-node profile
    conditions: dict[str, Any] = field(default_factory=dict)
    residual_mode: str = "profiled"
    factor: float = 1.0
    current: dict[str, tuple[int, int]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.residual_mode not in RESIDUAL_MODES:
            raise EdgepruneError(f"residual_mode must be one of {', '.join(RESIDUAL_MODES)}, got {self.residual_mode!r}")
        if not self.current:
            self.current = {p: e.dense for p, e in self.layers.items()}
        self._implied: list[float] = []
        self.dense_layer_ms = self._layer_sum({p: e.dense for p, e in self.layers.items()})

    # ------------------------------------------------------------------------------------------ build

    @classmethod
    def build(
        cls,
        model: Any,
        example_input: Any,
        target: str | TargetSpec,
        *,
        widths: Any = "auto",
        runner: Any | None = None,
        cache: Any = None,
        repeats: int = 3,
        iterations: int = 30,
        residual_mode: str = "profiled",
        exporter: str = "dynamo",
        conditions: dict[str, Any] | None = None,
        seed: int = 0,
        refresh: bool = False,
    ) -> CostModel:
        """Measure (or load from cache) a latency table for every Conv2d/Linear of `model` on `target`.

        widths: "auto" (multiples of 8, coarser for wide layers, at most 8 widths per dimension in 2-D and
        16 in 1-D), an int step, or {module path: (out widths, in widths)}. runner: an open runner (default:
        the target's own). cache: None/True = the user cache dir, False = none, a path, or a LatencyCache.
        repeats: interleaved measuring rounds (the least-contended round counts); iterations: profiled
        runs per pack and round."""
        import torch

        started = time.perf_counter()
        if residual_mode not in RESIDUAL_MODES:
            raise EdgepruneError(f"residual_mode must be one of {', '.join(RESIDUAL_MODES)}, got {residual_mode!r}")
        spec = load_target(target) if isinstance(target, str) else target
        if not isinstance(example_input, torch.Tensor):
            example_input = torch.zeros(tuple(example_input))
        records = inspect_layers(model, example_input)
        if not records:
            raise EdgepruneError("the model has no Conv2d or Linear layer: there is nothing to build a cost model of")
        store = _resolve_cache(cache)
        layers: dict[str, LayerEntry] = {}
        requests: dict[str, TableRequest] = {}
        for r in records:
            grid = grid_for(r, widths)
            key = table_key(r.signature, grid)
            layers[r.path] = LayerEntry(r.path, r.signature, key, (r.signature.out_channels, r.signature.in_channels),
                                        r.fixed_in, r.fixed_out, r.calls)
            requests.setdefault(key, TableRequest(key, r.signature, grid))
        shape = tuple(example_input.shape)
        fingerprint = model_fingerprint(model, records, shape, exporter)
        stats = MeasureStats()
        with contextlib.ExitStack() as stack:
            opened: list[Any] = [runner]

            def get_runner() -> Any:
                if opened[0] is None:
                    from ..runners import open_runner

                    opened[0] = stack.enter_context(open_runner(spec))
                return opened[0]

            cond = dict(conditions) if conditions is not None else target_conditions(
                spec, get_runner() if spec.is_remote else None)
            ckey = conditions_key(cond)
            # refresh: measure everything again and overwrite the cache (its entries disagree with now)
            tables, eps_seen = ({}, []) if refresh else _cached_tables(store, ckey, requests)
            residual = store.get(ckey, fingerprint, RESIDUAL_KIND) if store and not refresh else None
            missing = [req for key, req in requests.items() if key not in tables]
            dense_ms = float(residual["dense_ms"]) if residual else None
            nonlayer = residual.get("nonlayer_ms") if residual else None
            if missing or dense_ms is None:
                with tempfile.TemporaryDirectory(prefix="edgeprune-costmodel-") as tmp:
                    dense_path = None
                    if dense_ms is None:
                        t0 = time.perf_counter()
                        dense_path = _export_dense(model, shape, Path(tmp), exporter)
                        stats.export_s += time.perf_counter() - t0
                    grids, dense_runs = measure_rounds(missing, dense_path, spec, get_runner(), repeats=repeats,
                                                       iterations=iterations, workdir=Path(tmp), stats=stats,
                                                       seed=seed)
                eps = statistics.median(stats.profiler_overhead_ms or eps_seen or [0.0])
                about = {"repeats": repeats, "iterations": iterations, "profiler_overhead_ms": eps,
                         "target": spec.name, "measured_at": time.time()}
                for req in missing:
                    tables[req.key] = _table_from(req.grid, grids[req.key])
                    if store:
                        store.put(ckey, req.key, TABLE_KIND, {"signature": req.signature.to_dict(),
                                                              "grid": req.grid.to_dict(),
                                                              "latency_ms": grids[req.key], **about}, conditions=cond)
                if dense_ms is None:
                    dense_ms = min(p50 for p50, _ in dense_runs)
                    known = [v for v in (nonlayer_node_ms(nodes, eps) for _, nodes in dense_runs) if v is not None]
                    nonlayer = statistics.median(known) if known else None
                    if store:
                        store.put(ckey, fingerprint, RESIDUAL_KIND, {
                            "fingerprint": fingerprint, "dense_ms": dense_ms, "nonlayer_ms": nonlayer,
                            "dense_runs_ms": [p50 for p50, _ in dense_runs], "input_shape": list(shape),
                            "exporter": exporter, **about}, conditions=cond)
        cm = cls(layers, tables, dense_ms, nonlayer_ms=nonlayer if isinstance(nonlayer, (int, float)) else None,
                 conditions=cond, residual_mode=residual_mode)
        cm.info = {
            "target": spec.name, "conditions_key": ckey, "fingerprint": fingerprint,
            "tables": len(requests), "tables_measured": len(missing), "tables_cached": len(requests) - len(missing),
            "residual_cached": residual is not None, "layers": len(layers),
            "cache_dir": str(store.dir) if store else None,
            "cache_rejected": list(store.rejected) if store else [], "build_s": round(time.perf_counter() - started, 3),
            **stats.to_dict(),
        }
        log.info("cost model for %d layers (%d tables: %d measured, %d cached) in %.1f s", len(layers),
                 len(requests), len(missing), len(requests) - len(missing), cm.info["build_s"])
        return cm

    # ---------------------------------------------------------------------------------------- queries

    @property
    def residual_ms(self) -> float:
        """Dense end-to-end p50 minus the dense layers as the tables predict them."""
        return self.dense_ms - self.dense_layer_ms

    def _mode(self) -> str:
        return "constant" if self.residual_mode == "profiled" and self.nonlayer_ms is None else self.residual_mode

    def _gain(self) -> float:
        """End-to-end ms per ms of table time before calibration (1 for a constant residual)."""
        mode = self._mode()
        if mode == "constant" or self.dense_layer_ms <= 0:
            return 1.0
        if mode == "scaled":
            return self.dense_ms / self.dense_layer_ms
        return self.dense_ms / (self.dense_layer_ms + float(self.nonlayer_ms or 0.0))

    def _split(self, layer_sum: float) -> tuple[float, float]:
        """(A, B) with prediction = factor * A + B, for a configuration whose table layer sum is `layer_sum`."""
        mode = self._mode()
        if mode == "constant" or self.dense_layer_ms <= 0:
            return layer_sum, self.residual_ms
        residual = float(self.nonlayer_ms or 0.0) if mode == "profiled" else 0.0
        return self._gain() * (layer_sum + residual), 0.0

    def _entry(self, module_path: str) -> LayerEntry:
        try:
            return self.layers[module_path]
        except KeyError:
            raise KeyError(f"{module_path!r} is not a Conv2d/Linear layer of this cost model") from None

    def _widths(self, module_path: str, out_channels: int | None, in_channels: int | None) -> tuple[int, int]:
        entry = self._entry(module_path)
        cur_out, cur_in = self.current.get(module_path, entry.dense)
        o = int(out_channels) if out_channels is not None else cur_out
        i = o if entry.depthwise else (int(in_channels) if in_channels is not None else cur_in)
        return o, i

    def _raw(self, module_path: str, o: int, i: int) -> float:
        entry = self.layers[module_path]
        return entry.calls * self.tables[entry.table_key].lookup(o, i)

    @property
    def scale(self) -> float:
        """ms of end-to-end time per ms of table time now, calibration included: every predicted saving is
        proportional to it, so savings predicted under different calibrations compare after dividing by
        their scale."""
        return self.factor * self._gain()

    def layer_latency(self, module_path: str, out_channels: int | None = None, in_channels: int | None = None) -> float:
        """Predicted ms of one layer at these widths (default: its current ones), calibration included."""
        o, i = self._widths(module_path, out_channels, in_channels)
        return self.scale * self._raw(module_path, o, i)

    def _normalise(self, channels: Channels | None) -> dict[str, tuple[int, int]]:
        """Full {path: (out, in)} for every layer; an int names the output width only."""
        widths = dict(self.current)
        for path, value in (channels or {}).items():
            entry = self._entry(path)
            if isinstance(value, int):
                o, i = value, widths[path][1]
            else:
                o, i = int(value[0]), int(value[1])
            widths[path] = (o, o) if entry.depthwise else (o, i)
        return widths

    def _layer_sum(self, widths: Mapping[str, tuple[int, int]]) -> float:
        return sum(self._raw(p, *widths[p]) for p in self.layers)

    def predict(self, channels: Channels | None = None) -> float:
        """Predicted end-to-end ms for the model at these widths ({path: (out, in)}; layers not named keep
        their current widths): the layers' sum plus the non-layer residual."""
        a, b = self._split(self._layer_sum(self._normalise(channels)))
        return self.factor * a + b

    def predict_nodes(self, channels: Channels | None = None) -> float:
        """Predicted per-node time of the model (its layers as the tables say, plus the dense model's
        measured non-layer nodes), without the node-to-end-to-end factor and calibration: what a per-node
        profile of the configuration would sum to, less the profiler's own per-node cost."""
        return self._layer_sum(self._normalise(channels)) + float(self.nonlayer_ms or 0.0)

    def savings(self, module_path: str, k_removed: int, *, side: str = "out") -> float:
        """ms saved in this layer by removing `k_removed` of its current output (or input) channels; for a
        depthwise layer both go together."""
        if side not in ("out", "in"):
            raise ValueError(f"side must be 'out' or 'in', got {side!r}")
        o, i = self._widths(module_path, None, None)
        after = (o - k_removed, i) if side == "out" else (o, i - k_removed)
        if self._entry(module_path).depthwise:
            after = (o - k_removed, o - k_removed)
        if min(after) < 1:
            raise ValueError(f"removing {k_removed} channels from {module_path} leaves none")
        return self.layer_latency(module_path, o, i) - self.layer_latency(module_path, *after)

    def step_edges(self, module_path: str, side: str = "out") -> list[int]:
        """Channel counts that really save latency in this layer (its table's lower envelope along `side`,
        the other dimension at its current width), ascending, ending at the full width."""
        entry = self._entry(module_path)
        o, i = self._widths(module_path, None, None)
        return self.tables[entry.table_key].edges(side, i if side == "out" else o)

    def round_width(self, module_path: str, width: int, side: str = "out") -> int:
        """The largest step edge at or below `width` (the smallest edge if none is)."""
        edges = self.step_edges(module_path, side)
        below = [e for e in edges if e <= width]
        return below[-1] if below else edges[0]

    # ------------------------------------------------------------------------------------ calibration

    def calibrate(self, measured_ms: float, channels: Channels | None = None) -> dict[str, Any]:
        """Record how far this configuration's prediction was from its real measurement, then correct the
        layer part so the tables agree with recent measurements; the configuration becomes current."""
        if not measured_ms > 0:
            raise ValueError(f"measured latency must be positive, got {measured_ms}")
        widths = self._normalise(channels)
        predicted = self.predict(widths)
        a, b = self._split(self._layer_sum(widths))
        implied = (measured_ms - b) / a if a > 0 else self.factor
        if implied > 0:
            self._implied.append(implied)
        lo, hi = FACTOR_BOUNDS
        if self._implied:
            self.factor = min(hi, max(lo, statistics.median(self._implied[-CALIBRATION_WINDOW:])))
        record = {"round": len(self.history) + 1, "predicted_ms": predicted, "measured_ms": float(measured_ms),
                  "error": (predicted - measured_ms) / measured_ms, "factor": self.factor}
        self.history.append(record)
        self.current = widths
        return record

    @property
    def prediction_errors(self) -> list[float]:
        """Signed relative error (predicted - measured) / measured of each calibrated round, in order."""
        return [r["error"] for r in self.history]

    def set_channels(self, channels: Channels) -> None:
        """Make these widths current (savings and step edges are read from the current widths)."""
        self.current = self._normalise(channels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dense_ms": self.dense_ms, "dense_layer_ms": self.dense_layer_ms, "residual_ms": self.residual_ms,
            "nonlayer_ms": self.nonlayer_ms,
            "residual_mode": self.residual_mode, "factor": self.factor, "history": self.history,
            "info": self.info,
            "layers": {p: {"signature": e.signature.to_dict(), "table": e.table_key, "dense": list(e.dense),
                           "calls": e.calls, "latency_ms": self.layer_latency(p, *e.dense)}
                       for p, e in self.layers.items()},
            "tables": {k: t.to_dict() for k, t in self.tables.items()},
        }


def _cached_tables(store: LatencyCache | None, ckey: str,
                   requests: dict[str, TableRequest]) -> tuple[dict[str, LatencyTable], list[float]]:
    """The requested tables the cache holds (verified), and the profiler cost recorded with them."""
    tables: dict[str, LatencyTable] = {}
    eps: list[float] = []
    for key, req in requests.items():
        entry = store.get(ckey, key, TABLE_KIND) if store else None
        if entry is not None and entry["grid"] == req.grid.to_dict():
            tables[key] = _table_from(req.grid, entry["latency_ms"])
            if isinstance(entry.get("profiler_overhead_ms"), (int, float)):
                eps.append(float(entry["profiler_overhead_ms"]))
    return tables, eps


def _table_from(grid: Grid, values: list[list[float]]) -> LatencyTable:
    return LatencyTable(tuple(grid.outs), tuple(grid.ins) if grid.ins is not None else None,
                        tuple(tuple(float(v) for v in row) for row in values))


def _export_dense(model: Any, input_shape: tuple[int, ...], directory: Path, exporter: str) -> Path:
    from ..onnx_export import export_onnx

    was_training = model.training
    try:
        return export_onnx(model, input_shape, directory / "dense.onnx", exporter=exporter).path
    finally:
        model.train(was_training)
