"""Which flow runs this controller is executing, and in which process: <state>/runs/<run id>.json.

A flow run writes its entry once it holds its hosts (its process id and the Prefect lease of its
host locks) and removes it when it ends. `kai serve` reads the entries (deployments/reaper.py): an
entry whose process is gone is a run that died without saying so — a killed flow process, or a
runner that went down with the Prefect server — and the reaper marks it crashed and frees its
hosts. Prefect alone cannot tell: the runner that would notice may itself be gone, and the host
locks' lease lives on the server.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

RUNS_DIR = "runs"
FLOW_RUN_ENV = "PREFECT__FLOW_RUN_ID"  # how the runner tells a flow-run process its run


@dataclass(frozen=True)
class RunEntry:
    run_id: str
    pid: int
    lease_id: str | None  # the Prefect lease holding the run's host locks
    nodes: tuple[str, ...] = ()

    def process_alive(self) -> bool:
        """Is the process still this run's flow process? (A reused pid is not.)"""
        try:
            environ = Path(f"/proc/{self.pid}/environ").read_bytes().split(b"\0")
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        return f"{FLOW_RUN_ENV}={self.run_id}".encode() in environ


def started_by_a_runner(run_id: str) -> bool:
    """Only such runs are registered: an in-process flow (a test, a script) has no process the
    reaper could check."""
    return os.environ.get(FLOW_RUN_ENV) == run_id


def _dir(state_dir: Path) -> Path:
    return Path(state_dir).expanduser() / RUNS_DIR


def register(state_dir: Path, entry: RunEntry) -> Path:
    directory = _dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{entry.run_id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(entry)) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def unregister(state_dir: Path, run_id: str) -> None:
    (_dir(state_dir) / f"{run_id}.json").unlink(missing_ok=True)


def entries(state_dir: Path) -> list[RunEntry]:
    found = []
    for path in sorted(_dir(state_dir).glob("*.json")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            found.append(RunEntry(run_id=raw["run_id"], pid=int(raw["pid"]),
                                  lease_id=raw.get("lease_id"), nodes=tuple(raw.get("nodes", ()))))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # half-written or foreign: the writer replaces it atomically
    return found
