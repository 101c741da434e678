"""Project defaults from `[tool.edgeprune]` in the user's pyproject.toml (found upward from the CWD).

    [tool.edgeprune]
    model = "zoo:cifar_resnet20"      # MODEL when the command line gives none
    target = "cpu"
    latency_ms = 2.0                   # absolute budget
    baseline = "perf/baseline.json"    # stored baseline (paths are relative to pyproject.toml)
    metric = "p50"
    max_regression = "5%"              # or 0.05

Command-line options override these values; these override the built-in defaults.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EdgepruneError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PYPROJECT = "pyproject.toml"


def _str(key: str, value: Any, root: Path) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _path(key: str, value: Any, root: Path) -> str:
    return str(root / _str(key, value, root))


def _model_spec(key: str, value: Any, root: Path) -> str:
    """Model specs name files relative to pyproject.toml; zoo:/torchvision: names stay as they are."""
    text = _str(key, value, root)
    if text.startswith(("zoo:", "torchvision:")):
        return text
    if ".py:" in text:
        file_part, _, func = text.rpartition(":")
        return f"{root / file_part}:{func}"
    return str(root / text)


def _positive(key: str, value: Any, root: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError("must be a number > 0")
    return float(value)


def _count(key: str, value: Any, root: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("must be an integer >= 0")
    return value


def _fraction(key: str, value: Any, root: Path) -> float:
    from .stats import parse_fraction

    if isinstance(value, bool):
        raise ValueError("must be a percentage such as \"5%\" or a fraction such as 0.05")
    return parse_fraction(value)


def _metric(key: str, value: Any, root: Path) -> str:
    from .stats import METRICS

    if value not in METRICS:
        raise ValueError(f"must be one of {', '.join(METRICS)}")
    return value


def _string_list(key: str, value: Any, root: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of strings")
    return tuple(value)


# key -> validator(key, value, pyproject directory) -> value; a new setting is one line here
KEYS: dict[str, Callable[[str, Any, Path], Any]] = {
    "model": _model_spec,
    "target": _str,
    "shape": _str,
    "weights": _path,
    "latency_ms": _positive,
    "baseline": _path,
    "baseline_model": _model_spec,
    "metric": _metric,
    "max_regression": _fraction,
    "alpha": _positive,
    "blocks": _count,
    "max_blocks": _count,
    "warmup": _count,
    "iterations": _count,
    "min_time_s": _positive,
    "ignore_conditions": _string_list,
    "junit": _path,
    "summary": _path,
    "benchmark_json": _path,
}


@dataclass(frozen=True)
class ProjectConfig:
    """Validated `[tool.edgeprune]` values; `unknown` lists keys this version does not read."""

    path: Path | None = None
    values: dict[str, Any] = field(default_factory=dict)
    unknown: tuple[str, ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


def find_pyproject(start: str | Path | None = None) -> Path | None:
    """The nearest pyproject.toml in `start` (default: the CWD) or one of its parents."""
    here = Path(start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / PYPROJECT
        if candidate.is_file():
            return candidate
    return None


def parse_table(table: dict[str, Any], where: str, root: Path) -> ProjectConfig:
    values, unknown = {}, []
    for key, value in table.items():
        if isinstance(value, dict):  # sub-tables such as [tool.edgeprune.prune] belong to other commands
            continue
        validate = KEYS.get(key)
        if validate is None:
            unknown.append(key)
            continue
        try:
            values[key] = validate(key, value, root)
        except ValueError as exc:
            raise EdgepruneError(f"{where} [tool.edgeprune] {key} = {value!r}: {exc}") from None
    return ProjectConfig(Path(where), values, tuple(unknown))


def load_project_config(path: str | Path | None = None, start: str | Path | None = None) -> ProjectConfig:
    """Read `[tool.edgeprune]` from `path`, or from the nearest pyproject.toml; empty when there is none."""
    found = Path(path) if path else find_pyproject(start)
    if found is None:
        return ProjectConfig()
    if not found.is_file():
        raise EdgepruneError(f"config file {found} does not exist")
    try:
        data = tomllib.loads(found.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgepruneError(f"{found} cannot be read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise EdgepruneError(f"{found} is not valid TOML ({exc})") from exc
    table = (data.get("tool") or {}).get("edgeprune")
    if table is None:
        return ProjectConfig(found)
    if not isinstance(table, dict):
        raise EdgepruneError(f"{found}: [tool.edgeprune] must be a table")
    return parse_table(table, str(found), found.parent.resolve())
