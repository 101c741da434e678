"""report.html and the prune plots: content, graceful fallbacks, and a real headless-browser render."""

from __future__ import annotations

import copy
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgeprune.html_report import latency_before_after, trajectory_series, write_html_report
from edgeprune.io import write_json_atomic

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless browser not installed (apt-get install -y chromium; `make dev-deps` does it)")

_WIDTHS = {"conv1": 16, **{f"layer{s}.{b}.conv{c}": 16 * 2 ** (s - 1) for s in (1, 2, 3) for b in range(3)
                           for c in (1, 2)}}


def _stats(p50: float) -> dict:
    return {"p50": p50, "p90": p50 * 1.06, "p99": p50 * 1.2, "mean": p50 * 1.02, "std": p50 * 0.05, "n": 812}


def latency_report() -> dict:
    """A realistic latency-policy report: ResNet-20 on cpu, 2.40 ms -> 1.16 ms against a 1.20 ms deadline."""
    layer_before = {"conv1": 0.061, **{n: round(0.105 - 0.002 * i, 4) for i, n in enumerate(list(_WIDTHS)[1:])},
                    "fc": 0.004}
    after_frac = {n: (0.5 if n.endswith("conv1") and n != "conv1" else 0.75) for n in _WIDTHS}
    channels_after = {n: max(1, int(w * after_frac[n])) for n, w in _WIDTHS.items()}
    layer_after = {n: round(v * (after_frac.get(n, 1.0) ** 1.3), 4) for n, v in layer_before.items()}

    def rnd(i, base, t, measured, predicted, acc, verdict, states):
        removed = {"layer1.0.conv1": 4 * i, "layer2.0.conv1": 8 * i, "layer3.0.conv1": 16 * i}
        return {"round": i, "threshold": t, "removed": removed, "groups_before": {g: 32 for g in removed},
                "channels": channels_after, "params": 270_000 - 40_000 * i, "flops": 40_800_000 - 6_000_000 * i,
                "accuracy": acc, "memory_mb": None, "constraints": states, "verdict": verdict,
                "seconds": {"select": 0.4, "finetune": 21.0, "measure": 3.1, "total": 24.6}, "base_round": base,
                "train": None, "latency_ms": measured, "latency_upper_ms": measured * 1.01,
                "latency_stats": _stats(measured), "predicted_latency_ms": predicted,
                "groups": [{"group": g, "removed": n, "latency_saving_ms": 0.011 * n, "importance_lost": 0.002 * n}
                           for g, n in removed.items()]}

    rounds = [
        rnd(1, None, 0.5, 1.86, 1.79, 91.2, "good", {"accuracy": "below", "latency": "below"}),
        rnd(2, 1, 1.0, 1.05, 1.17, 89.8, "overshoot", {"accuracy": "below", "latency": "over"}),
        rnd(3, 1, 0.75, 1.41, 1.45, 90.9, "good", {"accuracy": "below", "latency": "below"}),
        rnd(4, 3, 1.0, 1.16, 1.17, 90.6, "done", {"accuracy": "below", "latency": "met"}),
    ]
    rounds[3]["probes"] = [{"measured_ms": 1.09, "status": "over", "accepted": False},
                           {"measured_ms": 1.16, "status": "met", "accepted": True},
                           {"measured_ms": 1.15, "status": "met", "accepted": False, "family": "uniform",
                            "share": 0.5, "params": 90_000}]
    return {
        "schema_version": 1, "kind": "edgeprune.prune_report",
        "config": {"model": "resnet20", "output": "run", "target": "cpu", "method": "aiap", "importance": "activation",
                   "max_acc_drop": 2.0, "latency_ms": 1.2, "metric": None, "allocator": "ratio", "slack": 0.05,
                   "max_rounds": 12, "seed": 0, "finetune_epochs": 1, "params_reduction": None, "max_params": None,
                   "memory_mb": None},
        "target": {"name": "cpu", "runtime": "onnxruntime", "execution_provider": "CPUExecutionProvider",
                   "precision": "fp32", "threads": 0, "metric": "p50", "graph_optimization_level": "all",
                   "description": "this machine's CPU, onnxruntime CPUExecutionProvider", "host": None,
                   "measure": {"warmup": 20, "iterations": 200, "min_time_s": 2.0}},
        "model": {"spec": "resnet20", "input_shape": [1, 3, 32, 32], "num_classes": 10},
        "data": {"data": "cifar10/train.npz", "train_samples": 45000, "val_samples": 5000,
                 "val_source": "held-out 0.1 of --data (seed 0)"},
        "constraints": ["accuracy drop <= 2.0 pts (baseline 91.60)", "p50 latency <= 1.2 ms"],
        "constraint_states": {"accuracy": "below", "latency": "met"}, "met": True, "binding": [],
        "stop_reason": "all budgets met", "best_round": 4, "resumed_after_rounds": [], "rounds": rounds,
        "params": {"before": 272_474, "after": 110_000}, "flops": {"before": 40_810_000, "after": 16_800_000},
        "compression_ratio": 2.48, "accuracy": {"before": 91.6, "after": 90.6}, "test_accuracy": None,
        "memory_mb": {"before": None, "after": None},
        "channels": {"before": dict(_WIDTHS), "after": channels_after},
        "budget": {"finetune_epochs": 1, "final_epochs": 0, "train_limit": None, "batch_size": 128, "lr": 0.01,
                   "retrain": "finetune", "rounds": 4, "finetune_seconds": 84.0},
        "deadline_ms": 1.2, "metric": "p50", "deadline_met": True, "confidence": 0.95,
        "final_metric_ms": 1.16, "final_metric_upper_ms": 1.18, "floor_ms": 0.21,
        "cost_model": {"prediction_errors": [-0.04, 0.11, 0.03, 0.01], "mean_abs_error": 0.0475},
        "latency_ms": {"before": 2.40, "after": 1.16}, "final_latency_ms": _stats(1.16),
        "layer_latency": {"before": layer_before, "after": layer_after},
        "artifact": {"path": "run/model.onnx", "sidecar": "run/model.onnx.json",
                     "parity": {"passed": True, "artifact": "model.onnx", "samples": 32, "top1_agreement": 1.0,
                                "outputs": [{"max_abs_error": 2e-6}], "checked_with": "onnxruntime 1.31.1"},
                     "latency_ms": {"measured": True, "metric": "p50", "value_ms": 1.17,
                                    "latency_ms": _stats(1.17),
                                    "settings": {"threads": 2, "timing": "perf_counter_ns around run"},
                                    "conditions": {"hostname": "vm", "cpu_model": "Intel(R) Xeon(R) Processor",
                                                   "physical_cores": 2, "logical_cores": 2,
                                                   "runtime_version": "1.31.1"}}},
    }


