"""Retraining: schedules, fine-tuning, learning-rate and weight rewinding."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch_pruning as tp
from torch import nn

from edgeprune.data import TaskData, load_task_data
from edgeprune.errors import EdgepruneError
from edgeprune.training import (
    RewindPoint,
    TrainConfig,
    configure_threads,
    evaluate,
    finetune,
    kept_from_removed,
    lr_at,
    rewind_weights,
    train_from_scratch,
)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    # the test machine is shared; two OpenMP threads under contention are far slower than one
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def small_cnn(classes: int = 10, channels: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(20, classes),
    )


@pytest.fixture(scope="module")
def digits() -> TaskData:
    return load_task_data("digits", batch_size=32, mean=(0.3,), std=(0.4,), input_shape=(1, 1, 8, 8), num_classes=10)


# ------------------------------------------------------------------------------------------ config + schedule


@pytest.mark.parametrize(
    "kwargs, match",
    [({"schedule": "linear"}, "unknown schedule"), ({"mode": "rewind"}, "unknown retraining mode"),
     ({"batch_size": 0}, "batch size"), ({"train_limit": 0}, "train-limit"), ({"rewind_epoch": -1}, "rewind epoch"),
     ({"bn_batches": -1}, "bn-batches")],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(EdgepruneError, match=match):
        TrainConfig(**kwargs)


def test_schedules():
    cos = TrainConfig(lr=0.1, schedule="cosine")
    assert lr_at(cos, 0, 10) == pytest.approx(0.1) and lr_at(cos, 5, 10) == pytest.approx(0.05)
    assert lr_at(cos, 10, 10) == pytest.approx(0.0, abs=1e-12)
    step = TrainConfig(lr=0.1, schedule="step", milestones=(0.5, 0.75))
    assert [lr_at(step, e, 4) for e in range(4)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    assert lr_at(TrainConfig(lr=0.1, schedule="constant"), 7, 8) == 0.1


# ------------------------------------------------------------------------------------------ fine-tuning


def test_finetune_learns_and_reports_its_budget(digits):
    torch.manual_seed(0)
    model = small_cnn()
    before = evaluate(model, digits.val, digits.evaluate)
    calls = []
    result = finetune(model, digits, TrainConfig(epochs=3, lr=0.1, batch_size=32), progress=calls.append)
    after = evaluate(model, digits.val, digits.evaluate)
    assert before < 30 and after > 80, (before, after)
    assert result.epochs_run == 3 and result.steps == 3 * math.ceil(len(digits.train_images) / 32)
    assert result.samples_seen == 3 * len(digits.train_images)
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    assert len(calls) == result.steps and calls[-1].epoch == 2 and calls[-1].batches == result.steps // 3
    assert result.mode == "finetune" and not result.rewound and result.world_size == 1
    assert model.training  # mode restored


def test_train_limit_and_max_batches_cap_the_work(digits):
    model = small_cnn()
    r = finetune(model, digits, TrainConfig(epochs=2, lr=0.01, batch_size=16, train_limit=40))
    assert r.samples_seen == 80 and r.steps == 6
    r = finetune(model, digits, TrainConfig(epochs=2, lr=0.01, batch_size=16, max_batches=2))
    assert r.steps == 4 and r.samples_seen == 64


@pytest.mark.parametrize("bn_batches", [0, 50])
def test_batchnorm_statistics_are_recomputed_at_the_final_weights(digits, bn_batches):
    torch.manual_seed(0)
    model = small_cnn()
    bn = model[1]
    bn.running_mean.fill_(100.0)  # statistics of some other model, e.g. the one before pruning
    # lr 0: the weights stay as they are, so the right statistics are those of the untouched conv
    cfg = TrainConfig(epochs=1, lr=0.0, weight_decay=0.0, batch_size=32, train_limit=64, bn_batches=bn_batches)
    result = finetune(model, digits, cfg)
    xs = torch.cat([b[0] for b in digits.train_loader(batch_size=32, limit=64, seed=cfg.seed)])
    with torch.no_grad():
        expected = model[0](xs).mean(dim=(0, 2, 3))
    if bn_batches:
        assert result.bn_recalibrated_batches == 2
        assert torch.allclose(bn.running_mean, expected, atol=1e-4), (bn.running_mean, expected)
        assert model.training and bn.momentum == 0.1  # mode and momentum restored
    else:  # two training batches at momentum 0.1 leave 0.9^2 of the stale statistics
        assert result.bn_recalibrated_batches == 0
        assert torch.allclose(bn.running_mean, 81.0 + 0.19 * expected, atol=0.5)


def test_lr_rewind_replays_the_schedule(digits):
    cfg = TrainConfig(epochs=4, lr=0.1, schedule="step", mode="lr-rewind", max_batches=1, batch_size=8)
    r = finetune(small_cnn(), digits, cfg)
    assert r.epoch_lrs == pytest.approx([0.1, 0.1, 0.01, 0.001]) and r.schedule_start_epoch == 0
    late = TrainConfig(epochs=2, lr=0.1, schedule="step", mode="lr-rewind", rewind_epoch=2, max_batches=1, batch_size=8)
    r = finetune(small_cnn(), digits, late)
    assert r.epoch_lrs == pytest.approx([0.01, 0.001]) and r.schedule_epochs == 4


def test_divergence_is_a_clear_error(digits):
    bad = copy.copy(digits)
    bad.loss = lambda out, y: out.sum() * float("nan")
    with pytest.raises(EdgepruneError, match="diverged"):
        finetune(small_cnn(), bad, TrainConfig(epochs=1, max_batches=2))


def test_custom_loss_from_the_task_is_used(digits):
    seen = []
    task = copy.copy(digits)

    def loss(out, y):
        seen.append(out.shape)
        return nn.functional.cross_entropy(out, y)

    task.loss = loss
    finetune(small_cnn(), task, TrainConfig(epochs=1, max_batches=3, batch_size=8))
    assert seen == [torch.Size([8, 10])] * 3


def test_evaluate_restores_mode_and_device(digits):
    model = small_cnn().train()
    value = evaluate(model, digits.val, device="cpu")
    assert 0.0 <= value <= 100.0 and model.training


def test_configure_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS")
    import os

    cores = len(os.sched_getaffinity(0))
    assert configure_threads() == cores == torch.get_num_threads()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores))
    assert configure_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert configure_threads() == 1 == torch.get_num_threads()


# ------------------------------------------------------------------------------------------ weight rewinding


def _prune(model: nn.Module, layer: str, idxs: list[int], log: dict) -> None:
    """Remove output channels of `layer` with torch-pruning; record what each module lost (like a manifest)."""
    names = {m: n for n, m in model.named_modules()}
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 1, 8, 8))
    group = graph.get_pruning_group(dict(model.named_modules())[layer], tp.prune_conv_out_channels, idxs=idxs)
    round_log: dict[tuple[str, str], list[int]] = {}
    for dep, dep_idxs in group:
        module = dep.target.module
        if module in names:
            role = "out" if graph.is_out_channel_pruning_fn(dep.handler) else "in"
            round_log[(names[module], role)] = [int(i) for i in dep_idxs]
    group.prune()
    for key, removed in round_log.items():
        log.setdefault(key, []).append(removed)


def test_kept_from_removed_composes_rounds():
    assert kept_from_removed(6, [[1, 3], [0]]) == [2, 4, 5]
    with pytest.raises(ValueError, match="round 1 removes index 4"):
        kept_from_removed(5, [[0], [4]])


def test_rewind_matches_pruning_the_snapshot_itself():
    torch.manual_seed(0)
    model = small_cnn(classes=3)
    model(torch.randn(4, 1, 8, 8))  # non-trivial BatchNorm statistics
    snapshot = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # "later training"
    rounds = [("0", [1, 3]), ("3", [0, 4]), ("0", [2])]
    log: dict = {}
    reference = small_cnn(classes=3)
    reference.load_state_dict(snapshot)
    for layer, idxs in rounds:
        _prune(model, layer, idxs, log)
        _prune(reference, layer, idxs, {})
    # original sizes of what each module lost; the classifier's inputs are flattened 5 x 2 x 2 features
    sizes = {("0", "out"): 6, ("1", "out"): 6, ("3", "in"): 6, ("3", "out"): 5, ("4", "out"): 5, ("8", "in"): 20}
    kept: dict[str, dict[str, list[int]]] = {}
    for (name, role), removed in log.items():
        kept.setdefault(name, {})[role] = kept_from_removed(sizes[name, role], removed)
    sliced = rewind_weights(model, snapshot, kept)
    assert "0.weight" in sliced and "3.weight" in sliced and "8.weight" in sliced and "1.running_var" in sliced
    for name, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    assert model.state_dict()["0.weight"].shape[0] == 3


def test_rewind_needs_indices_for_every_shrunk_dimension():
    model = small_cnn()
    snapshot = copy.deepcopy(model.state_dict())
    _prune(model, "0", [0], {})
    with pytest.raises(ValueError, match=r"0\.weight: dimension 0 shrank from 6 to 5"):
        rewind_weights(model, snapshot, {})
    with pytest.raises(ValueError, match="not saved from this model"):
        rewind_weights(model, {"x": torch.zeros(1)}, {})


def test_scratch_training_saves_a_rewind_point(digits):
    torch.manual_seed(1)
    model = small_cnn()
    initial = copy.deepcopy(model.state_dict())
    r0 = train_from_scratch(model, digits, TrainConfig(epochs=2, lr=0.05, max_batches=3), save_rewind_at=0)
    assert r0.rewind_point.epoch == 0
    assert all(torch.equal(r0.rewind_point.state_dict[k], v) for k, v in initial.items())
    r1 = train_from_scratch(small_cnn(), digits, TrainConfig(epochs=2, lr=0.05, max_batches=3), save_rewind_at=2)
    assert r1.rewind_point.epoch == 2 and r1.to_dict()["rewind_point_epoch"] == 2
    with pytest.raises(EdgepruneError, match="outside"):
        train_from_scratch(small_cnn(), digits, TrainConfig(epochs=2), save_rewind_at=3)


def test_weight_rewind_mode(digits):
    torch.manual_seed(2)
    model = small_cnn()
    trained = train_from_scratch(model, digits, TrainConfig(epochs=2, lr=0.05, max_batches=2), save_rewind_at=1)
    point = trained.rewind_point
    log: dict = {}
    _prune(model, "0", [2, 5], log)
    kept = {"0": {"out": [0, 1, 3, 4]}, "1": {"out": [0, 1, 3, 4]}, "3": {"in": [0, 1, 3, 4]}}
    cfg = TrainConfig(epochs=0, mode="weight-rewind")  # no training: only the rewinding step
    r = finetune(model, digits, cfg, rewind_point=point, kept_indices=kept)
    assert r.rewound and r.schedule_start_epoch == 1 and not r.warnings
    assert torch.equal(model.state_dict()["0.weight"], point.state_dict["0.weight"][[0, 1, 3, 4]])
    assert torch.equal(model.state_dict()["3.weight"], point.state_dict["3.weight"][:, [0, 1, 3, 4]])
    before = copy.deepcopy(model.state_dict())
    r = finetune(model, digits, TrainConfig(epochs=1, mode="weight-rewind", max_batches=1))
    assert not r.rewound and "no weight snapshot" in r.warnings[0]
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # trained on from current


def test_rewind_point_files(tmp_path):
    model = small_cnn()
    RewindPoint.capture(model, 3).save(tmp_path / "r.pt")
    back = RewindPoint.load(tmp_path / "r.pt")
    assert back.epoch == 3 and all(torch.equal(back.state_dict[k], v) for k, v in model.state_dict().items())
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "user.pt")
    with pytest.raises(EdgepruneError, match="does not record its epoch"):
        RewindPoint.load(tmp_path / "user.pt")
    user = RewindPoint.load(tmp_path / "user.pt", epoch=5)
    assert user.epoch == 5 and set(user.state_dict) == set(model.state_dict())
    (tmp_path / "junk.pt").write_bytes(np.arange(10).tobytes())
    with pytest.raises(EdgepruneError, match="not a loadable"):
        RewindPoint.load(tmp_path / "junk.pt", epoch=1)
    with pytest.raises(EdgepruneError, match="not found"):
        RewindPoint.load(tmp_path / "none.pt")
