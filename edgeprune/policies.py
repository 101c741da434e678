"""Constraints a prune run must meet, read as budgets met with the least pruning (METHODS.md §2).

Each constraint looks at one round's metrics and says: "below" (budget not reached yet: prune more),
"met" (within its slack), or "over" (accuracy broken, or the budget passed by more than the slack).
Adding a constraint means adding a class to CONSTRAINTS; the loop never changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .aiap import Verdict


@dataclass
class RoundMetrics:
    accuracy: float | None = None
    params: int | None = None
    flops: int | None = None
    memory_mb: float | None = None
    latency_ms: float | None = None  # the deadline metric's point estimate
    latency_upper_ms: float | None = None  # its upper confidence bound
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Constraint:
    """Base: `status(metrics) -> 'below' | 'met' | 'over'`; `is_budget` constraints can end a run."""

    name: ClassVar[str] = ""
    is_budget: ClassVar[bool] = True

    def status(self, m: RoundMetrics) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


def _budget_status(value: float, budget: float, slack: float) -> str:
    if value > budget:
        return "below"
    return "met" if value >= budget * (1.0 - slack) else "over"


@dataclass
class AccuracyDrop(Constraint):
    """Top-1 (or the task's metric) may drop at most `max_drop` points below the unpruned model's."""

    name: ClassVar[str] = "accuracy"
    is_budget: ClassVar[bool] = False
    baseline: float = 0.0
    max_drop: float = 1.0

    def status(self, m: RoundMetrics) -> str:
        if m.accuracy is None:
            return "below"
        return "over" if self.baseline - m.accuracy > self.max_drop + 1e-9 else "below"

    def describe(self) -> str:
        return f"accuracy drop <= {self.max_drop} pts (baseline {self.baseline:.2f})"


@dataclass
class ParamsBudget(Constraint):
    name: ClassVar[str] = "params"
    budget: int = 0
    slack: float = 0.05

    def status(self, m: RoundMetrics) -> str:
        return _budget_status(float(m.params or 0), float(self.budget), self.slack)

    def describe(self) -> str:
        return f"params <= {self.budget:,}"


@dataclass
class MemoryBudget(Constraint):
    name: ClassVar[str] = "memory"
    budget_mb: float = 0.0
    slack: float = 0.05

    def status(self, m: RoundMetrics) -> str:
        if m.memory_mb is None:
            return "below"
        return _budget_status(m.memory_mb, self.budget_mb, self.slack)

    def describe(self) -> str:
        return f"measured peak memory <= {self.budget_mb} MB"


@dataclass
class LatencyBudget(Constraint):
    """The deadline: met only when the upper confidence bound of the metric is at or under it."""

    name: ClassVar[str] = "latency"
    deadline_ms: float = 0.0
    slack: float = 0.05
    metric: str = "p50"

    def status(self, m: RoundMetrics) -> str:
        if m.latency_ms is None:
            return "below"
        upper = m.latency_upper_ms if m.latency_upper_ms is not None else m.latency_ms
        return window_status(m.latency_ms, upper, self.deadline_ms, self.slack)

    def describe(self) -> str:
        return f"{self.metric} latency <= {self.deadline_ms} ms"


def window_status(value_ms: float, upper_ms: float, deadline_ms: float, slack: float) -> str:
    """below | met | over for a latency reading: over the deadline by its upper bound, inside the slack window
    under it, or past that window."""
    if upper_ms > deadline_ms:
        return "below"
    return "met" if value_ms >= deadline_ms * (1.0 - slack) else "over"


def verdict(constraints: list[Constraint], metrics: RoundMetrics) -> tuple[Verdict, dict[str, str]]:
    """Combine the constraints: any 'over' overshoots; every budget 'met' ends the run; else keep going."""
    states = {c.name: c.status(metrics) for c in constraints}
    return verdict_of(constraints, states), states


def verdict_of(constraints: list[Constraint], states: dict[str, str]) -> Verdict:
    """The verdict of per-constraint states (see `verdict`)."""
    if "over" in states.values():
        return Verdict.OVERSHOOT
    budgets = [c for c in constraints if c.is_budget]
    if budgets and all(states[c.name] == "met" for c in budgets):
        return Verdict.DONE
    return Verdict.GOOD


def binding(constraints: list[Constraint], states: dict[str, str]) -> list[str]:
    """The constraints that stopped the run from going further (for the report)."""
    return [c.name for c in constraints if states.get(c.name) == ("below" if c.is_budget else "over")]
