"""`edgeprune check`: conditions, baselines, per-layer diff, CI outputs, project config, and the CLI end to end
on tiny ONNX models measured with the real onnxruntime (short runs, loose thresholds)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from edgeprune import ci_outputs
from edgeprune.check import (
    CONDITION_FIELDS,
    CheckResult,
    condition_differences,
    ensure_comparable,
    layer_changes,
    load_baseline,
)
from edgeprune.cli import main
from edgeprune.errors import EdgepruneError
from edgeprune.project_config import find_pyproject, load_project_config
from edgeprune.stats import compare_to_baseline, compare_to_budget

# Short measurements: the CLI tests only need the verdicts of grossly different models to be right.
FAST = ["--warmup", "3", "--iterations", "20", "--min-time", "0.15", "--blocks", "2", "--no-config", "-q"]


def conv_net(path: Path, width: int, size: int = 32, layers: int = 3) -> Path:
    """A plain Conv-ReLU stack as ONNX (no torch needed); weights named like a PyTorch export's."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes, x, cin = [], [], "input", 3
    for i in range(layers):
        w = numpy_helper.from_array((rng.standard_normal((width, cin, 3, 3)) * 0.1).astype(np.float32),
                                    f"conv{i}.weight")
        b = numpy_helper.from_array(np.zeros(width, np.float32), f"conv{i}.bias")
        inits += [w, b]
        nodes.append(helper.make_node("Conv", [x, w.name, b.name], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        x, cin = f"r{i}", width
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["output"], name="flatten"))
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def nets(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("nets")
    rundir = d / "run"
    rundir.mkdir()
    return {"narrow": conv_net(d / "narrow.onnx", 16), "wide": conv_net(d / "wide.onnx", 64),
            "rundir": conv_net(rundir / "model.onnx", 16).parent}


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["check", *map(str, args)])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


# ---------------------------------------------------------------------------------------------------
# conditions


COND = {"cpu_model": "Intel X", "machine": "x86_64", "runtime": "onnxruntime", "runtime_version": "1.31.1",
        "threads": 2, "precision": "fp32", "execution_provider": "CPUExecutionProvider",
        "graph_optimization_level": "all", "input_shapes": {"input": [1, 3, 32, 32]}, "hostname": "a"}


@pytest.mark.parametrize("field,value", [("threads", 4), ("cpu_model", "AMD Y"), ("runtime_version", "1.20.0"),
                                         ("precision", "fp16"), ("execution_provider", "CUDAExecutionProvider"),
                                         ("input_shapes", {"input": [1, 3, 64, 64]})])
def test_condition_mismatch_names_the_field(field, value):
    other = {**COND, field: value}
    with pytest.raises(EdgepruneError, match=rf"refusing to compare .*{field}: .*\(baseline\) vs .*\(now\)"):
        ensure_comparable(COND, other, source="baseline b.json")
    assert ensure_comparable(COND, other, source="b", ignore=(field,)) == [
        {"field": field, "baseline": COND[field], "candidate": value}]


def test_conditions_that_do_not_block():
    # another runner of the same kind, and an exporter that named the input differently
    other = {**COND, "hostname": "b", "input_shapes": {"x": [1, 3, 32, 32]}}
    assert condition_differences(COND, other) == []
    # a field one side does not record is not compared
    assert condition_differences({k: v for k, v in COND.items() if k != "threads"}, {**COND, "threads": 8}) == []
    assert condition_differences({"jetson": {"power_mode": "MAXN"}}, {"jetson": {"power_mode": "15W"}})[0][
        "field"] == "jetson.power_mode"
    with pytest.raises(EdgepruneError, match="not a condition field"):
        ensure_comparable(COND, COND, source="b", ignore=("colour",))
    assert "threads" in CONDITION_FIELDS


# ---------------------------------------------------------------------------------------------------
# per-layer changes, baselines


