"""The wire between the runner and kai-exec.sh (docs/architecture.md §4) — pure, no I/O.

Out (stdin): the constant command line, the sudo password line when sudo needs one, then per job
`KAI-PART <name> <bytes>\\n<bytes>` … `KAI-RUN <script>\\n`; `KAI-CANCEL\\n` while a job runs.
In (stdout): the job's lines, then its markers (`\\x1ekai-out`, `\\x1ekai-exit`) and, between jobs,
the agent's `\\x1ekai-ready`.
"""

from __future__ import annotations

import base64
import collections
import functools
import hashlib
import re
import shlex
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable, Mapping

from installers.ssh.target import RemoteJob, SSHTarget

TAIL_LINES = 40
MARK = "\x1e"
READY_LINE = MARK + "kai-ready"  # kai-exec.sh: "send me the next job"
CANCEL_LINE = b"KAI-CANCEL\n"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FILE_NAME = re.compile(r"[A-Za-z0-9._-]+")
_RESERVED_ENV = frozenset({"KAI_WORK", "KAI_FILES_DIR", "KAI_OUT_DIR"})


def kai_exec_text() -> str:
    return resources.files("installers").joinpath("scripts/kai-exec.sh").read_text()


@functools.lru_cache(maxsize=3)
def exec_command(sudo: str) -> str:
    """The agent's command line: the same for every job and host (nothing of the spec in it)."""
    return sudo_prefix(sudo) + "bash -c " + shlex.quote(kai_exec_text())


def sudo_prefix(sudo: str) -> str:
    return {"none": "", "nopasswd": "sudo -n -- ", "password": "sudo -k -S -p '' -- "}[sudo]


def sudo_stdin(target: SSHTarget) -> bytes:
    """Password line for `sudo -S`, plus two pad lines: if the password is wrong, sudo spends its
    remaining default tries (3) on the pads instead of on the frame; kai-exec skips them."""
    if target.sudo != "password":
        return b""
    return target.sudo_password.encode() + b"\nKAI-PAD\nKAI-PAD\n"


@functools.lru_cache(maxsize=256)
def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def kept_parts(job: RemoteJob) -> dict[str, str]:
    """The parts an agent keeps for later jobs (lib.sh and the script): name -> digest."""
    return {"lib.sh": _digest(job.lib_text), job.script: _digest(job.script_text)}


def build_frame(job: RemoteJob, agent_has: Mapping[str, str] | None = None) -> bytes:
    """A job's stdin frame (without the sudo password line). `agent_has` (part name -> digest)
    leaves out what the agent already keeps."""
    where = f"RemoteJob({job.step!r})"
    if not _FILE_NAME.fullmatch(job.script) or job.script in ("env", "lib.sh") or ".." in job.script:
        raise ValueError(f"{where}.script: {job.script!r} is not a plain script file name")
    env = {"KAI_STEP": job.step, **job.env}
    lines = []
    for source, mapping in (("env", env), ("secret_env", job.secret_env)):
        for k, v in mapping.items():
            if not _ENV_NAME.fullmatch(k):
                raise ValueError(f"{where}.{source}: {k!r} is not a valid variable name")
            if k in _RESERVED_ENV:
                raise ValueError(f"{where}.{source}: {k} is set by kai-exec.sh itself")
            if "\0" in v:
                raise ValueError(f"{where}.{source}[{k}]: contains a NUL byte")
            lines.append(f"{k}={shlex.quote(v)}\n")
    parts: list[tuple[str, bytes]] = [("env", "".join(lines).encode())]
    has = agent_has or {}
    for name, text in (("lib.sh", job.lib_text), (job.script, job.script_text)):
        if has.get(name) != _digest(text):
            parts.append((name, text.encode()))
    for name, data in job.files.items():
        if not _FILE_NAME.fullmatch(name) or ".." in name:
            raise ValueError(f"{where}.files: {name!r} is not a plain file name")
        parts.append((f"files/{name}", data if isinstance(data, bytes) else data.encode()))
    out = bytearray()
    for name, data in parts:
        out += f"KAI-PART {name} {len(data)}\n".encode()
        out += data
    out += f"KAI-RUN {job.script}\n".encode()
    return bytes(out)


class Lines:
    """Splits a byte stream into text lines as it arrives."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        if b"\n" not in self._buf:
            return []
        *done, self._buf = self._buf.split(b"\n")
        return [d.decode("utf-8", "replace").rstrip("\r") for d in done]

    def flush(self) -> list[str]:
        rest, self._buf = self._buf, b""
        return [rest.decode("utf-8", "replace").rstrip("\r")] if rest else []


@dataclass
class JobStream:
    """What the agent said about one job: its log lines, and the markers (stripped from them)."""

    on_line: Callable[[str], None] | None
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))
    outputs: dict[str, bytes] = field(default_factory=dict)
    started: bool = False
    exit_code: int | None = None
    bad_markers: int = 0

    def stdout_line(self, line: str) -> None:
        if line.startswith(MARK + "kai-"):
            self._marker(line[1:])
        else:
            self.log(line)

    def log(self, line: str) -> None:
        self.tail.append(line)
        if self.on_line is not None:
            self.on_line(line)

    def _marker(self, text: str) -> None:
        kind, _, rest = text.partition(" ")
        try:
            if kind == "kai-start":
                self.started = True
            elif kind == "kai-exit":
                self.exit_code = int(rest)
            elif kind == "kai-out":
                name, _, b64 = rest.partition(" ")
                self.outputs[name] = base64.b64decode(b64, validate=True)
            else:
                self.bad_markers += 1  # kai-ready inside a job, or a marker we do not know
        except ValueError:
            self.bad_markers += 1
