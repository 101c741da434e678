"""`edgeprune.prune`: the pruning loop for the accuracy-critical and memory-constrained policies.

Each round starts from the last good round's model, scores the channels, removes those the method
selects, fine-tunes, measures every constraint and lets the AIAP controller decide (aiap.py). Every
round is checkpointed whole before the run state names it, so `--resume` continues after a kill.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .aiap import AIAPController, Verdict
from .errors import ConstraintNotMet, EdgepruneError
from .io import write_json_atomic
from .log import log
from .policies import (
    AccuracyDrop,
    Constraint,
    LatencyBudget,
    MemoryBudget,
    ParamsBudget,
    RoundMetrics,
    binding,
    verdict,
    verdict_of,
)
from .progress import Progress, training_callback
from .rundir import RunDir

SCHEMA_VERSION = 1


@dataclass
class PruneConfig:
    """Everything `edgeprune prune` takes; recorded whole in report.json."""

    model: str
    output: str
    target: str = "cpu"
    weights: str | None = None
    shape: tuple[int, ...] | None = None
    allow_pickle: bool = False
    host: str | None = None
    accept_new_host_key: bool = False
    # data
    data: str | None = None
    val_data: str | None = None
    test_data: str | None = None
    val_fraction: float = 0.1
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    # method
    importance: str = "activation"
    importance_p: float = 1.0
    calib_images: int = 256
    aggregate: str = "mean"
    method: str = "aiap"  # aiap | fixed | sap
    weighting: str = "params"  # AIAP variant: params | flops
    fraction: float = 0.1  # fixed
    step: float | None = None  # AIAP's first step (None: auto)
    max_rounds: int = 12
    # constraints
    max_acc_drop: float | None = None
    params_reduction: float | None = None  # percent
    max_params: int | None = None
    memory_mb: float | None = None
    latency_ms: float | None = None  # the deadline, checked on the target's metric
    # the deadline as a share of the dense model's metric on the target (--latency-ms 50%): resolved to ms
    # from the run's own dense readings, and judged as a share of dense timed close by (frame.py)
    latency_share: float | None = None
    metric: str | None = None  # p50 | p90 | p99 | mean (default: the target's)
    allocator: str = "ratio"  # ratio | knapsack
    compare_uniform: bool = True  # every latency round also measures the uniform-share plans at the deadline
    regrow: bool = True  # a uniform-share plan found is also measured with units given back up to the aim
    latency_frame: str = "auto"  # auto | dense | own (frame.py)
    confidence: float = 0.95
    slack: float = 0.05
    # retraining
    finetune_epochs: int = 1
    final_epochs: int = 0
    train_limit: int | None = None
    batch_size: int = 128
    lr: float = 0.01
    retrain: str = "finetune"  # finetune | lr-rewind | weight-rewind
    rewind_snapshot: str | None = None
    rewind_epoch: int | None = None
    max_batches: int | None = None
    seed: int = 0
    # run
    resume: bool = False
    force: bool = False
    warmup: int | None = None
    iterations: int | None = None
    min_time_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape) if self.shape else None
        return d


@dataclass
class PruneResult:
    output: Path
    report: dict[str, Any]
    met: bool = True
    binding: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return self.report


def _constraints(cfg: PruneConfig, baseline_acc: float | None, dense_params: int,
                 metric: str | None = None, deadline_ms: float | None = None) -> list[Constraint]:
    """The run's constraints; `deadline_ms` is a deadline given as a share once resolved (before that, a share
    adds no LatencyBudget yet)."""
    out: list[Constraint] = []
    if cfg.max_acc_drop is not None:
        if baseline_acc is None:
            raise EdgepruneError("--max-acc-drop needs --data to measure accuracy on")
        if cfg.max_acc_drop < 0:
            raise EdgepruneError(f"--max-acc-drop must be >= 0 points, got {cfg.max_acc_drop}")
        out.append(AccuracyDrop(baseline=baseline_acc, max_drop=cfg.max_acc_drop))
    if cfg.params_reduction is not None:
        if not 0 < cfg.params_reduction < 100:
            raise EdgepruneError(f"--params-reduction is a percentage in (0, 100), got {cfg.params_reduction}")
        out.append(ParamsBudget(budget=int(dense_params * (1 - cfg.params_reduction / 100)), slack=cfg.slack))
    if cfg.max_params is not None:
        out.append(ParamsBudget(budget=cfg.max_params, slack=cfg.slack))
    if cfg.memory_mb is not None:
        out.append(MemoryBudget(budget_mb=cfg.memory_mb, slack=cfg.slack))
    if cfg.latency_share is not None:
        if cfg.latency_ms is not None:
            raise EdgepruneError("give the deadline once: --latency-ms in ms (20) or as a share of the dense "
                                 "model's latency (50%), not both")
        if not 0 < cfg.latency_share < 1:
            raise EdgepruneError(f"--latency-ms as a share of the dense latency must lie between 0% and 100%, got "
                                 f"{cfg.latency_share:.0%}")
    deadline_ms = cfg.latency_ms if deadline_ms is None else deadline_ms
    if deadline_ms is not None:
        if deadline_ms <= 0:
            raise EdgepruneError(f"--latency-ms must be positive, got {deadline_ms}")
        out.append(LatencyBudget(deadline_ms=deadline_ms, slack=cfg.slack, metric=metric or "p50"))
    if not out and cfg.latency_share is None:
        raise EdgepruneError(
            "give at least one constraint: --max-acc-drop PTS, --params-reduction PCT, --max-params N, "
            "--memory-mb MB (or --latency-ms MS)"
        )
    return out


class PruneSession:
    """The state of one run: model, data, graph and controller. Created by `prune()`."""

    def __init__(self, cfg: PruneConfig):
        import torch

        from .data import load_task_data
        from .models import load_model
        from .profiling import resolve_target
        from .training import TrainConfig, configure_threads

        self.cfg = cfg
        self.run = RunDir(cfg.output)
        self.saved_state = self.run.prepare(resume=cfg.resume, force=cfg.force)
        configure_threads()
        torch.manual_seed(cfg.seed)
        self.target = resolve_target(cfg.target, cfg.host, cfg.accept_new_host_key, warmup=cfg.warmup,
                                     iterations=cfg.iterations, min_time_s=cfg.min_time_s)
        self.loaded = load_model(cfg.model, weights=cfg.weights, shape=cfg.shape, allow_pickle=cfg.allow_pickle)
        if self.loaded.module is None:
            raise EdgepruneError(f"{cfg.model} is an ONNX file: pruning needs the PyTorch model")
        self.original = self.loaded.module
        self.example = torch.zeros(self.loaded.input_shape)
        self.task = None
        if cfg.data:
            self.task = load_task_data(
                cfg.data, cfg.val_data, cfg.test_data, val_fraction=cfg.val_fraction, train_limit=cfg.train_limit,
                batch_size=cfg.batch_size, mean=cfg.mean or self.loaded.mean, std=cfg.std or self.loaded.std,
                seed=cfg.seed, input_shape=self.loaded.input_shape, num_classes=self.loaded.num_classes,
            )
        from .frame import FRAMES

        if cfg.latency_frame not in FRAMES:
            raise EdgepruneError(f"latency frame {cfg.latency_frame!r} is not one of {', '.join(FRAMES)}")
        self.frame = None  # a DenseFrame once the dense model's reading exists (open_frame)
        # the deadline in ms: --latency-ms as given, or a share of the dense latency once it is measured
        self.deadline_ms: float | None = cfg.latency_ms
        self.deadline_share: dict[str, Any] | None = None  # how a share was resolved (resolve_share)
        self.frame_start: dict[str, Any] | None = None  # the dense readings the frame's speed was settled from
        self._frame_dir: tempfile.TemporaryDirectory | None = None
        self.train_config = TrainConfig(
            epochs=cfg.finetune_epochs, lr=cfg.lr, batch_size=cfg.batch_size, mode=cfg.retrain,
            rewind_epoch=cfg.rewind_epoch, train_limit=cfg.train_limit, seed=cfg.seed, max_batches=cfg.max_batches,
        ) if self.task else None

    # ---- measurements

    def evaluate(self, model) -> float | None:
        return self.task.evaluate(model, self.task.val) if self.task else None

    def measure_memory(self, model) -> float | None:
        if self.cfg.memory_mb is None:
            return None
        from .profiling import profile

        return profile(self._as_loaded(model), self.target, per_node=False).memory.get("peak_rss_mb")

    def _as_loaded(self, model):
        return dataclasses.replace(self.loaded, module=model)

    @property
    def latency_mode(self) -> bool:
        return self.cfg.latency_ms is not None or self.cfg.latency_share is not None

    @property
    def metric(self) -> str:
        return self.cfg.metric or self.target.metric

    def measure_latency(self, model, per_node: bool = False) -> dict[str, Any] | None:
        """The model as deployed (exported, on the target): statistics, the metric and its upper bound."""
        if not self.latency_mode:
            return None
        from .latency import measure_model, metric_value

        m = measure_model(self.loaded, model, self.target, per_node=per_node)
        value, upper = metric_value(m["latency_ms"], m["samples_ms"], self.metric, self.cfg.confidence)
        m.update(value=value, upper=upper)
        return m

    def open_frame(self, dense_p50_ms: float | None, pinned_start_ms: float | None = None) -> None:
        """Take the loop's readings in the dense model's frame (frame.py) where `--latency-frame` asks for it.

        A deadline given as a share pins the frame at its start speed (a share holds at any speed); a resumed run
        with such a deadline passes the start it pinned (`pinned_start_ms`) instead of settling a new one."""
        from .frame import DenseFrame, frame_applies
        from .latency import metric_value
        from .profiling import export_for_target
        from .runners import open_runner

        if not self.latency_mode or not dense_p50_ms or not frame_applies(self.cfg.latency_frame,
                                                                               self.target.runtime):
            return
        self._frame_dir = tempfile.TemporaryDirectory(prefix="edgeprune-dense-")
        dense_onnx, _ = export_for_target(self.loaded, Path(self._frame_dir.name))
        self.frame = DenseFrame(
            dense_onnx, dense_p50_ms, lambda: open_runner(self.target),
            lambda model, directory: export_for_target(self._as_loaded(model), directory)[0],
            lambda stats, samples: metric_value(stats, samples, self.metric, self.cfg.confidence),
            pinned=self.cfg.latency_share is not None)
        if pinned_start_ms and self.cfg.latency_share is not None:
            self.frame.dense_readings_ms[0] = float(pinned_start_ms)
            self.frame_start = {"readings_ms": [float(pinned_start_ms)], "start_ms": float(pinned_start_ms),
                                "resumed": True}
        else:
            self.frame_start = self.frame.settle_start()

    def close(self) -> None:
        if self._frame_dir is not None:
            self._frame_dir.cleanup()
            self._frame_dir, self.frame = None, None

    def read_latency(self, model) -> dict[str, Any] | None:
        """The loop's reading of a model: in the dense model's frame where there is one, else its own."""
        return self.frame.read(model) if self.frame is not None else self.measure_latency(model)

    def metrics(self, model, *, latency: bool = True) -> RoundMetrics:
        from .pruning import count_params_flops

        params, flops = count_params_flops(model, self.example)
        # Each part timed on its own: the overhead benchmark needs to tell evaluation from latency measurement.
        t0 = time.perf_counter()
        lat = self.measure_latency(model) if latency else None
        t1 = time.perf_counter()
        accuracy = self.evaluate(model)
        t2 = time.perf_counter()
        memory = self.measure_memory(model)
        seconds = {"latency": t1 - t0, "evaluate": t2 - t1, "memory": time.perf_counter() - t2}
        return RoundMetrics(accuracy=accuracy, params=params, flops=flops, memory_mb=memory,
                            latency_ms=lat["value"] if lat else None, latency_upper_ms=lat["upper"] if lat else None,
                            extra={"latency": lat, "seconds": seconds} if lat else {"seconds": seconds})

    # ---- model at a round

    def model_at(self, round_id: int | None):
        """The dense model (None) or a checkpointed round's model, with the steps that made it."""
        import json

        from .pruning import load_pruned

        if round_id is None:
            return copy.deepcopy(self.original), []
        directory = self.run.round_dir(round_id)
        model = load_pruned(self.original, directory, example_input=self.example)
        return model, json.loads((directory / "manifest.json").read_text())["steps"]

    def finetune(self, model, epochs: int, label: str = "fine-tuning") -> dict[str, Any] | None:
        if not self.task or epochs <= 0:
            return None
        from .training import finetune

        cfg = dataclasses.replace(self.train_config, epochs=epochs)
        with Progress(epochs, label) as bar:
            return finetune(model, self.task, cfg, progress=training_callback(bar)).to_dict()