def test_layer_changes_join_by_module_then_name():
    base = [{"name": "relu_nchwc", "module": "layer1.conv", "op": "Conv", "latency_ms": 0.10},
            {"name": "reorder", "module": "layer1.conv", "op": "ReorderOutput", "latency_ms": 0.02},
            {"name": "pool", "module": None, "op": "GlobalAveragePool", "latency_ms": 0.01},
            {"name": "fc", "module": "fc", "op": "Gemm", "latency_ms": 0.05}]
    cand = [{"name": "renamed_nchwc", "module": "layer1.conv", "op": "Conv", "latency_ms": 0.40},
            {"name": "pool", "module": None, "op": "GlobalAveragePool", "latency_ms": 0.012},
            {"name": "extra", "module": "head", "op": "Conv", "latency_ms": 0.03}]
    rows = layer_changes(base, cand)
    assert [r["layer"] for r in rows] == ["layer1.conv", "fc", "head", "pool"]
    first = rows[0]
    assert first["joined_by"] == "module" and first["baseline_ms"] == pytest.approx(0.12)
    assert first["delta_ms"] == pytest.approx(0.28) and first["ratio"] == pytest.approx(0.40 / 0.12)
    by = {r["layer"]: r for r in rows}
    assert by["pool"]["joined_by"] == "name"
    assert by["fc"]["candidate_ms"] is None and by["head"]["baseline_ms"] is None
    assert len(layer_changes(base, cand, top=2)) == 2


def test_load_baseline_errors(tmp_path):
    with pytest.raises(EdgepruneError, match="does not exist.*--update-baseline"):
        load_baseline(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(EdgepruneError, match="not readable JSON"):
        load_baseline(bad)
    bad.write_text(json.dumps({"kind": "edgeprune.check"}))
    with pytest.raises(EdgepruneError, match="not an edgeprune profile report"):
        load_baseline(bad)
    bad.write_text(json.dumps({"kind": "edgeprune.profile", "schema_version": 1, "samples_ms": []}))
    with pytest.raises(EdgepruneError, match="no raw samples_ms"):
        load_baseline(bad)


# ---------------------------------------------------------------------------------------------------
# CI outputs on a synthetic result


def synthetic_result(slowdown: float) -> CheckResult:
    rng = np.random.default_rng(0)
    base = [list(rng.lognormal(0, 0.05, 200)) for _ in range(4)]
    cand = [list(slowdown * rng.lognormal(0, 0.05, 200)) for _ in range(4)]
    flat = [x for b in cand for x in b]
    lat = {"p50": float(np.percentile(flat, 50)), "p90": float(np.percentile(flat, 90)),
           "p99": float(np.percentile(flat, 99)), "mean": float(np.mean(flat)), "std": 0.1, "n": len(flat)}
    layers_b = [{"name": "c0", "module": "conv0", "op": "Conv", "latency_ms": 0.5}]
    layers_c = [{"name": "c0", "module": "conv0", "op": "Conv", "latency_ms": 0.5 * slowdown}]
    result = CheckResult(
        model="net.onnx", target="cpu", metric="p50",
        candidate={"model": {"spec": "net.onnx"}, "latency_ms": lat, "samples_ms": flat,
                   "target": {"conditions": COND, "settings": {"blocks": 4}}, "layers": layers_c},
        candidate_ci_ms=(lat["p50"] * 0.98, lat["p50"] * 1.02),
        baseline={"latency_ms": lat, "layers": layers_b}, baseline_source="model:base.onnx",
        regression=compare_to_baseline(base, cand, paired=True),
        budget=compare_to_budget(cand, budget_ms=100.0),
        layer_changes=layer_changes(layers_b, layers_c), wall_s=1.5)
    return result


def test_junit_xml_parses_and_marks_failures():
    failed = ET.fromstring(ci_outputs.junit_xml(synthetic_result(1.3)).split("\n", 1)[1])
    suite = failed.find("testsuite")
    assert suite.get("failures") == "1" and suite.get("tests") == "2"
    cases = suite.findall("testcase")
    failures = [c for c in cases if c.find("failure") is not None]
    assert len(failures) == 1 and "regression" in failures[0].get("name")
    assert "vs baseline" in failures[0].find("failure").get("message")
    passed = ET.fromstring(ci_outputs.junit_xml(synthetic_result(1.0)).split("\n", 1)[1])
    assert passed.find("testsuite").get("failures") == "0"
    assert not passed.findall(".//failure")
    error = ET.fromstring(ci_outputs.junit_error_xml("net.onnx", "baseline b.json does not exist").split("\n", 1)[1])
    assert error.find(".//error").get("message") == "baseline b.json does not exist"


def test_benchmark_json_shape():
    entries = ci_outputs.benchmark_entries(synthetic_result(1.0))
    assert isinstance(entries, list) and len(entries) == 1
    e = entries[0]
    assert set(e) == {"name", "unit", "value", "range", "extra"}
    assert e["unit"] == "ms" and isinstance(e["value"], float) and e["range"].startswith("± ")
    assert e["name"] == "net.onnx on cpu (p50)"
    json.dumps(entries)


def test_markdown_summary_lists_moved_layers():
    md = ci_outputs.markdown_summary(synthetic_result(1.3))
    assert "FAILED" in md and "Layers whose latency moved most" in md and "`conv0`" in md
    assert "| candidate |" in md and "| baseline (model:base.onnx) |" in md


def test_write_outputs_rejects_unknown(tmp_path):
    with pytest.raises(ValueError, match="unknown output"):
        ci_outputs.write_outputs(synthetic_result(1.0), html=tmp_path / "x.html")


# ---------------------------------------------------------------------------------------------------
# [tool.edgeprune]


def test_project_config_found_upward_and_resolved(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.edgeprune]\nmodel = "models/net.onnx"\ntarget = "cpu"\nlatency_ms = 2.5\n'
        'baseline = "perf/base.json"\nmax_regression = "7%"\nmetric = "p90"\nfuture_key = 1\n'
        '[tool.edgeprune.prune]\nsteps = 3\n')
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    assert find_pyproject(sub) == tmp_path / "pyproject.toml"
    cfg = load_project_config(start=sub)
    assert cfg.get("latency_ms") == 2.5 and cfg.get("metric") == "p90"
    assert cfg.get("max_regression") == pytest.approx(0.07)
    assert cfg.get("baseline") == str(tmp_path.resolve() / "perf" / "base.json")
    assert cfg.get("model") == str(tmp_path.resolve() / "models" / "net.onnx")
    assert cfg.unknown == ("future_key",)


