"""Plans measured before fine-tuning (edgeprune.probing), against scripted plans and measurements."""

from __future__ import annotations

import pytest

from edgeprune.probing import MAX_PROBES, probe_round, walk_family, window_between

DEADLINE, SLACK, START = 10.0, 0.05, 20.0


def status(latency: dict) -> str:  # LatencyBudget's rule, the upper bound equal to the value here
    if latency["upper"] > DEADLINE:
        return "below"
    return "met" if latency["value"] >= DEADLINE * (1 - SLACK) else "over"


class Script:
    """Plans numbered 0, 1, ...: plan n predicts a saving of `predicted[n]` and measures `measured[n]`."""

    def __init__(self, predicted: list[float], measured: list[float]):
        self.predicted, self.measured, self.calls = predicted, measured, []

    def info(self, n: int) -> dict:
        return {"predicted_before_ms": START, "predicted_latency_ms": START - self.predicted[n]}

    def first(self):
        return {"g": [0]}, self.info(0)

    def plan(self, ratio, below):
        self.calls.append((ratio, below))
        n = len(self.calls)
        return ({"g": list(range(n + 1))}, self.info(n)) if n < len(self.predicted) else ({}, {})

    def run(self, at_aim: bool = True, **kw):
        def measure(model):
            ms = self.measured[len(model["g"]) - 1]
            return {"value": ms, "upper": ms, "latency_ms": {"p50": ms}}

        return probe_round(self.first(), self.plan, lambda units: (units, None), measure, status,
                           start_p50=START, at_aim=at_aim, **kw)


def test_a_plan_within_the_window_is_accepted_without_another_measurement():
    s = Script([10.0], [9.7])
    accepted, probes = s.run()
    assert accepted is probes[0] and len(probes) == 1 and s.calls == []


def test_a_short_plan_at_the_aim_is_replanned_with_the_saving_ratio_it_showed():
    s = Script([10.0, 20.0], [15.0, 9.8])  # plan 0 saved 5 ms of a predicted 10: ratio 0.5
    accepted, probes = s.run()
    assert s.calls == [(pytest.approx(0.5), None)]
    assert accepted is probes[1] and accepted.status == "met"


def test_a_short_plan_of_an_intermediate_round_is_kept_as_it_is():
    s = Script([5.0, 10.0], [16.0, 10.0])
    accepted, probes = s.run(at_aim=False)
    assert accepted is probes[0] and s.calls == []


def test_a_plan_past_the_window_is_replanned_under_its_own_predicted_saving():
    s = Script([10.0, 8.0], [8.0, 9.6])  # plan 0 saved 12 ms of a predicted 10: ratio 1.2, and less than 10
    accepted, probes = s.run(below_ms=11.0)
    assert s.calls == [(pytest.approx(1.2), 10.0)]
    assert accepted is probes[1]


def test_without_an_acceptable_plan_the_fastest_short_one_is_trained():
    s = Script([4.0, 6.0, 7.0, 9.0], [14.0, 13.0, 12.0, 11.0])
    accepted, probes = s.run()
    assert len(probes) == MAX_PROBES and len(s.calls) == MAX_PROBES - 1
    assert accepted is probes[2] and accepted.latency["value"] == 12.0


def test_when_every_plan_overshoots_the_least_overshooting_is_trained():
    s = Script([10.0, 9.0, 8.0], [7.0, 8.0, 9.0])
    accepted, probes = s.run()
    assert [c[1] for c in s.calls] == [10.0, 9.0]  # the limit only tightens
    assert accepted is probes[2]


def test_a_replan_known_to_fail_or_empty_ends_the_probing():
    s = Script([10.0, 20.0], [15.0, 9.8])
    accepted, probes = s.run(skip=lambda units: True)
    assert len(probes) == 1 and accepted is probes[0]
    s = Script([10.0], [15.0])  # the re-plan selects nothing
    accepted, probes = s.run()
    assert len(probes) == 1 and accepted is probes[0]


def _walk(measured: list[float], start: int, **kw):
    """A family of plans ordered from least to most pruning: plan n removes n + 1 units and reads measured[n]."""
    plans = [({"g": list(range(n + 1))}, {"share": 1 - n / 10}) for n in range(len(measured))]

    def measure(model):
        ms = measured[len(model["g"]) - 1]
        return {"value": ms, "upper": ms, "latency_ms": {"p50": ms}}

    return walk_family(plans, start, lambda units: (units, None), measure, status, **kw)


def test_the_walk_steps_back_from_a_plan_past_the_window_to_the_one_in_it():
    # the coarse family of ResNet-56 on a CPU: the tables said plan 2, which reads far past the window
    accepted, probes = _walk([15.0, 9.7, 6.0, 4.0], start=2)
    assert [p.info["share"] for p in probes] == [0.8, 0.9] and accepted is probes[1]


def test_the_walk_steps_on_from_a_plan_short_of_the_deadline():
    accepted, probes = _walk([15.0, 12.0, 9.8, 4.0], start=0)
    assert [len(p.plan["g"]) for p in probes] == [1, 2, 3] and accepted is probes[2]


def test_the_walk_stops_where_the_window_falls_between_two_neighbours():
    accepted, probes = _walk([15.0, 12.0, 8.0, 4.0], start=2)  # 12 is short, 8 is past: nothing lands in it
    assert accepted is None and [len(p.plan["g"]) for p in probes] == [3, 2]


def test_the_walk_stops_at_the_end_of_the_family_and_after_max_probes():
    accepted, probes = _walk([8.0, 7.0], start=1)
    assert accepted is None and len(probes) == 2  # past the window even at the widest share
    accepted, probes = _walk([20.0, 19.0, 18.0, 17.0, 16.0, 9.8], start=0)
    assert accepted is None and len(probes) == MAX_PROBES


def _between(measured: list[float], start: int):
    """window_between over the walk of `_walk`'s family (plan n reads measured[n])."""
    plans = [({"g": list(range(n + 1))}, {"share": 1 - n / 10}) for n in range(len(measured))]

    def measure(model):
        ms = measured[len(model["g"]) - 1]
        return {"value": ms, "upper": ms, "latency_ms": {"p50": ms}}

    accepted, probes = walk_family(plans, start, lambda units: (units, None), measure, status)
    return accepted, window_between(plans, probes, DEADLINE, SLACK)


def test_where_the_window_falls_between_two_neighbours_the_one_that_meets_the_deadline_is_named():
    # 12 ms is short of the 10 ms deadline, 9.2 ms past its 5% window but within twice the slack
    accepted, pair = _between([15.0, 12.0, 9.2, 4.0], start=2)
    assert accepted is None and pair is not None
    met, wider = pair
    assert (len(met.plan["g"]), len(wider.plan["g"])) == (3, 2)
    assert (met.status, wider.status) == ("over", "below")


def test_no_share_is_named_past_twice_the_slack_or_without_a_measured_neighbour():
    assert _between([15.0, 12.0, 8.9, 4.0], start=2)[1] is None  # 11% under the deadline: too far
    assert _between([9.2, 4.0], start=1)[1] is None  # past the window even at the widest share: nothing short
    accepted, pair = _between([15.0, 12.0, 9.2, 4.0], start=3)  # walked back from 4.0: the pair is found late
    assert accepted is None and [len(p.plan["g"]) for p in pair] == [3, 2]
