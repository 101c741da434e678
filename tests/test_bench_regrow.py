"""The regrow benchmark's timing: each plan read between two readings of the dense model, in turn."""

from __future__ import annotations

import pytest

from bench.bench_regrow import in_turn


def test_each_plan_is_read_between_dense_readings_and_judged_by_its_median_ratio():
    calls: list[str] = []
    # the machine slows by half for the second repeat: the ratios, read against the dense model around each
    # reading, do not move, while the plans' own readings do
    speed = {"factor": 1.0}

    def reader(name: str, ms: float):
        def read() -> float:
            calls.append(name)
            if len([c for c in calls if c == "dense"]) > 3:
                speed["factor"] = 1.5
            return ms * speed["factor"]
        return read

    out = in_turn({"dense": reader("dense", 40.0), "half": reader("half", 18.0), "regrown": reader("regrown", 20.0)},
                  ["half", "regrown"], 3)
    # dense first, then every plan reading followed by a dense one; the order alternates between repeats
    assert calls[0] == "dense" and calls[1::2] == ["half", "regrown", "regrown", "half", "half", "regrown"]
    assert all(c == "dense" for c in calls[2::2])
    assert out["ratio"]["half"] == pytest.approx(0.45, rel=0.15) and out["ratio"]["regrown"] == pytest.approx(0.5, rel=0.15)
    assert len(out["readings_ms"]["half"]) == 3 and len(out["readings_ms"]["dense"]) == 7
    assert max(out["readings_ms"]["half"]) > 1.4 * min(out["readings_ms"]["half"])