def test_project_config_bad_value_names_key(tmp_path):
    p = tmp_path / "pyproject.toml"
    p.write_text('[tool.edgeprune]\nmetric = "p75"\n')
    with pytest.raises(EdgepruneError, match=r"\[tool.edgeprune\] metric = 'p75': must be one of"):
        load_project_config(p)
    p.write_text('[tool.edgeprune]\nlatency_ms = -1\n')
    with pytest.raises(EdgepruneError, match="latency_ms"):
        load_project_config(p)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "pyproject.toml").write_text('[project]\nname = "y"\n')  # no [tool.edgeprune]
    assert load_project_config(start=tmp_path / "sub").values == {}


# ---------------------------------------------------------------------------------------------------
# CLI end to end (real onnxruntime)


def test_cli_wider_candidate_fails_and_writes_ci_files(nets, tmp_path, capsys):
    junit, summary, bench = tmp_path / "j.xml", tmp_path / "s.md", tmp_path / "b.json"
    code, out, err = run_cli(capsys, nets["wide"], "--baseline-model", nets["narrow"], "--max-regression", "20%",
                             "--junit", junit, "--summary", summary, "--benchmark-json", bench,
                             *[a for a in FAST if a != "--no-layers"])
    assert code == 3, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("FAILED ") and "vs baseline" in last and "regression" in last
    assert "error: FAILED" in err
    root = ET.parse(junit).getroot()
    assert root.find(".//failure") is not None
    md = summary.read_text()
    assert "Layers whose latency moved most" in md and "conv1" in md  # joined by weight name
    entries = json.loads(bench.read_text())
    assert entries[0]["unit"] == "ms" and entries[0]["value"] > 0


def test_cli_model_against_itself_passes_json(nets, capsys):
    code, out, err = run_cli(capsys, nets["narrow"], "--baseline-model", nets["narrow"], "--max-regression", "30%",
                             "--format", "json", *FAST, "--blocks", "4")
    assert code == 0, err
    data = json.loads(out)
    assert data["kind"] == "edgeprune.check" and data["status"] == "PASSED"
    r = data["regression"]
    assert r["paired"] and r["blocks"] == [4, 4] and 0.7 < r["ratio"] < 1.3


