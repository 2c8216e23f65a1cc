"""The lock on each node: one kai run per host, even across kai installations (controllers).

Prefect's host lock (flows/common.py: host_locks) lives in one Prefect server, so two kai
installations aimed at one host would not see each other's. The node itself therefore holds a
small lock file (`/var/lib/kai/lock`, lib.sh's node-lock block) naming the run, the controller and
a lease expiry:

- every step of the run takes or refreshes it when its script sources lib.sh (the runner adds the
  KAI_LOCK_* inputs below to every job — after the done-marker hash, so a rerun still skips);
- a step aimed at a host another controller's run holds is refused at once (exit
  KAI_LOCKED_EXIT, never retried) naming that run and controller;
- while the run lives, a thread refreshes the lease on every host the run has locked (a host may
  wait a long time between two of its steps); when the run ends the lock is released;
- if the controller dies, its lease runs out and the next run (of any controller) takes it over.

The controller id is a random id stored once in the state dir (`controller-id`): stable for one
kai installation, different for another.
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from installers.scripts_store import lib_text, script_text
from installers.ssh import Fleet, RemoteJob
from tasks.fanout import fan_out

CONTROLLER_ID_FILE = "controller-id"
KAI_LOCKED_EXIT = 75  # lib.sh: a step refused because another controller's run holds the host
RENEWALS_PER_LEASE = 3
LOCK_JOB_TIMEOUT_S = 10  # the job takes milliseconds; an unreachable host must not hold up a run
log = logging.getLogger("kai.node_lock")


def controller_id(state_dir: Path) -> str:
    """This kai installation's id: made once, kept in <state_dir>/controller-id."""
    path = Path(state_dir).expanduser() / CONTROLLER_ID_FILE
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    new = f"kai-{uuid.uuid4()}"
    tmp = path.with_name(f".{CONTROLLER_ID_FILE}.{uuid.uuid4().hex}")
    tmp.write_text(new + "\n", encoding="utf-8")
    try:
        path.hardlink_to(tmp)  # first writer wins; a concurrent one reads the winner's id
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text(encoding="utf-8").strip()


@dataclass(frozen=True)
class NodeLock:
    """Who holds the nodes of one run: the inputs of lib.sh's node-lock block."""

    run_id: str
    run_name: str
    controller: str
    lease_s: int
    controller_name: str = socket.gethostname()

    def env(self) -> dict[str, str]:
        return {
            "KAI_LOCK_RUN": self.run_id,
            "KAI_LOCK_RUN_NAME": self.run_name,
            "KAI_LOCK_CONTROLLER": self.controller,
            "KAI_LOCK_CONTROLLER_NAME": self.controller_name,
            "KAI_LOCK_LEASE_S": str(self.lease_s),
        }

    @property
    def renew_every_s(self) -> float:
        return self.lease_s / RENEWALS_PER_LEASE


def lock_job(lock: NodeLock, action: str) -> RemoteJob:
    """lock.sh with KAI_LOCK_ACTION=hold (take/refresh) or release."""
    return RemoteJob(step=f"node-lock-{action}", script="lock.sh", script_text=script_text("lock.sh"),
                     lib_text=lib_text(), env={**lock.env(), "KAI_LOCK_ACTION": action},
                     secret_env={}, files={}, timeout_s=LOCK_JOB_TIMEOUT_S)


def run_lock_job(fleet: Fleet, nodes: Iterable[str], lock: NodeLock, action: str) -> dict[str, str]:
    """Run lock.sh on every node at once; returns {node: problem} for those where it failed."""
    nodes = sorted(nodes)
    job = lock_job(lock, action)
    results = fan_out(lambda node: fleet.get(node).run_job(job), nodes)
    problems = {}
    for node, result in zip(nodes, results):
        if isinstance(result, BaseException):
            problems[node] = f"{type(result).__name__}: {result}"
        elif not result.ok:
            problems[node] = " ".join(result.tail[-3:]) or f"exit code {result.exit_code}"
    return problems


class LeaseRenewer:
    """Refreshes the lock's lease on the nodes the run holds until stopped (a daemon thread)."""

    def __init__(self, fleet: Fleet, lock: NodeLock, held: set[str], held_guard: threading.Lock):
        self._fleet, self._lock, self._held, self._guard = fleet, lock, held, held_guard
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="kai-node-lock")

    def start(self) -> "LeaseRenewer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        # wait out a renewal in flight, or it could re-take a lock released right after
        self._thread.join(timeout=3 * LOCK_JOB_TIMEOUT_S)

    def _loop(self) -> None:
        while not self._stop.wait(self._lock.renew_every_s):
            with self._guard:
                nodes = set(self._held)
            if not nodes:
                continue
            try:
                problems = run_lock_job(self._fleet, nodes, self._lock, "hold")
            except Exception as exc:  # noqa: BLE001 - keep renewing; a lease outlives a few misses
                problems = {node: str(exc) for node in nodes}
            for node, problem in problems.items():
                log.warning("could not renew the node lock on %s: %s", node, problem)
