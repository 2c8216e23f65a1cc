"""The local machine as a node: kai-exec.sh as a local process instead of on an SSH channel.

A node marked `connection: local` in the spec is the machine kai itself runs on (the old service's
all-in-one; k0sctl's `localhost`, Ansible's `connection: local`). Its jobs take the same path as
every other node's: the same kai-exec.sh agent, the same frames on its stdin, the same markers on
its stdout, the same agent pool (Connection), so streaming, timeouts, cancel and the kill of a
job's process group when the agent's stdin closes are the ones of the SSH runner. Only the link
differs: `LocalChannel` is a child process with the surface of the paramiko Channel the agent
reads (recv/recv_stderr, exit status, EOF, the buffers' wake-up events). There is no host key to
verify and no connection that can drop.

The agent runs as root: directly when kai runs as root, else through `sudo -n` (never a password:
nothing may prompt). Its environment is a clean one (PATH, LANG, HOME): the controller's own
variables (Prefect's, kai's) are not the node's business.

`LocalTarget.command_prefix` is put in front of the agent's command line. It is empty in normal
use (KAI_LOCAL_AGENT_COMMAND, see installers/settings.py). It exists so that the process can be
started somewhere narrower than "this machine, as is" — the end-to-end tests use it to enter a
booted test host's namespaces, so that no node script ever runs on the machine running the tests.
"""

from __future__ import annotations

import errno
import getpass
import os
import signal
import subprocess
import threading
import weakref
from dataclasses import dataclass
from typing import Literal

from paramiko.buffered_pipe import BufferedPipe

from installers.ssh.agent import Agent
from installers.ssh.connection import Connection
from installers.ssh.frame import kai_exec_text
from installers.ssh.target import ConnectError, describe

AGENT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# After close(): kai-exec.sh ends on its own once its stdin is closed (it needs up to 5 s to TERM
# and KILL a job's group). One that has not ended by then gets TERM, then KILL, on its group.
CLOSE_GRACE_S = 10.0
KILL_GRACE_S = 3.0
# The agent exited but something that escaped it still holds its stdout: its exit is reported
# anyway after this long (the agent's escaped-output grace then takes over).
DRAIN_AFTER_EXIT_S = 1.0


@dataclass(frozen=True)
class LocalTarget:
    """The local machine as node `node`."""

    node: str
    sudo: Literal["none", "nopasswd"] = "none"  # "nopasswd" when kai does not run as root
    command_prefix: tuple[str, ...] = ()  # argv in front of the agent's command (module doc)
    bastion = None  # never reached through one (Fleet asks)

    def __post_init__(self) -> None:
        where = f"LocalTarget({self.node!r})"
        if self.sudo not in ("none", "nopasswd"):
            raise ValueError(f"{where}.sudo: {self.sudo!r} is not one of none, nopasswd "
                             "(a local agent never waits for a password)")
        if any(not isinstance(a, str) or not a for a in self.command_prefix):
            raise ValueError(f"{where}.command_prefix: every item must be a non-empty string")

    @classmethod
    def for_this_process(cls, node: str, command_prefix: tuple[str, ...] = ()) -> "LocalTarget":
        """Root runs the agent itself; anyone else through `sudo -n`."""
        return cls(node=node, sudo="none" if os.geteuid() == 0 else "nopasswd",
                   command_prefix=tuple(command_prefix))

    @property
    def address(self) -> str:  # what error messages show where an SSH node has host:port
        return "the local machine"

    @property
    def user(self) -> str:
        try:
            return getpass.getuser()
        except (KeyError, OSError):
            return str(os.geteuid())

    def secrets(self) -> tuple[str, ...]:
        return ()

    def agent_argv(self) -> list[str]:
        sudo = ["sudo", "-n", "--"] if self.sudo == "nopasswd" else []
        return [*self.command_prefix, *sudo, "bash", "-c", kai_exec_text()]


