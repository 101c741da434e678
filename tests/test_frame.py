"""Readings in the dense model's frame (edgeprune/frame.py), against a runner whose speed is scripted."""

from __future__ import annotations

from itertools import count

import pytest

from edgeprune.frame import REUSE_S, DenseFrame, frame_applies, ordinary_ms

DENSE, PLAN = "dense.onnx", "plan.onnx"
BASE_MS = {DENSE: 2.0, PLAN: 1.0}


class ScriptedRunner:
    """Each profiler process reads its model's base latency times the machine's speed factor at that call."""

    def __init__(self, factors: list[float], calls: list[str]):
        self.factors, self.calls = factors, calls

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def measure(self, onnx_path, *, per_node=True, extra_args=None, ab_model=None):
        name = str(onnx_path).rsplit("/", 1)[-1]
        self.calls.append(name)
        p50 = BASE_MS[name] * self.factors.pop(0)
        samples = [p50] * 50
        return {"latency_ms": {"p50": p50, "p90": p50, "p99": p50, "mean": p50, "std": 0.0, "n": 50},
                "samples_ms": samples}


def _frame(factors: list[float], calls: list[str], clock=lambda: 0.0) -> DenseFrame:
    return DenseFrame(DENSE, 2.0, lambda: ScriptedRunner(factors, calls), export=None,
                      metric=lambda stats, samples: (stats["p50"], stats["p50"] * 1.02), clock=clock)


def test_a_slow_minute_moves_the_dense_readings_around_a_model_and_not_its_reading_in_the_frame():
    calls: list[str] = []
    frame = _frame([1.3, 1.3, 1.3], calls)  # dense, plan, dense: all 30% slow
    got = frame.read_onnx(PLAN)
    assert calls == [DENSE, PLAN, DENSE]
    assert got["frame"]["own_p50_ms"] == pytest.approx(1.3)  # its own reading: the slow minute's
    assert got["frame"]["ratio"] == pytest.approx(0.5)
    assert got["value"] == pytest.approx(1.0) and got["upper"] == pytest.approx(1.02)  # at the start's 2.0 ms
    assert got["latency_ms"]["p90"] == pytest.approx(1.0) and got["latency_ms"]["n"] == 50


def test_a_drift_linear_over_the_three_readings_falls_on_both_alike():
    frame = _frame([1.0, 1.2, 1.4], [])  # the machine slows steadily: the plan sits at the middle of it
    assert frame.read_onnx(PLAN)["value"] == pytest.approx(1.0)


def test_a_dense_reading_moments_old_is_the_next_readings_first():
    calls: list[str] = []
    now = [0.0]
    frame = _frame([1.0] * 8, calls, clock=lambda: now[0])
    frame.read_onnx(PLAN)
    now[0] += REUSE_S / 2
    second = frame.read_onnx(PLAN)
    assert calls == [DENSE, PLAN, DENSE, PLAN, DENSE] and second["frame"]["reused_dense"]
    now[0] += REUSE_S * 2  # fine-tuning came between: the dense model is read afresh first
    third = frame.read_onnx(PLAN)
    assert calls[5:] == [DENSE, PLAN, DENSE] and not third["frame"]["reused_dense"]
    assert frame.readings == 8


def test_the_frame_follows_a_machine_that_stays_slower_and_not_one_slow_minute():
    frame = _frame([1.25] * 3 + [1.0] * 6, [], clock=count(0, 100).__next__)
    first = frame.read_onnx(PLAN)  # the first slow reading is judged in the frame as it stood: the start's
    assert first["frame"]["anchor_ms"] == pytest.approx(2.0) and first["value"] == pytest.approx(1.0)
    assert frame.anchor_ms == pytest.approx(2.0)  # fastest of 2.0 and 2.5: one slow reading is not taken
    frame.read_onnx(PLAN)
    assert frame.anchor_ms == pytest.approx(2.0)
    stays = _frame([1.25] * 12, [], clock=count(0, 100).__next__)
    for _ in range(3):
        last = stays.read_onnx(PLAN)
        assert last["value"] == pytest.approx(1.0)  # judged in the start's frame until three readings agree
    assert stays.dense_readings_ms == pytest.approx([2.0] + [2.5] * 3)
    assert stays.anchor_ms == pytest.approx(2.5) and stays.read_onnx(PLAN)["value"] == pytest.approx(1.25)


