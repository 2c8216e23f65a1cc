"""reset: kubeadm reset on every node (workers first) and remove what kai installed."""

from prefect import flow

from flows.common import kai_run
from flows.hooks import kill_remote_steps
from installers.spec import ClusterSpec
from tasks.node_tasks import reset as reset_node


@flow(name="reset", on_cancellation=[kill_remote_steps], on_crashed=[kill_remote_steps])
def reset(spec: ClusterSpec, lock_wait_s: float = 30) -> dict:
    """Reset every node of the spec's cluster to a blank state (idempotent)."""
    with kai_run(spec, "reset", lock_wait_s=lock_wait_s) as (run, plan):
        for step in plan.steps():  # reset-workers, then reset-control-planes
            reset_node(step)
        return {"cluster": run.spec.name, "reset": sorted(plan.nodes_touched())}
