"""Progress on stderr: rich bars on a terminal, a plain line per step otherwise, nothing when quiet.

    with Progress(len(rounds), "pruning rounds") as bar:
        for r in rounds:
            bar.update(description=f"round {r}: fine-tuning")
            ...
            bar.advance()

A Progress opened inside another (epochs inside a round) adds its bar under the outer one on the
same live display: rich allows one live display at a time.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from . import log as _log

_live: list[Any] = []  # the rich.progress.Progress on screen, while any bar is open


def _elapsed(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """A progress bar for `total` steps (None: unknown); see the module doc for the three modes.

    enabled: False silences it; None (default) follows `log.set_quiet` (`-q`, `--format json`).
    stream: where plain lines go (default sys.stderr); console: a rich Console to draw bars on
    (default: one on stderr, used only when stderr is a terminal).
    """

    def __init__(self, total: int | None, description: str, *, enabled: bool | None = None,
                 stream: TextIO | None = None, console: Any = None):
        self.total = total
        self.description = description
        self.completed = 0
        self.enabled = (not _log._quiet) if enabled is None else enabled
        self._stream = stream
        self._console = console
        self._started = time.perf_counter()
        self._rich: Any = None
        self._task: Any = None
        self._owner = False
        self._mode = self.mode

    @property
    def mode(self) -> str:
        """'quiet', 'bar' (rich, on a terminal) or 'lines' (plain text)."""
        if not self.enabled:
            return "quiet"
        if self._console is not None:
            return "bar" if self._console.is_terminal else "lines"
        return "bar" if _isatty(self._stream or sys.stderr) else "lines"

    def __enter__(self) -> Progress:
        self._started = time.perf_counter()
        if self._mode == "bar":
            self._open_bar()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._rich is None:
            return
        if self._owner:
            self._rich.stop()
            _live.remove(self._rich)
        else:
            self._rich.remove_task(self._task)
        self._rich = None

    def _open_bar(self) -> None:
        if _live:  # nested: one more row on the display already showing
            self._rich = _live[-1]
        else:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            console = self._console or Console(file=self._stream or sys.stderr)
            self._rich = RichProgress(
                SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
                MofNCompleteColumn(), TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("left"),
                TimeRemainingColumn(), console=console, transient=False,
            )
            self._rich.start()
            _live.append(self._rich)
            self._owner = True
        self._task = self._rich.add_task(self.description, total=self.total)

    def advance(self, steps: int = 1, description: str | None = None) -> None:
        """One (or `steps`) more done; a plain-line progress prints a line here."""
        self.completed += steps
        if description is not None:
            self.description = description
        if self._rich is not None:
            self._rich.update(self._task, advance=steps, description=self.description)
        elif self.enabled and self._mode == "lines":
            self._line()

    def update(self, *, description: str | None = None, total: int | None = None) -> None:
        """Say what is happening now (no line in plain mode: lines mark finished steps)."""
        if description is not None:
            self.description = description
        if total is not None:
            self.total = total
        if self._rich is not None:
            self._rich.update(self._task, description=self.description, total=self.total)

    def _line(self) -> None:
        spent = time.perf_counter() - self._started
        count = f"{self.completed}/{self.total}" if self.total else f"{self.completed}"
        left = ""
        if self.total and 0 < self.completed < self.total:
            left = f", ~{_elapsed(spent / self.completed * (self.total - self.completed))} left"
        stream = self._stream or sys.stderr
        print(f"{self.description}: {count} ({_elapsed(spent)} elapsed{left})", file=stream, flush=True)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def training_callback(bar: Progress) -> Any:
    """A `progress` callback for edgeprune.training that drives `bar` (opened with total = epochs).

    On a terminal the bar moves per batch (its total becomes epochs x batches once known); in plain-line
    mode only finished epochs print, since a line per batch would bury the log.
    """
    label = bar.description  # the bar's own description changes with every step

    def on_batch(p: Any) -> None:
        text = f"{label}: epoch {p.epoch + 1}/{p.epochs}, loss {p.loss:.3f}"
        if bar.mode == "bar" and p.batches:
            if bar.total != p.epochs * p.batches:
                bar.update(total=p.epochs * p.batches)
            bar.advance(description=text)
        elif p.batches is None or p.batch + 1 == p.batches:
            bar.advance(description=text)

    return on_batch
