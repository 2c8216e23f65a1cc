"""One SSH connection to one host: opened lazily, host key verified, ≤ MAX_CHANNELS channels, and
a small pool of kai-exec.sh agents that take the host's jobs one after another."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import paramiko

from installers.backoff import capped_exponential
from installers.redact import REDACTOR
from installers.ssh.agent import CANCEL_EXIT, Agent
from installers.ssh.frame import TAIL_LINES, build_frame, exec_command, sudo_stdin
from installers.ssh.keys import (
    VerifyHostKey, changed_host_key_error, hostkey_name, load_known_hosts, load_private_key,
)
from installers.ssh.target import (
    ConnectError, ConnectionLostError, HostKeyError, JobResult, RemoteJob, SSHTarget, describe,
)

log = logging.getLogger("installers.ssh")

MAX_CHANNELS = 10  # per connection; also OpenSSH's default MaxSessions
MAX_IDLE_AGENTS = 2  # per connection: steps run one after another, so one is nearly always enough
MAX_CONNECT_BACKOFF_S = 10.0
# How long an agent may take to say it is ready. A new one: sudo with a wrong password spends
# three tries of ~2 s each before it gives up, so this must be well above that. An idle one
# tidied up right after its last job; one that has not said so by then is retired, not waited for.
NEW_AGENT_READY_S = 30.0
IDLE_AGENT_READY_S = 5.0


class _QuietChannelRefusals(logging.Filter):
    """sshd frees a session slot a moment after a channel closes; the runner retries the open and
    reports itself if it gives up, so paramiko's "open FAILED" is not an error worth showing."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and "open FAILED" in record.getMessage():
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_QUIET = _QuietChannelRefusals()
_guarded_loggers: set[str] = set()


def _guard_paramiko_logs(secrets) -> None:
    """Secrets never reach paramiko's log output: the product's redactor on every paramiko
    logger (logger filters do not inherit, so each one, including those made since)."""
    REDACTOR.add(*secrets)
    names = ["paramiko", "paramiko.transport", "paramiko.transport.sftp", "paramiko.hostkeys"]
    names += [n for n in list(logging.root.manager.loggerDict) if n.startswith("paramiko")]
    for name in names:
        if name not in _guarded_loggers:
            logging.getLogger(name).addFilter(_QUIET)
            logging.getLogger(name).addFilter(REDACTOR)
            _guarded_loggers.add(name)


