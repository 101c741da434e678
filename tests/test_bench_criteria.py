"""The criteria benchmark changes only the criterion: same architecture, different channels kept."""

from __future__ import annotations

import pytest
import torch

from bench.bench_criteria import Setup, pruned_by, summarise
from edgeprune.errors import EdgepruneError
from edgeprune.models.cifar_resnet import cifar_resnet


def _widths(model) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def test_two_criteria_keep_the_same_widths_but_different_channels():
    torch.manual_seed(0)
    dense = cifar_resnet(20).eval()
    calib = [torch.randn(8, 3, 32, 32)]
    by_l1 = pruned_by("l1", dense, calib, 0.5)
    by_activation = pruned_by("activation", dense, calib, 0.5)
    assert _widths(by_l1) == _widths(by_activation) != _widths(dense)
    kept_l1, kept_act = by_l1.conv1.weight, by_activation.conv1.weight
    assert kept_l1.shape == kept_act.shape
    assert not torch.equal(kept_l1, kept_act)  # the rankings differ, so the kept stem filters do
    assert _widths(pruned_by("l1", dense, calib, 0.0)) == _widths(dense)


def test_labelled_calibration_batches_serve_every_criterion_and_taylor_needs_them():
    torch.manual_seed(0)
    dense = cifar_resnet(20).eval()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    by_taylor = pruned_by("taylor", dense, [(x, y)], 0.5)
    assert _widths(by_taylor) == _widths(pruned_by("l1", dense, [(x, y)], 0.5))
    # activation reads the inputs of the pairs: the same channels as from bare inputs
    assert torch.equal(pruned_by("activation", dense, [(x, y)], 0.5).conv1.weight,
                       pruned_by("activation", dense, [x], 0.5).conv1.weight)
    with pytest.raises(EdgepruneError, match="labelled"):
        pruned_by("taylor", dense, [x], 0.5)


def test_the_summary_compares_every_criterion_with_the_first(capsys):
    setup = Setup(criteria=("activation", "l1"), share=0.5, train_limit=10, epochs=1)

    def run(seed: int, act: float, l1: float, p: float) -> dict:
        return {"seed": seed, "criteria": [
            {"criterion": "activation", "params": 100, "test_acc": act},
            {"criterion": "l1", "params": 100, "test_acc": l1, "vs_reference": {"acc_diff_pts": act - l1,
                                                                               "p_value": p}}]}

    out = summarise(setup, [run(0, 68.6, 70.0, 0.18), run(1, 68.8, 69.5, 0.53)])
    assert out["l1"]["reference_minus_this_pts"] == [68.6 - 70.0, 68.8 - 69.5]
    assert out["activation"]["reference_minus_this_pts"] == []
    assert out["l1"]["params"] == [100]
    assert "activation is the reference" in capsys.readouterr().out
