"""Every latency reading of a run in one frame: the dense model's typical speed over the run.

On a shared machine the target's speed drifts by tens of percent within minutes (ResNet-56 at batch 1 read
1.47 and 2.19 ms a minute apart; at batch 32 one pruned model read 22.3, 15.5 and 22.5 ms). A loop that
judges each plan by its own reading judges the minute as much as the plan: benchmark 2 (session 13) took a
plan read in a slow minute as meeting a 50% deadline and delivered a model at 0.31 of dense, and a round
that started from a slow reading of its start model pruned on to 0.41.

Here a model is timed between two readings of the dense model, each in a profiler process of its own as
deployed (dense, model, dense; a dense reading taken moments earlier serves as the first). Its ratio to
dense times the frame's dense latency is what it reads "in the frame", and every decision of the loop
(plans, confirmations, the choice of the round to deliver) is made on such readings, so the rounds compare
with each other and with the deadline at one speed of the machine.

The frame starts at the dense model's ordinary speed: the run's first dense reading and two fresh ones
(`settle_start`), the slowest of them within 15% of the fastest (`ordinary_ms`). From then on the frame's
dense latency is the slower of two speeds: the machine's ordinary speed over every dense reading of the run,
and the fastest of the last three. On this machine the dense ResNet-56 read 36 and 40 ms by turns, each
for minutes (benchmark 2, session 17): a frame at the fastest recent reading passed plans at 0.51 of dense
against a 0.50 deadline set at 40 ms, and they read 20.4-20.9 ms when re-measured at 40; a run whose three
start readings all fell at 36 aimed at 0.55 of a deadline the benchmark had set at 40. A deadline has to
hold at the slower of the speeds the machine holds, so one reading within 15% of the fastest is enough to
move the frame there. A reading further off is a spell (neighbours take cores): in benchmark 2 (session 15)
two dense readings of 70 and 72 ms against 41.6 ms pulled a median frame 30% slow within round 1, so plans
that met the deadline read short of it and were set aside. Spells are ignored until three readings in a row
agree (the fastest of the last three): a machine that stays slower, as it will move the artifact's reading
at the end. A faster minute never moves the frame down. A run whose machine got faster for good therefore
aims lower than it needs to; the report's `machine_drift` says so.
A deadline given as a share of the dense latency (`--latency-ms 50%`) pins the frame at its start instead:
a ratio to dense is then what the deadline asks about, and a moving frame would only move the deadline's ms
away from the share it stands for.
The artifact is still measured on its own at the end: `deadline_met` is the target's word on it as it runs
then, and the report's `machine_drift` says how far the machine had moved from the start.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FRAME_RUNTIMES = ("onnxruntime",)  # runtimes whose profiler process starts quickly enough to time per reading
FRAMES = ("auto", "dense", "own")  # --latency-frame: auto = dense where the runtime allows, else own
REUSE_S = 30.0  # a dense reading this recent is the next reading's first: nothing but an export came between
RECENT_DENSE = 3  # dense readings the frame's speed is the fastest of: a slow spell this long is taken as lasting
START_READINGS = 2  # fresh dense readings beside the run's first that settle the speed the frame starts at
SPELL = 1.15  # a dense reading this much slower than the fastest is a spell, not a speed the machine holds


def ordinary_ms(readings: Sequence[float], spell: float = SPELL) -> float:
    """The slowest of `readings` within `spell` of the fastest: the speed the machine ordinarily runs at.

    On this machine the dense ResNet-56 read 36 and 40 ms by turns for minutes (session 17); a deadline set at
    40 ms must hold at 40, so the slower of the speeds the machine holds is taken, and a spell (70 ms against
    41.6, session 15) is not."""
    fastest = min(readings)
    return max(r for r in readings if r <= fastest * spell)


def frame_applies(choice: str, runtime: str) -> bool:
    """Whether readings are taken in the dense model's frame for `choice` (FRAMES) on `runtime`."""
    return choice == "dense" or (choice == "auto" and runtime in FRAME_RUNTIMES)


def scaled(stats: dict[str, Any], factor: float) -> dict[str, Any]:
    """Latency statistics with every time multiplied by `factor` (counts left alone)."""
    return {k: (v if k == "n" else float(v) * factor) for k, v in stats.items()}


