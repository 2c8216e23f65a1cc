"""upgrade: move a running cluster one minor up (or to a newer patch), never breaking the
version-skew policy — API servers first, then the control planes' kubelets, then the workers in
batches of `max_unavailable`, each drained before and uncordoned after (the order and why:
installers/plan_upgrade.py).

A rerun after a failure or a cancel continues where the last run stopped: finished steps are
skipped by their done-markers, and upgrade-node.sh keeps each node's progress per target version.
The run's `upgrade-report` artifact always says which node it left cordoned.
"""

from prefect import flow

from flows.common import kai_run
from flows.hooks import kill_remote_steps
from installers.plan_upgrade import node_groups, target_version
from installers.spec import ClusterSpec
from tasks.kubeconfig import kubeconfig
from tasks.upgrade import drain, uncordon, upgrade_node, upgrade_preflight, upgrade_report
from tasks.verify import verify


@flow(name="upgrade", on_cancellation=[kill_remote_steps], on_crashed=[kill_remote_steps])
def upgrade(spec: ClusterSpec, to: str, max_unavailable: int = 1, lock_wait_s: float = 30) -> list:
    """Upgrade the spec's running cluster to Kubernetes `to` ("1.37": its default patch, or
    "1.37.1"), one minor at a time; workers `max_unavailable` at once."""
    with kai_run(spec, "upgrade", lock_wait_s=lock_wait_s,
                 options={"to": to, "max_unavailable": max_unavailable}) as (run, plan):
        version = target_version(plan)
        kubeconfig(plan.get("kubeconfig"))
        upgrade_preflight(plan.get("upgrade-facts"), version)
        upgrade_node(plan.get("upgrade-apply"))            # the first control plane: upgrade apply
        upgrade_node(plan.get("upgrade-control-planes"))   # the others, one at a time
        for drain_step, upgrade_step, uncordon_step in node_groups(plan):  # kubelets, then workers
            drain(drain_step, version)
            upgrade_node(upgrade_step)
            uncordon(uncordon_step, version)
        verify(plan.get("verify"))
        return upgrade_report(plan.get("upgrade-report"), version)
