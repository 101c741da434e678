"""`edgeprune.prune`: the pruning loop for the accuracy-critical and memory-constrained policies.

Each round starts from the last good round's model, scores the channels, removes those the method
selects, fine-tunes, measures every constraint and lets the AIAP controller decide (aiap.py). Every
round is checkpointed whole before the run state names it, so `--resume` continues after a kill.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .aiap import AIAPController, Verdict
from .errors import ConstraintNotMet, EdgepruneError
from .io import write_json_atomic
from .log import log
from .policies import AccuracyDrop, Constraint, MemoryBudget, ParamsBudget, RoundMetrics, binding, verdict
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


def _constraints(cfg: PruneConfig, baseline_acc: float | None, dense_params: int) -> list[Constraint]:
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
    if not out:
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

    def metrics(self, model) -> RoundMetrics:
        from .pruning import count_params_flops

        params, flops = count_params_flops(model, self.example)
        return RoundMetrics(accuracy=self.evaluate(model), params=params, flops=flops,
                            memory_mb=self.measure_memory(model))

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

    def finetune(self, model, epochs: int) -> dict[str, Any] | None:
        if not self.task or epochs <= 0:
            return None
        from .training import finetune

        cfg = dataclasses.replace(self.train_config, epochs=epochs)
        return finetune(model, self.task, cfg).to_dict()


def _importance(cfg: PruneConfig):
    from .pruning import get_importance

    options: dict[str, Any] = {"aggregate": cfg.aggregate}
    if cfg.importance == "activation":
        options.update(p=cfg.importance_p, num_images=cfg.calib_images)
    return get_importance(cfg.importance, **options)


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


def prune(cfg: PruneConfig) -> PruneResult:
    """Prune `cfg.model` until its constraints are met (see module doc); writes everything under cfg.output."""
    import torch

    from .pruning import PruningGraph, build_manifest
    from .selection import SelectionContext, auto_step, select

    s = PruneSession(cfg)
    importance = _importance(cfg)
    calib = None
    if importance.requires_calibration:
        calib = (s.task.calibration_batches(cfg.calib_images) if s.task
                 else [torch.randn((cfg.calib_images,) + tuple(s.loaded.input_shape[1:]))])

    dense_graph = PruningGraph(copy.deepcopy(s.original), s.example)
    if not dense_graph.groups():
        raise EdgepruneError(f"{cfg.model} has no prunable channels (only the classifier or ignored layers)")

    if s.saved_state:
        state = s.saved_state
        controller = AIAPController.from_dict(state["controller"])
        history, dense = state["history"], state["dense"]
        state.setdefault("resumed_after", []).append(state["last_round"])
        log(f"resuming {cfg.output} after round {state['last_round']}")
    else:
        dm = s.metrics(s.original)
        dense = {"accuracy": dm.accuracy, "params": dm.params, "flops": dm.flops, "memory_mb": dm.memory_mb,
                 "channels": _conv_channels(s.original)}
        step = cfg.step if cfg.step is not None else auto_step(dense_graph.groups())
        controller = AIAPController(step=step, max_rounds=cfg.max_rounds, max_retries=3)
        history = []
        state = {"config": cfg.to_dict(), "dense": dense, "last_round": 0}
    constraints = _constraints(cfg, dense["accuracy"], dense["params"])
    if not s.saved_state:
        dense_m = RoundMetrics(**{k: dense[k] for k in ("accuracy", "params", "flops", "memory_mb")})
        budgets = [c for c in constraints if c.is_budget]
        if budgets and all(c.status(dense_m) in ("met", "over") for c in budgets):
            raise EdgepruneError(f"the unpruned model already meets {', '.join(c.describe() for c in budgets)}:"
                                 " nothing to prune; tighten the budget")
        s.run.write_state({**state, "controller": controller.to_dict(), "history": history})
        log(f"dense: params {dense['params']:,}, FLOPs {dense['flops']:,}"
            + (f", accuracy {dense['accuracy']:.2f}" if dense["accuracy"] is not None else ""))

    round_id = state["last_round"]
    while not controller.finished:
        round_id += 1
        started = time.perf_counter()
        base = controller.restart_from()
        model, steps = s.model_at(base)
        graph = PruningGraph(model, s.example)
        graph.current_round = round_id
        groups = graph.groups()
        tried = controller.next_threshold() if cfg.method == "aiap" else float(controller.rounds + 1)
        scores = importance.scores(model, graph, groups, calib)
        ctx = SelectionContext(threshold=tried, weighting=cfg.weighting, fraction=cfg.fraction)
        plan = select(cfg.method, groups, scores, ctx)
        t_select = time.perf_counter() - started
        if not plan:
            if cfg.method != "aiap" or all(g.size <= 1 for g in groups):
                controller.stop("nothing left to prune")
                break
            controller.advance(tried)  # threshold too low to touch anything: grow it
            round_id -= 1
            continue
        graph.prune_many(plan)
        t0 = time.perf_counter()
        train = s.finetune(model, cfg.finetune_epochs)
        t_train = time.perf_counter() - t0
        m = s.metrics(model)
        v, states = verdict(constraints, m)
        manifest = build_manifest(s.original, model, [*steps, *[st.to_dict() for st in graph.history]], s.example)
        record = _round_record(round_id, tried, plan, {g.id: g.size for g in groups}, m, states, v,
                               {"select": t_select, "finetune": t_train,
                                "total": time.perf_counter() - started}, _conv_channels(model))
        record["base_round"] = base
        record["train"] = train
        s.run.write_round(round_id, model, manifest, record)
        if cfg.method != "aiap" and v == Verdict.OVERSHOOT:
            controller.stop("constraint broken")  # fixed-rate methods do not back off: the last good round wins
        else:
            controller.report(round_id, tried, v)
        history.append(record)
        state.update(last_round=round_id)
        s.run.write_state({**state, "controller": controller.to_dict(), "history": history})
        acc = f" acc {m.accuracy:.2f}" if m.accuracy is not None else ""
        log(f"round {round_id}: T={tried:.3f} removed {sum(len(i) for i in plan.values())} units, "
            f"params {m.params:,}{acc} -> {v.value}")

    return _finish(s, cfg, controller, history, dense, constraints, state.get("resumed_after", []))


def pick_final_round(controller: AIAPController, history: list[dict], constraints: list[Constraint]) -> int | None:
    """The round to deliver: the least-pruned one that meets every budget with accuracy intact.

    Rounds landing within a budget's slack are preferred. Channel granularity can make that window
    unreachable (one filter of a small net can be more than the slack), so a round past the budget still
    counts as meeting it. Without budgets (accuracy only) the last good round, the most pruned, wins.
    """
    budgets = [c.name for c in constraints if c.is_budget]
    hard = [c.name for c in constraints if not c.is_budget]
    if budgets:
        ok = [r for r in history if all(r["constraints"][h] != "over" for h in hard)
              and all(r["constraints"][b] in ("met", "over") for b in budgets)]
        within = [r for r in ok if all(r["constraints"][b] == "met" for b in budgets)]
        pool = within or ok
        if pool:
            return max(pool, key=lambda r: (r["params"], r["accuracy"] or 0.0))["round"]
    return controller.restart_from()


def _finish(s: PruneSession, cfg: PruneConfig, controller: AIAPController, history: list[dict], dense: dict,
            constraints: list[Constraint], resumed_after: list[int]) -> PruneResult:
    from .export import ExportConfig, export_model
    from .loading import write_source
    from .pruning import build_manifest, save_pruned

    best = pick_final_round(controller, history, constraints)
    if best is None:
        raise ConstraintNotMet(
            f"no pruned model met the constraints ({'; '.join(c.describe() for c in constraints)}); "
            f"stopped: {controller.stop_reason}. Loosen a constraint or raise --finetune-epochs"
        )
    model, steps = s.model_at(best)
    final_train = s.finetune(model, cfg.final_epochs)
    m = s.metrics(model)
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
        "artifact": {"path": str(exported.artifact), "sidecar": str(exported.sidecar),
                     "parity": exported.to_dict().get("parity"), "latency_ms": exported.to_dict().get("latency")},
    }
    write_json_atomic(s.run.path / "report.json", report)
    result = PruneResult(output=s.run.path, report=report, met=met, binding=report["binding"])
    if not met:
        raise ConstraintNotMet(f"constraints not all met ({', '.join(report['binding'])} binding); "
                               f"best model kept in {s.run.path}", result)
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
