"""Latency cost model: per-layer tables over channel widths, measured on the target, cached on disk.

    cm = CostModel.build(model, torch.zeros(1, 3, 32, 32), "cpu")
    cm.predict({"layer1.0.conv1": (8, 16), "layer1.0.conv2": (16, 8)})   # ms, whole model
    cm.step_edges("layer1.0.conv1")                                        # widths that really save
    cm.calibrate(measured_ms, channels)                                    # after each real measurement
"""

from __future__ import annotations

from .cache import LatencyCache, conditions_key, default_cache_root
from .table import CostModel, LatencyTable
from .variants import LayerSignature, auto_widths, inspect_layers, signatures_from_model

__all__ = [
    "CostModel",
    "LatencyCache",
    "LatencyTable",
    "LayerSignature",
    "auto_widths",
    "conditions_key",
    "default_cache_root",
    "inspect_layers",
    "signatures_from_model",
]
