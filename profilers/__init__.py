"""Torch-free on-device profilers: take an ONNX model, return a versioned JSON profile.

This folder is self-contained so it can be copied to a device and run there with only its runtime,
numpy and psutil installed:

    python -m profilers.ort_profiler model.onnx --out profile.json      # onnxruntime
    python -m profilers.trt_profiler model.onnx --out profile.json      # TensorRT (unverified here)

Installed with edgeprune it imports as `edgeprune.profilers`. Nothing in it imports torch, onnx or
edgeprune; modules import each other relatively, and each runtime is imported lazily by its own module,
so importing this package needs neither onnxruntime nor TensorRT.
"""

from .common import PROFILE_KIND, SCHEMA_VERSION, ProfilerError

__all__ = ["PROFILE_KIND", "SCHEMA_VERSION", "ProfilerError"]
