"""What the runner is told and what it answers: where a node is, a job, a job's result, errors."""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass, field
from typing import Literal, Mapping

import paramiko

from installers.patterns import FINGERPRINT  # the spec validates pins with the same pattern


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to reach one node (spec defaults merged with per-node overrides)."""

    node: str
    host: str
    port: int = 22
    user: str = "root"
    key_file: str | None = None
    key_text: str | None = field(default=None, repr=False)  # secret
    key_passphrase: str | None = field(default=None, repr=False)  # secret
    password: str | None = field(default=None, repr=False)  # secret
    allow_agent: bool = True
    sudo: Literal["none", "nopasswd", "password"] = "none"
    sudo_password: str | None = field(default=None, repr=False)  # secret
    bastion: "SSHTarget | None" = None
    known_hosts: str | None = None  # default ~/.ssh/known_hosts
    host_key_fingerprints: tuple[str, ...] = ()  # pinned "SHA256:…"; replaces known_hosts
    accept_new: bool = False
    connect_timeout: float = 10
    connect_retries: int = 3  # extra attempts after the first
    connect_backoff_s: float = 1.0  # first retry delay; doubles each retry, up to a cap

    def __post_init__(self) -> None:
        where = f"SSHTarget({self.node!r})"
        if not self.host:
            raise ValueError(f"{where}.host: must not be empty")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"{where}.port: {self.port} is not a TCP port (1-65535)")
        if not self.user:
            raise ValueError(f"{where}.user: must not be empty")
        if self.sudo not in ("none", "nopasswd", "password"):
            raise ValueError(f"{where}.sudo: {self.sudo!r} is not one of none, nopasswd, password")
        if self.sudo == "password" and not self.sudo_password:
            raise ValueError(f"{where}.sudo_password: required when sudo is 'password'")
        if self.sudo_password is not None and "\n" in self.sudo_password:
            raise ValueError(f"{where}.sudo_password: must be a single line")
        if self.key_file and self.key_text:
            raise ValueError(f"{where}.key_text: give key_file or key_text, not both")
        for fp in self.host_key_fingerprints:
            if not FINGERPRINT.fullmatch(fp):
                raise ValueError(
                    f"{where}.host_key_fingerprints: {fp!r} is not an OpenSSH SHA256 fingerprint "
                    "(SHA256: followed by 43 base64 characters, as `ssh-keygen -lf` prints)"
                )
        if self.connect_timeout <= 0:
            raise ValueError(f"{where}.connect_timeout: must be > 0")
        if self.connect_retries < 0:
            raise ValueError(f"{where}.connect_retries: must be >= 0")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def known_hosts_path(self) -> str:
        return os.path.expanduser(self.known_hosts or "~/.ssh/known_hosts")

    def secrets(self) -> tuple[str, ...]:
        return tuple(
            s
            for s in (self.key_text, self.key_passphrase, self.password, self.sudo_password)
            if s
        )


@dataclass(frozen=True)
class RemoteJob:
    step: str
    script: str  # file name, e.g. "containerd.sh"
    script_text: str
    lib_text: str
    env: Mapping[str, str]
    secret_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    files: Mapping[str, bytes | str] = field(default_factory=dict)
    timeout_s: float | None = None


@dataclass
class JobResult:
    node: str
    exit_code: int
    duration_s: float
    tail: list[str]
    outputs: dict[str, bytes]
    timed_out: bool = False
    cancelled: bool = False
    error: str | None = None  # why kai-exec did not report, e.g. sudo refused

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.cancelled


class HostKeyError(Exception):
    """Unknown or changed host key. Never retried."""


class ConnectError(Exception):
    """Could not connect (after retries) or could not authenticate (at once)."""

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


class ConnectionLostError(ConnectError):
    """The connection dropped during a job; the task layer may retry the step."""


def describe(e: BaseException | None) -> str:
    """A network error as a person reads it: "Connection refused", not a class path."""
    if e is None:
        return "unknown error"
    if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError):
        causes = {os.strerror(x.errno) if x.errno else str(x) for x in e.errors.values()}
        return "; ".join(sorted(causes))
    if isinstance(e, socket.timeout):
        return "timed out"
    if isinstance(e, OSError) and e.errno in errno.errorcode:
        return f"{os.strerror(e.errno)}"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
