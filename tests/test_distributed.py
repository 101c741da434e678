"""Fine-tuning under torchrun (DistributedDataParallel, gloo on CPU) versus one process.

The test launches this file as the worker: `torchrun --standalone --nproc_per_node=2 tests/test_distributed.py DIR`.

What must match, and why it can: with DDP every rank computes the mean loss over its half of the global
batch and gradients are averaged over ranks, which equals the gradient of the mean over the whole global
batch; the ranks' shards of an epoch are the DistributedSampler split of the same permutation a single
process walks, so the union of the ranks' i-th batches is the single process's i-th batch; augmentation
is keyed on (seed, epoch, sample), not on the process. So the updates agree up to float summation order —
provided nothing in the model depends on the per-rank batch: the test model has no BatchNorm (train-mode
BatchNorm normalises each rank's half batch with its own statistics, so it cannot match) and no dropout
(per-rank random masks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune import distributed
from edgeprune.data import load_task_data
from edgeprune.training import TrainConfig, evaluate, finetune

N_IMAGES, GLOBAL_BATCH, EPOCHS = 80, 16, 2  # 64 training images after the 20% selection split: 4 steps/epoch


def _write_data(path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (N_IMAGES, 8, 8, 3), dtype=np.uint8)
    y = (x[..., 0].mean(axis=(1, 2)) > 127).astype(np.int64) + (x[..., 1].mean(axis=(1, 2)) > 127)
    np.savez(path, x=x, y=y)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def _run(out_dir: Path, tag: str) -> dict:
    task = load_task_data(out_dir / "data.npz", val_fraction=0.2, batch_size=GLOBAL_BATCH, augment=True,
                          mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), seed=0)
    task.train_images.trace = []
    marks: dict[int, int] = {}
    model = _model()
    result = finetune(model, task, TrainConfig(epochs=EPOCHS, lr=0.05, batch_size=GLOBAL_BATCH, seed=3),
                      progress=lambda p: marks.__setitem__(p.epoch, len(task.train_images.trace)))
    trace, ends = task.train_images.trace, [marks[e] for e in range(EPOCHS)]
    per_epoch = [trace[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    torch.save(model.state_dict(), out_dir / f"{tag}.pt")
    return {"seen": per_epoch, "losses": result.epoch_losses, "world_size": result.world_size,
            "samples": result.samples_seen, "acc": evaluate(model, task.val, task.evaluate),
            "train_size": len(task.train_images)}


def test_single_process_helpers_are_no_ops():
    ctx = distributed.context()
    assert not ctx.enabled and ctx.is_main and distributed.is_main_process()
    assert distributed.all_reduce_mean(2.5) == 2.5 and distributed.broadcast_object({"a": 1}) == {"a": 1}
    model = _model()
    assert distributed.wrap_model(model, torch.device("cpu")) is model
    distributed.barrier()


def test_torchrun_two_ranks_match_one_process(tmp_path, monkeypatch):
    _write_data(tmp_path / "data.npz")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__, str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    # both ranks end with the same weights and report the same (all-reduced) losses and metric
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    assert ranks[0]["losses"] == ranks[1]["losses"] and ranks[0]["acc"] == ranks[1]["acc"]
    assert ranks[0]["world_size"] == 2 and ranks[0]["samples"] == EPOCHS * ranks[0]["train_size"]

    # each epoch the ranks saw disjoint halves that together cover the training set
    n = ranks[0]["train_size"]
    for e in range(EPOCHS):
        a, b = set(ranks[0]["seen"][e]), set(ranks[1]["seen"][e])
        assert len(ranks[0]["seen"][e]) == len(ranks[1]["seen"][e]) == n // 2
        assert not a & b and a | b == set(range(n))

    # one process with the same global batch lands on the same weights (up to summation order)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    single = _run(tmp_path, "single")
    ref, init = torch.load(tmp_path / "single.pt"), _model().state_dict()
    for k, v in ref.items():
        # seen: differences ~1e-8 while training moved every tensor by >= 2e-3 (a wrong shard moves ~1e-3)
        assert (v - init[k]).abs().max() > 1e-3, k
        assert torch.allclose(states[0][k], v, rtol=1e-5, atol=1e-6), (k, (states[0][k] - v).abs().max())
    assert single["losses"] == pytest.approx(ranks[0]["losses"], rel=1e-4)
    assert single["world_size"] == 1 and single["seen"][0] != ranks[0]["seen"][0]


if __name__ == "__main__":  # the torchrun worker
    out = Path(sys.argv[1])
    ctx = distributed.init_from_env()
    record = _run(out, f"rank{ctx.rank}")
    (out / f"rank{ctx.rank}.json").write_text(json.dumps(record))
    distributed.shutdown()
