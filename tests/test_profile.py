"""`edgeprune profile` end to end on real onnxruntime: report keys, attribution, bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgeprune.cli import cli
from edgeprune.profiling import profile

FAST = ["--warmup", "2", "--iterations", "10", "--min-time", "0"]


@pytest.mark.parametrize("spec, shape", [
    ("zoo:cifar_resnet20", (1, 3, 32, 32)),
    ("torchvision:resnet18", (1, 3, 224, 224)),
    ("torchvision:mobilenet_v2", (1, 3, 224, 224)),
])
def test_time_is_attributed_to_modules(spec, shape):
    """>= 95% of the summed per-node time of the deployed (fully optimised) model joins to a module."""
    report = profile(spec, "cpu", shape=shape, warmup=2, iterations=10, min_time_s=0)
    assert report.target["spec"]["graph_optimization_level"] == "all"
    assert report.attribution["attributed_share"] >= 0.95
    modules = {layer["module"] for layer in report.layers if layer["module"]}
    first_conv = "conv1" if "resnet" in spec else "features.0.0"
    assert first_conv in modules
    # the fused NCHWc convs are named after tensors, yet still reach their conv module
    assert any(layer["name"].endswith("_nchwc") and layer["module"].endswith(("conv1", "conv2", ".0"))
               for layer in report.layers)


def test_profile_json_report(tmp_path):
    out = tmp_path / "p.json"
    result = CliRunner().invoke(cli, ["profile", "zoo:cifar_resnet20", *FAST, "--format", "json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data == json.loads(out.read_text())
    assert data["schema_version"] == 1
    for key in ("p50", "p90", "p99", "mean", "std", "n"):
        assert key in data["latency_ms"]
    assert data["latency_ms"]["n"] == len(data["samples_ms"]) >= 10
    assert {"peak_rss_mb", "params_mb"} <= set(data["memory"])
    assert 0.9 < data["memory"]["params_mb"] / (269_722 * 4 / 2**20) < 1.1
    layer = data["layers"][0]
    assert {"name", "module", "op", "latency_ms"} <= set(layer)
    cond = data["target"]["conditions"]
    assert cond["threads"] >= 1 and cond["runtime_version"]


def test_profile_table_output():
    # --top larger than the model: which layers rank slowest is timing noise, the table's content is not
    result = CliRunner().invoke(cli, ["profile", "zoo:cifar_resnet20", *FAST, "--top", "500"])
    assert result.exit_code == 0, result.output
    assert re.search(r"slowest \d+ layers", result.output) and "layer1.0.conv1" in result.output


def _run(args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgeprune", *args], capture_output=True, text=True,
                          cwd=cwd)


@pytest.mark.parametrize("args, needle", [
    (["profile", "zoo:cifar_resnet20", "--target", "tpu"], "unknown target 'tpu'; known targets: "),
    (["profile", "zoo:cifar_resnet20", "--target", "jetson"], "tensorrt is not importable"),
    (["profile", "zoo:cifar_resnet20", "--shape", "1x1x32x32"], "does not run on input 1x1x32x32"),
    (["profile", "nothere.onnx"], "does not exist"),
])
def test_bad_input_is_one_line_exit_1(tmp_path, args, needle):
    out = tmp_path / "p.json"
    proc = _run([*args, *FAST, "-o", str(out)])
    assert proc.returncode == 1, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_corrupt_onnx_and_failing_export(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    proc = _run(["profile", str(bad), "--shape", "1x3x8x8", *FAST])
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    model = tmp_path / "net.py"
    model.write_text("import torch\nclass M(torch.nn.Module):\n"
                     "    def forward(self, x):\n        return torch.linalg.eigvals(x[0, 0]).real.sum() + x\n"
                     "def make():\n    return M()\n")
    proc = _run(["profile", f"{model}:make", "--shape", "1x1x4x4", *FAST])
    assert proc.returncode == 1 and "linalg_eig" in proc.stderr and "Traceback" not in proc.stderr


def test_import_and_help_do_not_initialise_cuda():
    code = (
        "import torch, torch.cuda\n"
        "def boom(*a, **k):\n    raise RuntimeError('CUDA was initialised')\n"
        "torch.cuda._lazy_init = boom\n"
        "import edgeprune, edgeprune.cli\n"
        "from click.testing import CliRunner\n"
        "for args in (['--help'], ['targets', '--format', 'json'], ['profile', '--help']):\n"
        "    r = CliRunner().invoke(edgeprune.cli.cli, args)\n"
        "    assert r.exit_code == 0, (args, r.output, r.exception)\n"
        "assert not torch.cuda.is_initialized()\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
