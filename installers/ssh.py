"""kai's SSH runner (docs/architecture.md §4): paramiko, one connection per host, ≤ 10 channels each.

Jobs run through kai-exec.sh, an agent started on an exec channel without a PTY whose command line
never changes (`[sudo … --] bash -c '<kai-exec.sh>'`); env, secrets, scripts and files travel on
stdin as one frame per job, so nothing secret reaches a command line and no spec value can become
shell code. An agent that ended its job cleanly takes the host's next job: one SSH session, one
sudo and one copy of lib.sh per host and run instead of per step (benchmarks/: a session plus a
fresh bootstrap cost the node ~25 ms of CPU per step, which at 200 hosts on 2 cores is the run).
Host keys are verified (known_hosts or pinned SHA256 fingerprints); unknown or changed keys fail
at once, as do authentication failures; only transport-level failures are retried.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import errno
import fcntl
import functools
import hashlib
import io
import logging
import os
import re
import select
import shlex
import socket
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable, Literal, Mapping

import paramiko

log = logging.getLogger(__name__)

MAX_CHANNELS = 10  # per connection; also OpenSSH's default MaxSessions
TAIL_LINES = 40
TIMEOUT_EXIT = 124
CANCEL_EXIT = 130
STOP_GRACE_S = 8.0  # after KAI-CANCEL: kai-exec needs up to 5 s to TERM/KILL the group
MARK = "\x1e"
READY_LINE = MARK + "kai-ready"  # kai-exec.sh: "send me the next job"
MAX_IDLE_AGENTS = 2  # per connection: steps run one after another, so one is nearly always enough
# How long an agent may take to say it is ready. A new one: sudo with a wrong password spends
# three tries of ~2 s each before it gives up, so this must be well above that. An idle one
# tidied up right after its last job; one that has not said so by then is retired, not waited for.
NEW_AGENT_READY_S = 30.0
IDLE_AGENT_READY_S = 5.0

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")
_RESERVED_ENV = frozenset({"KAI_WORK", "KAI_FILES_DIR", "KAI_OUT_DIR"})


# --------------------------------------------------------------------------------------------
# Contract types
# --------------------------------------------------------------------------------------------


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
    connect_backoff_s: float = 1.0  # (addition) first retry delay; doubles each retry

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
            if not _FINGERPRINT.match(fp):
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
    error: str | None = None  # (addition) why kai-exec did not report, e.g. sudo refused

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
    """(addition) The connection dropped during a job; the task layer may retry the step."""


# --------------------------------------------------------------------------------------------
# Secrets never reach paramiko's log output
# --------------------------------------------------------------------------------------------


class _RedactSecrets(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: set[str] = set()

    def add(self, values) -> None:
        with self._lock:
            self._secrets.update(v for v in values if v and len(v) >= 4)

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._secrets
        msg = record.getMessage()
        if record.levelno >= logging.ERROR and "open FAILED" in msg:
            # sshd frees a session slot a moment after a channel closes; the runner retries the
            # open and reports itself if it gives up, so this is not an error worth showing
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        redacted = msg
        for s in list(secrets):
            if s in redacted:
                redacted = redacted.replace(s, "***")
        if redacted != msg:
            record.msg, record.args = redacted, None
        return True


_redactor = _RedactSecrets()
_guarded_loggers: set[str] = set()


def _guard_paramiko_logs(secrets) -> None:
    """Attach the redacting filter to every paramiko logger (filters do not inherit)."""
    _redactor.add(secrets)
    names = ["paramiko", "paramiko.transport", "paramiko.transport.sftp", "paramiko.hostkeys"]
    names += [n for n in list(logging.root.manager.loggerDict) if n.startswith("paramiko")]
    for name in names:
        if name not in _guarded_loggers:
            logging.getLogger(name).addFilter(_redactor)
            _guarded_loggers.add(name)


# --------------------------------------------------------------------------------------------
# Host key verification
# --------------------------------------------------------------------------------------------


def _hostkey_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


_known_hosts_cache: dict[str, tuple[tuple[int, int], paramiko.HostKeys]] = {}
_known_hosts_lock = threading.Lock()


def _load_known_hosts(path: str) -> paramiko.HostKeys:
    """Parsed once per file version: 200 connections each parsing a 200-line file was O(N²)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return paramiko.HostKeys()
    version = (st.st_mtime_ns, st.st_size)  # accept_new appends: a new version is re-read
    with _known_hosts_lock:
        cached = _known_hosts_cache.get(path)
        if cached is None or cached[0] != version:
            keys = paramiko.HostKeys()
            keys.load(path)  # handles hashed entries and [host]:port
            cached = _known_hosts_cache[path] = (version, keys)
        return cached[1]


