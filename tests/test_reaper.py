"""kai serve's reaper against a real Prefect server: a registered run whose process is gone is
marked Crashed (Cancelled when a cancel was pending) and its host-lock lease released; a live
one is left alone; one stuck CANCELLING gets its process SIGTERMed."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import pytest
from prefect import flow

from deployments.reaper import Reaper
from flows import run_registry
from flows.common import host_locks, lock_name
from tests.support.e2e_server import kai_server  # noqa: F401  (session fixture)

pytestmark = pytest.mark.e2e


@flow(name="kai-reaper-test")
def _placeholder() -> None:
    """Only its name is used: the runs below are created through the API, never executed."""


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def flow_process(run_id: str) -> subprocess.Popen:
    """A stand-in for a flow-run process: it carries the run id the way the runner passes it."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                            env={**os.environ, run_registry.FLOW_RUN_ENV: run_id})


def new_run(client, state):
    return client.create_flow_run(_placeholder, state=state)


def test_dead_runs_are_made_final_and_their_hosts_freed(kai_server, tmp_path):  # noqa: F811
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling, Running

    said: list[str] = []
    reaper = Reaper(tmp_path, say=said.append)
    address = f"10.97.{time.time_ns() % 250}.1"
    with kai_server.prefect(), get_client(sync_client=True) as client:
        running, cancelling, alive = (new_run(client, Running()), new_run(client, Cancelling()),
                                      new_run(client, Running()))
        with host_locks([address], wait_s=5) as lease_id:
            assert client.read_global_concurrency_limit_by_name(lock_name(address)).active_slots == 1
            run_registry.register(tmp_path, run_registry.RunEntry(str(running.id), dead_pid(),
                                                                  str(lease_id)))
            run_registry.register(tmp_path, run_registry.RunEntry(str(cancelling.id), dead_pid(), None))
            live = flow_process(str(alive.id))
            try:
                run_registry.register(tmp_path, run_registry.RunEntry(str(alive.id), live.pid, None))
                reaped = {r.run_id: r.state for r in reaper.reap()}
                assert reaped == {str(running.id): "CRASHED", str(cancelling.id): "CANCELLED"}
                assert live.poll() is None, "a live run's process is not touched"
            finally:
                live.kill()
                live.wait()
            assert client.read_global_concurrency_limit_by_name(lock_name(address)).active_slots == 0
        crashed = client.read_flow_run(running.id).state
        assert crashed.type.value == "CRASHED" and "the flow-run process (pid" in crashed.message
        assert client.read_flow_run(cancelling.id).state.type.value == "CANCELLED"
        assert client.read_flow_run(alive.id).state.type.value == "RUNNING"
        assert [e.run_id for e in run_registry.entries(tmp_path)] == [str(alive.id)]
        assert any(f"({running.id}) was RUNNING but its process" in line for line in said), said
        # its process is gone now too: the next sweep buries it
        assert [r.state for r in reaper.reap()] == ["CRASHED"]
        assert run_registry.entries(tmp_path) == []
        assert reaper.reap() == []


@contextlib.contextmanager
def registered_cancelling_run(kai_server, state_dir):  # noqa: F811
    """A CANCELLING run with a (stand-in) flow process registered in `state_dir`, for the reaper
    to find → (client, run, process); the process is killed afterwards."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    with kai_server.prefect(), get_client(sync_client=True) as client:
        run = new_run(client, Cancelling())
        proc = flow_process(str(run.id))
        try:
            run_registry.register(state_dir, run_registry.RunEntry(str(run.id), proc.pid, None))
            yield client, run, proc
        finally:
            proc.kill()


def test_a_run_stuck_cancelling_gets_its_process_terminated(kai_server, tmp_path):  # noqa: F811
    from prefect.states import Crashed

    said: list[str] = []
    reaper = Reaper(tmp_path, say=said.append, stuck_cancelling_s=0)
    with registered_cancelling_run(kai_server, tmp_path) as (client, run, proc):
        assert reaper.reap() == []
        assert proc.wait(timeout=30) == -15, "SIGTERM, as Prefect's runner would send"
        assert any("no runner stops it: SIGTERM" in line for line in said), said
        # a flow process reports Crashed when SIGTERMed; the user asked for a cancel
        client.set_flow_run_state(run.id, Crashed(message="SIGTERM"), force=True)
        assert [r.state for r in reaper.reap()] == ["CANCELLED"]
        assert client.read_flow_run(run.id).state.type.value == "CANCELLED"


def test_a_cancelled_run_that_unregistered_itself_still_ends_cancelled(kai_server, tmp_path):  # noqa: F811
    """A real flow process, SIGTERMed, runs its finally blocks (unregistering itself) and reports
    Crashed on the way out: the reaper follows it up and makes it Cancelled."""
    from prefect.states import Crashed

    reaper = Reaper(tmp_path, say=lambda _: None, stuck_cancelling_s=0)
    with registered_cancelling_run(kai_server, tmp_path) as (client, run, proc):
        assert reaper.reap() == []
        proc.wait(timeout=30)
        run_registry.unregister(tmp_path, str(run.id))
        assert reaper.reap() == [], "still CANCELLING: nothing reported yet"
        client.set_flow_run_state(run.id, Crashed(message="SIGTERM"), force=True)
        assert [r.state for r in reaper.reap()] == ["CANCELLED"]
        assert client.read_flow_run(run.id).state.type.value == "CANCELLED"
        assert reaper.reap() == [] and reaper.terminated == {}
