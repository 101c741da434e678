"""`edgeprune demo`: its deadline goes to prune as a share, and its last line reports the pair timed at the end.

The demo end to end takes about 3.5 minutes (make demo); here prune, profiling and the check are replaced so
that what the demo itself decides is tested in seconds.
"""

from __future__ import annotations

from types import SimpleNamespace

from click.testing import CliRunner

import edgeprune.demo as demo_module
import edgeprune.profiling as profiling_module
import edgeprune.prune as prune_module
from edgeprune.cli import cli
from edgeprune.demo import DemoConfig, run_demo

SHARE = {"share": 0.5, "dense_metric_ms": 2.6, "metric": "p50", "deadline_ms": 1.3, "share_p50": 0.41,
         "share_value": 0.41, "share_upper": 0.43, "dense_now_ms": 3.0, "deadline_now_ms": 1.5, "met": True}


def _summary(**over) -> dict:
    base = {"dense_p50_ms": 2.6, "deadline_ms": 1.3, "deadline_share": SHARE, "deadline_met": True,
            "final_latency_ms": {"p50": 1.45}, "accuracy": {"before": 99.0, "after": 98.5},
            "params": {"before": 371402, "after": 160000}, "report": "r/report.json", "html": "r/report.html"}
    return {**base, **over}


def test_the_demo_gives_prune_its_deadline_as_a_share(monkeypatch, tmp_path):
    seen = {}

    def fake_prune(cfg):
        seen["cfg"] = cfg
        report = {"deadline_ms": 1.3, "deadline_share": SHARE, "deadline_met": True, "final_latency_ms": {"p50": 1.2},
                  "accuracy": {"before": 99.0, "after": 98.5}, "test_accuracy": None,
                  "params": {"before": 1, "after": 1}, "flops": {"before": 1, "after": 1}}
        return prune_module.PruneResult(output=tmp_path, report=report)

    monkeypatch.setattr(prune_module, "prune", fake_prune)
    monkeypatch.setattr(profiling_module, "profile", lambda *a, **k: SimpleNamespace(latency_ms={"p50": 2.6}))
    monkeypatch.setattr(demo_module, "_check", lambda path, deadline: {"ran": False, "deadline_ms": deadline})
    summary = run_demo(DemoConfig(output=str(tmp_path / "demo"), fraction=0.4, epochs=1))
    assert seen["cfg"].latency_share == 0.4 and seen["cfg"].latency_ms is None
    assert summary["deadline_ms"] == 1.3 and summary["check"]["deadline_ms"] == 1.3
    assert summary["deadline_share"]["share_upper"] == 0.43


def test_the_demo_line_names_the_share_and_the_pair_timed_at_the_end(monkeypatch):
    monkeypatch.setattr(demo_module, "run_demo", lambda cfg: _summary())
    out = CliRunner().invoke(cli, ["demo"]).output
    assert out.startswith("PASSED: p50 3.000 -> 1.230 ms timed beside each other (0.43 of dense at its upper "
                          "bound; deadline 50%)"), out

    monkeypatch.setattr(demo_module, "run_demo", lambda cfg: _summary(deadline_share=None, deadline_met=False))
    out = CliRunner().invoke(cli, ["demo"]).output
    assert out.startswith("FAILED: p50 2.600 -> 1.450 ms (deadline 1.3 ms)"), out