def _append_known_host(path: str, name: str, key: paramiko.PKey) -> None:
    """Append one line, like OpenSSH's accept-new; locked so parallel connects don't interleave."""
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{name} {key.get_name()} {key.get_base64()}\n".encode())
    finally:
        os.close(fd)


class _VerifyHostKey(paramiko.MissingHostKeyPolicy):
    """Called by SSHClient when the key is not in the loaded host keys.

    With pinned fingerprints nothing is loaded, so every key lands here and must match a pin.
    Without pins: accept_new appends the key to known_hosts, otherwise refuse. (A *changed* key
    never gets here: SSHClient raises BadHostKeyException, which we turn into HostKeyError.)
    """

    def __init__(self, target: SSHTarget):
        self.target = target

    def missing_host_key(self, client, hostname, key) -> None:
        t = self.target
        presented = key.fingerprint
        if t.host_key_fingerprints:
            if presented in t.host_key_fingerprints:
                return
            raise HostKeyError(
                f"host key mismatch for {t.node} ({t.address}): expected "
                f"{' or '.join(t.host_key_fingerprints)}, presented {key.get_name()} {presented} "
                "— refusing to connect (fix the pin if the host was really re-keyed)"
            )
        if t.accept_new:
            _append_known_host(t.known_hosts_path, hostname, key)
            log.info("%s: accepted new host key %s %s into %s", t.node, key.get_name(),
                     presented, t.known_hosts_path)
            return
        raise HostKeyError(
            f"unknown host key for {t.node} ({t.address}): presented {key.get_name()} {presented} "
            f"— not in {t.known_hosts_path}. Verify it, then add it to known_hosts "
            f"(ssh-keyscan -p {t.port} {t.host}), pin it in host_key_fingerprints, "
            "or set accept_new"
        )


# --------------------------------------------------------------------------------------------
# Authentication material
# --------------------------------------------------------------------------------------------


def _load_private_key(target: SSHTarget) -> paramiko.PKey | None:
    where = f"SSHTarget({target.node!r})"
    if target.key_text:
        errors = []
        for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
            try:
                return cls.from_private_key(io.StringIO(target.key_text), target.key_passphrase)
            except paramiko.PasswordRequiredException:
                raise ConnectError(f"{where}.key_passphrase: the key in key_text is encrypted",
                                   retryable=False) from None
            except (paramiko.SSHException, ValueError) as e:
                errors.append(f"{cls.__name__}: {type(e).__name__}")
        raise ConnectError(
            f"{where}.key_text: not a readable Ed25519/ECDSA/RSA private key "
            f"(or wrong key_passphrase) [{'; '.join(errors)}]", retryable=False)
    if target.key_file:
        path = os.path.expanduser(target.key_file)
        try:
            return paramiko.PKey.from_path(path, target.key_passphrase)
        except FileNotFoundError:
            raise ConnectError(f"{where}.key_file: {path} does not exist", retryable=False) from None
        except paramiko.PasswordRequiredException:
            raise ConnectError(f"{where}.key_passphrase: {path} is encrypted",
                               retryable=False) from None
        except (paramiko.SSHException, ValueError, OSError) as e:
            raise ConnectError(f"{where}.key_file: cannot load {path}: {type(e).__name__}: {e}",
                               retryable=False) from None
    return None


# --------------------------------------------------------------------------------------------
# The wire frame
# --------------------------------------------------------------------------------------------


def kai_exec_text() -> str:
    return resources.files("installers").joinpath("scripts/kai-exec.sh").read_text()


_KAI_EXEC_CMD: str | None = None


def _exec_command(sudo: str) -> str:
    global _KAI_EXEC_CMD
    if _KAI_EXEC_CMD is None:
        _KAI_EXEC_CMD = "bash -c " + shlex.quote(kai_exec_text())
    return _sudo_prefix(sudo) + _KAI_EXEC_CMD


