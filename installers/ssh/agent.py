"""One kai-exec.sh agent on one exec channel: it takes a host's jobs one after another.

The handshake (docs/architecture.md §4): the agent says `kai-ready`, the runner sends one job's
frame, the agent runs it and reports it (`kai-exit`), tidies up, and says `kai-ready` again. What
the agent says between a job's kai-exit and its next kai-ready is the agent's, never the job's: an
agent that says anything else there is retired (the connection starts a fresh one).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import paramiko

from installers.ssh.frame import (
    CANCEL_LINE, READY_LINE, JobStream, Lines, build_frame, kept_parts,
)
from installers.ssh.target import ConnectionLostError, JobResult, RemoteJob, SSHTarget

TIMEOUT_EXIT = 124
CANCEL_EXIT = 130
STOP_GRACE_S = 8.0  # after KAI-CANCEL: kai-exec needs up to 5 s to TERM/KILL the group
ESCAPED_OUTPUT_GRACE_S = 2.0  # agent gone, but an escaped process still holds the channel open


class ChannelWakeup:
    """Wakes a thread that waits on a channel when its stdout or stderr gets data or closes.

    paramiko's Channel.fileno() does this with an OS pipe, and Channel.close() closes that pipe
    while the transport thread may be writing its wake-up byte to it (data still arriving, such as
    an agent's kai-ready line as it is retired): the write fails with EBADF, which kills the whole
    transport ("Socket exception: Bad file descriptor", every channel lost), or lands in whatever
    socket or pipe reused the fd number. paramiko's buffers take any object with set() and clear()
    (BufferedPipe.set_event): two flags and a condition have no fd to race on."""

    def __init__(self, chan: paramiko.Channel):
        self._cond = threading.Condition()
        self._has_data = [False, False]  # stdout, stderr: data buffered, or the buffer closed
        chan.in_buffer.set_event(_BufferFlag(self, 0))
        chan.in_stderr_buffer.set_event(_BufferFlag(self, 1))

    def wait(self, timeout_s: float) -> None:
        with self._cond:
            if not any(self._has_data):
                self._cond.wait(max(0.0, timeout_s))


class _BufferFlag:
    """What one paramiko buffer sets (data or close) and clears (drained)."""

    def __init__(self, wakeup: ChannelWakeup, index: int):
        self._wakeup, self._index = wakeup, index

    def set(self) -> None:
        with self._wakeup._cond:
            self._wakeup._has_data[self._index] = True
            self._wakeup._cond.notify_all()

    def clear(self) -> None:
        with self._wakeup._cond:
            self._wakeup._has_data[self._index] = False


@dataclass
class Agent:
    chan: paramiko.Channel
    target: SSHTarget
    has: dict[str, str] = field(default_factory=dict)  # kept parts it holds: name -> digest
    jobs: int = 0
    ready: bool = False  # its readiness line for the next job has been read
    out: Lines = field(default_factory=Lines)  # its stdout, split into lines across jobs
    pending: list[str] = field(default_factory=list)  # lines read after a job's kai-exit
    wakeup: ChannelWakeup = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.wakeup = ChannelWakeup(self.chan)

    def alive(self) -> bool:
        c = self.chan
        return not (c.closed or c.eof_received or c.exit_status_ready())

    def link_alive(self) -> bool:
        """Alive, and so is the connection it runs on (a dropped link leaves a 'ready' agent)."""
        transport = self.chan.get_transport()
        return self.alive() and transport is not None and transport.is_active()

    def close(self) -> None:
        try:
            self.chan.close()  # EOF: the agent kills what is left of its job and exits
        except Exception:  # noqa: BLE001 - a dead link is closed already
            pass

    # -- between jobs -----------------------------------------------------------------------

    def await_ready(self, timeout_s: float,
                    cancel: threading.Event | None = None) -> tuple[bool, list[str]]:
        """Read the channel until the agent's readiness line. Returns whether it came, and every
        other line the agent said meanwhile (stdout and stderr)."""
        if self.ready:
            return True, []
        chan = self.chan
        said: list[str] = []
        err = Lines()
        deadline = time.monotonic() + timeout_s

        def take(lines: list[str]) -> None:
            for line in lines:
                if line == READY_LINE:
                    self.ready = True
                else:
                    said.append(line)

        take(self.pending)
        self.pending = []
        while True:
            # seen before reading: what the agent said before it ended is in the buffers by then,
            # so it is read below (seen after, its last lines could arrive between the two)
            ended = chan.closed or chan.eof_received or chan.exit_status_ready()
            try:
                while chan.recv_ready():
                    take(self.out.feed(chan.recv(65536)))
                while chan.recv_stderr_ready():
                    said.extend(err.feed(chan.recv_stderr(65536)))
            except (EOFError, OSError, paramiko.SSHException):
                return False, said
            if self.ready:
                return True, said
            now = time.monotonic()
            if ended or now >= deadline or (cancel is not None and cancel.is_set()):
                return False, said + self.out.flush() + err.flush()
            self.wakeup.wait(min(0.5, deadline - now))

    # -- one job ------------------------------------------------------------------------------

    def run(self, job: RemoteJob, on_line: Callable[[str], None] | None,
            cancel: threading.Event | None) -> tuple[JobResult, JobStream, bool]:
        """Send the job (the agent said it is ready) and follow it to its end. Returns the result,
        what was streamed, and whether the agent may take another job. Raises what the link
        raises (the caller decides whether a fresh agent may try again)."""
        stream = JobStream(on_line)
        frame = build_frame(job, self.has)
        start = time.monotonic()
        self.ready = False  # this job uses the readiness the agent announced
        self.chan.sendall(frame)
        self.has.update(kept_parts(job))
        self.jobs += 1
        stop_reason = self._pump(job.step, stream, cancel, job.timeout_s, start)
        result = self._result(stream, stop_reason, start)
        clean = stop_reason is None and stream.exit_code is not None and not stream.bad_markers
        return result, stream, clean

    def _pump(self, step: str, stream: JobStream, cancel, timeout_s, start: float) -> str | None:
        """Stream the job's output into `stream` until its kai-exit marker (or the agent's end).
        Returns why it was stopped, if it was ("cancelled", "timed_out"). What the agent says
        after kai-exit is left in `pending` and `out` for await_ready."""
        t, chan = self.target, self.chan
        transport = chan.get_transport()
        err = Lines()
        deadline = start + timeout_s if timeout_s else None
        stop_reason: str | None = None
        stop_deadline = 0.0
        exit_seen_at: float | None = None
        while True:
            now = time.monotonic()
            if stop_reason is None:
                if cancel is not None and cancel.is_set():
                    stop_reason = "cancelled"
                elif deadline is not None and now >= deadline:
                    stop_reason = "timed_out"
                if stop_reason is not None:
                    self._stop()
                    stop_deadline = now + STOP_GRACE_S
            elif now >= stop_deadline:
                break
            # data, EOF and close wake the select at once; the timeout only paces the checks
            # for cancel and deadline (200 jobs waking 10×/s cost a core at 200 hosts)
            wait = 0.5 if stop_reason is None else 0.1
            if stop_reason is None and deadline is not None:
                wait = max(0.0, min(wait, deadline - now))
            self.wakeup.wait(wait)
            got = False
            while chan.recv_ready() and stream.exit_code is None:
                got = True
                lines = self.out.feed(chan.recv(65536))
                for i, line in enumerate(lines):
                    stream.stdout_line(line)
                    if stream.exit_code is not None:
                        self.pending = lines[i + 1:]
                        break
            if stream.exit_code is not None:
                return stop_reason  # the job's report is complete; the rest is the agent's
            while chan.recv_stderr_ready():  # the agent's own complaints about this job
                got = True
                for line in err.feed(chan.recv_stderr(65536)):
                    stream.log(line)
            if got:
                continue
            if chan.exit_status_ready():
                if (chan.exit_status == -1 and stop_reason is None and not transport.is_active()):
                    # paramiko marks channels closed (status -1) when the transport dies
                    raise ConnectionLostError(
                        f"connection to {t.node} ({t.address}) lost during step {step!r}; "
                        "the remote step is killed by kai-exec when its stdin closes")
                if chan.eof_received or chan.closed:
                    break
                # exited, but something that escaped the step's group still holds stdout open
                exit_seen_at = exit_seen_at or now
                if now - exit_seen_at > ESCAPED_OUTPUT_GRACE_S:
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
        for line in self.out.flush():
            stream.stdout_line(line)
        for line in err.flush():
            stream.log(line)
        return stop_reason

    def _stop(self) -> None:
        try:
            self.chan.sendall(CANCEL_LINE)
            self.chan.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the link is gone: kai-exec sees EOF anyway

    def _result(self, stream: JobStream, stop_reason: str | None, start: float) -> JobResult:
        t, chan = self.target, self.chan
        error = None
        if stop_reason == "timed_out":
            code = TIMEOUT_EXIT
        elif stop_reason == "cancelled":
            code = CANCEL_EXIT
        elif stream.exit_code is not None:
            code = stream.exit_code
        else:
            code = chan.recv_exit_status() if chan.exit_status_ready() else 255
            if not stream.started:
                error = (f"kai-exec.sh on {t.node} ended before it started the step "
                         f"(exit {code}); see the tail")
            else:
                error = f"kai-exec.sh on {t.node} ended without reporting (exit {code})"
        return JobResult(
            node=t.node, exit_code=code, duration_s=time.monotonic() - start,
            tail=list(stream.tail), outputs=stream.outputs,
            timed_out=stop_reason == "timed_out", cancelled=stop_reason == "cancelled",
            error=error)