class DenseFrame:
    """Readings of models at the frame's dense latency (`anchor_ms`: the slower of the ordinary speed over every
    dense reading, `start_ms` and those around each reading since, and the fastest of the last `RECENT_DENSE`).

    `runner_factory()` opens the target's runner (a context manager with `measure`), `export(model, dir)`
    writes a model's ONNX and returns its path, `metric(stats, samples) -> (value, upper)` is the deadline
    metric; `dense_onnx` is the dense model's exported file."""

    def __init__(self, dense_onnx: Path, start_ms: float, runner_factory, export, metric,
                 clock=time.monotonic, pinned: bool = False):
        self.dense_onnx = Path(dense_onnx)
        self.pinned = pinned  # the anchor stays at the start: a deadline given as a share holds at any speed
        self.dense_readings_ms = [float(start_ms)]  # the run's start, then one per reading (its two's mean)
        self._runner_factory, self._export, self._metric, self._clock = runner_factory, export, metric, clock
        self._last_dense: tuple[float, float] | None = None  # (when it ended, its p50)
        self.readings = 0  # profiler processes run, for the overhead report

    @property
    def anchor_ms(self) -> float:
        if self.pinned:
            return self.dense_readings_ms[0]
        return max(ordinary_ms(self.dense_readings_ms), min(self.dense_readings_ms[-RECENT_DENSE:]))

    def settle_start(self, readings: int = START_READINGS) -> dict[str, Any]:
        """Read the dense model `readings` more times and start the frame at the machine's ordinary speed over
        those and the run's first reading (`ordinary_ms`): one reading can catch either of the speeds the
        machine flips between, and a frame started at the faster passes plans that miss at the slower."""
        first = self.dense_readings_ms[0]
        with self._runner_factory() as runner:
            fresh = [self._dense_p50(runner) for _ in range(readings)]
        self.dense_readings_ms[0] = ordinary_ms([first, *fresh])
        return {"readings_ms": [first, *fresh], "start_ms": self.dense_readings_ms[0]}

    def _dense_p50(self, runner) -> float:
        raw = runner.measure(self.dense_onnx, per_node=False)
        self.readings += 1
        p50 = float(raw["latency_ms"]["p50"])
        self._last_dense = (self._clock(), p50)
        return p50

    def read_onnx(self, onnx_path: Path) -> dict[str, Any]:
        """A model's reading in the frame: `value`, `upper`, `latency_ms` (its statistics) scaled by its ratio
        to the dense readings around it, with the raw figures under `frame`."""
        with self._runner_factory() as runner:
            recent = self._last_dense
            reused = recent is not None and self._clock() - recent[0] <= REUSE_S
            before = recent[1] if reused else self._dense_p50(runner)
            raw = runner.measure(onnx_path, per_node=False)
            self.readings += 1
            after = self._dense_p50(runner)
        own_p50 = float(raw["latency_ms"]["p50"])
        dense_now = (before + after) / 2  # a drift linear over the three readings falls on both alike
        ratio = own_p50 / dense_now
        anchor = self.anchor_ms  # the frame as it stood: one slow minute does not move its own reading's frame
        self.dense_readings_ms.append(dense_now)
        factor = ratio * anchor / own_p50 if own_p50 > 0 else 1.0
        own_value, own_upper = self._metric(raw["latency_ms"], raw["samples_ms"])
        return {"value": own_value * factor, "upper": own_upper * factor,
                "latency_ms": scaled(raw["latency_ms"], factor),
                "frame": {"ratio": ratio, "anchor_ms": anchor, "dense_ms": [before, after],
                          "own_p50_ms": own_p50, "own_value_ms": own_value, "own_upper_ms": own_upper,
                          "reused_dense": reused}}

    def read(self, model) -> dict[str, Any]:
        """`read_onnx` for a PyTorch model, exported to a temporary directory first."""
        with tempfile.TemporaryDirectory(prefix="edgeprune-frame-") as tmp:
            return self.read_onnx(self._export(model, Path(tmp)))


def frame_words(latency: dict[str, Any]) -> str:
    """How a reading in the frame came about, for a log line."""
    f = latency["frame"]
    return (f"{f['ratio']:.3f} of the dense model timed around it ({f['dense_ms'][0]:.3f}, {f['dense_ms'][1]:.3f} ms), "
            f"{latency['value']:.3f} ms at the run's start speed (its own reading {f['own_value_ms']:.3f} ms)")
