"""State hooks shared by the flows.

Cancelling a run SIGTERMs the flow process; its SSH connections close and each node's kai-exec
kills the step's process group when its stdin ends. This hook is the second line: it runs after the
flow process is gone (in the runner's process), reconnects to every host the run touched (its
plan's hosts: add_nodes touches only the new nodes and the first control plane), kills any
kai step still running there — so a cancel never leaves a half-finished apt or kubeadm behind —
and releases the run's node locks (tasks/node_lock.py), which the dead process could not.
`kai serve`'s reaper calls it too, for runs whose process died unnoticed.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from installers.plan import run_plans
from installers.settings import KaiSettings
from installers.spec import ClusterSpec, load_spec
from installers.ssh import Fleet
from installers.scripts_store import lib_text, script_text
from installers.ssh import RemoteJob, SSHTarget
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


def mode_of(flow, flow_run) -> str | None:
    """The run's mode: its flow's name, or (the reaper has no flow) the `mode:` tag that
    deployments/control.py gives every run it starts."""
    if flow is not None:
        return flow.name
    return next((t.split(":", 1)[1] for t in (flow_run.tags or []) if t.startswith("mode:")), None)


def touched_nodes(spec: ClusterSpec, mode: str | None, params: dict) -> list[str]:
    """The nodes a run of `mode` with these flow parameters works on (its plans' hosts), in the
    spec's order. Every node of the spec when that cannot be told: cleaning too many hosts is
    safe (the kill spares a host another run holds), missing one is not."""
    try:
        touched = set().union(*(plan.nodes_touched() for plan in run_plans(spec, mode, params)))
    except Exception as exc:  # noqa: BLE001 - unknown mode, a spec that no longer suits it
        log.warning("cleanup: cannot tell which hosts the %s run touched (%s): cleaning all", mode, exc)
        touched = {n.name for n in spec.nodes}
    return [n.name for n in spec.nodes if n.name in touched]


def kill_remote_steps(flow, flow_run, state) -> None:
    params = flow_run.parameters or {}
    spec_param = params.get("spec")
    if not spec_param:
        return
    try:
        spec = load_spec(spec_param)
        names = touched_nodes(spec, mode_of(flow, flow_run), params)
        # a hook must finish quickly: one short connect attempt per host, no retry backoff
        fleet = Fleet({name: replace(t, connect_timeout=5, connect_retries=0)
                       if isinstance(t, SSHTarget) else t  # the local machine: nothing to reach
                       for name, t in ssh_targets(spec, [spec.node(n) for n in names]).items()})
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
        results = fan_out(clean, names)
        for node, result in zip(names, results):
            if isinstance(result, Exception):
                log.warning("cleanup after %s on %s failed: %s", state.name, node, result)
            else:
                log.info("cleanup after %s on %s: %s", state.name, node, " ".join(result))
    finally:
        fleet.close()
