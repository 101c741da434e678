"""Pure helpers of bench/bench_deadline.py: slack, row status, subset parsing, log-line parsing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# bench/ is a top-level package of the repository, not installed: import it from the checkout
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_deadline import (  # noqa: E402
    RE_DENSE_FLOOR,
    RE_FLOOR_SHARE,
    RE_FLOOR_UPPER,
    _overhead,
    _phases,
    _prune_args,
    parse_selection,
    row_status,
    share_figures,
    slack,
)


def test_slack_is_share_of_deadline_left():
    assert slack(10.0, 9.0) == pytest.approx(0.1)
    assert slack(10.0, 11.0) == pytest.approx(-0.1)


def test_row_status_reads_report_then_exit_code():
    assert row_status(0, {"deadline_met": True}, "") == "met"
    assert row_status(3, {"deadline_met": False}, "") == "missed"
    assert row_status(3, None, "error: deadline 1.0 ms is below the floor: ...") == "unreachable"
    assert row_status(1, None, "error: something else") == "error"
    assert row_status(3, None, "error: no pruned model met the constraints (p50 ...)") == "no_round"
    assert row_status(None, None, "") == "timeout"


def test_parse_selection_cases_and_rows():
    assert parse_selection(None) is None
    assert parse_selection("resnet18,overhead") == {"resnet18": None, "overhead": None}
    assert parse_selection("resnet18@0.5,resnet18@35") == {"resnet18": (0.5, 0.35)}
    assert parse_selection("resnet18,resnet18@0.5") == {"resnet18": None}
    with pytest.raises(SystemExit, match="unknown case"):
        parse_selection("resnet50")


def test_log_patterns_match_the_prune_messages():
    line = "dense p50 1.426 ms; floor (thinnest model) 0.445 ms; deadline 0.4991 ms"
    m = RE_DENSE_FLOOR.search(line)
    assert m and (m.group(2), m.group(3)) == ("1.426", "0.445")
    m = RE_FLOOR_UPPER.search("... Choose a deadline above 0.512 ms, a faster target, or a smaller architecture")
    assert m and m.group(1) == "0.512"


def test_phases_and_overhead_from_records():
    lines = [(5.0, "measuring the dense model on cpu ..."),
             (9.0, "dense p50 1.000 ms; floor (thinnest model) 0.300 ms; deadline 0.7 ms"),
             (9.5, "building the latency cost model on cpu (cached after the first time) ..."),
             (30.0, "cost model ready in 20.4 s"), (40.0, "round 1: T=0.500 removed 6 units"),
             (50.0, "report: /tmp/x/report.html")]
    p = _phases(lines)
    assert p["dense_and_floor_s"] == pytest.approx(4.0)
    assert p["cost_model_build_s"] == pytest.approx(20.4)
    assert p["final_export_check_s"] == pytest.approx(10.0)
    report = {"rounds": [{"round": 1, "verdict": "good", "latency_ms": 1.0, "accuracy": 90.0,
                          "seconds": {"select": 1.0, "finetune": 4.0, "measure": 2.0, "total": 7.5}}]}
    o = _overhead(report)
    assert o["rounds"][0]["overhead_s"] == pytest.approx(3.5)
    assert o["rounds"][0]["other_s"] == pytest.approx(0.5)
    assert o["ratio"] == pytest.approx(3.5 / 4.0)


def test_a_share_row_is_judged_by_the_artifact_s_ratio_to_dense_timed_beside_it():
    report = {"deadline_share": {"share": 0.7, "share_p50": 0.63, "share_upper": 0.64, "dense_now_ms": 40.0}}
    got = share_figures(0.7, report)
    assert got["slack"] == pytest.approx(0.1) and got["share_upper"] == 0.64
    assert share_figures(0.7, {"deadline_share": None}) == {}  # no pair timed at the end: nothing to judge
    m = RE_FLOOR_SHARE.search("deadline 60% of the dense model (...) is below the floor: ... Choose a share above 66%, a")
    assert m and m.group(1) == "66"


def test_the_cli_gets_the_deadline_as_given():
    from bench.bench_deadline import CASES

    case = CASES["resnet18"]
    assert _prune_args(case, "70%", Path("o"), False)[6:8] == ["--latency-ms", "70%"]
    assert _prune_args(case, 12.34567, Path("o"), False)[6:8] == ["--latency-ms", "12.3457"]
