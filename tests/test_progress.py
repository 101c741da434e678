"""The progress facade in its three modes: rich bars on a terminal, plain lines otherwise, silence."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from edgeprune import log
from edgeprune.progress import Progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _steps(bar: Progress, n: int) -> None:
    for i in range(n):
        bar.update(description=f"round {i + 1}")
        bar.advance()


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    with Progress(3, "pruning", stream=out) as bar:
        assert bar.mode == "lines"
        _steps(bar, 3)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # one line per finished step, none for update()
    assert re.fullmatch(r"round 1: 1/3 \(\d+:\d\d elapsed, ~\d+:\d\d left\)", lines[0])
    assert re.fullmatch(r"round 3: 3/3 \(\d+:\d\d elapsed\)", lines[2])  # nothing left to estimate


def test_unknown_total_counts_up():
    out = io.StringIO()
    with Progress(None, "profiling", stream=out) as bar:
        bar.advance()
        bar.advance()
    assert out.getvalue().splitlines()[-1].startswith("profiling: 2 (")


def test_rich_bar_on_a_terminal_with_nested_bars():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120, color_system=None)
    with Progress(2, "pruning rounds", console=console) as outer:
        assert outer.mode == "bar"
        with Progress(3, "fine-tuning", console=console) as inner:
            for _ in range(3):
                inner.advance()
        outer.advance(2, description="pruning rounds (done)")
    out = buf.getvalue()
    assert "fine-tuning" in out and "0/3" in out  # the inner bar shared the outer's live display
    assert "pruning rounds (done)" in out and "2/2" in out
    assert "elapsed" in out and "left" in out
    from edgeprune.progress import _live

    assert not _live  # the display is closed when the outer bar ends


def test_a_tty_stream_gets_a_bar_and_a_pipe_does_not():
    assert Progress(1, "x", stream=_Tty()).mode == "bar"
    assert Progress(1, "x", stream=io.StringIO()).mode == "lines"


@pytest.mark.parametrize("how", ["enabled", "quiet"])
def test_silent_when_disabled_or_quiet(how, monkeypatch):
    out = _Tty()
    if how == "quiet":
        monkeypatch.setattr(log, "_quiet", True)
        bar = Progress(3, "pruning", stream=out)
    else:
        bar = Progress(3, "pruning", stream=out, enabled=False)
    with bar:
        assert bar.mode == "quiet"
        _steps(bar, 3)
    assert out.getvalue() == "" and bar.completed == 3


def test_bar_closes_on_error():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100)
    with pytest.raises(RuntimeError), Progress(3, "pruning", console=console) as bar:
        bar.advance()
        raise RuntimeError("boom")
    from edgeprune.progress import _live

    assert not _live


def test_training_callback_prints_a_line_per_epoch_not_per_batch():
    from edgeprune.progress import training_callback
    from edgeprune.training import TrainProgress

    out = io.StringIO()
    with Progress(2, "fine-tuning", stream=out) as bar:
        cb = training_callback(bar)
        for epoch in range(2):
            for b in range(5):
                cb(TrainProgress(epoch, 2, b, 5, loss=1.0 / (b + 1), lr=0.1))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("fine-tuning: epoch 1/2, loss 0.200: 1/2")


def test_training_callback_moves_a_terminal_bar_per_batch():
    from edgeprune.progress import training_callback
    from edgeprune.training import TrainProgress

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120, color_system=None)
    with Progress(2, "fine-tuning", console=console) as bar:
        cb = training_callback(bar)
        for b in range(4):
            cb(TrainProgress(0, 2, b, 4, loss=0.5, lr=0.1))
        assert bar.total == 8 and bar.completed == 4


def test_a_json_command_does_not_leave_the_process_quiet():
    from click.testing import CliRunner

    from edgeprune.cli import cli

    result = CliRunner().invoke(cli, ["targets", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert log._quiet is False  # the next library call in this process still shows progress
