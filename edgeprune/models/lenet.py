"""LeNet-5 for 28x28 grey digits (MNIST), the classic layout the IAP/AIAP paper prunes.

conv 6@5x5 (pad 2) -> ReLU -> max-pool 2 -> conv 16@5x5 -> ReLU -> max-pool 2 -> fc 120 -> ReLU ->
fc 84 -> ReLU -> fc 10. ReLU and max pooling (not the original tanh and subsampling) so that activation
magnitudes mean what the activation criterion assumes. Only the classifier `fc3` is protected: the 120
and 84 hidden units of `fc1`/`fc2` are pruned like filters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def lenet5(num_classes: int = 10) -> LeNet5:
    return LeNet5(num_classes)