def _importance(cfg: PruneConfig, task=None):
    from .pruning import get_importance

    options: dict[str, Any] = {"aggregate": cfg.aggregate}
    if cfg.importance == "activation":
        options.update(p=cfg.importance_p, num_images=cfg.calib_images)
    elif cfg.importance == "taylor":
        options.update(num_images=cfg.calib_images)
        if task is not None:
            options.update(loss=task.loss)  # the loss the model is fine-tuned with (cross-entropy by default)
    importance = get_importance(cfg.importance, **options)
    if importance.requires_labels and task is None:
        raise EdgepruneError(f"--importance {cfg.importance} needs labelled data (--data): it scores channels by "
                             "the loss gradient; without data use --importance activation (or l1)")
    return importance


def _round_record(round_id: int, tried: float, plan: dict, groups_before: dict[str, int], m: RoundMetrics,
                  states: dict[str, str], v: Verdict, seconds: dict[str, float], layer_channels: dict) -> dict:
    return {
        "round": round_id,
        "threshold": tried,
        "removed": {g: len(ix) for g, ix in plan.items()},
        "groups_before": groups_before,
        "channels": layer_channels,
        "params": m.params,
        "flops": m.flops,
        "accuracy": m.accuracy,
        "memory_mb": m.memory_mb,
        "constraints": states,
        "verdict": v.value,
        "seconds": seconds,
    }


def _conv_channels(model) -> dict[str, int]:
    import torch

    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


def _latency_setup(s: PruneSession, importance, calib, dense: dict) -> dict[str, Any]:
    """Measure the dense model (per layer too), refuse a deadline under the floor, build the cost model."""
    from .latency import check_deadline_reachable, thinnest
    from .pruning import PruningGraph

    cfg = s.cfg
    log(f"measuring the dense model on {s.target.name} ...")
    m = s.measure_latency(s.original, per_node=True)
    dense.update(latency_ms=m["value"], latency_upper_ms=m["upper"], latency_stats=m["latency_ms"],
                 layer_latency=_module_latency(m["report"]))
    if cfg.latency_share is not None:
        _resolve_share(s, dense)
    graph = PruningGraph(copy.deepcopy(s.original), s.example)
    scores = importance.scores(graph.model, graph, graph.groups(), calib)
    floor = s.measure_latency(thinnest(s.original, s.example, scores))
    dense.update(floor_ms=floor["value"], floor_upper_ms=floor["upper"])
    log(f"dense {s.metric} {m['value']:.3f} ms; floor (thinnest model) {floor['value']:.3f} ms; "
        f"deadline {s.deadline_ms} ms")
    check_deadline_reachable(floor["value"], floor["upper"], s.deadline_ms, m["value"], s.metric,
                             share=cfg.latency_share)
    return dense


def _resolve_share(s: PruneSession, dense: dict, frame_start_ms: float | None = None) -> None:
    """A deadline given as a share of the dense latency, in ms: the share of the dense model's metric as measured
    at the start, or, once the frame has settled the machine's ordinary speed (`frame_start_ms`, a p50), of
    that metric at the settled speed. Recorded in `dense` so that a resumed run keeps it.

    A share holds at whichever speed the machine runs: the dense ResNet-56 read 36 and 40 ms by turns on this
    machine (session 17), and a deadline fixed in ms from one reading was half the dense model in one mode and
    0.45 of it in the other. The frame (pinned, frame.py) then judges every plan by its ratio to dense."""
    first_p50 = dense["latency_stats"]["p50"]
    dense_metric = dense["latency_ms"] * (frame_start_ms / first_p50 if frame_start_ms else 1.0)
    s.deadline_ms = round(s.cfg.latency_share * dense_metric, 4)
    s.deadline_share = {"share": s.cfg.latency_share, "dense_metric_ms": dense_metric, "metric": s.metric,
                        "at": "the frame's settled start speed" if frame_start_ms else "the dense reading at the start",
                        "deadline_ms": s.deadline_ms}
    dense.update(deadline_ms=s.deadline_ms, deadline_share=s.deadline_share)
    log(f"deadline {s.cfg.latency_share * 100:g}% of the dense model's {s.metric} {dense_metric:.3f} ms "
        f"({s.deadline_share['at']}): {s.deadline_ms} ms")


def _module_latency(report) -> dict[str, float]:
    from .plots import module_latency

    return module_latency(report.layers) if report is not None else {}


def _modelled(cost_model, widths: dict) -> dict:
    """Only the layers the cost model has tables for (it refuses any other path)."""
    return {p: tuple(w) for p, w in widths.items() if p in cost_model.layers}


CACHE_AGREEMENT = 1.5  # a cached cost model whose dense latency is off by more than this factor is re-measured


def _open_planner(s: PruneSession, dense: dict):
    from .costmodel import CostModel
    from .latency import LatencyPlanner

    log(f"building the latency cost model on {s.target.name} (cached after the first time) ...")
    started = time.perf_counter()
    cm = CostModel.build(s.original, s.example, s.target)
    now = dense["latency_stats"]["p50"]
    if cm.info.get("residual_cached") and not 1 / CACHE_AGREEMENT <= cm.dense_ms / now <= CACHE_AGREEMENT:
        # Same machine and settings, yet the cached dense latency is far from today's: it was measured under
        # other load (or another state of the device). Such tables mislead every round: measure afresh.
        log(f"the cached cost model measured the dense model at {cm.dense_ms:.3f} ms, {now:.3f} ms now: "
            "re-measuring it")
        cm = CostModel.build(s.original, s.example, s.target, refresh=True)
    log(f"cost model ready in {time.perf_counter() - started:.1f} s")
    cm.calibrate(now)
    return LatencyPlanner(cm, dense["latency_ms"], s.deadline_ms, s.cfg.slack, s.cfg.allocator)


