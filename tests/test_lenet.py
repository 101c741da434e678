"""LeNet-5 in the zoo: the layout of the classic net, its fc units prunable like filters, one prune round."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgeprune.models import load_model
from edgeprune.prune import PruneConfig, prune
from edgeprune.pruning import PruningGraph, count_params_flops, get_importance
from edgeprune.selection import SelectionContext, select


def _lenet():
    loaded = load_model("zoo:lenet5")
    return loaded, torch.zeros(loaded.input_shape)


def test_zoo_entry_is_the_classic_lenet5():
    loaded, x = _lenet()
    assert loaded.input_shape == (1, 1, 28, 28) and loaded.num_classes == 10
    assert loaded.mean == (0.1307,) and loaded.std == (0.3081,)
    widths = [m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
              for m in loaded.module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert widths == [6, 16, 120, 84, 10]
    assert loaded.module.conv1.padding == (2, 2) and loaded.module.fc1.in_features == 16 * 5 * 5
    assert count_params_flops(loaded.module, x)[0] == 61_706
    assert loaded.module(x).shape == (1, 10)


def test_graph_makes_the_hidden_fc_units_groups_and_protects_the_classifier():
    loaded, x = _lenet()
    groups = {g.id: g for g in PruningGraph(loaded.module, x).groups()}
    assert set(groups) == {"conv1", "conv2", "fc1", "fc2"}
    assert groups["fc1"].size == 120 and set(groups["fc1"].members) == {("fc1", "out"), ("fc2", "in")}
    assert groups["fc2"].size == 84 and set(groups["fc2"].members) == {("fc2", "out"), ("fc3", "in")}
    # one conv2 filter feeds its 5x5 block of fc1 inputs through the flatten
    assert groups["conv2"].index_map[("fc1", "in")][3] == tuple(range(75, 100))
    assert groups["fc1"].params_per_unit == 400 + 1 + 84  # its row, its bias, its column in fc2


def test_one_activation_aiap_round_removes_fc_units_and_keeps_the_model_exact():
    loaded, x = _lenet()
    graph = PruningGraph(loaded.module, x, verify=True)  # each step checked against the silenced dense model
    groups = graph.groups()
    calib = [torch.randn(32, 1, 28, 28)]
    scores = get_importance("activation", num_images=32).scores(loaded.module, graph, groups, calib)
    plan = select("aiap", groups, scores, SelectionContext(threshold=1.0, weighting="params"))
    assert plan.get("fc1"), "the heaviest group (fc1) must lose units at T=1"
    before = count_params_flops(loaded.module, x)[0]
    graph.prune_many(plan)
    m = loaded.module
    assert m.fc1.out_features == 120 - len(plan["fc1"]) == m.fc2.in_features
    assert m.conv2.out_channels * 25 == m.fc1.in_features and m.fc3.out_features == 10
    assert count_params_flops(m, x)[0] < before and m(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_prune_runs_a_round_on_lenet5(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 96)
    x = rng.integers(0, 40, (96, 28, 28, 1)).astype(np.uint8)
    for i, label in enumerate(y):  # a bright bar whose row gives the class
        x[i, 2 + 2 * int(label): 4 + 2 * int(label), 4:24, 0] = 250
    np.savez(tmp_path / "d.npz", x=x, y=y)
    cfg = PruneConfig(model="zoo:lenet5", output=str(tmp_path / "run"), data=str(tmp_path / "d.npz"),
                      val_fraction=0.25, importance="l1", method="fixed", fraction=0.2, params_reduction=10,
                      max_rounds=1, finetune_epochs=1, max_batches=1, batch_size=32, warmup=1, iterations=3,
                      min_time_s=0.01)
    r = prune(cfg).report
    assert len(r["rounds"]) == 1 and r["rounds"][0]["removed"]["fc1"] == 24
    assert r["params"]["after"] <= 0.9 * r["params"]["before"]
    assert r["channels"]["after"]["conv2"] < 16
