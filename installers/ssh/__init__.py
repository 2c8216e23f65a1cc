"""kai's SSH runner (docs/architecture.md §4): paramiko, one connection per host, ≤ 10 channels each.

Jobs run through kai-exec.sh, an agent started on an exec channel without a PTY whose command line
never changes (`[sudo … --] bash -c '<kai-exec.sh>'`); env, secrets, scripts and files travel on
stdin as one frame per job, so nothing secret reaches a command line and no spec value can become
shell code. An agent that reported its job cleanly and then said it is ready takes the host's
next job: one SSH session, one sudo and one copy of lib.sh per host and run instead of per step.
Host keys are verified (known_hosts or pinned SHA256 fingerprints); unknown or changed keys fail
at once, as do authentication failures; only transport-level failures are retried.

    target.py      what the runner is told and answers: SSHTarget, RemoteJob, JobResult, errors
    keys.py        host key verification and the client's key
    frame.py       the wire: command line, job frames, markers (pure)
    agent.py       one kai-exec.sh agent: readiness, one job streamed to its end
    connection.py  one host: connect (with retries), channel slots, the agent pool, run_job
    local.py       the local machine as a node: the same agent as a local process (no SSH)
    fleet.py       the connections of a run, bastions shared
"""

from installers.ssh.agent import CANCEL_EXIT, TIMEOUT_EXIT
from installers.ssh.connection import MAX_CHANNELS, MAX_IDLE_AGENTS, Connection
from installers.ssh.fleet import Fleet
from installers.ssh.frame import build_frame, exec_command, kai_exec_text, kept_parts
from installers.ssh.local import LocalConnection, LocalTarget
from installers.ssh.target import (
    FINGERPRINT, ConnectError, ConnectionLostError, HostKeyError, JobResult, RemoteJob, SSHTarget,
)

__all__ = [
    "CANCEL_EXIT", "FINGERPRINT", "MAX_CHANNELS", "MAX_IDLE_AGENTS", "TIMEOUT_EXIT",
    "ConnectError", "Connection", "ConnectionLostError", "Fleet", "HostKeyError", "JobResult",
    "LocalConnection", "LocalTarget", "RemoteJob", "SSHTarget", "build_frame", "exec_command",
    "kai_exec_text", "kept_parts",
]