def prune(cfg: PruneConfig) -> PruneResult:
    """Prune `cfg.model` until its constraints are met (see module doc); writes everything under cfg.output."""
    import torch

    from .pruning import PruningGraph
    from .selection import auto_step

    s = PruneSession(cfg)
    latency_mode = s.latency_mode
    importance = _importance(cfg, s.task)
    calib = None
    if importance.requires_calibration:
        calib = (s.task.calibration_batches(cfg.calib_images) if s.task
                 else [torch.randn((cfg.calib_images,) + tuple(s.loaded.input_shape[1:]))])
    if s.task is None:
        log("WARNING: no --data: latency-only mode. Importance comes from random inputs and nothing is "
            "fine-tuned, so the pruned model's ACCURACY IS UNKNOWN; fine-tune it yourself before deploying.")

    dense_graph = PruningGraph(copy.deepcopy(s.original), s.example)
    if not dense_graph.groups():
        raise EdgepruneError(f"{cfg.model} has no prunable channels (only the classifier or ignored layers)")

    if s.saved_state:
        state = s.saved_state
        controller = AIAPController.from_dict(state["controller"])
        history, dense = state["history"], state["dense"]
        state.setdefault("resumed_after", []).append(state["last_round"])
        if cfg.latency_share is not None and dense.get("deadline_ms") is not None:
            s.deadline_ms, s.deadline_share = dense["deadline_ms"], dense.get("deadline_share")
        log(f"resuming {cfg.output} after round {state['last_round']}")
    else:
        dm = s.metrics(s.original, latency=False)  # the dense latency is measured per layer below
        dense = {"accuracy": dm.accuracy, "params": dm.params, "flops": dm.flops, "memory_mb": dm.memory_mb,
                 "channels": _conv_channels(s.original), "latency_ms": None}
        if latency_mode or cfg.step is not None or cfg.method != "aiap":
            default_step = 0.5
        else:
            dense_groups = dense_graph.groups()
            scores = importance.scores(dense_graph.model, dense_graph, dense_groups, calib)
            total = dense["params"] if cfg.weighting == "params" else dense["flops"]
            default_step = auto_step(dense_groups, scores, total, cfg.weighting)
        controller = AIAPController(step=cfg.step if cfg.step is not None else default_step,
                                    max_rounds=cfg.max_rounds, max_retries=3)
        history = []
        state = {"config": cfg.to_dict(), "dense": dense, "last_round": 0}
    constraints = _constraints(cfg, dense["accuracy"], dense["params"], s.metric, s.deadline_ms)
    if not s.saved_state:
        if latency_mode:
            _latency_setup(s, importance, calib, dense)
            constraints = _constraints(cfg, dense["accuracy"], dense["params"], s.metric, s.deadline_ms)
        dense_m = RoundMetrics(**{k: dense[k] for k in ("accuracy", "params", "flops", "memory_mb", "latency_ms")},
                               latency_upper_ms=dense.get("latency_upper_ms"))
        budgets = [c for c in constraints if c.is_budget]
        if budgets and all(c.status(dense_m) in ("met", "over") for c in budgets):
            raise EdgepruneError(f"the unpruned model already meets {', '.join(c.describe() for c in budgets)}:"
                                 " nothing to prune; tighten the budget")
        s.run.write_state({**state, "controller": controller.to_dict(), "history": history})
        log(f"dense: params {dense['params']:,}, FLOPs {dense['flops']:,}"
            + (f", accuracy {dense['accuracy']:.2f}" if dense["accuracy"] is not None else ""))
    if latency_mode:
        # before the planner: a deadline given as a share is resolved again at the frame's settled start speed
        s.open_frame((dense.get("latency_stats") or {}).get("p50"), dense.get("frame_start_ms"))
        if s.frame is not None:
            start = s.frame_start
            log(f"every reading in the loop is taken in the dense model's frame ({start['start_ms']:.3f} ms p50, the "
                f"slower ordinary speed of its readings {', '.join(f'{x:.3f}' for x in start['readings_ms'])} ms): "
                "each model timed between two readings of the dense model (--latency-frame)")
            if cfg.latency_share is not None:
                dense["frame_start_ms"] = start["start_ms"]
                if not start.get("resumed"):
                    _resolve_share(s, dense, start["start_ms"])
        constraints = _constraints(cfg, dense["accuracy"], dense["params"], s.metric, s.deadline_ms)
    planner = _open_planner(s, dense) if latency_mode else None
    if planner is not None:
        planner.dense_sizes = {g.id: g.size for g in dense_graph.groups()}  # the uniform-share plan's widths
        for record in history:  # a resumed run re-learns the cost model's correction from what it measured
            if record.get("latency_stats"):
                planner.cost_model.calibrate(_round_p50(record),
                                             _modelled(planner.cost_model, record["widths"]))
                planner.observe(record, _round_p50(record))


    round_id = state["last_round"]
    overshot: dict[str, int] = state.setdefault("overshot_plans", {})
    try:
        with Progress(cfg.max_rounds, "pruning rounds") as bar:
            while not controller.finished:
                round_id = _one_round(s, cfg, controller, state, history, overshot, round_id + 1, importance,
                                      calib, constraints, planner, bar)
        return _finish(s, cfg, controller, history, dense, constraints, state.get("resumed_after", []), planner)
    finally:
        s.close()


def _start_latency(state: dict, history: list[dict], base: int | None,
                   frame_dense_ms: float | None = None) -> float | None:
    """The p50 measured for the model a round starts from (dense or a kept round); where a round's
    confirmation read slower, that reading. The dense model reads the frame's dense latency where the loop
    reads in one (`frame_dense_ms`, frame.py), else its reading when the run began."""
    if base is None:
        return frame_dense_ms or (state["dense"].get("latency_stats") or {}).get("p50")
    record = next((r for r in history if r["round"] == base), None)
    if record is None or not record.get("latency_stats"):
        return None
    confirmation = record.get("confirmation") or {}
    if confirmation.get("continued_for_margin"):
        # What must clear the margin line is the confirmed upper bound: the round's own p50 can sit under
        # the line already, and a need measured from it was zero (ResNet-56 at batch 32 then grew the
        # threshold 30 times without selecting anything, and its artifact missed the deadline by 0.9%).
        return max(_round_p50(record), confirmation["fresh_upper_ms"])
    return _round_p50(record)


def _overshot_saving(history: list[dict], base: int | None, scale_now: float = 1.0) -> float | None:
    """The least predicted saving of the rounds that overshot from this same start model, if any, in the
    cost model's calibration now (`scale_now`; each round recorded the scale it predicted under).

    A retry after an overshoot must remove less than what overshot. Halving AIAP's threshold does not
    say so once it is past 1 (every such round aims at the same line), and the retry picked the same
    channels again: three retries of ResNet-56 at batch 32 each counted as one more overshoot and the
    round cap ended the run 22% under the deadline."""
    savings = [(r["predicted_before_ms"] - r["predicted_latency_ms"]) * scale_now / (r.get("scale") or scale_now)
               for r in history
               if r.get("base_round") == base and r.get("verdict") == "overshoot"
               and r.get("predicted_before_ms") is not None and r.get("predicted_latency_ms") is not None]
    return min(savings) if savings else None


def _round_p50(record: dict) -> float:
    """A round's measured p50; where its confirmation read slower (and missed), that fresh reading; where its
    plan was timed alone in turn with its start model, the p50 as that start's reading would have read it.

    The last keeps the rounds in one frame when the machine's speed drifts: a round that starts from a kept
    model's own reading taken in a fast minute aims at the deadline from a start that looks nearer than it is."""
    confirmation = record.get("confirmation") or {}
    if confirmation.get("met") is False:
        return confirmation["fresh_p50_ms"]
    return record.get("p50_as_at_start_ms") or record["latency_stats"]["p50"]


def _fresh(s: PruneSession, model) -> dict[str, Any]:
    """The model measured once more on the target, and whether its upper bound meets the deadline."""
    lat = s.read_latency(model)
    return {"fresh_ms": lat["value"], "fresh_upper_ms": lat["upper"], "fresh_p50_ms": lat["latency_ms"]["p50"],
            "met": lat["upper"] <= s.deadline_ms}


def not_faster_than_start(measured_ms: float | None, start_ms: float | None) -> bool:
    """Whether a plan's reading is no faster than the model it removes channels from: on this machine that is
    the minute, not the plan, and a reading the next round would plan from.

    Benchmark 2, session 19, seed 0: round 2 removed 12 units from a model read at 20.73 ms and read 28.87 ms,
    once (more than a quarter over the deadline, so not 'near' it); round 3 planned its cut from 28.87 ms, took
    134 units, and landed at 19.09 ms, past the slack window."""
    return measured_ms is not None and start_ms is not None and measured_ms >= start_ms


def _slower_than_start(state: dict, history: list[dict], base: int | None, measured: float | None) -> float | None:
    """The latency of the model this round started from, when the round measured no faster than it."""
    start = (state["dense"].get("latency_ms") if base is None
             else next((r.get("latency_ms") for r in history if r["round"] == base), None))
    return start if not_faster_than_start(measured, start) else None


def _confirm_done(s: PruneSession, model, v: Verdict, states: dict[str, str],
                  m: RoundMetrics) -> dict[str, Any] | None:
    """A round that says the deadline is met is measured again before the loop may stop on it: two fresh
    readings of the fine-tuned model (a third where they disagree), pooled with the plan's readings before
    fine-tuning, decide it by their median upper bound (of an even count, the slower middle one).

    One in-loop reading can be lucky: at batch 32 on this shared machine a round read 14.1 ms and, minutes
    later, 16.2 ms, and the loop had already stopped. Fresh readings can be unlucky just as well, and they
    measure the same architecture the plan's readings did (fine-tuning changes weights, not widths):
    benchmark 2 (session 18, seed 0) fine-tuned a regrown plan of 385,682 parameters read at 0.497, 0.478
    and 0.483 of dense; its two fresh readings, 0.553 and 0.555, alone decided the round was not done, and
    five more rounds spent five epochs of the budget the baselines were then given in full. A round that is
    not done stays a good round, and pruning continues from it, anchored on the deciding reading.
    """
    from .latency import deciding_reading, median_by_upper, summarise_readings

    if v != Verdict.DONE or states.get("latency") not in ("met", "over"):
        return None
    first = {"value": m.latency_ms, "upper": m.latency_upper_ms, "latency_ms": m.extra["latency"]["latency_ms"]}
    before = m.extra["latency"].get("readings") or summarise_readings([first])
    _, fresh = deciding_reading([], lambda: s.read_latency(model), s.deadline_ms)  # two, a third if they disagree
    pool = [*before, *summarise_readings(fresh)]
    deciding = median_by_upper(pool)
    confirmed = {"fresh_ms": deciding["value"], "fresh_upper_ms": deciding["upper"],
                 "fresh_p50_ms": deciding["p50"], "met": deciding["upper"] <= s.deadline_ms,
                 "readings": pool, "before_fine_tuning": len(before)}
    if not confirmed["met"]:
        log(f"the deadline looked met, but fresh measurements read {s.metric} "
            + ", ".join(f"{r['value']:.3f}" for r in fresh)
            + f" ms (with the plan's {len(before)} before fine-tuning, deciding upper "
            f"{confirmed['fresh_upper_ms']:.3f}) over {s.deadline_ms} ms: pruning goes on from this round")
    return confirmed