def _sudo_prefix(sudo: str) -> str:
    return {"none": "", "nopasswd": "sudo -n -- ", "password": "sudo -k -S -p '' -- "}[sudo]


def _sudo_stdin(target: SSHTarget) -> bytes:
    """Password line for `sudo -S`, plus two pad lines: if the password is wrong, sudo spends its
    remaining default tries (3) on the pads instead of on the frame; kai-exec skips them."""
    if target.sudo != "password":
        return b""
    return target.sudo_password.encode() + b"\nKAI-PAD\nKAI-PAD\n"


def _as_bytes(v: bytes | str) -> bytes:
    return v if isinstance(v, bytes) else v.encode()


@functools.lru_cache(maxsize=256)
def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def kept_parts(job: RemoteJob) -> dict[str, str]:
    """The parts an agent keeps for later jobs (lib.sh and the script): name -> digest."""
    return {"lib.sh": _digest(job.lib_text), job.script: _digest(job.script_text)}


def build_frame(job: RemoteJob, agent_has: Mapping[str, str] | None = None) -> bytes:
    """The stdin frame of docs/architecture.md §4 (without the sudo password line).
    `agent_has` (part name -> digest) leaves out what the agent already keeps."""
    where = f"RemoteJob({job.step!r})"
    if not _FILE_NAME.match(job.script) or job.script in ("env", "lib.sh") or ".." in job.script:
        raise ValueError(f"{where}.script: {job.script!r} is not a plain script file name")
    env = {"KAI_STEP": job.step, **job.env}
    lines = []
    for source, mapping in (("env", env), ("secret_env", job.secret_env)):
        for k, v in mapping.items():
            if not _ENV_NAME.match(k):
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
        if not _FILE_NAME.match(name) or ".." in name:
            raise ValueError(f"{where}.files: {name!r} is not a plain file name")
        parts.append((f"files/{name}", _as_bytes(data)))
    out = bytearray()
    for name, data in parts:
        out += f"KAI-PART {name} {len(data)}\n".encode()
        out += data
    out += f"KAI-RUN {job.script}\n".encode()
    return bytes(out)


# --------------------------------------------------------------------------------------------
# Streaming one channel
# --------------------------------------------------------------------------------------------


class _Lines:
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
class _Stream:
    """What one channel said: log lines (markers stripped) and kai-exec's markers."""

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
                self.bad_markers += 1
        except ValueError:
            self.bad_markers += 1


# --------------------------------------------------------------------------------------------
# Connection
# --------------------------------------------------------------------------------------------


