"""kai serve's children: stopping a process tree, and keeping a child alive.

`stop_tree` reaches every descendant (also those that left the child's process group: Prefect's
runner starts flow runs in groups of their own); `Supervised` restarts a dead child with a capped
exponential backoff (serve.py's supervise loop drives it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

RESTART_FIRST_DELAY_S = 1.0  # a dead child is restarted after 1, 2, 4 … s
RESTART_MAX_DELAY_S = 30.0
RESTART_RESET_AFTER_S = 60.0  # a child that ran this long starts its backoff afresh
STOP_GRACE_S = 15.0


def log(message: str) -> None:
    print(f"kai serve: {message}", flush=True)


# --- process tree ------------------------------------------------------------------------------

def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    tree = _children_map()
    out, todo = [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_tree(proc: subprocess.Popen, name: str, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the child and everything below it (also descendants that left its process group),
    wait, then SIGKILL whatever is still alive."""
    if proc.poll() is not None and not descendants(proc.pid):
        return
    pids = [proc.pid] + descendants(proc.pid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        proc.poll()
        pids = [p for p in set(pids + descendants(proc.pid)) if p != proc.pid or proc.returncode is None]
        if not [p for p in pids if alive(p)]:
            break
        time.sleep(0.2)
    for pid in set(pids + descendants(proc.pid)):
        if alive(pid):
            log(f"{name}: process {pid} did not stop in {grace_s:.0f} s; killing it")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log(f"{name}: process {proc.pid} did not exit after SIGKILL")


# --- the supervisor ----------------------------------------------------------------------------

@dataclass
class Supervised:
    """A child process kai serve keeps alive: restarted after it dies, with a capped backoff."""

    name: str
    start: Callable[[], subprocess.Popen]
    proc: subprocess.Popen
    started_at: float = field(default_factory=time.monotonic)
    failures: int = 0  # deaths in a row, each doubling the wait before the next start
    restart_at: float | None = None  # when it is due to start again (it is dead meanwhile)
    restarts: int = 0
    # SIGKILL what its process group left behind when it died: yes for the server (a worker would
    # keep the port); no for the runner, whose group holds the flow runs in flight — they go on,
    # and the reaper and the shutdown know them from the run registry
    kill_leftovers: bool = True

    def died(self) -> bool:
        """True once when the process has exited (and schedules its restart)."""
        if self.restart_at is not None or self.proc.poll() is None:
            return False
        now = time.monotonic()
        if now - self.started_at > RESTART_RESET_AFTER_S:
            self.failures = 0
        delay = min(RESTART_MAX_DELAY_S, RESTART_FIRST_DELAY_S * 2 ** self.failures)
        self.failures += 1
        self.restart_at = now + delay
        log(f"the {self.name} exited with code {self.proc.returncode}; restarting it in "
            f"{delay:.0f} s")
        if self.kill_leftovers:
            kill_group(self.proc)
        return True

    def due(self) -> bool:
        return self.restart_at is not None and time.monotonic() >= self.restart_at

    def restart(self) -> None:
        self.proc = self.start()
        self.started_at = time.monotonic()
        self.restart_at = None
        self.restarts += 1
        log(f"the {self.name} restarted (pid {self.proc.pid}, restart {self.restarts})")


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL what is left of a dead child's process group (it was started in its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