def _one_more_for_margin(s: PruneSession, controller: AIAPController, state: dict, confirmed: dict,
                         round_id: int) -> bool:
    """Whether a round confirmed as meeting the deadline, but above the margin line, should be pruned once
    more instead of ending the loop (once per run, where a round is left).

    A model just under the deadline meets it on some readings and misses on others: on this machine
    readings of one model differ by about 3% between processes, and a demo run whose round was confirmed
    at 0.846 ms against 0.857 ms read 0.837, 0.878 and 0.864 ms as the exported artifact. One more small
    round aims at the margin line (half the slack window under the deadline); the met round stays a
    candidate, and the final re-measurement prefers whichever clears the line."""
    from .latency import aim_ms

    margin_line = aim_ms(s.deadline_ms, s.cfg.slack)
    confirmed["with_margin"] = confirmed["fresh_upper_ms"] <= margin_line
    if confirmed["with_margin"] or "margin_round" in state or controller.rounds + 2 > s.cfg.max_rounds:
        return False
    state["margin_round"] = round_id
    confirmed["continued_for_margin"] = True
    log(f"round {round_id} meets {s.deadline_ms} ms, but its upper bound {confirmed['fresh_upper_ms']:.3f} ms is "
        f"above the margin line {margin_line:.3f} ms: one more round aims under it")
    return True


