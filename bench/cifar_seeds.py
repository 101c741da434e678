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
