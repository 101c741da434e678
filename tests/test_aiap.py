from __future__ import annotations

from edgeprune.aiap import AIAPController, Verdict, layer_weights


def run(controller: AIAPController, verdict_for) -> list[float]:
    tried = []
    rid = 0
    while not controller.finished:
        t = controller.next_threshold()
        tried.append(t)
        rid += 1
        controller.report(rid, t, verdict_for(t))
    return tried


def test_grows_while_good_then_converges_below_limit():
    limit = 3.3  # thresholds above this break the constraint
    c = AIAPController(step=1.0, min_step=1 / 64, max_rounds=100)
    run(c, lambda t: Verdict.GOOD if t <= limit else Verdict.OVERSHOOT)
    assert c.threshold <= limit
    assert limit - c.threshold < 0.25  # most aggressive good threshold, found by halving
    assert c.stop_reason in ("step became negligible", "no good round left to back off to")


def test_done_stops_immediately():
    c = AIAPController()
    run(c, lambda t: Verdict.DONE if t >= 2 else Verdict.GOOD)
    assert c.threshold == 2 and c.stop_reason == "all budgets met"


def test_backs_off_an_extra_round_after_retries():
    c = AIAPController(step=1.0, max_retries=3, min_step=1e-9, max_rounds=100)
    # everything beyond the first good round fails: after 3 halvings the controller drops round 1 too
    seq = iter([Verdict.GOOD] + [Verdict.OVERSHOOT] * 20)
    run(c, lambda t: next(seq))
    assert c.good == [] and c.stop_reason == "no good round left to back off to"


def test_round_cap_and_roundtrip():
    c = AIAPController(max_rounds=3)
    run(c, lambda t: Verdict.GOOD)
    assert c.rounds == 3 and c.stop_reason == "round cap reached"
    again = AIAPController.from_dict(c.to_dict())
    assert again.to_dict() == c.to_dict()


def test_layer_weights_sum_to_one():
    w = layer_weights({"a": 10, "b": 30})
    assert w == {"a": 0.25, "b": 0.75}


def test_binding_names_only_what_is_unmet():
    from edgeprune.policies import AccuracyDrop, ParamsBudget, binding

    cs = [AccuracyDrop(baseline=90, max_drop=1), ParamsBudget(budget=100)]
    # a budget landed past its slack still counts as met (prune's final pick); only 'below' binds it
    assert binding(cs, {"accuracy": "below", "params": "over"}) == []
    assert binding(cs, {"accuracy": "below", "params": "below"}) == ["params"]
    assert binding(cs, {"accuracy": "over", "params": "met"}) == ["accuracy"]


def test_empty_advances_do_not_use_up_the_round_cap():
    c = AIAPController(step=1.0, max_rounds=3, max_idle=5)
    for _ in range(4):
        c.advance(c.next_threshold())
    assert not c.finished and c.rounds == 0 and c.threshold == 4.0
    c.report(1, c.next_threshold(), Verdict.GOOD)
    assert c.idle == 0
    for _ in range(5):
        c.advance(c.next_threshold())
    assert c.finished and "without selecting any channel" in c.stop_reason