def test_cli_stored_baseline_update_pass_fail_and_mismatch(nets, tmp_path, capsys):
    baseline = tmp_path / "perf" / "baseline.json"
    code, out, err = run_cli(capsys, nets["rundir"], "--baseline", baseline, "--update-baseline", *FAST)
    assert code == 0, err
    assert out.strip().splitlines()[-1].startswith("PASSED") and "baseline written" in out
    stored = json.loads(baseline.read_text())
    assert stored["kind"] == "edgeprune.profile" and sum(stored["samples_blocks"]) == len(stored["samples_ms"])
    assert not list(baseline.parent.glob(".*.tmp"))
    before = baseline.read_bytes()

    code, out, err = run_cli(capsys, nets["wide"], "--baseline", baseline, *FAST)
    assert code == 3 and out.strip().splitlines()[-1].startswith("FAILED"), err
    assert baseline.read_bytes() == before  # a check never rewrites the baseline unless asked

    stored["target"]["conditions"]["threads"] = 64
    baseline.write_text(json.dumps(stored))
    code, out, err = run_cli(capsys, nets["narrow"], "--baseline", baseline, *FAST)
    assert code == 1 and "threads: 64 (baseline) vs" in err and "--ignore-condition" in err


def test_cli_budget_and_project_config(nets, tmp_path, capsys, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.edgeprune]\nmodel = "{nets["narrow"].name}"\nlatency_ms = 10000\nblocks = 2\n'
        f'iterations = 10\nmin_time_s = 0.1\nwarmup = 2\n')
    (tmp_path / nets["narrow"].name).write_bytes(nets["narrow"].read_bytes())
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "--no-layers", "-q")
    assert code == 0, err
    assert "budget 10000 ms" in out.strip().splitlines()[-1] and "within" in out
    code, out, err = run_cli(capsys, "--latency-ms", "0.000001", "--no-layers", "-q")  # the CLI overrides
    assert code == 3 and "over-budget" in out


def test_cli_user_errors(nets, tmp_path, capsys):
    code, _, err = run_cli(capsys, nets["narrow"], "--no-config")
    assert code == 1 and "nothing to check against" in err
    engine = tmp_path / "net.engine"
    engine.write_bytes(b"\0")
    code, _, err = run_cli(capsys, engine, "--latency-ms", "1", "--no-config")
    assert code == 1 and "tensorrt target" in err
    code, _, err = run_cli(capsys, engine, "--target", "desktop-cuda", "--latency-ms", "1", "--no-config")
    assert code == 1 and "cannot be measured here" in err
    junit = tmp_path / "err.xml"
    code, _, err = run_cli(capsys, nets["narrow"], "--baseline", tmp_path / "missing.json", "--junit", junit,
                           "--no-config")
    assert code == 1 and "does not exist" in err
    assert ET.parse(junit).getroot().find(".//error") is not None
    code, _, err = run_cli(capsys, tmp_path, "--latency-ms", "1", "--no-config")
    assert code == 1 and "without model.onnx" in err


# ---------------------------------------------------------------------------------------------------
# re-measuring an inconclusive verdict (a scripted runner: no timing involved)


