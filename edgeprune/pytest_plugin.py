"""pytest plugin (entry point `pytest11`): latency assertions in a project's own test suite.

    def test_fast_enough(assert_latency):
        assert_latency("zoo:cifar_resnet20", target="cpu", max_ms=2.0)

or, without the fixture, `from edgeprune.pytest_plugin import assert_latency`. A failing assertion
reports the measured figures. The decision is the one of `edgeprune check` (see `edgeprune.stats`):
the test fails only when the metric is above `max_ms` with confidence (or, given `baseline=`, slower
than the baseline by more than `max_regression` with confidence).

pytest loads this module in every run of every project that has edgeprune installed, so it imports
nothing heavy here: torch, numpy and onnxruntime are imported only when a test calls the helper.
"""

from __future__ import annotations

from typing import Any

import pytest


def _loaded(model: Any, shape: tuple[int, ...] | None) -> Any:
    """A torch.nn.Module given directly becomes a LoadedModel; specs and paths pass through."""
    if isinstance(model, str) or hasattr(model, "__fspath__"):
        return str(model)
    if hasattr(model, "named_modules") and callable(model):
        from edgeprune.models import LoadedModel

        if shape is None:
            raise ValueError("assert_latency: give shape=(1, 3, H, W) for a torch.nn.Module")
        model.eval()
        return LoadedModel(spec=type(model).__name__, module=model, input_shape=tuple(shape))
    return model


def _figures(result: Any) -> str:
    d = result.to_dict()
    lat = d["candidate"]["latency_ms"]
    cond = d.get("conditions") or {}
    lo, hi = d["candidate"]["metric_ci_ms"]
    lines = [
        d["summary"],
        f"measured: p50 {lat['p50']:.4g} ms, p90 {lat['p90']:.4g} ms, p99 {lat['p99']:.4g} ms, "
        f"mean {lat['mean']:.4g} ms, std {lat['std']:.4g} ms, n={lat['n']}; "
        f"{d['metric']} confidence interval {lo:.4g}..{hi:.4g} ms",
        f"on: {cond.get('cpu_model')}, {cond.get('runtime')} {cond.get('runtime_version')}, "
        f"threads {cond.get('threads')}, {cond.get('precision')}",
    ]
    return "\n".join(lines)


def assert_latency(
    model: Any,
    target: str | None = None,
    max_ms: float | None = None,
    metric: str | None = None,
    *,
    baseline: str | None = None,
    baseline_model: Any = None,
    max_regression: float | str | None = None,
    shape: tuple[int, ...] | None = None,
    warmup: int | None = None,
    iterations: int | None = None,
    min_time_s: float | None = None,
    alpha: float | None = None,
    blocks: int | None = None,
    max_blocks: int | None = None,
    per_node: bool = False,
    use_project_config: bool = True,
) -> Any:
    """Measure `model` on `target` and fail the calling test unless it is within `max_ms` (and/or not
    slower than `baseline` / `baseline_model` by more than `max_regression`). Returns the CheckResult.

    `model`: a model spec, an .onnx path, a run directory, or a torch.nn.Module (with `shape`). Values left
    as None come from `[tool.edgeprune]` in the project's pyproject.toml, then the built-in defaults.
    """
    from edgeprune.check import DEFAULT_BLOCKS, CheckConfig, check
    from edgeprune.project_config import ProjectConfig, load_project_config
    from edgeprune.stats import DEFAULT_ALPHA, parse_fraction

    project = load_project_config() if use_project_config else ProjectConfig()

    def pick(value: Any, key: str, default: Any = None) -> Any:
        return value if value is not None else project.get(key, default)

    has_baseline = baseline is not None or baseline_model is not None
    if max_ms is None and not has_baseline and project.get("latency_ms") is None:
        raise ValueError("assert_latency: give max_ms=..., or baseline= / baseline_model= to compare with")
    config = CheckConfig(
        model=_loaded(model, shape),
        target=pick(target, "target", "cpu"),
        latency_ms=max_ms if max_ms is not None or has_baseline else project.get("latency_ms"),
        baseline=baseline,
        baseline_model=_loaded(baseline_model, shape) if baseline_model is not None else None,
        max_regression=parse_fraction(pick(max_regression, "max_regression", 0.05)),
        metric=pick(metric, "metric"),
        alpha=pick(alpha, "alpha", DEFAULT_ALPHA),
        blocks=pick(blocks, "blocks", DEFAULT_BLOCKS),
        max_blocks=pick(max_blocks, "max_blocks"),
        shape=tuple(shape) if shape else None,
        warmup=pick(warmup, "warmup"),
        iterations=pick(iterations, "iterations"),
        min_time_s=pick(min_time_s, "min_time_s"),
        per_node=per_node,
    )
    result = check(config)
    if not result.passed:
        pytest.fail("edgeprune latency check failed\n" + _figures(result), pytrace=False)
    return result


@pytest.fixture(name="assert_latency")
def _assert_latency_fixture() -> Any:
    """The `assert_latency` helper as a fixture."""
    return assert_latency
