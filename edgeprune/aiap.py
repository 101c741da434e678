"""The adaptive threshold rule of AIAP/AAP (METHODS.md §2), independent of what is monitored.

The controller only decides the next global threshold T and reacts to each round's verdict; the caller
prunes, retrains and measures. Every constraint is a user's budget met with the least pruning:
  - GOOD: all constraints hold and some budget is not reached yet -> keep the round, T += step;
  - DONE: every budget is met (within its slack) and accuracy holds -> keep the round and stop;
  - OVERSHOOT: accuracy broken, or a budget passed by more than its slack -> go back to the last good
    round and retry with the step halved (step_b / 2^k on the k-th retry); after `max_retries` failed
    retries, drop that good round too and back off one more.
The run stops when no good round is left to back off to, the step becomes negligible, or at the round cap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum


class Verdict(str, Enum):
    GOOD = "good"
    DONE = "done"
    OVERSHOOT = "overshoot"


@dataclass
class GoodRound:
    round_id: int
    threshold: float
    step: float


@dataclass
class AIAPController:
    """State of the adaptive loop; serialisable so an interrupted run resumes exactly."""

    step: float = 1.0
    min_step: float = 1.0 / 64
    max_retries: int = 3
    max_rounds: int = 40
    threshold: float = 0.0
    retries: int = 0
    base_step: float = 1.0
    rounds: int = 0
    idle: int = 0  # consecutive thresholds that selected nothing
    max_idle: int = 30
    good: list[GoodRound] = field(default_factory=list)
    finished: bool = False
    stop_reason: str | None = None

    def __post_init__(self) -> None:
        self.base_step = self.step

    def next_threshold(self) -> float:
        """The threshold to try this round (pruning starts from the last good round's model)."""
        return self.threshold + self.step

    def restart_from(self) -> int | None:
        """The good round whose model the next round starts from (None: the dense model)."""
        return self.good[-1].round_id if self.good else None

    def report(self, round_id: int, tried: float, verdict: Verdict) -> None:
        """Record the verdict of the round that tried threshold `tried`."""
        self.rounds += 1
        self.idle = 0
        if verdict in (Verdict.GOOD, Verdict.DONE):
            self.good.append(GoodRound(round_id, tried, self.step))
            self.threshold = tried
            self.retries = 0
            self.base_step = self.step
            if verdict == Verdict.DONE:
                self._stop("all budgets met")
        else:
            self.retries += 1
            if self.retries > self.max_retries:
                # This good round cannot be extended: back off one more and retry from the one before.
                self.retries = 1
                if self.good:
                    dropped = self.good.pop()
                    self.threshold = self.good[-1].threshold if self.good else 0.0
                    self.base_step = dropped.step
                else:
                    self._stop("no good round left to back off to")
                    return
            self.step = self.base_step / (2 ** self.retries)
            if self.step < self.min_step:
                self._stop("step became negligible")
        if not self.finished and self.rounds >= self.max_rounds:
            self._stop("round cap reached")

    def advance(self, tried: float) -> None:
        """The threshold `tried` selected nothing: raise T without a round to return to.

        Empty advances do not count to the round cap (they cost no training or measuring, and counting
        them ended runs after one real round); `max_idle` of them in a row end the run instead.
        """
        self.threshold = tried
        self.idle += 1
        if self.idle >= self.max_idle:
            self._stop(f"the threshold grew {self.idle} times without selecting any channel")

    def stop(self, reason: str) -> None:
        """End the run where it is (the caller's own stopping rule, e.g. a fixed-rate method's)."""
        self.rounds += 1
        self.finished = True
        self.stop_reason = reason

    def _stop(self, reason: str) -> None:
        self.finished = True
        self.stop_reason = reason

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AIAPController:
        good = [GoodRound(**g) for g in data.get("good", [])]
        base = data.get("base_step", data.get("step", 1.0))
        obj = cls(**{k: v for k, v in data.items() if k not in ("good", "base_step")})
        obj.good, obj.base_step = good, base
        return obj


def layer_weights(sizes: dict[str, float]) -> dict[str, float]:
    """Each layer's share of the remaining parameters (or FLOPs): the w_l of thr_l = T * w_l."""
    total = sum(sizes.values())
    return {k: (v / total if total > 0 else 0.0) for k, v in sizes.items()}
