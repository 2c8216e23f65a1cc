"""State hooks shared by the flows.

Cancelling a run SIGTERMs the flow process; its SSH connections close and each node's kai-exec
kills the step's process group when its stdin ends. This hook is the second line: it runs after the
flow process is gone (in the runner's process), reconnects to every host of the run, kills any
kai step still running there — so a cancel never leaves a half-finished apt or kubeadm behind —
and releases the run's node locks (tasks/node_lock.py), which the dead process could not.
`kai serve`'s reaper calls it too, for runs whose process died unnoticed.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from installers.settings import KaiSettings
from installers.spec import load_spec
from installers.ssh import Fleet
from installers.scripts_store import lib_text, script_text
from installers.ssh import RemoteJob
from tasks.fanout import fan_out
from tasks.node_lock import NodeLock, controller_id, lock_job
from tasks.targets import ssh_targets

log = logging.getLogger("kai.hooks")


def kill_job(lock: NodeLock | None = None) -> RemoteJob:
    """kill-steps.sh; given the run's lock, it spares a host another run holds by now."""
    env = {**lock.env(), "KAI_LOCK_ACTION": "check"} if lock else {}
    return RemoteJob(step="kill-steps", script="kill-steps.sh", script_text=script_text("kill-steps.sh"),
                     lib_text=lib_text(), env=env, secret_env={}, files={}, timeout_s=30)


def the_runs_node_lock(flow_run) -> NodeLock:
    settings = KaiSettings()
    return NodeLock(run_id=str(flow_run.id), run_name=flow_run.name,
                    controller=controller_id(settings.state_path()),
                    lease_s=settings.node_lock_lease_s)


def kill_remote_steps(flow, flow_run, state) -> None:
    spec_param = (flow_run.parameters or {}).get("spec")
    if not spec_param:
        return
    try:
        spec = load_spec(spec_param)
        # a hook must finish quickly: one short connect attempt per host, no retry backoff
        fleet = Fleet({name: replace(t, connect_timeout=5, connect_retries=0)
                       for name, t in ssh_targets(spec).items()})
        lock = the_runs_node_lock(flow_run)
        kill, release = kill_job(lock), lock_job(lock, "release")
    except Exception as exc:  # noqa: BLE001 - a hook must not raise; say why it could not clean
        log.warning("cleanup after %s: cannot reach hosts: %s", state.name, exc)
        return

    def clean(node: str) -> list[str]:
        conn = fleet.get(node)
        killed = conn.run_job(kill)
        released = conn.run_job(release)  # only removes a lock that names this run
        return killed.tail + released.tail

    try:
        names = [n.name for n in spec.nodes]
        results = fan_out(clean, names)
        for node, result in zip(names, results):
            if isinstance(result, Exception):
                log.warning("cleanup after %s on %s failed: %s", state.name, node, result)
            else:
                log.info("cleanup after %s on %s: %s", state.name, node, " ".join(result))
    finally:
        fleet.close()