class Connection:
    """One SSH connection to one host, opened lazily, reused by all steps, ≤ 10 channels at once."""

    def __init__(self, target: SSHTarget, *, bastion: "Connection | None" = None):
        self.target = target
        self._bastion = bastion
        self._owns_bastion = False
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self._channels = threading.BoundedSemaphore(MAX_CHANNELS)  # open channels, idle agents too
        self._idle: list[Agent] = []  # agents that ended their last job cleanly
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
            if self._closed_event.is_set():  # closed while we were connecting: don't leak it
                client.close()
                raise ConnectError(f"connection to {self.target.node} was closed", retryable=False)
            self._client = client
            return client.get_transport()

    def _connect_with_retries(self) -> paramiko.SSHClient:
        t = self.target
        _guard_paramiko_logs(t.secrets())
        pkey = load_private_key(t)  # config errors: not retried
        delays = capped_exponential(t.connect_backoff_s, t.connect_retries, MAX_CONNECT_BACKOFF_S)
        attempts = len(delays) + 1
        last: Exception | None = None
        for attempt in range(1, attempts + 1):
            if self._closed_event.is_set():
                raise ConnectError(f"connection to {t.node} was closed", retryable=False)
            try:
                return self._connect_once(pkey)
            except (HostKeyError, ConnectError):
                raise
            except paramiko.BadHostKeyException as e:
                raise changed_host_key_error(t, e) from None
            except paramiko.AuthenticationException as e:
                raise ConnectError(
                    f"authentication failed for {t.user}@{t.node} ({t.address}): {e} "
                    f"[methods tried: {self._auth_methods()}]", retryable=False) from None
            except (OSError, EOFError, paramiko.SSHException) as e:
                last = e
                if attempt < attempts:
                    delay = delays[attempt - 1]
                    log.info("%s: connect attempt %d/%d failed (%s); retrying in %.1fs",
                             t.node, attempt, attempts, describe(e), delay)
                    self._closed_event.wait(delay)  # close() cuts the backoff short
        raise ConnectError(
            f"cannot connect to {t.node} ({t.address}) after {attempts} attempt(s): {describe(last)}"
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
            name = hostkey_name(t.host, t.port)
            for ktype, key in (load_known_hosts(t.known_hosts_path).lookup(name) or {}).items():
                client.get_host_keys().add(name, ktype, key)
        client.set_missing_host_key_policy(VerifyHostKey(t))
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
            reused, jobs_before = agent.jobs > 0, agent.jobs
            clean, started = False, False
            try:
                result, stream, clean = agent.run(job, on_line, cancel)
                started = stream.started
            except (EOFError, OSError, paramiko.SSHException, ConnectionLostError) as e:
                if reused and agent.jobs == jobs_before:
                    # the frame never left: the agent died after saying it was ready (killed just
                    # now, or its link dropped): a fresh agent, on a new connection if need be
                    # (connect() raises if none). Once the frame is sent, a lost link is the
                    # step's failure, retried by its policy, never re-run silently here.
                    continue
                if isinstance(e, ConnectionLostError):
                    raise
                raise ConnectionLostError(
                    f"connection to {self.target.node} ({self.target.address}) lost during step "
                    f"{job.step!r}: {describe(e)}") from None
            finally:
                self._release(agent, reusable=clean)
            if reused and not started and result.error:
                continue  # the same, seen from its exit status
            return result

    # -- the agent pool -----------------------------------------------------------------------

    def _acquire_slot(self) -> None:
        # Idle agents hold slots: when none is free, an idle agent gives its slot up.
        while not self._channels.acquire(blocking=False):
            with self._idle_lock:
                victim = self._idle.pop(0) if self._idle else None
            if victim is not None:
                self._discard(victim)
            elif self._channels.acquire(timeout=0.2):
                return

    def _ready_agent(self, step: str, on_line, cancel) -> "Agent | JobResult":
        """An agent that has said it is ready for a job: an idle one, else a new one. A new one
        that never says so (sudo refused, no bash) gives the step's failed result instead."""
        t = self.target
        while True:
            with self._idle_lock:
                agent = self._idle.pop() if self._idle else None
            if agent is None:
                break
            if not agent.link_alive():  # its connection dropped while it waited
                self._discard(agent)
                continue
            ready, said = agent.await_ready(IDLE_AGENT_READY_S)
            if ready and not said:
                return agent
            if said:  # its tidying up failed: that is the agent's business, not the next job's
                log.info("%s: retiring an idle kai-exec agent that said between jobs: %s",
                         t.node, " | ".join(said[-3:]))
            self._discard(agent)
        start = time.monotonic()
        agent = self._start_agent(step)
        ready, said = agent.await_ready(NEW_AGENT_READY_S, cancel)
        if ready:
            for line in said:  # e.g. a shell warning before kai-exec began: worth a look
                log.info("%s: kai-exec.sh said before it was ready: %s", t.node, line)
            return agent
        return self._failed_start(agent, said, start, on_line, cancel)

    def _failed_start(self, agent: Agent, said: list[str], start: float, on_line,
                      cancel) -> JobResult:
        t, chan = self.target, agent.chan
        ended = chan.exit_status_ready() or chan.closed or chan.eof_received
        code = chan.recv_exit_status() if chan.exit_status_ready() else 255
        self._discard(agent)
        cancelled = cancel is not None and cancel.is_set()
        error = None if cancelled else self._not_started_error(ended, code)
        if on_line is not None:
            for line in said:
                on_line(line)
        return JobResult(node=t.node, exit_code=CANCEL_EXIT if cancelled else code,
                         duration_s=time.monotonic() - start, tail=said[-TAIL_LINES:],
                         outputs={}, cancelled=cancelled, error=error)

    def _not_started_error(self, ended: bool, code: int) -> str:
        """Why a new agent never said it was ready (`ended`: its channel closed or it exited)."""
        t = self.target
        if not ended:
            return f"kai-exec.sh on {t.node} did not say it was ready within {NEW_AGENT_READY_S:.0f} s"
        if t.sudo == "none":
            return f"kai-exec.sh did not start on {t.node} (is bash installed?)"
        return (f"sudo ({t.sudo}) refused to run kai-exec.sh on {t.node} as {t.user}: "
                "wrong sudo_password, or no sudoers rule? See the tail")

    def _start_agent(self, step: str) -> Agent:
        """Take a channel slot, start kai-exec.sh on a new channel and give sudo its password."""
        t = self.target
        self._acquire_slot()
        chan, agent = None, None
        try:
            transport = self.connect()
            chan = self._open_session(transport, step)
            chan.exec_command(exec_command(t.sudo))
            if t.sudo == "password":
                chan.sendall(sudo_stdin(t))
            agent = Agent(chan, t)
            return agent
        except (EOFError, OSError, paramiko.SSHException) as e:
            raise ConnectionLostError(
                f"connection to {t.node} ({t.address}) lost before step {step!r} "
                f"started: {describe(e)}") from None
        finally:
            if agent is None:  # failed (connect errors pass through): give the slot back
                if chan is not None:
                    chan.close()
                self._channels.release()

    def _release(self, agent: Agent, *, reusable: bool) -> None:
        if reusable and not self._closed_event.is_set():
            if agent.alive():
                with self._idle_lock:
                    if len(self._idle) < MAX_IDLE_AGENTS:
                        self._idle.append(agent)
                        return
            else:  # it ended right after its job: say why, if it said (its stderr came first)
                _, said = agent.await_ready(0)
                if said:
                    log.info("%s: a kai-exec agent ended after its job, saying: %s",
                             self.target.node, " | ".join(said[-3:]))
        self._discard(agent)

    def _discard(self, agent: Agent) -> None:
        agent.close()
        self._channels.release()

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
                if "Timeout opening channel" in str(e):
                    # no answer at all, not a refusal: a powered-off host or a dead link looks
                    # alive to TCP until keepalives fail. The transport is left as it is: other
                    # threads' jobs on it end by their own timeouts, naming their steps.
                    raise ConnectionLostError(
                        f"{t.node} ({t.address}) did not answer a request for a channel for "
                        f"step {step!r} within {t.connect_timeout:g} s: host down or link "
                        "lost?") from None
                if not transport.is_active():
                    raise ConnectionLostError(
                        f"connection to {t.node} ({t.address}) lost before step {step!r} "
                        f"started: {describe(e)}") from None
                if time.monotonic() + delay > end:
                    raise ConnectionLostError(
                        f"{t.node} ({t.address}) refused a new channel for step {step!r}: "
                        f"{describe(e)} (sshd MaxSessions below {MAX_CHANNELS}?)") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
            except (EOFError, OSError) as e:
                raise ConnectionLostError(
                    f"connection to {t.node} ({t.address}) lost before step {step!r} "
                    f"started: {describe(e)}") from None
