"""Runs whose flow process died unnoticed: mark them final and free their hosts.

A flow run's process can die without anyone telling Prefect: SIGKILL, the machine's OOM killer,
or the runner going down together with the Prefect server (the runner marks its children crashed,
but not when it is gone itself). The run then stays RUNNING (or CANCELLING) for good and its
hosts stay locked. `kai serve` calls `reap()` when it starts and every few seconds after: every
run registered in the state dir (flows/run_registry.py) whose process is gone is

- set Crashed (Cancelled if a cancel had been asked for), with a message saying why;
- freed: its Prefect host-lock lease released, the hosts' leftover steps killed and their node
  locks released (the flows' own cancel/crash hook, flows/hooks.py);
- unregistered.

A run still CANCELLING some time after the request while its process lives (Prefect's runner
stops watching for cancels for good once its server went away) gets its process SIGTERMed, as the
runner would; a SIGTERMed flow reports Crashed, so the reaper then makes it Cancelled.

Why not Prefect's heartbeats: detecting a missing heartbeat needs an automation and the server's
event triggers, the shortest heartbeat is 30 s, and it would not free kai's locks. The registry
knows the process, so kai can decide at once and release what the run held.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from uuid import UUID

from flows import run_registry

log = logging.getLogger("kai.reaper")
STUCK_CANCELLING_S = 20  # the runner stops a cancelled run in 1–5 s; after this it will not


@dataclass
class Reaped:
    run_id: str
    state: str  # the state it was given, or "" when it was final already
    message: str = ""


@dataclass
class Reaper:
    state_dir: Path
    say: Callable[[str], None] = print  # where kai serve reports what it did
    stuck_cancelling_s: float = STUCK_CANCELLING_S
    terminated: dict[str, float] = field(default_factory=dict)  # run id -> when SIGTERMed

    def reap(self) -> list[Reaped]:
        """One sweep; cheap when nothing is registered (no API call)."""
        entries = run_registry.entries(self.state_dir)
        # runs we SIGTERMed for a cancel unregister themselves as they end: follow them up too
        followed = [run_id for run_id in self.terminated if run_id not in {e.run_id for e in entries}]
        if not entries and not followed:
            return []
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        wanted = [UUID(e.run_id) for e in entries] + [UUID(run_id) for run_id in followed]
        with get_client(sync_client=True) as client:
            runs = {str(r.id): r for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=wanted)))}
            done = []
            for entry in entries:
                flow_run = runs.get(entry.run_id)
                if entry.process_alive():
                    if flow_run is not None:
                        self._stop_if_stuck_cancelling(entry, flow_run)
                    continue
                done.append(self._bury(client, entry, flow_run))
            for run_id in followed:
                reaped = self._finish_cancel(client, runs.get(run_id))
                if reaped is not None:
                    done.append(reaped)
        return done

    def _finish_cancel(self, client, flow_run) -> Reaped | None:
        """A run we SIGTERMed for a pending cancel: once its process has reported (a SIGTERMed
        flow says Crashed), make it Cancelled — what the user asked for."""
        from prefect.states import Cancelled

        if flow_run is None:
            return None
        run_id = str(flow_run.id)
        if not flow_run.state.is_final():
            if time.monotonic() - self.terminated[run_id] > 2 * self.stuck_cancelling_s + 30:
                self.terminated.pop(run_id)  # nothing more to do here; the registry covers it
            return None
        self.terminated.pop(run_id)
        if not flow_run.state.is_crashed():
            return None
        message = ("cancelled: kai serve stopped the flow-run process (the runner had stopped "
                   "watching for cancels)")
        client.set_flow_run_state(flow_run.id, Cancelled(message=message), force=True)
        self.say(f"run {flow_run.name} ({run_id}) cancelled")
        return Reaped(run_id, "CANCELLED", message)

    def _bury(self, client, entry: run_registry.RunEntry, flow_run) -> Reaped:
        from prefect.states import Cancelled, Crashed

        finished = self._finish_cancel(client, flow_run) if entry.run_id in self.terminated else None
        reaped = finished or Reaped(entry.run_id, "")
        if not reaped.state and flow_run is not None and not flow_run.state.is_final():
            cancelling = flow_run.state.is_cancelling()
            reaped.message = (f"the flow-run process (pid {entry.pid}) is gone: "
                              f"{'cancelled' if cancelling else 'crashed'} without reporting it; "
                              "kai serve marked the run and freed its hosts")
            new_state = Cancelled(message=reaped.message) if cancelling else Crashed(
                message=reaped.message)
            client.set_flow_run_state(flow_run.id, new_state, force=True)
            reaped.state = new_state.type.value
            self.say(f"run {flow_run.name} ({entry.run_id}) was {flow_run.state.type.value} but "
                     f"its process (pid {entry.pid}) is gone: marked {reaped.state}")
        if entry.lease_id:
            client.release_concurrency_slots_with_lease(UUID(entry.lease_id))
        if flow_run is not None:
            self._clean_hosts(flow_run, reaped)
        run_registry.unregister(self.state_dir, entry.run_id)
        self.terminated.pop(entry.run_id, None)
        return reaped

    def _clean_hosts(self, flow_run, reaped: Reaped) -> None:
        from types import SimpleNamespace

        from flows.hooks import kill_remote_steps

        try:  # the state as the hook would get it (it only says its name)
            kill_remote_steps(None, flow_run, SimpleNamespace(name=reaped.state.title() or "Crashed"))
        except Exception as exc:  # noqa: BLE001 - the node locks then lapse with their lease
            self.say(f"run {flow_run.id}: cleaning its hosts failed: {exc}")

    def _stop_if_stuck_cancelling(self, entry: run_registry.RunEntry, flow_run) -> None:
        if not flow_run.state.is_cancelling() or entry.run_id in self.terminated:
            return
        since = flow_run.state.timestamp
        age = (datetime.now(timezone.utc) - since).total_seconds() if since else 0
        if age < self.stuck_cancelling_s:
            return
        self.say(f"run {flow_run.name} ({entry.run_id}) is CANCELLING for {age:.0f} s and no "
                 f"runner stops it: SIGTERM to its process {entry.pid}")
        try:
            os.kill(entry.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self.terminated[entry.run_id] = time.monotonic()
