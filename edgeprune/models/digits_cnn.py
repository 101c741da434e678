"""The demo's CNN for scikit-learn's 8x8 digits (zoo:digits_cnn)."""

from __future__ import annotations

from torch import nn

BATCH = 32
INPUT_SHAPE = (BATCH, 1, 8, 8)


def make_demo_net() -> nn.Module:
    """VGG-style and wide enough that its convolutions, not per-op overhead, dominate latency."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(1, 64), *block(64, 128), nn.MaxPool2d(2),
        *block(128, 128), *block(128, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
    )