def test_two_slow_dense_readings_leave_the_frame_at_the_machine_s_speed():
    # benchmark 2, session 15: dense readings of 70 and 72 ms against 41.6 pulled a median frame to ~54 ms,
    # and plans that met the deadline in the machine's own speed read short of it in that frame
    frame = _frame([1.7] * 6 + [1.0] * 3, [], clock=count(0, 100).__next__)
    frame.read_onnx(PLAN)
    frame.read_onnx(PLAN)  # two readings in a minute 70% slow
    assert frame.dense_readings_ms == pytest.approx([2.0, 3.4, 3.4])  # a median would be 3.4
    assert frame.anchor_ms == pytest.approx(2.0)
    third = frame.read_onnx(PLAN)
    assert third["frame"]["ratio"] == pytest.approx(0.5) and third["value"] == pytest.approx(1.0)


def test_a_faster_spell_does_not_take_the_frame_under_the_start_s_speed():
    # benchmark 2, session 17: the dense model read 36 and 40 ms by turns; a frame that followed the 36 ms
    # readings passed plans at 0.51 of dense against a 0.50 deadline set at 40 ms, and the artifact missed it
    frame = _frame([0.9] * 9, [], clock=count(0, 100).__next__)
    for _ in range(3):
        got = frame.read_onnx(PLAN)
        assert got["frame"]["ratio"] == pytest.approx(0.5) and got["value"] == pytest.approx(1.0)
    assert frame.dense_readings_ms == pytest.approx([2.0] + [1.8] * 3)
    assert frame.anchor_ms == pytest.approx(2.0)


def test_one_reading_of_a_speed_within_the_spell_bound_moves_the_frame_to_it():
    # benchmark 2, session 17: a run's three start readings all fell at 36 ms, then the machine read 40 by
    # turns; the deadline holds at 40 only if the frame moves there at once
    frame = _frame([1.0] * 3, [], clock=count(0, 100).__next__)
    frame.dense_readings_ms = [1.8]  # started in the fast mode
    assert frame.read_onnx(PLAN)["value"] == pytest.approx(0.9)  # in the frame as it stood
    assert frame.anchor_ms == pytest.approx(2.0)
    assert ordinary_ms([36.1, 36.3, 39.8, 41.6 * 1.7]) == pytest.approx(39.8)  # a 70% spell is not a speed


def test_a_machine_back_from_a_slower_stretch_returns_to_the_start_s_speed():
    frame = _frame([1.25] * 9 + [1.0] * 9, [], clock=count(0, 100).__next__)
    for _ in range(3):
        frame.read_onnx(PLAN)
    assert frame.anchor_ms == pytest.approx(2.5)  # three agreeing slower readings: followed
    frame.read_onnx(PLAN)
    assert frame.anchor_ms == pytest.approx(2.0)  # the machine's speed again, as fast as at the start


def test_auto_takes_the_frame_on_onnxruntime_only():
    assert frame_applies("auto", "onnxruntime") and not frame_applies("auto", "tensorrt")
    assert frame_applies("dense", "tensorrt") and not frame_applies("own", "onnxruntime")


def test_a_pinned_frame_stays_at_its_start_however_the_machine_moves():
    # a deadline given as a share (--latency-ms 50%) is judged by the plan's ratio to dense: the frame's speed
    # cancels, so it stays where it started rather than following the machine
    frame = DenseFrame(DENSE, 2.0, lambda: ScriptedRunner([1.25] * 9 + [1.0] * 3, []), export=None,
                       metric=lambda stats, samples: (stats["p50"], stats["p50"]), clock=count(0, 100).__next__,
                       pinned=True)
    values = [frame.read_onnx(PLAN)["value"] for _ in range(4)]
    assert frame.anchor_ms == pytest.approx(2.0)
    assert values == pytest.approx([1.0] * 4)  # ratio 0.5 at the start's 2.0 ms, slow minutes or not