class Connection:
    """One SSH connection to one host, opened lazily, reused by all steps, ≤ 10 channels at once."""

    def __init__(self, target: SSHTarget, *, bastion: "Connection | None" = None):
        self.target = target
        self._bastion = bastion
        self._owns_bastion = False
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self._channels = threading.BoundedSemaphore(MAX_CHANNELS)  # open channels, idle agents too
        self._idle: list[_Agent] = []  # agents that ended their last job cleanly
        self._idle_lock = threading.Lock()
        self._closed_event = threading.Event()  # close(): a connect in progress gives up

    # -- connecting ---------------------------------------------------------------------------

    def connect(self) -> paramiko.Transport:
        """Connect if not connected (or if the link died); returns the live transport."""
        with self._lock:
            if self._client is not None:
                t = self._client.get_transport()
                if t is not None and t.is_active():
                    return t
                self._client.close()
                self._client = None
            client = self._connect_with_retries()
            if self._closed_event.is_set():  # closed while we were connecting (a cancelled run): don't leak it
                client.close()
                raise ConnectError(f"connection to {self.target.node} was closed", retryable=False)
            self._client = client
            return client.get_transport()

    def _connect_with_retries(self) -> paramiko.SSHClient:
        t = self.target
        _guard_paramiko_logs(t.secrets())
        pkey = _load_private_key(t)  # config errors: not retried
        attempts = t.connect_retries + 1
        delay = t.connect_backoff_s
        last: Exception | None = None
        for attempt in range(1, attempts + 1):
            if self._closed_event.is_set():
                raise ConnectError(f"connection to {t.node} was closed", retryable=False)
            try:
                return self._connect_once(pkey)
            except (HostKeyError, ConnectError):
                raise
            except paramiko.BadHostKeyException as e:
                raise HostKeyError(
                    f"host key for {t.node} ({t.address}) has CHANGED: expected "
                    f"{e.expected_key.get_name()} {e.expected_key.fingerprint} "
                    f"(from {t.known_hosts_path}), presented {e.key.get_name()} {e.key.fingerprint}"
                    " — possible man-in-the-middle; if the host was re-keyed, remove the old entry "
                    f"(ssh-keygen -R '{_hostkey_name(t.host, t.port)}' -f {t.known_hosts_path})"
                ) from None
            except paramiko.AuthenticationException as e:
                raise ConnectError(
                    f"authentication failed for {t.user}@{t.node} ({t.address}): {e} "
                    f"[methods tried: {self._auth_methods()}]", retryable=False) from None
            except (OSError, EOFError, paramiko.SSHException) as e:
                last = e
                if attempt < attempts:
                    log.info("%s: connect attempt %d/%d failed (%s); retrying in %.1fs",
                             t.node, attempt, attempts, _describe(e), delay)
                    self._closed_event.wait(delay)  # close() cuts the backoff short
                    delay *= 2
        raise ConnectError(
            f"cannot connect to {t.node} ({t.address}) after {attempts} attempt(s): {_describe(last)}"
        )

    def _auth_methods(self) -> str:
        t = self.target
        methods = []
        if t.key_file or t.key_text:
            methods.append("key")
        if t.allow_agent:
            methods.append("agent")
        if t.password:
            methods.append("password")
        return ", ".join(methods) or "none"

    def _connect_once(self, pkey: paramiko.PKey | None) -> paramiko.SSHClient:
        t = self.target
        client = paramiko.SSHClient()
        if not t.host_key_fingerprints:
            # only this host's entries (lookup also matches hashed names)
            name = _hostkey_name(t.host, t.port)
            for ktype, key in (_load_known_hosts(t.known_hosts_path).lookup(name) or {}).items():
                client.get_host_keys().add(name, ktype, key)
        client.set_missing_host_key_policy(_VerifyHostKey(t))
        sock = self._bastion_channel() if t.bastion is not None else None
        try:
            client.connect(
                t.host, port=t.port, username=t.user, password=t.password, pkey=pkey,
                allow_agent=t.allow_agent, look_for_keys=False, timeout=t.connect_timeout,
                banner_timeout=t.connect_timeout, auth_timeout=t.connect_timeout,
                channel_timeout=t.connect_timeout, sock=sock,
            )
        except Exception:
            client.close()
            raise
        transport = client.get_transport()
        transport.set_keepalive(15)  # notice a dead peer even when the job is silent
        transport.set_hexdump(False)  # a hexdump would show the frame (secrets) in clear
        return client

    def _bastion_channel(self) -> paramiko.Channel:
        t = self.target
        if self._bastion is None:
            self._bastion = Connection(t.bastion)
            self._owns_bastion = True
        try:
            return self._bastion.connect().open_channel(
                "direct-tcpip", (t.host, t.port), ("127.0.0.1", 0), timeout=t.connect_timeout)
        except paramiko.ChannelException as e:
            raise ConnectError(
                f"bastion {t.bastion.node} ({t.bastion.address}) refused to forward to "
                f"{t.node} ({t.address}): {e}") from None

    def close(self) -> None:
        # Never wait behind a connect in progress (retries and backoff can take a minute): a
        # cancelled flow must exit at once. That connect sees the event and closes its own client.
        self._closed_event.set()
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for agent in idle:  # EOF on its stdin: the agent removes its directory and exits
            self._discard(agent)
        if self._lock.acquire(timeout=0.5):
            try:
                if self._client is not None:
                    self._client.close()
                    self._client = None
            finally:
                self._lock.release()
        if self._owns_bastion and self._bastion is not None:
            self._bastion.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- running ------------------------------------------------------------------------------

    def run_job(self, job: RemoteJob, on_line: Callable[[str], None] | None = None,
                cancel: threading.Event | None = None) -> JobResult:
        """Run one step script through a kai-exec.sh agent; returns when it ended, timed out or was
        cancelled. Raises ConnectError/HostKeyError (connect) or ConnectionLostError (mid-job)."""
        _guard_paramiko_logs(job.secret_env.values())
        build_frame(job)  # a malformed job fails here, before any channel is opened
        while True:
            agent = self._ready_agent(job.step, on_line, cancel)
            if isinstance(agent, JobResult):
                return agent  # no agent could be started (sudo refused, no bash) or cancelled
            reused = agent.jobs > 0
            stream = _Stream(on_line)
            clean = False
            try:
                frame = build_frame(job, agent.has)
                start = time.monotonic()
                agent.ready = False  # this job uses the readiness the agent announced
                agent.chan.sendall(frame)
                agent.has.update(kept_parts(job))
                agent.jobs += 1
                stop_reason = self._pump(agent.chan, agent.chan.get_transport(), job.step,
                                         stream, cancel, job.timeout_s, start, agent=agent)
                result = self._result(agent.chan, stream, stop_reason, start, agent=True)
                clean = (stop_reason is None and stream.exit_code is not None
                         and not stream.bad_markers)
            except (EOFError, OSError, paramiko.SSHException, ConnectionLostError) as e:
                if reused and not stream.started and self._transport_alive():
                    continue  # it died after saying it was ready (killed just now): a fresh one
                if isinstance(e, ConnectionLostError):
                    raise
                raise ConnectionLostError(
                    f"connection to {self.target.node} ({self.target.address}) lost during step "
                    f"{job.step!r}: {_describe(e)}") from None
            finally:
                self._release(agent, reusable=clean)
            if reused and not stream.started and result.error:
                continue  # the same, seen from its exit status
            return result

    def run(self, command: str, *, sudo: bool = False, timeout_s: float | None = None,
            on_line: Callable[[str], None] | None = None,
            cancel: threading.Event | None = None) -> JobResult:
        """Run a fixed command (never one built from spec values)."""
        mode = self.target.sudo if sudo else "none"
        prefix = _sudo_prefix(mode)
        cmd = f"{prefix}sh -c {shlex.quote(command)}" if prefix else command
        stdin = self.target.sudo_password.encode() + b"\n" if mode == "password" else b""
        return self._run_channel(cmd, stdin, command, on_line, cancel, timeout_s)

    def upload(self, data: bytes, remote_path: str, mode: int = 0o600) -> None:
        """Write a file over SFTP as the SSH user; the mode is set before any data is written."""
        with self._slot():
            transport = self.connect()
            try:
                sftp = paramiko.SFTPClient.from_transport(transport)
                try:
                    with sftp.open(remote_path, "wb") as f:
                        f.chmod(mode)
                        f.write(data)
                finally:
                    sftp.close()
            except (EOFError, paramiko.SSHException) as e:
                raise ConnectionLostError(
                    f"connection to {self.target.node} ({self.target.address}) lost during "
                    f"upload of {remote_path}: {_describe(e)}") from None

    def _run_channel(self, command: str, stdin: bytes, step: str,
                     on_line: Callable[[str], None] | None, cancel: threading.Event | None,
                     timeout_s: float | None) -> JobResult:
        t = self.target
        with self._slot():
            transport = self.connect()
            start = time.monotonic()
            chan = self._open_session(transport, step)
            stream = _Stream(on_line)
            try:
                chan.exec_command(command)
                if stdin:
                    chan.sendall(stdin)
                chan.shutdown_write()
                stop_reason = self._pump(chan, transport, step, stream, cancel, timeout_s, start,
                                         agent=None)
                return self._result(chan, stream, stop_reason, start, agent=False)
            except (EOFError, OSError, paramiko.SSHException) as e:
                raise ConnectionLostError(
                    f"connection to {t.node} ({t.address}) lost during step {step!r}: "
                    f"{_describe(e)}") from None
            finally:
                chan.close()

    # -- agents -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _slot(self):
        """One of the connection's MAX_CHANNELS channel slots, for the duration of the block."""
        self._acquire_slot()
        try:
            yield
        finally:
            self._channels.release()

    def _acquire_slot(self) -> None:
        # Idle agents hold slots: when none is free, an idle agent gives its slot up.
        while not self._channels.acquire(blocking=False):
            with self._idle_lock:
                victim = self._idle.pop(0) if self._idle else None
            if victim is not None:
                self._discard(victim)
            elif self._channels.acquire(timeout=0.2):
                return

    def _ready_agent(self, step: str, on_line, cancel) -> "_Agent | JobResult":
        """An agent that has said it is ready for a job: an idle one, else a new one. A new one
        that never says so (sudo refused, no bash) gives the step's failed result instead."""
        t = self.target
        while True:
            with self._idle_lock:
                agent = self._idle.pop() if self._idle else None
            if agent is None:
                break
            ready, said = self._await_ready(agent, IDLE_AGENT_READY_S, cancel=None)
            if ready and not said:
                return agent
            if said:  # its tidying up failed: that is the agent's business, not the next job's
                log.info("%s: retiring an idle kai-exec agent that said between jobs: %s",
                         t.node, " | ".join(said[-3:]))
            self._discard(agent)
        start = time.monotonic()
        agent = self._start_agent(step)
        ready, said = self._await_ready(agent, NEW_AGENT_READY_S, cancel)
        if ready:
            for line in said:  # e.g. a shell warning before kai-exec began: worth a look
                log.info("%s: kai-exec.sh said before it was ready: %s", t.node, line)
            return agent
        chan = agent.chan
        code = chan.recv_exit_status() if chan.exit_status_ready() else 255
        self._discard(agent)
        cancelled = cancel is not None and cancel.is_set()
        if cancelled:
            error = None
        elif not (chan.exit_status_ready() or chan.closed or chan.eof_received):
            error = (f"kai-exec.sh on {t.node} did not say it was ready within "
                     f"{NEW_AGENT_READY_S:.0f} s")
        elif t.sudo == "none":
            error = f"kai-exec.sh did not start on {t.node} (is bash installed?)"
        else:
            error = (f"sudo ({t.sudo}) refused to run kai-exec.sh on {t.node} as {t.user}: "
                     "wrong sudo_password, or no sudoers rule? See the tail")
        for line in said:
            if on_line is not None:
                on_line(line)
        return JobResult(node=t.node, exit_code=CANCEL_EXIT if cancelled else code,
                         duration_s=time.monotonic() - start, tail=said[-TAIL_LINES:],
                         outputs={}, cancelled=cancelled, error=error)

    def _start_agent(self, step: str) -> "_Agent":
        """Take a channel slot, start kai-exec.sh on a new channel and give sudo its password."""
        t = self.target
        self._acquire_slot()
        chan, agent = None, None
        try:
            transport = self.connect()
            chan = self._open_session(transport, step)
            chan.exec_command(_exec_command(t.sudo))
            if t.sudo == "password":
                chan.sendall(_sudo_stdin(t))
            agent = _Agent(chan)
            return agent
        except (EOFError, OSError, paramiko.SSHException) as e:
            raise ConnectionLostError(
                f"connection to {t.node} ({t.address}) lost before step {step!r} "
                f"started: {_describe(e)}") from None
        finally:
            if agent is None:  # failed (connect errors pass through): give the slot back
                if chan is not None:
                    chan.close()
                self._channels.release()

    @staticmethod
    def _await_ready(agent: "_Agent", timeout_s: float,
                     cancel: threading.Event | None) -> tuple[bool, list[str]]:
        """Read the agent's channel until its readiness line. Returns whether it came, and every
        other line the agent said meanwhile (its stdout and stderr)."""
        if agent.ready:
            return True, []
        chan = agent.chan
        said: list[str] = []
        err = _Lines()
        deadline = time.monotonic() + timeout_s

        def take(lines: list[str]) -> None:
            for line in lines:
                if line == READY_LINE:
                    agent.ready = True
                else:
                    said.append(line)

        take(agent.pending)
        agent.pending = []
        while True:
            try:
                while chan.recv_ready():
                    take(agent.out.feed(chan.recv(65536)))
                while chan.recv_stderr_ready():
                    said.extend(err.feed(chan.recv_stderr(65536)))
            except (EOFError, OSError, paramiko.SSHException):
                return False, said
            if agent.ready:
                return True, said
            now = time.monotonic()
            ended = chan.closed or chan.eof_received or chan.exit_status_ready()
            if ended or now >= deadline or (cancel is not None and cancel.is_set()):
                return False, said + agent.out.flush() + err.flush()
            select.select([chan.fileno()], [], [], min(0.5, deadline - now))

    def _release(self, agent: "_Agent", *, reusable: bool) -> None:
        if reusable and not self._closed_event.is_set():
            if agent.alive():
                with self._idle_lock:
                    if len(self._idle) < MAX_IDLE_AGENTS:
                        self._idle.append(agent)
                        return
            else:  # it ended right after its job: say why, if it said (its stderr came first)
                _, said = self._await_ready(agent, 0, cancel=None)
                if said:
                    log.info("%s: a kai-exec agent ended after its job, saying: %s",
                             self.target.node, " | ".join(said[-3:]))
        self._discard(agent)

    def _discard(self, agent: "_Agent") -> None:
        try:
            agent.chan.close()  # EOF: the agent kills what is left of its job and exits
        except Exception:  # noqa: BLE001 - a dead link is closed already
            pass
        self._channels.release()

    def _transport_alive(self) -> bool:
        with self._lock:
            transport = self._client.get_transport() if self._client is not None else None
        return transport is not None and transport.is_active()

    def _open_session(self, transport: paramiko.Transport, step: str) -> paramiko.Channel:
        """Open an exec channel. sshd frees a session slot only after the close handshake of the
        previous channel, so a refusal right after one closed is retried briefly."""
        t = self.target
        end = time.monotonic() + t.connect_timeout
        delay = 0.02
        while True:
            try:
                return transport.open_session(timeout=t.connect_timeout)
            except paramiko.SSHException as e:  # ChannelException, or a bare "Unable to open"
                if not transport.is_active():
                    raise ConnectionLostError(
                        f"connection to {t.node} ({t.address}) lost before step {step!r} "
                        f"started: {_describe(e)}") from None
                if time.monotonic() + delay > end:
                    raise ConnectionLostError(
                        f"{t.node} ({t.address}) refused a new channel for step {step!r}: "
                        f"{_describe(e)} (sshd MaxSessions below {MAX_CHANNELS}?)") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
            except (EOFError, OSError) as e:
                raise ConnectionLostError(
                    f"connection to {t.node} ({t.address}) lost before step {step!r} "
                    f"started: {_describe(e)}") from None

    def _pump(self, chan: paramiko.Channel, transport: paramiko.Transport, step: str,
              stream: "_Stream", cancel, timeout_s, start: float,
              *, agent: "_Agent | None") -> str | None:
        """Stream a job's output into `stream` until it ends: an agent's job at its kai-exit
        marker, a plain command at the channel's close. Returns why it was stopped, if it was
        ("cancelled", "timed_out"). What an agent says after kai-exit is left for _await_ready:
        it is the agent's, never the job's."""
        t = self.target
        out = agent.out if agent is not None else _Lines()
        err = _Lines()
        deadline = start + timeout_s if timeout_s else None
        stop_reason: str | None = None
        stop_deadline = 0.0
        exit_seen_at: float | None = None
        fd = chan.fileno()
        while True:
            now = time.monotonic()
            if stop_reason is None:
                if cancel is not None and cancel.is_set():
                    stop_reason = "cancelled"
                elif deadline is not None and now >= deadline:
                    stop_reason = "timed_out"
                if stop_reason is not None:
                    self._stop(chan)
                    stop_deadline = now + STOP_GRACE_S
            elif now >= stop_deadline:
                break
            # data, EOF and close wake the select at once; the timeout only paces the checks
            # for cancel and deadline (200 jobs waking 10×/s cost a core at 200 hosts)
            wait = 0.5 if stop_reason is None else 0.1
            if stop_reason is None and deadline is not None:
                wait = max(0.0, min(wait, deadline - now))
            select.select([fd], [], [], wait)
            got = False
            while chan.recv_ready() and not (agent and stream.exit_code is not None):
                got = True
                lines = out.feed(chan.recv(65536))
                for i, line in enumerate(lines):
                    if agent is None:
                        stream.log(line)
                        continue
                    stream.stdout_line(line)
                    if stream.exit_code is not None:
                        agent.pending = lines[i + 1:]
                        break
            if agent and stream.exit_code is not None:
                break  # the job's report is complete; the agent's stderr now is its own
            while chan.recv_stderr_ready():
                got = True
                for line in err.feed(chan.recv_stderr(65536)):
                    stream.log(line)
            if got:
                continue
            if chan.exit_status_ready():
                if (chan.exit_status == -1 and stop_reason is None and not transport.is_active()
                        and stream.exit_code is None):
                    # paramiko marks channels closed (status -1) when the transport dies
                    raise ConnectionLostError(
                        f"connection to {t.node} ({t.address}) lost during step {step!r}; "
                        "the remote step is killed by kai-exec when its stdin closes")
                if chan.eof_received or chan.closed:
                    break
                # exited, but something that escaped the step's group still holds stdout open
                exit_seen_at = exit_seen_at or now
                if now - exit_seen_at > 2.0:
                    break
            elif chan.closed or (chan.eof_received and not transport.is_active()):
                if stop_reason is not None:
                    break
                raise ConnectionLostError(
                    f"connection to {t.node} ({t.address}) lost during step {step!r} "
                    "(channel closed without an exit status); the remote step was killed by "
                    "kai-exec when its stdin closed")
            elif not transport.is_active():
                raise ConnectionLostError(
                    f"connection to {t.node} ({t.address}) lost during step {step!r}")
            elif chan.eof_received:
                # the closed buffers keep the pipe readable: wait on the exit status instead
                chan.status_event.wait(0.05)
        if not (agent and stream.exit_code is not None):
            for line in out.flush():
                stream.stdout_line(line) if agent else stream.log(line)
            for line in err.flush():
                stream.log(line)
        return stop_reason

    @staticmethod
    def _stop(chan: paramiko.Channel) -> None:
        try:
            chan.sendall(b"KAI-CANCEL\n")
            chan.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the link is gone: kai-exec sees EOF anyway

    def _result(self, chan, stream: "_Stream", stop_reason, start, *, agent: bool) -> JobResult:
        t = self.target
        error = None
        if stop_reason == "timed_out":
            code = TIMEOUT_EXIT
        elif stop_reason == "cancelled":
            code = CANCEL_EXIT
        elif stream.exit_code is not None:
            code = stream.exit_code
        else:
            code = chan.recv_exit_status() if chan.exit_status_ready() else 255
            if agent and not stream.started:
                error = (f"kai-exec.sh on {t.node} ended before it started the step "
                         f"(exit {code}); see the tail")
            elif agent:
                error = f"kai-exec.sh on {t.node} ended without reporting (exit {code})"
        return JobResult(
            node=t.node, exit_code=code, duration_s=time.monotonic() - start,
            tail=list(stream.tail), outputs=stream.outputs,
            timed_out=stop_reason == "timed_out", cancelled=stop_reason == "cancelled",
            error=error)


