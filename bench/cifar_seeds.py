"""What the ResNet-56 / CIFAR-10 follow-up benchmarks share: the shared data they need, and one run per seed."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def per_seed(prefix: str, run_seed: Callable[[int, Path, Path], dict[str, Any]]) -> list[dict[str, Any]] | dict[str, str]:
    """`run_seed(seed, data root, temporary dir)` for each seed of EDGEPRUNE_BENCH_SEEDS (default 0), threads
    configured as edgeprune trains; {"skipped": why} where the shared weights or CIFAR-10 are missing."""
    from edgeprune.data import data_root
    from edgeprune.training import configure_threads

    root = data_root()
    needed = [root / "weights" / "cifar_resnet56.th", root / "cifar10" / "val.npz", root / "cifar10" / "train.npz"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        print(f"skipped: shared data missing ({', '.join(missing)}); set EDGEPRUNE_DATA")
        return {"skipped": f"missing {', '.join(missing)}"}
    configure_threads()
    text = os.environ.get("EDGEPRUNE_BENCH_SEEDS", "").strip()
    seeds = [int(v) for v in text.split(",") if v.strip()] if text else [0]
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        return [run_seed(seed, root, Path(tmp)) for seed in seeds]


def resnet56_and_data(root: Path, tmp: Path, seed: int, *, test_images: int, train_limit: int, batch_size: int,
                      shape: tuple[int, ...] | None = None):
    """(the shared pretrained ResNet-56, loaded at `shape` or its zoo default; the test set: the first
    `test_images` odd-position images of val.npz, benchmark 2's; the task: the first `train_limit` CIFAR-10
    training images, seeded) for one seed."""
    import numpy as np

    from edgeprune.data import load_npz, load_task_data
    from edgeprune.models import ZOO, load_model

    entry = ZOO["cifar_resnet56"]
    x, y = load_npz(root / "cifar10" / "val.npz")
    test_path = tmp / "test.npz"
    np.savez(test_path, x=x[1::2][:test_images], y=y[1::2][:test_images])
    test = load_task_data(str(test_path), str(test_path), mean=entry.mean, std=entry.std, batch_size=250,
                          input_shape=entry.input_shape, num_classes=entry.num_classes)
    loaded = load_model("zoo:cifar_resnet56", weights=str(root / "weights" / "cifar_resnet56.th"), shape=shape)
    task = load_task_data(str(root / "cifar10" / "train.npz"), str(test_path), val_fraction=0.1,
                          train_limit=train_limit, batch_size=batch_size, mean=loaded.mean, std=loaded.std, seed=seed,
                          input_shape=loaded.input_shape, num_classes=loaded.num_classes)
    return loaded, test, task