def _plan_key(base: int | None, plan: dict[str, list[int]]) -> str:
    """Identifies 'these channels removed from this round's model': the same key means the same network."""
    import hashlib
    import json

    text = json.dumps([base, sorted((g, sorted(ix)) for g, ix in plan.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _probe(s: PruneSession, planner, constraints: list[Constraint], model, graph, groups: list, scores: dict,
           first: tuple[dict, dict], tried: float, base: int | None, state: dict, history: list[dict],
           overshot: dict[str, int], round_id: int):
    """The round's plan measured before fine-tuning, re-planned where it lands outside the slack window
    (probing.py); returns the accepted probe and every probe."""
    from .frame import frame_words
    from .latency import deciding_reading, layer_widths, summarise_readings
    from .probing import (
        INTERMEDIATE_FAMILY_PROBES,
        MAX_PROBES,
        PAIR_REACH,
        STATUS_WORDS,
        disagree,
        judged,
        near_deadline,
        paired_reading,
        pairs_apply,
        probe_round,
        walk_family,
        window_between,
        within_reach,
    )
    from .pruning import PruningGraph

    deadline = next(c for c in constraints if isinstance(c, LatencyBudget))
    start = _start_latency(state, history, base, s.frame.anchor_ms if s.frame is not None else None)
    widths_now = layer_widths(model)
    pristine = copy.deepcopy(model)
    beside = _BesideStart(s, pristine)
    built: list[bool] = []
    at_aim = planner.target_is_aim(tried)

    def plan(ratio: float | None, below: float | None) -> tuple[dict, dict]:
        return planner.plan(tried, groups, scores, widths_now, measured_now=start, below_ms=below,
                            saving_ratio=ratio)

    def build(units: dict[str, list[int]]):
        if not built:  # the first plan prunes the round's own model; later ones a fresh copy of its start
            built.append(True)
            graph.prune_many(units)
            return model, graph
        other = copy.deepcopy(pristine)
        other_graph = PruningGraph(other, s.example)
        other_graph.current_round = round_id
        other_graph.prune_many(units)
        return other, other_graph

    def plain_status(latency: dict) -> str:
        return deadline.status(RoundMetrics(latency_ms=latency["value"], latency_upper_ms=latency["upper"]))

    def status(latency: dict) -> str:
        return judged(plain_status(latency), latency, deadline.deadline_ms, deadline.slack)

    def family_status(latency: dict) -> str:
        # an intermediate round takes a share within a slack short of the deadline (probing.within_reach)
        judged_now = status(latency)
        return judged_now if at_aim else within_reach(judged_now, latency, deadline.deadline_ms, deadline.slack)

    def measure(candidate, short_too: bool) -> dict:
        if s.frame is not None:  # timed between readings of the dense model: no pair can tell it more
            def read() -> dict:
                reading = s.frame.read(candidate)
                log(f"round {round_id}: a plan runs at {frame_words(reading)}")
                return reading

            latency = read()
            if near_deadline(latency, deadline.deadline_ms) or not_faster_than_start(latency["value"], start):
                # One reading's noise could move its verdict. In the frame a ratio still moves with the minute:
                # benchmark 2 (session 16, seed 0) read the halved ResNet-56 at 0.574 of dense in round 1 (short
                # of a deadline at 0.478) and at 0.449 in the baseline's bisection; round 2's plan read 0.472 (in
                # the window), was fine-tuned and delivered, and read 0.30-0.35 afterwards. So the plan is read
                # until two readings agree on where it lands, and judged on the deciding one. A plan read no
                # faster than the model it prunes is read again wherever it lands (not_faster_than_start).
                deciding, readings = deciding_reading([latency], read, deadline.deadline_ms, classify=plain_status)
                latency = {**deciding, "readings": summarise_readings(readings)}
                log(f"round {round_id}: read {len(readings)} times near the deadline ("
                    + ", ".join(f"{r['value']:.3f}" for r in readings) + f" ms): judged at {latency['value']:.3f} ms")
            return latency
        latency = s.measure_latency(candidate)
        plain = plain_status(latency)
        near = latency["value"] <= deadline.deadline_ms * (1 + PAIR_REACH)
        if pairs_apply(start) and (plain == "over" or (plain == "below" and short_too and near)):
            # outside the window: timed beside the start model, in case the machine, not the plan, read so
            pair = beside.time(candidate)
            if pair is not None:
                latency["paired"] = paired_reading(latency, pair, start)
                if disagree(latency, deadline.deadline_ms, deadline.slack):
                    # one of the two readings is off by more than the window: the plan is timed once more,
                    # alone and in turn with its start model, and that reading judges it (probing.judged)
                    latency["paired_in_one_process"] = latency["paired"]
                    latency["paired"] = paired_reading(latency, beside.time_alone(candidate), start)
                _log_paired(round_id, latency, deadline, status(latency))
        return latency

    with beside:  # the start model's export, shared by the round's pairs, goes with it
        # a plan short of the deadline is what an intermediate round wants: no pair can change its verdict there
        accepted, probes = probe_round(first, plan, build, lambda m: measure(m, at_aim), status, start_p50=start,
                                       at_aim=at_aim,
                                       below_ms=first[1].get("below_ms"),
                                       skip=lambda units: _plan_key(base, units) in overshot)
        other = between = None
        if s.cfg.compare_uniform:
            # Every round, not only those aimed at the deadline: the uniform plans aim at the deadline itself, and one
            # that lands in the window from an intermediate round skips a round whose fine-tuning is spent on a
            # model pruned again next round (benchmark 2: the same halved ResNet-56 reached one round later ended
            # 1.6-5.0 points under uniform pruning on the same training budget). An intermediate round has its own
            # plan to go on with, so it measures fewer shares.
            plans, start_at = planner.uniform_family(groups, scores, widths_now, measured_now=start,
                                                     below_ms=first[1].get("below_ms"))
            measured = {_plan_key(base, p.plan) for p in probes}
            fresh = [n for n, (units, _info) in enumerate(plans) if _plan_key(base, units) not in measured]
            if fresh:  # a share the allocator's plans already were is not measured again
                start_at = min(sum(1 for n in fresh if n < start_at), len(fresh) - 1)
                family = [plans[n] for n in fresh]
                other, more = walk_family(family, start_at, build, lambda m: measure(m, True), family_status,
                                          skip=lambda units: _plan_key(base, units) in overshot,
                                          max_probes=MAX_PROBES if at_aim else INTERMEDIATE_FAMILY_PROBES)
                probes += more
                if other is None:
                    between = window_between(family, more, deadline.deadline_ms, deadline.slack)
                # the share to give units back to: the one in the window, else the least pruning measured
                # past it (faster than needed), however far under the deadline it lands
                past = [p for p in more if p.status == "over"]
                share_probe = other if other is not None else (
                    min(past, key=lambda p: sum(len(u) for u in p.plan.values())) if past else None)
                if share_probe is not None and s.cfg.regrow:
                    regrown = _regrown_probes(planner, share_probe, groups, scores, widths_now, start, build,
                                              lambda m: measure(m, True), status, round_id)
                    probes += regrown
                    if regrown and regrown[-1].status == "met":
                        other, between = regrown[-1], None
    for p in probes:
        p.info.setdefault("family", "allocator")  # the round's record says which family its plan came from
        p.info["params"] = _params(p.model)
    if other is not None:
        accepted = _more_capacity(accepted, other, round_id)
    elif between is not None and accepted.status != "met":
        accepted = _take_between(*between, round_id)
    accepted = _just_past_window(accepted, probes, deadline, round_id)
    for p in probes:
        if p is not accepted:
            log(f"round {round_id}: a plan ({p.info['family']}) removing {sum(len(u) for u in p.plan.values())} "
                f"units measured {p.latency['value']:.3f} ms before fine-tuning, {STATUS_WORDS[p.status]} of "
                f"{deadline.deadline_ms} ms: not fine-tuned")
            # a real saving from this start: later rounds spend by it too (the allocator's plans only; see
            # LatencyPlanner.observe)
            planner.observe(p.info, p.p50_for_saving)
    return accepted, probes


def _log_paired(round_id: int, latency: dict, deadline: LatencyBudget, status: str) -> None:
    from .probing import STATUS_WORDS

    paired = latency["paired"]
    off = latency["value"] / deadline.deadline_ms - 1
    where = f"{-off:.1%} under" if off <= 0 else f"{off:.1%} over"
    verdict_words = ("judged inside the slack window (fresh readings still decide the deadline)" if status == "met"
                     else f"judged {STATUS_WORDS[status]}")
    one_process = latency.get("paired_in_one_process")
    how = "timed beside its start model"
    if one_process is not None:
        how = (f"timed beside its start model in one process it ran at {one_process['ratio']:.3f} of it "
               f"({one_process['as_at_start_ms']:.3f} ms), more than the slack window from its own reading; "
               "timed alone in turn with it")
    log(f"round {round_id}: a plan read {latency['value']:.3f} ms, {where} {deadline.deadline_ms} ms; "
        f"{how} it runs at {paired['ratio']:.3f} of it, {paired['as_at_start_ms']:.3f} ms "
        f"at the start's {paired['start_ms']:.3f} ms reading: {verdict_words}")


def _params(model) -> int:
    return sum(int(p.numel()) for p in model.parameters())


def _more_capacity(allocated, uniform, round_id: int):
    """Of the allocator's plan and the uniform-share plan (uniform_plan.py), the one to fine-tune: the plan in
    the slack window; where both are, the one keeping more parameters (each probe's `params`)."""
    if uniform.status != "met":
        return allocated
    kept_a, kept_u = allocated.info["params"], uniform.info["params"]
    if allocated.status == "met" and kept_a >= kept_u:
        log(f"round {round_id}: the uniform-share plan keeps {kept_u:,} parameters, the allocator's {kept_a:,}: "
            "the allocator's is fine-tuned")
        return allocated
    what = (f"the uniform-share plan ({uniform.info.get('share'):.3f} of every dense width)"
            if uniform.info.get("family") == "uniform" else "the regrown uniform-share plan")
    log(f"round {round_id}: {what} measured "
        f"{uniform.latency['value']:.3f} ms with {kept_u:,} parameters; the allocator's "
        f"{allocated.latency['value']:.3f} ms ({allocated.status}) with {kept_a:,}: {what} is fine-tuned")
    return uniform


def _just_past_window(accepted, probes: list, deadline: LatencyBudget, round_id: int):
    """The plan to fine-tune, or instead a plan of the round read just past the slack window (within twice the
    slack under the deadline, counted by `_read_at_least`): where the plan to fine-tune is in the window and the
    one just past it keeps more parameters, it meets the deadline with more capacity, and the round counts as
    meeting it (`past_window_more_capacity`; fresh readings then decide).

    The window is narrower than one reading's noise: benchmark 2 (session 16, seed 0, round 2) read
    an allocator plan keeping 409,450 parameters at 18.2 and 19.7 ms, just past a 20.0-21.0 ms window, and the
    halved model (214,546) at 18.3, 26.4 and 20.7 ms, in it; the halved model was fine-tuned and delivered.
    The same holds where the plan to fine-tune is a uniform share past the window because the window falls
    between two shares (`_take_between`): benchmark 2 (session 17, seed 1) read three regrown plans at 18.4-18.8
    ms, past a 18.9-19.9 ms window, and fine-tuned the halved model they were regrown from, at 18.2.

    Where the plan to fine-tune falls short of the deadline (an intermediate step, or nothing of the round
    landed), the largest plan just past the window is fine-tuned instead, and the round counts as meeting the
    deadline (`past_window_near_deadline`): benchmark 2 (session 20, seed 2) read the halved model at 18.73 ms
    and the plan regrown from it at 18.00 (counted at 18.73, below), just past a 19.51-20.54 ms window, and
    fine-tuned the allocator's intermediate plan (28.19 ms); two more rounds of pruning and fine-tuning followed
    to reach the deadline, each spending the budget on a model pruned again afterwards."""
    short = accepted.status == "below"
    if accepted.status != "met" and not accepted.info.get("window_between_shares") and not short:
        return accepted
    floor = deadline.deadline_ms * (1 - 2 * deadline.slack)
    counted = {id(p): _read_at_least(p, probes) for p in probes}
    near = [p for p in probes if p.status == "over" and floor <= counted[id(p)] <= deadline.deadline_ms
            and (short or p.info["params"] > accepted.info["params"])]
    if not near:
        return accepted
    chosen = max(near, key=lambda p: p.info["params"])
    read, at_least = chosen.latency["value"], counted[id(chosen)]
    key = "past_window_near_deadline" if short else "past_window_more_capacity"
    chosen.info[key] = {"ms": read, "counted_ms": at_least, "params": chosen.info["params"],
                        "instead_of_ms": accepted.latency["value"], "instead_of_params": accepted.info["params"]}
    how = (f"read {read:.3f} ms, faster than a plan of the round whose every unit it keeps, so counted at that "
           f"plan's {at_least:.3f} ms" if at_least > read else f"read {read:.3f} ms")
    why = (f"the round's plan ({accepted.latency['value']:.3f} ms) falls short of the deadline: the plan just past "
           "the window is fine-tuned" if short else
           f"the round's plan ({accepted.latency['value']:.3f} ms) keeps {accepted.info['params']:,}: the "
           "larger is fine-tuned")
    log(f"round {round_id}: a plan ({chosen.info['family']}) {how}, just past the slack window, with "
        f"{chosen.info['params']:,} parameters; {why}")
    return chosen


def _keeps_all_of(plan: dict[str, list[int]], other: dict[str, list[int]]) -> bool:
    """Whether a removal plan keeps every unit another (from the same start model) keeps: each group's removed
    units are among the other's."""
    return all(set(units) <= set(other.get(gid, ())) for gid, units in plan.items())


def _read_at_least(probe, probes: list) -> float:
    """A plan's reading, raised to the slowest reading of the round's plans whose every unit it keeps.

    A model keeping every channel of another is no faster than it, so a reading under that is the machine's
    noise. Benchmark 2 (session 20, seed 2): the 0.500 share read 16.45 and 18.57 ms, the plan regrown from it
    (96 units given back) 17.40 and 17.24; the regrown plan, 13% under the 20.06 ms deadline on its own
    readings, was set aside as past the window and the share, fewer parameters at the same latency, was
    fine-tuned and delivered."""
    return max([probe.latency["value"], *(q.latency["value"] for q in probes
                                          if q is not probe and _keeps_all_of(probe.plan, q.plan))])


REGROW_PROBES = 3  # regrown plans measured per round: the first, then ones corrected by what the earlier measured


def _regrow_correction(attempts: list[dict[str, float]], aim_ms: float, base_ms: float) -> float | None:
    """The measured-over-predicted ratio for the next regrown plan from the attempts so far (each: `allow_ms`
    the tables' allowance, `predicted_added_ms`, `measured_ms`, `status`), or None where none is worth making.

    Where one attempt landed short of the deadline and another past the window, the allowance that lands on
    the aim lies between theirs: it is interpolated on the two nearest (benchmark 2, session 16, round 1: from
    the 0.25 share at 9.9 ms, +9.9 table-ms measured 30.3 ms and +4.7 measured 17.3, the window 19.3-20.3).
    Otherwise the last attempt's measured over predicted added latency scales the allowance, whichever side
    of the window it landed on."""
    from .probing import RATIO_BOUNDS

    last = attempts[-1]
    if last["status"] == "met":
        return None
    short = [a for a in attempts if a["status"] == "below"]
    past = [a for a in attempts if a["status"] == "over"]
    if short and past:
        lo = max(past, key=lambda a: a["allow_ms"])  # the most given back that still landed past the window
        hi = min(short, key=lambda a: a["allow_ms"])  # the least given back that landed short
        if hi["measured_ms"] <= lo["measured_ms"] or hi["allow_ms"] <= lo["allow_ms"]:
            return None  # readings out of order with their allowances: noise, not a trend to follow
        at = (aim_ms - lo["measured_ms"]) / (hi["measured_ms"] - lo["measured_ms"])
        allow = lo["allow_ms"] + at * (hi["allow_ms"] - lo["allow_ms"])
        return (aim_ms - base_ms) / allow if allow > 0 else None
    measured_added = last["measured_ms"] - base_ms
    if last["predicted_added_ms"] <= 0 or measured_added <= 0:
        return None
    lo_r, hi_r = RATIO_BOUNDS
    return min(hi_r, max(lo_r, measured_added / last["predicted_added_ms"]))


def _regrown_probes(planner, share_probe, groups: list, scores: dict, widths_now: dict, start: float | None,
                    build, measure, status, round_id: int) -> list:
    """The uniform-share plan the round found with units given back up to the aim (regrow.py), measured; where
    it lands outside the window, again with the allowance corrected by what the attempts measured
    (`_regrow_correction`: the tables under-predicted ResNet-56's regrowth at batch 32 by 1.4-2x, +7.3 ms
    measured for +5.1 ms predicted). Returns the probes; the round's candidate is the last, if it is met."""
    from .probing import STATUS_WORDS, Probe

    probes: list[Probe] = []
    attempts: list[dict[str, float]] = []
    ratio = None
    base_ms = float(share_probe.latency["value"])
    for _attempt in range(REGROW_PROBES):
        planned = planner.regrown(share_probe.plan, groups, scores, widths_now, base_ms, measured_now=start,
                                  added_ratio=ratio)
        if planned is None or not any(planned[0].values()) or any(planned[0] == p.plan for p in probes):
            break  # nothing fits, everything came back (the round's start model), or a plan already measured
        units, info = planned
        info["share"] = share_probe.info.get("share")
        model, graph = build(units)
        latency = measure(model)
        probe = Probe(units, info, model, graph, latency, status(latency))
        probes.append(probe)
        restored = sum(t["restored"] for t in info["restored"])
        predicted_added = info["predicted_latency_ms"] - info["predicted_share_ms"]
        log(f"round {round_id}: the {info['share']:.3f} share read {base_ms:.3f} ms; {restored} units given back where "
            f"they cost least latency (the tables: +{predicted_added:.3f} ms of {info['allow_ms']:.3f} allowed) "
            f"measured {latency['value']:.3f} ms, {STATUS_WORDS[probe.status]}")
        attempts.append({"allow_ms": float(info["allow_ms"]), "predicted_added_ms": float(predicted_added),
                         "measured_ms": float(latency["value"]), "status": probe.status})
        ratio = _regrow_correction(attempts, planner.aim_ms, base_ms)
        if ratio is None:
            break
    return probes


def _take_between(between, wider, round_id: int):
    """The uniform share that meets the deadline with the least pruning, where the slack window falls between it
    and the next wider share (probing.window_between): it is fine-tuned, and the round counts as meeting the
    deadline though it lands past the window, since no plan of the family lands in it."""
    between.info["window_between_shares"] = {
        "share": between.info["share"], "ms": between.latency["value"],
        "wider_share": wider.info["share"], "wider_ms": wider.latency["value"]}
    log(f"round {round_id}: the slack window falls between two neighbouring uniform shares: "
        f"{wider.info['share']:.3f} of every width measured {wider.latency['value']:.3f} ms (short of the deadline), "
        f"{between.info['share']:.3f} measured {between.latency['value']:.3f} ms (past the window): the "
        f"{between.info['share']:.3f} share, the least pruning of its family that meets the deadline, is fine-tuned")
    return between


def _one_round(s: PruneSession, cfg: PruneConfig, controller: AIAPController, state: dict, history: list[dict],
               overshot: dict[str, int], round_id: int, importance, calib, constraints: list[Constraint],
               planner, bar: Progress) -> int:
    """Try one threshold; returns the id of the last round written (round_id - 1 when none was)."""
    from .latency import layer_widths
    from .pruning import PruningGraph, build_manifest
    from .selection import SelectionContext, select

    started = time.perf_counter()
    base = controller.restart_from()
    bar.update(description=f"round {round_id}: scoring channels")
    model, steps = s.model_at(base)
    graph = PruningGraph(model, s.example)
    graph.current_round = round_id
    groups = graph.groups()
    tried = controller.next_threshold() if cfg.method == "aiap" else float(controller.rounds + 1)
    scores = importance.scores(model, graph, groups, calib)
    plan_info: dict[str, Any] = {}
    if planner is not None:
        plan, plan_info = planner.plan(tried, groups, scores, layer_widths(model),
                                       measured_now=_start_latency(state, history, base,
                                                                   s.frame.anchor_ms if s.frame is not None else None),
                                       below_ms=_overshot_saving(history, base, planner.cost_model.scale))
    else:
        ctx = SelectionContext(threshold=tried, weighting=cfg.weighting, fraction=cfg.fraction)
        plan = select(cfg.method, groups, scores, ctx)
    t_select = time.perf_counter() - started
    if not plan:
        if cfg.method != "aiap" or all(g.size <= 1 for g in groups):
            controller.stop("nothing left to prune")
        elif planner is not None and planner.target_is_aim(tried):
            # A larger threshold would aim at the same target and plan the same nothing.
            controller.stop(f"the latency step selects nothing more (need {plan_info.get('need_ms', 0.0):.3f} ms)")
        else:
            controller.advance(tried)  # threshold too low to touch anything: grow it
            log(f"T={tried:.3f} selects no channel: growing the threshold")
        return round_id - 1
    key = _plan_key(base, plan)
    if key in overshot:
        # Same start, same channels: the same network, so fine-tuning it again (same seed) would overshoot again.
        log(f"T={tried:.3f} removes the same channels as round {overshot[key]}, which overshot: "
            "counted as an overshoot without training it again")
        controller.report(round_id, tried, Verdict.OVERSHOOT)
        s.run.write_state({**state, "controller": controller.to_dict(), "history": history})
        return round_id - 1
    t0 = time.perf_counter()
    probe = None
    if planner is not None:
        bar.update(description=f"round {round_id}: measuring the plan")
        probe, probes = _probe(s, planner, constraints, model, graph, groups, scores, (plan, plan_info), tried, base,
                               state, history, overshot, round_id)
        model, graph, plan = probe.model, probe.graph, probe.plan
        plan_info = {**probe.info, "probes": [p.to_record(p is probe) for p in probes]}
    else:
        graph.prune_many(plan)
    t_probe = time.perf_counter() - t0
    bar.update(description=f"round {round_id}: fine-tuning")
    t0 = time.perf_counter()
    train = s.finetune(model, cfg.finetune_epochs)
    t_train = time.perf_counter() - t0
    bar.update(description=f"round {round_id}: measuring")
    t0 = time.perf_counter()
    m = s.metrics(model, latency=probe is None)
    if probe is not None:  # the plan's own measurement: fine-tuning changes weights, not the architecture
        m = dataclasses.replace(m, latency_ms=probe.latency["value"], latency_upper_ms=probe.latency["upper"],
                                extra={**m.extra, "latency": probe.latency})
    t_measure = time.perf_counter() - t0
    v, states = verdict(constraints, m)
    alone = probe is not None and probe.timed_alone
    between = probe is not None and (probe.info.get("window_between_shares")
                                     or probe.info.get("past_window_more_capacity")
                                     or probe.info.get("past_window_near_deadline"))
    if alone and not between:
        # timed alone in turn with its start model, the plan is what that reading says, whichever way
        states = {**states, "latency": probe.status}
    elif probe is not None and states.get("latency") != "met" and (probe.status == "met" or between):
        # Its own reading put it outside the window, but its reading beside the start model put it inside
        # (probing.judged; _confirm_done's fresh readings then decide the deadline), or no plan of the family
        # lands in the window (_take_between) and past it is as close as the family gets, or it keeps more
        # parameters than the round's plan in the window, or the round's plan falls short (_just_past_window).
        states = {**states, "latency": "met"}
    v = verdict_of(constraints, states)
    confirmed = _confirm_done(s, model, v, states, m) if planner is not None else None
    if confirmed is not None and not confirmed["met"]:
        v, states = Verdict.GOOD, {**states, "latency": "below"}
    elif confirmed is not None and _one_more_for_margin(s, controller, state, confirmed, round_id):
        v = Verdict.GOOD
    if base is not None and base == state.get("margin_round") and v == Verdict.OVERSHOOT:
        # The round after a deadline met without margin went past the slack window: both are candidates
        # now, and the final re-measurement chooses between them; further retries would only cost rounds.
        controller.stop("the deadline is met; the round for margin after it overshot")
    slower = _slower_than_start(state, history, base, m.latency_ms) if planner is not None else None
    if slower is not None:
        # Reported, not acted on: one reading on a shared machine is noisy, and treating such rounds as
        # overshoots (tried) halved the step into ever smaller removals and stalled ResNet-56 runs.
        log(f"round {round_id}: measured {m.latency_ms:.3f} ms, not faster than the {slower:.3f} ms it started from")
    manifest = build_manifest(s.original, model, [*steps, *[st.to_dict() for st in graph.history]], s.example)
    record = _round_record(round_id, tried, plan, {g.id: g.size for g in groups}, m, states, v,
                           {"select": t_select, "probe": t_probe, "finetune": t_train, "measure": t_measure,
                            **{f"measure_{k}": v for k, v in m.extra["seconds"].items()},
                            "total": time.perf_counter() - started}, _conv_channels(model))
    record["base_round"] = base
    record["train"] = train
    if alone:
        record["p50_as_at_start_ms"] = probe.p50_for_saving
    if slower is not None:
        record["slower_than_start_ms"] = slower
    if confirmed is not None:
        record["confirmation"] = confirmed
    if planner is not None:
        widths = layer_widths(model)
        record.update(plan_info, latency_ms=m.latency_ms, latency_upper_ms=m.latency_upper_ms,
                      latency_stats=m.extra["latency"]["latency_ms"], widths=widths)
        # after a failed confirmation the slower, fresh reading is what the next round must close
        calibration = planner.cost_model.calibrate(_round_p50(record), _modelled(planner.cost_model, widths))
        record["prediction_error"] = calibration["error"]
        record["measured_over_predicted_saving"] = planner.observe(record, _round_p50(record))
    s.run.write_round(round_id, model, manifest, record)
    if cfg.method != "aiap" and v == Verdict.OVERSHOOT:
        controller.stop("constraint broken")  # fixed-rate methods do not back off: the last good round wins
    else:
        controller.report(round_id, tried, v)
    if v == Verdict.OVERSHOOT:
        overshot[key] = round_id
    history.append(record)
    state.update(last_round=round_id)
    s.run.write_state({**state, "controller": controller.to_dict(), "history": history})
    acc = f" acc {m.accuracy:.2f}" if m.accuracy is not None else ""
    lat_text = (f" {s.metric} {m.latency_ms:.3f} ms (predicted {plan_info['predicted_latency_ms']:.3f})"
                if planner is not None else "")
    log(f"round {round_id}: T={tried:.3f} removed {sum(len(i) for i in plan.values())} units, "
        f"params {m.params:,}{acc}{lat_text} -> {v.value}")
    bar.advance(description=f"round {round_id}: {v.value}")
    return round_id


def final_candidates(controller: AIAPController, history: list[dict], constraints: list[Constraint]) -> list[int]:
    """The rounds worth delivering, best first: those that meet every budget, accuracy intact, the most
    accurate first (the least pruned where accuracy ties or is unknown).

    Rounds landing within a budget's slack come first. Channel granularity can make that window
    unreachable (one filter of a small net can be more than the slack), so rounds past the budget follow.
    Accuracy ranks before size because a later round carries the fine-tuning of the rounds before it:
    benchmark 2 (session 17) delivered round 1 (221,490 parameters, 62.68% after its fine-tuning) over the
    round for margin that followed it (220,322, 67.72%), so the second round's fine-tuning counted in the
    budget and bought nothing. Without budgets (accuracy only) the last good round, the most pruned, is the one.
    """
    budgets = [c.name for c in constraints if c.is_budget]
    hard = [c.name for c in constraints if not c.is_budget]
    if budgets:
        ok = [r for r in history if all(r["constraints"][h] != "over" for h in hard)
              and all(r["constraints"][b] in ("met", "over") for b in budgets)]
        within = {r["round"] for r in ok if all(r["constraints"][b] == "met" for b in budgets)}
        if ok:
            ranked = sorted(ok, key=lambda r: (r["round"] in within, r["accuracy"] if r["accuracy"] is not None
                                               else float("-inf"), r["params"]), reverse=True)
            return [r["round"] for r in ranked]
    last = controller.restart_from()
    return [] if last is None else [last]


FINAL_REMEASURES = 3  # candidate rounds re-measured before delivering one in latency mode


def _confirm_final(s: PruneSession, ranked: list[int], earlier: dict[int, float] | None = None
                   ) -> tuple[int, list[dict]]:
    """Re-measure the best candidates afresh and deliver the first whose fresh upper bound meets the deadline
    with a margin, else the first that meets it at all.

    One in-loop measurement decided each round; on a shared machine one fast reading can be luck, and
    delivering it is how a run ends with a final check that misses. A candidate confirmed only just under
    the deadline missed it by 0.1-2% when the exported artifact was measured once more (benchmark 1), so a
    candidate that clears it by half the slack window is preferred when one of the re-measured does. When
    none meets the deadline now, the one closest to it is delivered (and the run reports a miss).

    `earlier`: per round, the highest upper bound its confirmation readings in the loop gave. Clearing the
    margin takes every reading, not only the fresh one: a ResNet-56 round confirmed at 14.89 ms against a
    margin line of 14.63 ms (so the loop pruned once more for margin) re-measured at 14.04 ms, was delivered
    over the margin round, and its artifact then read 14.99 ms twice, over the 15 ms deadline by its bound.
    """
    from .latency import aim_ms

    deadline = s.deadline_ms
    margin_line = aim_ms(deadline, s.cfg.slack)
    tried: list[dict] = []
    for round_id in ranked[:FINAL_REMEASURES]:
        model, _ = s.model_at(round_id)
        fresh = _fresh(s, model)
        fresh["with_margin"] = max(fresh["fresh_upper_ms"], (earlier or {}).get(round_id, 0.0)) <= margin_line
        tried.append({"round": round_id, **fresh})
        log(f"re-measured round {round_id}: {s.metric} {fresh['fresh_ms']:.3f} ms (upper {fresh['fresh_upper_ms']:.3f}) "
            f"{'meets' if fresh['met'] else 'misses'} {deadline} ms"
            + (f" (margin line {margin_line:.3f})" if fresh["met"] else ""))
        if fresh["with_margin"]:
            return round_id, tried
    met = [t for t in tried if t["met"]]
    if met:
        return met[0]["round"], tried
    return min(tried, key=lambda t: t["fresh_upper_ms"])["round"], tried


def _final_latency(s: PruneSession, model, exported, dense: dict, planner, history: list[dict]) -> dict:
    """The deployable artifact measured afresh on the target, per layer too; the deadline decided on it, over
    two readings (three where they disagree: `deciding_reading`)."""
    from .latency import deciding_reading, metric_value, summarise_readings

    lat = exported.latency or {}
    if not lat.get("samples_ms"):
        raise EdgepruneError("the exported artifact has no latency measurement to check the deadline against")

    def reading(measured: dict) -> dict[str, Any]:
        value, upper = metric_value(measured["latency_ms"], measured["samples_ms"], s.metric, s.cfg.confidence)
        return {"value": value, "upper": upper, "latency_ms": measured["latency_ms"]}

    # the second and third readings export and measure the same model as every round is measured
    deciding, readings = deciding_reading([reading(lat)], lambda: s.measure_latency(model), s.deadline_ms)
    value, upper = deciding["value"], deciding["upper"]
    per_layer = s.measure_latency(model, per_node=True)
    errors = [r["prediction_error"] for r in history if r.get("prediction_error") is not None]
    dense_start = (dense.get("latency_stats") or {}).get("p50")
    speedup = _speedup_now(s, s.run.path / "model.onnx", dense_start)
    if speedup:
        log(f"dense vs pruned, timed close together now ({speedup['how']}): {speedup['dense_p50_ms']:.3f} -> "
            f"{speedup['pruned_p50_ms']:.3f} ms p50 ({speedup['speedup']:.2f}x faster)")
    drift = machine_drift(dense_start, speedup, value, upper, s.deadline_ms)
    if drift is not None and abs(drift["ratio"] - 1) > s.cfg.slack and s.deadline_share is None:
        log(drift_words(drift, s.metric))  # a share is decided on dense and artifact timed together (below)
    met = upper <= s.deadline_ms
    share = None
    if s.deadline_share is not None:
        share = share_verdict(s.deadline_share, dense, speedup, deciding)
        if share is not None:
            met = share["met"]
            log(f"the artifact reads {share['share_upper']:.3f} of the dense model timed beside it "
                f"(upper bound; p50 {share['share_p50']:.3f}) against a deadline of {share['share'] * 100:g}%: "
                f"{'met' if met else 'missed'}")
    return {
        "deadline_share": None if share is None else {**s.deadline_share, **share},
        "speedup_now": speedup,
        "machine_drift": drift,
        # which readings the loop decided on (frame.py): the dense model's frame, or each model's own
        "latency_frame": "dense" if s.frame is not None else "own",
        "frame_start": s.frame_start,
        "deadline_ms": s.deadline_ms,
        "metric": s.metric,
        "confidence": s.cfg.confidence,
        "deadline_met": met,
        "final_latency_ms": {k: deciding["latency_ms"][k] for k in ("p50", "p90", "p99", "mean", "std", "n")},
        "final_readings": summarise_readings(readings),
        "final_metric_ms": value,
        "final_metric_upper_ms": upper,
        # a share deadline's slack is the share's: the artifact's ms reading and the deadline's ms are minutes apart
        "slack": ((share["share"] - share["share_value"]) / share["share"] if share is not None
                  else (s.deadline_ms - value) / s.deadline_ms),
        "dense_latency_ms": dense.get("latency_stats"),
        "floor_ms": dense.get("floor_ms"),
        "layer_latency": {"before": dense.get("layer_latency", {}), "after": _module_latency(per_layer["report"])},
        "cost_model": {"prediction_errors": errors,
                       "mean_abs_error": sum(abs(e) for e in errors) / len(errors) if errors else None,
                       "build": planner.cost_model.info},
    }


def share_verdict(deadline_share: dict[str, Any], dense: dict, speedup: dict[str, Any] | None,
                  deciding: dict[str, Any]) -> dict[str, Any] | None:
    """A deadline given as a share, judged as a share: the artifact's p50 over the dense model's, both timed
    close together now (`speedup`, each alone in turn), each raised from p50 to the deadline's metric as its own
    readings put it (the artifact's with its upper bound). None where the runtime gives no such pair.

    Its own reading in ms against the deadline fixed at the start would judge the machine's speed as much as
    the model: on this machine the same two models read 0.40 and 0.47 of each other in two speed modes only
    where timed apart (session 17); timed in turn, minutes apart, the dense ResNet-56 read 36 and 40 ms."""
    if not speedup or not speedup.get("dense_p50_ms") or not speedup.get("pruned_p50_ms"):
        return None
    dense_p50 = dense["latency_stats"]["p50"]
    dense_metric_factor = dense["latency_ms"] / dense_p50 if dense_p50 else 1.0
    own_p50 = deciding["latency_ms"]["p50"]
    upper_factor = deciding["upper"] / own_p50 if own_p50 else 1.0
    value_factor = deciding["value"] / own_p50 if own_p50 else 1.0
    dense_now = float(speedup["dense_p50_ms"]) * dense_metric_factor
    pruned_now = float(speedup["pruned_p50_ms"])
    share_p50 = pruned_now / float(speedup["dense_p50_ms"])
    share_value = pruned_now * value_factor / dense_now
    share_upper = pruned_now * upper_factor / dense_now
    return {"share": deadline_share["share"], "share_p50": share_p50, "share_value": share_value, "share_upper": share_upper,
            "dense_now_ms": dense_now, "deadline_now_ms": deadline_share["share"] * dense_now,
            "met": share_upper <= deadline_share["share"]}


def machine_drift(dense_start_ms: float | None, speedup: dict[str, Any] | None, final_ms: float,
                  final_upper_ms: float, deadline_ms: float) -> dict[str, Any] | None:
    """How much slower (ratio > 1) or faster the target reads the dense model at the end than when the run
    began, and the artifact's reading at the start's speed; None without both dense readings taken alike.

    On this shared machine two readings of the dense model minutes apart have differed by 49% (benchmark 1,
    session 13: ResNet-56 at batch 1 read 1.47 ms by the benchmark and 2.19 ms by the run that followed), and
    a deadline is then missed or met by the machine as much as by the model. `deadline_met` stays with the
    artifact's own readings; this says how much of a miss, or a margin, is the machine's. Only a dense model
    timed alone at the end compares with its reading alone at the start: one sharing a process (and its
    thread pool) with the pruned model reads slower for that alone."""
    if not dense_start_ms or not speedup or not speedup.get("dense_p50_ms") or "readings_ms" not in speedup:
        return None
    ratio = float(speedup["dense_p50_ms"]) / float(dense_start_ms)
    return {"dense_start_ms": float(dense_start_ms), "dense_now_ms": float(speedup["dense_p50_ms"]), "ratio": ratio,
            "final_as_at_start_ms": final_ms / ratio, "final_upper_as_at_start_ms": final_upper_ms / ratio,
            "deadline_met_as_at_start": final_upper_ms / ratio <= deadline_ms}


def drift_words(drift: dict[str, Any], metric: str) -> str:
    """One line for the log and the exit message: the drift and what the artifact reads at the start's speed."""
    ratio = drift["ratio"]
    way = f"{ratio - 1:.0%} slower" if ratio >= 1 else f"{1 - ratio:.0%} faster"
    return (f"the target reads the dense model {way} now ({drift['dense_now_ms']:.3f} ms p50) than when the run "
            f"began ({drift['dense_start_ms']:.3f} ms): at that speed the delivered model would read {metric} "
            f"{drift['final_as_at_start_ms']:.3f} ms (upper {drift['final_upper_as_at_start_ms']:.3f}); the "
            "deadline is decided on its own readings (report.json machine_drift)")


def _speedup_now(s: PruneSession, pruned_onnx: Path, dense_ms: float | None) -> dict[str, Any] | None:
    """Dense and pruned models timed close together now (where the runtime can): the dense latency in the
    report was measured before pruning began, possibly under other load.

    Where the dense model runs long enough for pairs (probing.pairs_apply) and the loop read models on their
    own, pair by pair in one profiler process; else in four profiler processes, dense, pruned, pruned, dense,
    each model on its own as it is deployed (so `machine_drift` compares the dense model with itself). In one process the sessions share a thread pool, which slows short runs: ResNet-56 at batch 1
    read the halved model at 0.72 of dense that way and 0.37 alone (session 12)."""
    from .probing import pairs_apply
    from .profiling import export_for_target
    from .runners import AB_RUNTIMES

    if s.target.runtime not in AB_RUNTIMES or not pruned_onnx.is_file():
        return None
    with tempfile.TemporaryDirectory(prefix="edgeprune-dense-") as tmp:
        dense_onnx, _ = export_for_target(s.loaded, Path(tmp))
        if pairs_apply(dense_ms) and s.frame is None:
            pair = _ab_p50(s, pruned_onnx, dense_onnx)
            d, p = pair["reference_p50_ms"], pair["p50_ms"]
            how: dict[str, Any] = {"how": "one process, alternating per pair", "pairs": pair["pairs"]}
        else:
            alone = _in_turn(s, pruned_onnx, dense_onnx)
            d, p = alone["reference_p50_ms"], alone["p50_ms"]
            how = {"how": "four processes: dense, pruned, pruned, dense",
                   "readings_ms": {"dense": alone["reference_readings_ms"], "pruned": alone["readings_ms"]}}
    return {"dense_p50_ms": d, "pruned_p50_ms": p, "speedup": d / p if p else None, **how}


def _in_turn(s: PruneSession, model: Path, reference: Path) -> dict[str, Any]:
    """Two ONNX files timed alone, each in a profiler process of its own, in turn: reference, model, model,
    reference, so a drift of the machine's speed over the four falls on both medians alike."""
    from statistics import median

    from .runners import open_runner

    p50s: dict[Path, list[float]] = {model: [], reference: []}
    with open_runner(s.target) as runner:
        for path in (reference, model, model, reference):
            raw = runner.measure(path, per_node=False)
            p50s[path].append(float(raw["latency_ms"]["p50"]))
    return {"p50_ms": median(p50s[model]), "reference_p50_ms": median(p50s[reference]),
            "readings_ms": p50s[model], "reference_readings_ms": p50s[reference]}


class _BesideStart:
    """A round's plans timed pair by pair beside the model the round starts from (the runtime's A/B mode). The
    start model is exported once, at the first pair, for every pair of the round; a context manager, so that
    export goes when the round's probing ends."""

    def __init__(self, s: PruneSession, start_model):
        self.s, self.start_model = s, start_model
        self._dir: tempfile.TemporaryDirectory | None = None
        self._start_onnx: Path | None = None
        self._plan: tuple[Any, Path] | None = None  # the last plan exported, with its file

    def __enter__(self) -> _BesideStart:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._dir is not None:
            self._dir.cleanup()

    def time(self, model) -> dict[str, float] | None:
        """`model`'s p50 and the start model's, timed together, and the pairs; None where the target's runtime
        has no A/B mode."""
        from .runners import AB_RUNTIMES

        if self.s.target.runtime not in AB_RUNTIMES:
            return None
        plan_onnx, start_onnx = self._exported(model)
        return _ab_p50(self.s, plan_onnx, start_onnx)

    def time_alone(self, model) -> dict[str, Any]:
        """`model`'s p50 and the start model's, each timed alone in turn (`_in_turn`): slower than `time`, but
        without the shared thread pool that biases it."""
        from .probing import ALONE

        plan_onnx, start_onnx = self._exported(model)
        return {**_in_turn(self.s, plan_onnx, start_onnx), "how": ALONE}

    def _exported(self, model) -> tuple[Path, Path]:
        """The plan's ONNX file and the start model's, each exported once."""
        from .profiling import export_for_target

        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="edgeprune-pair-")
        root = Path(self._dir.name)
        if self._start_onnx is None:
            self._start_onnx, _ = export_for_target(self.s._as_loaded(self.start_model), root / "start")
        if self._plan is None or self._plan[0] is not model:
            plan_onnx, _ = export_for_target(self.s._as_loaded(model), root / "plan")
            self._plan = (model, plan_onnx)
        return self._plan[1], self._start_onnx


def _ab_p50(s: PruneSession, first: Path, second: Path) -> dict[str, float]:
    """Two ONNX files timed pair by pair in one profiler process (the runtime's A/B mode)."""
    from .profilers.common import latency_stats
    from .runners import ab_args, open_runner

    with open_runner(s.target) as runner:
        raw = runner.measure(first, per_node=False, ab_model=second, extra_args=ab_args(s.target))
    samples, other = raw["samples_ms"], raw["ab"]["other"]["samples_ms"]
    return {"p50_ms": latency_stats(samples)["p50"], "reference_p50_ms": latency_stats(other)["p50"],
            "pairs": len(samples)}


def _finish(s: PruneSession, cfg: PruneConfig, controller: AIAPController, history: list[dict], dense: dict,
            constraints: list[Constraint], resumed_after: list[int], planner=None) -> PruneResult:
    from .export import ExportConfig, export_model
    from .loading import write_source
    from .pruning import build_manifest, save_pruned

    ranked = final_candidates(controller, history, constraints)
    best = ranked[0] if ranked else None
    confirmed: list[dict] = []
    if best is not None and planner is not None:
        # the fine-tuned model's own readings (a confirmation pools the plan's before fine-tuning first)
        earlier = {r["round"]: max(x["upper"] for x in
                                   r["confirmation"]["readings"][r["confirmation"].get("before_fine_tuning", 0):])
                   for r in history if (r.get("confirmation") or {}).get("readings")}
        best, confirmed = _confirm_final(s, ranked, earlier)
    if best is None:
        raise ConstraintNotMet(
            f"no pruned model met the constraints ({'; '.join(c.describe() for c in constraints)}); "
            f"stopped: {controller.stop_reason}. Loosen a constraint or raise --finetune-epochs"
        )
    model, steps = s.model_at(best)
    final_train = s.finetune(model, cfg.final_epochs, "final fine-tuning")
    m = s.metrics(model, latency=False)
    _, states = verdict(constraints, m)
    manifest = build_manifest(s.original, model, steps, s.example)
    if any(states[c.name] == "over" for c in constraints if not c.is_budget):
        log("warning: the final fine-tuning moved accuracy outside the tolerance; reporting it as measured")
    save_pruned(model, manifest, s.run.path)
    write_source(s.run.path, s.loaded, allow_pickle=cfg.allow_pickle)
    model.eval()
    exported = export_model(
        dataclasses.replace(s.loaded, module=model), s.target,
        ExportConfig(source=cfg.model, output=str(s.run.path / "model.onnx"), target=s.target, to="onnx",
                     data=cfg.data if str(cfg.data).endswith(".npz") else None, force=True, seed=cfg.seed),
        manifest=manifest, log=log,
    )
    test_acc = None
    if s.task and s.task.test is not None:
        test_acc = {"before": s.task.evaluate(s.original, s.task.test), "after": s.task.evaluate(model, s.task.test)}
    latency_report = _final_latency(s, model, exported, dense, planner, history) if planner is not None else {}
    if latency_report:
        states["latency"] = "met" if latency_report["deadline_met"] else "below"
        latency_report["final_candidates"] = confirmed
    budgets_met = all(states[c.name] in ("met", "over") for c in constraints if c.is_budget)
    acc_ok = all(states[c.name] != "over" for c in constraints if not c.is_budget)
    met = budgets_met and acc_ok
    report = {
        "schema_version": SCHEMA_VERSION,
        "kind": "edgeprune.prune_report",
        "config": cfg.to_dict(),
        "seeds": {"torch": cfg.seed, "data_split": cfg.seed},
        "target": s.target.to_dict(),
        "model": s.loaded.describe(),
        "data": s.task.describe() if s.task else None,
        "constraints": [c.describe() for c in constraints],
        "constraint_states": states,
        "met": met,
        "binding": [] if met else binding(constraints, states),
        "stop_reason": controller.stop_reason,
        "best_round": best,
        "resumed_after_rounds": resumed_after,
        "rounds": history,
        "params": {"before": dense["params"], "after": m.params},
        "flops": {"before": dense["flops"], "after": m.flops},
        "compression_ratio": dense["params"] / m.params if m.params else None,
        "accuracy": {"before": dense["accuracy"], "after": m.accuracy},
        "test_accuracy": test_acc,
        "memory_mb": {"before": dense["memory_mb"], "after": m.memory_mb},
        "channels": {"before": dense["channels"], "after": _conv_channels(model)},
        "budget": {"finetune_epochs": cfg.finetune_epochs, "final_epochs": cfg.final_epochs,
                   "train_limit": cfg.train_limit, "batch_size": cfg.batch_size, "lr": cfg.lr,
                   "retrain": cfg.retrain, "rounds": len(history),
                   "finetune_seconds": sum(r["seconds"]["finetune"] for r in history)},
        "final_train": final_train,
        **latency_report,
        "artifact": {"path": str(exported.artifact), "sidecar": str(exported.sidecar),
                     "parity": exported.to_dict().get("parity"), "latency_ms": exported.to_dict().get("latency")},
    }
    write_json_atomic(s.run.path / "report.json", report)
    from .html_report import write_html_report

    log(f"report: {write_html_report(s.run.path)}")
    result = PruneResult(output=s.run.path, report=report, met=met, binding=report["binding"])
    if not met:
        drift = report.get("machine_drift")
        why = (f" ({drift_words(drift, s.metric)})" if "latency" in report["binding"] and drift is not None
               and drift["deadline_met_as_at_start"] and abs(drift["ratio"] - 1) > cfg.slack
               and not report.get("deadline_share") else "")
        raise ConstraintNotMet(f"constraints not all met ({', '.join(report['binding'])} binding); "
                               f"best model kept in {s.run.path}{why}", result)
    return result


def run_prune(cfg: PruneConfig) -> PruneResult:
    """The CLI's entry; a missed constraint still prints its result before exit 3."""
    try:
        return prune(cfg)
    except ConstraintNotMet as exc:
        if isinstance(exc.result, PruneResult):
            import click

            r = exc.result.report
            click.echo(f"FAILED: {exc}; params {r['params']['before']:,} -> {r['params']['after']:,}")
        raise
