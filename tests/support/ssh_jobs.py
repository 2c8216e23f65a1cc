"""Helpers for the SSH runner's tests: jobs, remote process lookups, a connection."""

from __future__ import annotations

import random
import subprocess

import pytest

from installers.ssh import Connection, RemoteJob

LIB = "kai_lib_loaded=1\n"
# a job that tells which agent ran it: the job's bash is exec'd from a subshell of the agent
PPID = 'echo "$PPID" > "$KAI_OUT_DIR/ppid"; '


def job(script: str, *, step="test-step", env=None, secret_env=None, files=None, timeout_s=30.0):
    return RemoteJob(step=step, script="step.sh", script_text="set -euo pipefail\n" + script,
                     lib_text=LIB, env=env or {}, secret_env=secret_env or {}, files=files or {},
                     timeout_s=timeout_s)


def agent_pid(res) -> int:
    """The agent that ran a job started with PPID."""
    return int(res.outputs["ppid"])


def marker() -> int:
    """A sleep duration nobody else uses, to find our remote processes with pgrep."""
    return random.randint(10_000_000, 99_999_999)


def pids_matching(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


@pytest.fixture
def conn(sshd):
    c = Connection(sshd.target())
    yield c
    c.close()
