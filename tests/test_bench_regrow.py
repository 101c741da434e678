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


def test_the_summary_keeps_seeds_that_gave_nothing_back_and_compares_the_rest(capsys):
    from bench.bench_regrow import setup_from_env, summarise

    compared = {"seed": 0, "share": 0.4688, "shares_tried": [{"share": 0.5, "ratio": 0.52}, {"share": 0.4688, "ratio": 0.47}],
                "plans": [{"plan": "uniform", "params": 200_000, "ratio_to_dense": 0.47, "test_acc": 70.0},
                          {"plan": "regrown", "params": 250_000, "ratio_to_dense": 0.49, "test_acc": 72.0}],
                "regrown_vs_uniform": {"acc_diff_pts": 2.0, "p_value": 0.01}}
    nothing = {"seed": 1, "shares_tried": [{"share": 0.5, "ratio": 0.53}], "plans": [], "regrown_vs_uniform": None}
    out = summarise([compared, nothing], setup_from_env(quick=True))
    assert out == {"regrown_minus_uniform_pts": [2.0], "p_values": [0.01], "seeds_with_nothing_given_back": [1]}
    table = capsys.readouterr().out
    assert "8x3x32x32" in table and "share 0.4688" in table and "nothing given back" in table and "+2.00" in table
