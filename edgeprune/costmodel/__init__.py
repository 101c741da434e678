"""Latency cost model: per-layer tables over channel widths, measured on the target, cached on disk.

    cm = CostModel.build(model, torch.zeros(1, 3, 32, 32), "cpu")
    cm.predict({"layer1.0.conv1": (8, 16), "layer1.0.conv2": (16, 8)})   # ms, whole model
    cm.step_edges("layer1.0.conv1")                                        # widths that really save
    cm.calibrate(measured_ms, channels)                                    # after each real measurement

Known limits (measured on the 2-core AVX-512 dev machine, onnxruntime 1.31, see bench/bench_costmodel.py):
- Isolated variants read their weights cold and run beside hundreds of other branches; against the real
  model's per-node profile the tables were within a few % at dense widths but overstated the savings of
  deep pruning by up to ~10%, so uncalibrated predictions of heavily pruned ResNet-56s ran 8-18% low.
  `calibrate` (from the previous round's real measurement) is part of the design, not an option.
- Widths that are not multiples of the runtime's layout block (16 channels for NCHWc on AVX-512) can add
  layout conversions inside the real model that an isolated variant cannot show (seen: ~50 us on a
  ResNet-56 with all inner widths at odd multiples of 8). Such widths are mostly not step edges (often
  slower than the next multiple of 16), but can be for small layers; calibration absorbs the rest.
- onnxruntime reports node times in whole microseconds: per-layer medians carry ~0.5 us quantisation.
- TensorRT: packs are read back through layer names containing `L<i>__`; written against the API, not run.
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
