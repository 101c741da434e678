from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgeprune.cli import cli
from edgeprune.errors import EdgepruneError
from edgeprune.targets import HostSpec, builtin_targets, load_target, usability


def test_builtins_present_and_typed():
    specs = builtin_targets()
    assert {"cpu", "arm-cpu", "jetson", "desktop-cuda"} <= set(specs)
    assert specs["cpu"].runtime == "onnxruntime" and specs["cpu"].metric == "p50"
    assert specs["jetson"].runtime == "tensorrt" and specs["jetson"].precision == "fp16"
    assert specs["arm-cpu"].requires_host


def test_usability_explains_why():
    specs = builtin_targets()
    assert usability(specs["cpu"])[0]
    ok, why = usability(specs["jetson"])
    assert not ok and "tensorrt is not importable" in why and "--host" in why
    ok, why = usability(specs["arm-cpu"])
    assert not ok and "--host" in why
    assert usability(specs["arm-cpu"].with_host(HostSpec.parse("pi@board")))[0]


def test_user_profile(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('name = "mine"\nruntime = "onnxruntime"\nthreads = 1\nmetric = "p90"\n'
                 '[measure]\nwarmup = 1\niterations = 10\nmin_time_s = 0.0\n[input]\nshape = [1, 3, 8, 8]\n')
    spec = load_target(str(p))
    assert spec.name == "mine" and spec.threads == 1 and spec.metric == "p90"
    assert spec.input_shape == (1, 3, 8, 8) and spec.measure.iterations == 10


@pytest.mark.parametrize("body, needle", [
    ('name = "x"\nruntime = "tflite"\n', "runtime must be one of"),
    ('name = "x"\nruntime = "onnxruntime"\nprecision = "fp8"\n', "precision"),
    ('name = "x"\nruntime = "onnxruntime"\nbogus = 1\n', "unknown field"),
    ('name = "x"\nruntime = ', "not valid TOML"),
])
def test_bad_profiles(tmp_path, body, needle):
    p = tmp_path / "bad.toml"
    p.write_text(body)
    with pytest.raises(EdgepruneError, match=needle):
        load_target(str(p))


def test_unknown_target_lists_known():
    with pytest.raises(EdgepruneError, match="known targets: .*cpu"):
        load_target("tpu-v9")


def test_host_parse_rejects_option_injection():
    with pytest.raises(EdgepruneError):
        HostSpec.parse("-oProxyCommand=touch /tmp/x")
    assert HostSpec.parse("me@dev:2200").port == 2200


def test_targets_command_json():
    result = CliRunner().invoke(cli, ["targets", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["cpu"]["usable"] is True
    assert rows["jetson"]["usable"] is False and "tensorrt" in rows["jetson"]["why"]