class _LocalLink:
    """What Agent asks of a channel's transport: a local process's link never drops."""

    @staticmethod
    def is_active() -> bool:
        return True


_LINK = _LocalLink()


class LocalChannel:
    """A local process behind the paramiko Channel surface that Agent uses (module doc).

    Its stdout and stderr are read by a thread each into paramiko's own BufferedPipe (whose
    set_event is how the agent's ChannelWakeup learns of data). When both pipes reached EOF, the
    exit status and then EOF are announced, so whoever sees either finds everything the agent
    said already in the buffers; when something that escaped the agent holds its pipes, the exit
    alone is announced DRAIN_AFTER_EXIT_S after it."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.in_buffer = BufferedPipe()
        self.in_stderr_buffer = BufferedPipe()
        self.status_event = threading.Event()
        self.exit_status = -1
        self.closed = False
        self.eof_received = False
        self._write_lock = threading.Lock()
        self._eof_lock = threading.Lock()
        self._open_pipes = 2
        self._stopper: threading.Timer | None = None
        # its own session and process group: a backstop kill reaches everything it started
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env=env, cwd="/",
                                      start_new_session=True, close_fds=True)
        self._readers = [
            threading.Thread(target=self._read, args=(self._proc.stdout, self.in_buffer),
                             daemon=True, name=f"kai-local-out-{self._proc.pid}"),
            threading.Thread(target=self._read, args=(self._proc.stderr, self.in_stderr_buffer),
                             daemon=True, name=f"kai-local-err-{self._proc.pid}"),
        ]
        for reader in self._readers:
            reader.start()
        threading.Thread(target=self._watch, daemon=True,
                         name=f"kai-local-wait-{self._proc.pid}").start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    # -- what Agent reads ---------------------------------------------------------------------

    def get_transport(self) -> _LocalLink:
        return _LINK

    def recv_ready(self) -> bool:
        return self.in_buffer.read_ready()

    def recv(self, nbytes: int) -> bytes:
        return self.in_buffer.read(nbytes)

    def recv_stderr_ready(self) -> bool:
        return self.in_stderr_buffer.read_ready()

    def recv_stderr(self, nbytes: int) -> bytes:
        return self.in_stderr_buffer.read(nbytes)

    def exit_status_ready(self) -> bool:
        return self.status_event.is_set()

    def recv_exit_status(self) -> int:
        self.status_event.wait()
        return self.exit_status

    # -- what Agent writes --------------------------------------------------------------------

    def sendall(self, data: bytes) -> None:
        with self._write_lock:
            stdin = self._proc.stdin
            if stdin is None or stdin.closed:
                raise OSError(errno.EPIPE, "the local agent's stdin is closed")
            stdin.write(data)  # BrokenPipeError (an OSError) when the agent is gone
            stdin.flush()

    def shutdown_write(self) -> None:
        with self._write_lock:
            self._close_stdin()

    def close(self) -> None:
        """EOF on the agent's stdin: it kills what is left of its job and exits (module doc)."""
        self.closed = True
        with self._write_lock:
            self._close_stdin()
        self.in_buffer.close()
        self.in_stderr_buffer.close()
        if self._stopper is None and not self.status_event.is_set():
            self._stopper = threading.Timer(CLOSE_GRACE_S, self._stop_if_still_running)
            self._stopper.daemon = True
            self._stopper.start()

    # -- inside ---------------------------------------------------------------------------------

    def _close_stdin(self) -> None:
        stdin = self._proc.stdin
        if stdin is not None and not stdin.closed:
            try:
                stdin.close()
            except OSError:  # unflushed bytes to a dead agent
                pass

    def _read(self, pipe, buffer: BufferedPipe) -> None:
        fd = pipe.fileno()
        try:
            while True:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    break
                if not data:
                    break
                buffer.feed(data)
        finally:
            pipe.close()
            with self._eof_lock:
                self._open_pipes -= 1
                last = self._open_pipes == 0
            if last:
                self._output_ended()

    def _output_ended(self) -> None:
        """Both pipes at EOF: the process has (nearly always) exited with them. Its exit status
        first, then EOF and the buffers closed (as paramiko does on EOF): a reader that sees
        either finds everything the process said already in the buffers."""
        try:
            self._announce_exit(self._proc.wait(timeout=DRAIN_AFTER_EXIT_S))
        except subprocess.TimeoutExpired:  # it closed its output and lives on: _watch reports it
            pass
        self.eof_received = True
        self.in_buffer.close()
        self.in_stderr_buffer.close()

    def _watch(self) -> None:
        """Reap the process. Its exit is announced once its output is in the buffers, or
        DRAIN_AFTER_EXIT_S after it exited if something that escaped it holds its pipes."""
        code = self._proc.wait()
        for reader in self._readers:
            reader.join(DRAIN_AFTER_EXIT_S)  # the same deadline for both: they end together
        self._announce_exit(code)

    def _announce_exit(self, code: int) -> None:
        with self._eof_lock:
            if not self.status_event.is_set():
                self.exit_status = 128 - code if code < 0 else code  # by a signal: 128 + its number
                self.status_event.set()

    def _stop_if_still_running(self) -> None:
        """close() + CLOSE_GRACE_S: an agent still running gets TERM on its group, then KILL."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.status_event.is_set():
                return
            try:
                os.killpg(self._proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                return
            self.status_event.wait(KILL_GRACE_S)


def agent_env() -> dict[str, str]:
    """The agent's whole environment (module doc): kai-exec.sh sets what a job needs."""
    home = "/root" if os.geteuid() == 0 else os.path.expanduser("~")
    return {"PATH": AGENT_PATH, "LANG": "C.UTF-8", "HOME": home}