class ScriptedRunner:
    """Stands in for the profiler: every other block of the candidate is 10% faster, the others 40% slower,
    so its pooled median sits past the 5% allowance while the blocks disagree about it. In the A/B mode
    (onnxruntime targets) one call returns AB_BLOCKS blocks of both models, paired."""

    AB_BLOCKS = 4
    BLOCK = 40

    def __init__(self, target):
        self.calls: dict[str, int] = {}
        self.ab_calls = 0
        self.rng = np.random.default_rng(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def scale(self, name: str, block: int) -> float:
        return 1.0 if name == "narrow.onnx" else (0.9 if block % 2 else 1.4)

    def _block(self, path) -> list[float]:
        i = self.calls[path.name] = self.calls.get(path.name, 0) + 1
        return list(self.scale(path.name, i) * self.rng.lognormal(0.0, 0.02, self.BLOCK))

    def measure(self, path, *, per_node=True, extra_args=None, ab_model=None):
        raw = {"kind": "edgeprune.raw_profile", "conditions": COND, "settings": {}, "nodes": [], "memory": {}}
        if ab_model is None:
            samples = self._block(path)
        else:
            self.ab_calls += 1
            samples = [x for _ in range(self.AB_BLOCKS) for x in self._block(path)]
            other = [x for _ in range(self.AB_BLOCKS) for x in self._block(ab_model)]
            raw["ab"] = {"primary_first": [i % 2 == 0 for i in range(len(samples))],
                         "other": {"model": {"path": str(ab_model)}, "input_shapes": COND["input_shapes"],
                                   "samples_ms": other, "latency_ms": {"p50": float(np.median(other))}}}
        return {**raw, "samples_ms": samples, "latency_ms": {"p50": float(np.median(samples))}}


# "cpu" runs onnxruntime (both models in one A/B run); "desktop-cuda" runs TensorRT (alternating runs)
@pytest.mark.parametrize("target", ["cpu", "desktop-cuda"])
@pytest.mark.parametrize("max_blocks,rounds", [(4, 4), (12, 12)])
def test_inconclusive_verdict_is_re_measured(nets, monkeypatch, max_blocks, rounds, target):
    from edgeprune import check as check_mod
    from edgeprune import runners

    runner = None

    def open_scripted(spec):
        nonlocal runner
        runner = ScriptedRunner(spec)
        return runner

    monkeypatch.setattr(runners, "open_runner", open_scripted)
    cfg = check_mod.CheckConfig(model=str(nets["wide"]), baseline_model=str(nets["narrow"]), blocks=4,
                                max_blocks=max_blocks, per_node=False, max_regression=0.05, target=target)
    result = check_mod.check(cfg)
    assert result.candidate["samples_blocks"] == [40] * rounds
    assert result.baseline["samples_blocks"] == [40] * rounds
    assert result.regression.verdict == "not-significant" and result.passed  # the blocks keep disagreeing
    assert (rounds > 4) == any("inconclusive" in n for n in result.notes)
    assert runner.ab_calls == (rounds // 4 if target == "cpu" else 0)


def test_conclusive_verdict_is_not_re_measured(nets, monkeypatch):
    from edgeprune import check as check_mod
    from edgeprune import runners

    monkeypatch.setattr(ScriptedRunner, "scale", lambda self, name, block: 1.5 if name == "wide.onnx" else 1.0)
    monkeypatch.setattr(runners, "open_runner", ScriptedRunner)
    result = check_mod.check(check_mod.CheckConfig(model=str(nets["wide"]), baseline_model=str(nets["narrow"]),
                                                   blocks=4, per_node=False))
    assert not result.passed and result.candidate["samples_blocks"] == [40] * 4
    assert result.regression.ratio == pytest.approx(1.5, rel=0.02)


def test_busier_machine_than_the_stored_baseline_is_noted(nets, tmp_path, monkeypatch):
    from edgeprune import check as check_mod
    from edgeprune import runners

    rng = np.random.default_rng(1)
    quiet = list(rng.lognormal(0, 0.02, 200))
    baseline = tmp_path / "b.json"
    baseline.write_text(json.dumps({"kind": "edgeprune.profile", "schema_version": 1, "samples_ms": quiet,
                                    "samples_blocks": [50] * 4, "latency_ms": {"p50": 1.0},
                                    "target": {"conditions": COND}, "layers": []}))

    def busy(self, path, **kw):  # 40% of iterations preempted: 5x slower
        x = rng.lognormal(0, 0.02, 50)
        x[rng.random(50) < 0.4] *= 5.0
        return {"samples_ms": list(x), "latency_ms": {"p50": 1.0}, "conditions": COND, "settings": {}, "nodes": [],
                "memory": {}}

    monkeypatch.setattr(ScriptedRunner, "measure", busy)
    monkeypatch.setattr(runners, "open_runner", ScriptedRunner)
    result = check_mod.check(check_mod.CheckConfig(model=str(nets["narrow"]), baseline=str(baseline), blocks=4,
                                                   max_blocks=4, per_node=False))
    assert result.noise["candidate_slow_share"] > 0.3 and result.noise["baseline_slow_share"] < 0.05
    assert any("busier now than when the baseline was stored" in n for n in result.notes)
    assert any(n.startswith("busy machine") for n in result.notes)
