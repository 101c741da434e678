"""Measuring on a remote device over SSH: connection, preflight, and the profile runner.

    with RemoteRunner(target) as runner:          # one SSH master + one preflight for the whole run
        profile = runner.profile(model_path, ["--threads", "4"])
"""

from __future__ import annotations

from .preflight import REQUIREMENTS, preflight
from .runner import FILE_OPTIONS, RemoteRunner, profile_remote, validate_profile
from .ssh import (
    AuthenticationFailed,
    ConnectionLost,
    HostKeyError,
    HostUnreachable,
    RemoteTimeout,
    SSHConnection,
    SSHError,
    classify_ssh_failure,
    remote_command,
)

__all__ = [
    "AuthenticationFailed",
    "ConnectionLost",
    "FILE_OPTIONS",
    "HostKeyError",
    "HostUnreachable",
    "REQUIREMENTS",
    "RemoteRunner",
    "RemoteTimeout",
    "SSHConnection",
    "SSHError",
    "classify_ssh_failure",
    "preflight",
    "profile_remote",
    "remote_command",
    "validate_profile",
]
