"""What a flow run shares with its tasks: the spec, the plan, the SSH connections, run-time secrets.

It travels in a context variable rather than as a task parameter: Prefect would otherwise walk the
whole plan and the connection pool looking for futures on every task call.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from installers.plan import Plan
from installers.spec import ClusterSpec
from installers.ssh import Fleet
from tasks.node_lock import NodeLock

_current: contextvars.ContextVar["RunContext"] = contextvars.ContextVar("kai_run")


@dataclass
class RunContext:
    spec: ClusterSpec
    plan: Plan
    fleet: Fleet
    state_dir: Path
    parallelism: int = 256
    cancel: threading.Event = field(default_factory=threading.Event)
    done: set[tuple[str, str]] = field(default_factory=set)  # (step, node) finished in this run
    secrets: dict[str, str] = field(default_factory=dict)  # KAI_* secrets produced at run time
    info: dict[str, Any] = field(default_factory=dict)  # cluster info for the final artifact
    node_lock: NodeLock | None = None  # the lock every job takes on its node (tasks/node_lock.py)
    locked_nodes: set[str] = field(default_factory=set)  # nodes whose lock this run holds
    locked_guard: threading.Lock = field(default_factory=threading.Lock)

    def note_locked(self, node: str) -> None:
        with self.locked_guard:
            self.locked_nodes.add(node)

    @property
    def cluster_dir(self) -> Path:
        return self.state_dir / "clusters" / self.spec.name


def current_run() -> RunContext:
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("kai tasks run inside a kai flow (no run context is active)") from None


@contextmanager
def activate(run: RunContext) -> Iterator[RunContext]:
    token = _current.set(run)
    try:
        yield run
    finally:
        _current.reset(token)