@dataclass
class _Agent:
    """A kai-exec.sh agent on one channel: takes jobs one after another, each only after it said
    it is ready for it."""

    chan: paramiko.Channel
    has: dict[str, str] = field(default_factory=dict)  # kept parts it holds: name -> digest
    jobs: int = 0
    ready: bool = False  # its readiness line for the next job has been read
    out: _Lines = field(default_factory=_Lines)  # its stdout, split into lines across jobs
    pending: list[str] = field(default_factory=list)  # lines read after a job's kai-exit

    def alive(self) -> bool:
        c = self.chan
        return not (c.closed or c.eof_received or c.exit_status_ready())


def _describe(e: BaseException | None) -> str:
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


# --------------------------------------------------------------------------------------------
# Fleet
# --------------------------------------------------------------------------------------------


class Fleet:
    """Connection pool keyed by node; thread-safe; shares one connection per bastion."""

    def __init__(self, targets: Mapping[str, SSHTarget] | None = None):
        self._targets: dict[str, SSHTarget] = dict(targets or {})
        self._conns: dict[str, Connection] = {}
        self._bastions: dict[tuple, Connection] = {}
        self._lock = threading.Lock()

    def add(self, target: SSHTarget) -> None:
        with self._lock:
            self._targets[target.node] = target

    def get(self, node: str) -> Connection:
        with self._lock:
            conn = self._conns.get(node)
            if conn is None:
                try:
                    target = self._targets[node]
                except KeyError:
                    raise KeyError(f"Fleet: no SSH target for node {node!r}") from None
                bastion = None
                if target.bastion is not None:
                    b = target.bastion
                    key = (b.host, b.port, b.user)
                    bastion = self._bastions.get(key)
                    if bastion is None:
                        bastion = self._bastions[key] = Connection(b)
                conn = self._conns[node] = Connection(target, bastion=bastion)
            return conn

    def close(self) -> None:
        with self._lock:
            conns = list(self._conns.values()) + list(self._bastions.values())
            self._conns.clear()
            self._bastions.clear()
        for c in conns:
            c.close()

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
