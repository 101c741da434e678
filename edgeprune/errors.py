"""The exception types the CLI turns into exit codes."""

from __future__ import annotations


class EdgepruneError(Exception):
    """A user error: bad input or an unusable environment.

    The message names the bad input and the fix. The CLI prints it on one line and exits 1, no traceback.
    """

    exit_code = 1


class ConstraintNotMet(EdgepruneError):
    """A deadline was missed or a latency regression was found (exit 3).

    Carries the machine-readable result so the CLI can still print it on stdout.
    """

    exit_code = 3

    def __init__(self, message: str, result: object | None = None):
        super().__init__(message)
        self.result = result