def params_report() -> dict:
    """The same run as a params-budget run with no latency fields at all (the pre-latency schema)."""
    r = latency_report()
    for key in ("deadline_ms", "metric", "deadline_met", "latency_ms", "final_latency_ms", "layer_latency",
                "confidence", "final_metric_ms", "final_metric_upper_ms", "floor_ms", "cost_model"):
        r.pop(key)
    r["config"].update(latency_ms=None, params_reduction=50)
    r["constraints"] = ["params <= 136,237"]
    for rd in r["rounds"]:
        for key in ("latency_ms", "latency_upper_ms", "latency_stats", "predicted_latency_ms", "groups"):
            rd.pop(key)
    r["artifact"].pop("latency_ms")
    return r


def _run_dir(tmp_path: Path, report: dict) -> Path:
    run = tmp_path / "run"
    write_json_atomic(run / "report.json", report)
    (run / "model.onnx").write_bytes(b"\0" * 2048)
    return run


def _text(page: str) -> str:
    """What a reader sees: tags removed, whitespace collapsed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def _imgs(page: str) -> list[str]:
    return re.findall(r'<img [^>]*src="([^"]+)"', page)


def test_latency_report_has_every_part(tmp_path):
    run = _run_dir(tmp_path, latency_report())
    out = write_html_report(run)
    page = out.read_text()
    assert out == run / "report.html"
    assert {p.name for p in (run / "plots").iterdir()} == {
        "latency_per_layer.png", "trajectory.png", "channels_per_layer.png"}
    srcs = _imgs(page)
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    text = _text(page)
    assert "Deadline met" in text and "p50 1.16 ms (upper 95% bound 1.18 ms) ≤ 1.20 ms" in text
    assert "predictions off by 5% on average over 4 measured round(s)" in text and "0.210 ms" in text
    assert "2.40 → 1.16 ms" in text and "2.07× faster" in text  # before -> after, speed-up
    assert "−59.6%" in text  # params 272,474 -> 110,000
    assert "91.60 → 90.60 %" in text
    # the rounds table says why each round went the way it did
    assert "backed off : p50 latency 1.05 ms: pruned past 1.20 ms by more than the slack" in text
    assert "round 3 retried from round 1 with a smaller step" in text
    assert "every budget met, stop" in text and "delivered" in text
    assert "layer1.0.conv1 −4 0.044 ms 0.008" in text  # per group: cut, cost-model saving, importance lost
    assert "(1.17)" in text  # predicted latency next to the measured one
    assert "re-planned before fine-tuning: 1.09 ms, past the slack window" in text
    assert text.count("re-planned before fine-tuning") == 1  # only round 4 set a plan aside
    assert "uniform-share plan, set aside: 1.15 ms, within the slack window, 90,000 params" in text
    assert "Intel(R) Xeon(R) Processor" in text and "CPUExecutionProvider" in text
    assert "model.onnx" in text and "parity passed" in text


def test_self_contained_no_external_resources(tmp_path):
    page = write_html_report(_run_dir(tmp_path, latency_report())).read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "<style>" in page


def test_without_latency_fields_falls_back_to_params_and_channels(tmp_path):
    run = _run_dir(tmp_path, params_report())
    page = write_html_report(run).read_text()
    assert {p.name for p in (run / "plots").iterdir()} == {"trajectory.png", "channels_per_layer.png"}
    text = _text(page)
    assert "Constraints met" in text and "Deadline" not in text
    assert "channels stand in" in text
    series = trajectory_series(params_report())
    assert series["key"] == "params" and series["budget"] == 136_237
    assert latency_before_after(params_report()) == (None, None)


def test_missed_deadline_and_unmeasured_accuracy_are_flagged(tmp_path):
    r = latency_report()
    r.update(met=False, deadline_met=False, binding=["latency"], latency_ms={"before": 2.4, "after": 1.31},
             final_metric_upper_ms=1.33)
    r["accuracy"]["after"] = None
    text = _text(write_html_report(_run_dir(tmp_path, r)).read_text())
    assert "Deadline NOT met" in text and "1.31 ms (upper 95% bound 1.33 ms) > 1.20 ms" in text
    assert "binding: latency" in text
    assert "not measured" in text


def test_a_failing_plot_is_reported_not_fatal(tmp_path, monkeypatch):
    import edgeprune.plots as plots

    def broken(*a, **k):
        raise ValueError("no good")

    monkeypatch.setattr(plots, "plot_trajectory", broken)
    page = write_html_report(_run_dir(tmp_path, latency_report())).read_text()
    assert "The trajectory plot could not be drawn: ValueError: no good" in page
    assert len(_imgs(page)) == 2


def test_missing_report_is_a_user_error(tmp_path):
    from edgeprune.errors import EdgepruneError

    with pytest.raises(EdgepruneError, match="report.json not found"):
        write_html_report(tmp_path)


def test_trajectory_series_marks_rounds_and_budget():
    s = trajectory_series(latency_report())
    assert s["rounds"] == [0, 1, 2, 3, 4] and s["measured"][0] == 2.40 and s["predicted"][0] is None
    assert s["verdicts"][2] == "overshoot" and s["delivered"] == 4
    assert s["budget"] == 1.2 and s["budget_low"] == pytest.approx(1.14)
    r = copy.deepcopy(latency_report())
    r["rounds"][0]["latency_ms"] = {"p50": 1.9, "p90": 2.0}  # stats dicts are read at the run's metric
    assert trajectory_series(r)["measured"][1] == 1.9


# ---- a real browser


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


_PROBE = """<script>
window.addEventListener("load", () => {
  const out = [...document.images].map(i => ({w: i.naturalWidth, h: i.naturalHeight, ok: i.complete}));
  const pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script></body>"""


def browser_image_sizes(page: Path, tmp_path: Path) -> list[dict]:
    """Every <img> of the page as Chromium decoded it: naturalWidth/Height after load."""
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", _PROBE))
    done = _chromium(["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], tmp_path)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"chromium gave no probe output (rc {done.returncode}): {done.stderr[-500:]}"
    return json.loads(html.unescape(found.group(1)))


@needs_chromium
@pytest.mark.parametrize("make", [latency_report, params_report])
def test_renders_in_headless_chromium(make, tmp_path):
    page = write_html_report(_run_dir(tmp_path, make()))
    sizes = browser_image_sizes(page, tmp_path)
    assert len(sizes) == len(_imgs(page.read_text())) >= 2
    assert all(s["ok"] and s["w"] > 300 and s["h"] > 100 for s in sizes), sizes
    shot = tmp_path / "report.png"
    _chromium(["--window-size=1200,2400", f"--screenshot={shot}", page.as_uri()], tmp_path)
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 2400)
        colours = im.convert("RGB").resize((60, 120)).getcolors(60 * 120)
        assert colours is not None and len(colours) > 20  # a page with content, not a blank canvas


@needs_chromium
def test_broken_image_is_caught_by_the_probe(tmp_path):
    """The browser check can fail: a corrupt data URI decodes to naturalWidth 0."""
    page = write_html_report(_run_dir(tmp_path, params_report()))
    text = page.read_text()
    first = _imgs(text)[0]
    page.write_text(text.replace(first, "data:image/png;base64,iVBORw0KGgoAAAAN"))
    sizes = browser_image_sizes(page, tmp_path)
    assert sizes[0]["w"] == 0 and sizes[1]["w"] > 0


# ---- end to end: a real (tiny) prune run writes the page


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    """One tiny real prune (CNN on 8x8 synthetic images, params budget, no fine-tuning, short timing)."""
    import numpy as np

    from edgeprune.prune import PruneConfig, prune

    d = tmp_path_factory.mktemp("e2e")
    (d / "net.py").write_text(
        "from torch import nn\n\n"
        "def make():\n"
        "    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),\n"
        "        nn.Conv2d(16, 24, 3, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU(),\n"
        "        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 4))\n")
    rng = np.random.default_rng(0)
    np.savez(d / "data.npz", x=rng.integers(0, 255, (120, 8, 8, 3)).astype(np.uint8), y=rng.integers(0, 4, 120))
    cfg = PruneConfig(model=f"{d / 'net.py'}:make", output=str(d / "run"), shape=(1, 3, 8, 8),
                      data=str(d / "data.npz"), mean=(0.5,) * 3, std=(0.25,) * 3, importance="l1", calib_images=16,
                      finetune_epochs=0, batch_size=32, max_rounds=3, params_reduction=30, warmup=2, iterations=20,
                      min_time_s=0.1)
    try:
        prune(cfg)
    except Exception as exc:  # a missed budget still writes the report (exit 3 in the CLI)
        from edgeprune.errors import ConstraintNotMet

        if not isinstance(exc, ConstraintNotMet) or not (d / "run" / "report.json").exists():
            raise
    return d / "run"


@pytest.mark.slow
def test_prune_writes_the_html_report(pruned_run, tmp_path):
    page = pruned_run / "report.html"
    assert page.is_file() and (pruned_run / "plots" / "trajectory.png").is_file()
    report = json.loads((pruned_run / "report.json").read_text())
    text = _text(page.read_text())
    assert f"{report['params']['before']:,} → {report['params']['after']:,}" in text
    assert text.count("backed off") + text.count("kept") >= len(report["rounds"])
    if CHROMIUM is None:
        pytest.skip("headless browser not installed (apt-get install -y chromium)")
    sizes = browser_image_sizes(page, tmp_path)
    assert sizes and all(s["w"] > 300 for s in sizes), sizes


def test_plots_survive_sparse_data(tmp_path):
    """One round, no accuracy, no budget, a module pruned away: still a readable PNG each."""
    from PIL import Image

    from edgeprune.plots import plot_before_after, plot_profile_layers, plot_trajectory

    plot_trajectory({"rounds": [0, 1], "measured": [5.0, None], "predicted": [], "verdicts": ["dense", "good"],
                     "accuracy": [None, None], "budget": None, "budget_label": "", "delivered": 1,
                     "label": "p50 latency", "unit": "ms", "title": "t"}, tmp_path / "t.png")
    plot_before_after({"a": 2.0, "b": 1.0}, {"a": 1.0}, tmp_path / "b.png", title="t", xlabel="x")
    profile = {"layers": [{"module": "conv1", "latency_ms": 0.5}, {"module": None, "latency_ms": 0.1}],
               "latency_ms": {"p50": 0.7}, "model": {"spec": "m"}, "target": {"spec": {"name": "cpu"}}}
    plot_profile_layers(profile, tmp_path / "p.png")
    for name in ("t.png", "b.png", "p.png"):
        with Image.open(tmp_path / name) as im:
            assert im.width > 500 and im.height > 200


def test_speedup_timed_together_is_preferred_when_present(tmp_path):
    report = {**latency_report(), "speedup_now": {"dense_p50_ms": 2.2, "pruned_p50_ms": 1.1, "speedup": 2.0,
                                                  "pairs": 200}}
    text = _text(write_html_report(_run_dir(tmp_path, report)).read_text())
    assert "2.00× faster (dense and pruned timed close together at the end: one process, alternating per pair)" in text
    report["speedup_now"] = {**report["speedup_now"], "how": "four processes: dense, pruned, pruned, dense"}
    text = _text(write_html_report(_run_dir(tmp_path / "again", report)).read_text())
    assert "at the end: four processes: dense, pruned, pruned, dense)" in text


def test_a_machine_that_drifted_during_the_run_is_named_on_the_latency_card(tmp_path):
    from edgeprune.prune import machine_drift

    speedup = {"dense_p50_ms": 2.86, "pruned_p50_ms": 1.3, "speedup": 2.2,
               "how": "four processes: dense, pruned, pruned, dense",
               "readings_ms": {"dense": [2.86, 2.86], "pruned": [1.3, 1.3]}}
    report = {**latency_report(), "speedup_now": speedup,
              "machine_drift": machine_drift(2.2, speedup, 1.3, 1.31, 1.2)}
    text = _text(write_html_report(_run_dir(tmp_path, report)).read_text())
    assert "the target read the dense model 30% slower at the end than at the start: at the start's speed 1" in text
    report["machine_drift"] = machine_drift(2.2, {**speedup, "dense_p50_ms": 2.25}, 1.3, 1.31, 1.2)  # within slack
    text = _text(write_html_report(_run_dir(tmp_path / "again", report)).read_text())
    assert "the target read the dense model" not in text


def test_the_latency_card_says_when_the_rounds_were_judged_in_the_dense_frame(tmp_path):
    words = "rounds judged in the dense model's frame"
    text = _text(write_html_report(_run_dir(tmp_path, {**latency_report(), "latency_frame": "dense"})).read_text())
    assert words in text
    text = _text(write_html_report(_run_dir(tmp_path / "own", {**latency_report(), "latency_frame": "own"})).read_text())
    assert words not in text


def test_a_deadline_given_as_a_share_is_headlined_as_the_share_it_was_judged_on(tmp_path):
    share = {"share": 0.5, "share_p50": 0.47, "share_value": 0.47, "share_upper": 0.48, "dense_now_ms": 2.4}
    text = _text(write_html_report(_run_dir(tmp_path, {**latency_report(), "deadline_share": share})).read_text())
    assert "deadline 50% of dense: the artifact reads 0.480 of the dense model timed beside it (upper bound)" in text
    text = _text(write_html_report(_run_dir(tmp_path / "ms", latency_report())).read_text())
    assert "of the dense model timed beside it" not in text


def test_a_round_that_fine_tuned_a_regrown_plan_says_so():
    from edgeprune.html_report import _replanned

    r = {"probes": [{"measured_ms": 16.1, "status": "over", "accepted": False, "family": "uniform", "share": 0.5,
                     "params": 214_546},
                    {"measured_ms": 18.3, "status": "met", "accepted": True, "family": "regrown", "share": 0.5,
                     "params": 348_658}],
         "restored": [{"group": "layer3.0.conv1", "restored": 32}, {"group": "layer3.1.conv1", "restored": 32}]}
    text = re.sub(r"<[^>]+>", " ", _replanned(r))
    assert "uniform-share plan, set aside: 16.1 ms, past the slack window, 214,546 params" in text
    assert "regrown uniform-share plan, set aside" not in text
    assert "the uniform-share plan (0.500 of every dense width) with 64 units given back" in text