class LocalConnection(Connection):
    """The agent pool of Connection, with agents started as local processes (module doc)."""

    target: LocalTarget

    def __init__(self, target: LocalTarget):
        super().__init__(target)  # type: ignore[arg-type]
        self._started: weakref.WeakSet[LocalChannel] = weakref.WeakSet()
        self._started_lock = threading.Lock()  # close() sees every agent started before it

    def connect(self):  # nothing to connect to; kept for callers that warm a connection up
        return _LINK

    def close(self) -> None:
        """As closing an SSH connection ends every channel on it: every agent this connection
        started, busy or idle, gets EOF on its stdin (and kills what is left of its job)."""
        super().close()
        with self._started_lock:
            started = list(self._started)
        for chan in started:
            chan.close()

    def _start_agent(self, step: str) -> Agent:
        t = self.target
        self._acquire_slot()
        started = False
        try:
            with self._started_lock:
                if self._closed_event.is_set():
                    raise ConnectError(f"the connection to {t.node} ({t.address}) was closed",
                                       retryable=False)
                chan = LocalChannel(t.agent_argv(), agent_env())
                self._started.add(chan)
                started = True
        except OSError as e:  # no bash, no sudo, no such prefix command
            raise ConnectError(
                f"cannot start kai-exec.sh on {t.node} ({t.address}) for step {step!r}: "
                f"{describe(e)}: {t.agent_argv()[0]}", retryable=False) from None
        finally:
            if not started:  # whatever stopped it (a cancel included): the slot is free again
                self._channels.release()
        return Agent(chan, t)  # type: ignore[arg-type]

    def _not_started_error(self, ended: bool, code: int) -> str:
        t = self.target
        if not ended:
            return super()._not_started_error(ended, code)
        how = "through `sudo -n`" if t.sudo == "nopasswd" else f"as {t.user}"
        hint = ("no sudoers rule letting this user run bash without a password?"
                if t.sudo == "nopasswd" else "is bash installed?")
        if t.command_prefix:
            hint += f" Does the command in front of it ({t.command_prefix[0]}) run it?"
        return (f"kai-exec.sh did not start on {t.node} ({t.address}) {how} (exit {code}): "
                f"{hint} See the tail")
