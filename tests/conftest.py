"""Shared fixtures and automatic skips for hardware-only tests."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    return Path(os.environ.get("EDGEPRUNE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    root = data_root()
    if not (root / "cifar10" / "val.npz").is_file():
        pytest.skip(f"shared data not found at {root} (set EDGEPRUNE_DATA to ../shared/data)")
    return root


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    have_trt = importlib.util.find_spec("tensorrt") is not None
    have_gpu = _cuda_available()
    have_hw = bool(os.environ.get("EDGEPRUNE_TEST_HOST"))
    for item in items:
        if "tensorrt" in item.keywords and not have_trt:
            item.add_marker(pytest.mark.skip(reason="TensorRT is not importable on this machine"))
        if "gpu" in item.keywords and not have_gpu:
            item.add_marker(pytest.mark.skip(reason="no CUDA GPU on this machine"))
        if "hardware" in item.keywords and not have_hw:
            item.add_marker(pytest.mark.skip(reason="no device given (set EDGEPRUNE_TEST_HOST=user@device)"))
