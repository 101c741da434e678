"""A prune run's output directory: atomic round checkpoints, the run state, resume and refusal rules.

Layout:
  state.json              run state (config, controller, history, best round); rewritten atomically
  rounds/round_NNN/       manifest.json + weights.pt of each finished round (written to a temp dir, renamed)
  manifest.json, weights.pt, source.json, model.onnx, report.json   the final artifacts
A round directory appears whole or not at all, and state.json names only finished rounds, so a run
killed at any moment resumes from its last complete round.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import EdgepruneError
from .io import write_json_atomic

STATE_NAME = "state.json"
STATE_KIND = "edgeprune.run_state"
# Files a prune run writes; --force removes only these, never anything else a user keeps there.
RUN_FILES = ("state.json", "manifest.json", "weights.pt", "source.json", "model.onnx", "model.onnx.data",
             "report.json", "report.html", "model.onnx.json")
RUN_DIRS = ("rounds", "plots")


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def state_path(self) -> Path:
        return self.path / STATE_NAME

    def round_dir(self, round_id: int) -> Path:
        return self.path / "rounds" / f"round_{round_id:03d}"

    def holds_run(self) -> bool:
        return self.state_path.exists() or (self.path / "manifest.json").exists()

    def prepare(self, *, resume: bool, force: bool) -> dict[str, Any] | None:
        """Check the directory is ours to use; return the saved state when resuming."""
        if self.path.exists() and not self.path.is_dir():
            raise EdgepruneError(f"output {self.path} exists and is not a directory")
        if resume:
            if not self.state_path.exists():
                raise EdgepruneError(f"--resume: {self.path} holds no run to resume (no {STATE_NAME})")
            return self.read_state()
        if self.holds_run():
            if not force:
                raise EdgepruneError(
                    f"output {self.path} already holds a prune run; pass --resume to continue it or --force "
                    "to replace it (or choose another -o)"
                )
            self.clear()
        elif self.path.exists() and any(self.path.iterdir()) and not force:
            raise EdgepruneError(f"output {self.path} is not empty; choose an empty or new directory, or --force")
        self.path.mkdir(parents=True, exist_ok=True)
        return None

    def clear(self) -> None:
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for name in RUN_DIRS:
            shutil.rmtree(self.path / name, ignore_errors=True)

    def read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise EdgepruneError(f"{self.state_path} is unreadable ({exc}); start again with --force") from exc
        if state.get("kind") != STATE_KIND:
            raise EdgepruneError(f"{self.state_path} is not an edgeprune run state; start again with --force")
        return state

    def write_state(self, state: dict[str, Any]) -> None:
        write_json_atomic(self.state_path, {"kind": STATE_KIND, **state})

    def write_round(self, round_id: int, model, manifest: dict[str, Any], metrics: dict[str, Any]) -> Path:
        """Write one round's checkpoint whole: into a temp dir first, then renamed into place."""
        from .pruning.manifest import save_pruned

        final = self.round_dir(round_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
        try:
            save_pruned(model, manifest, tmp)
            write_json_atomic(tmp / "metrics.json", metrics)
            if final.exists():  # left by a run killed after the rename but before state.json named it
                shutil.rmtree(final)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final
