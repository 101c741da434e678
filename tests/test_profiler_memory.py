"""The profiler's peak memory is its own, not the (torch-sized) parent's that started it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_profiler_ort import _model


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the inherited-peak problem is Linux's")
def test_peak_rss_not_inherited_from_a_large_parent(tmp_path):
    model = _model(tmp_path / "m.onnx", batch=1)
    ballast = bytearray(600 * 1024 * 1024)  # touched below, so the parent's peak RSS really is > 600 MiB
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    out = tmp_path / "p.json"
    subprocess.run([sys.executable, "-m", "edgeprune.profilers.ort_profiler", str(model), "--out", str(out),
                    "--warmup", "1", "--iterations", "5", "--min-time", "0", "--no-nodes"], check=True,
                   capture_output=True)
    del ballast
    peak = json.loads(out.read_text())["memory"]["peak_rss_mb"]
    assert 5 < peak < 400, peak
