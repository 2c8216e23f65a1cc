"""remove_nodes: drain, reset and delete the named nodes of a running cluster, one at a time.

Checks first (nothing changes before they pass): the admin kubeconfig from the anchor control
plane (the first one not removed), the running cluster's quorum, each node reachable. Then every
node to remove is cordoned, and each in turn — workers first — drained, (a control plane behind
kube-vip:) left by the VIP, reset, and deleted; with --force (dead nodes) only its etcd member
(control planes) and its Node are removed, from the anchor. Last, the remaining nodes' /etc/hosts
block and a verify. The plan: installers/remove_plan.py; the refusals: installers/removal.py.
A rerun after a failure or a cancel resumes: every step is idempotent, a node already deleted is
skipped where it has to be.
"""

from prefect import flow

from flows.common import kai_run
from flows.hooks import kill_remote_steps
from installers.remove_plan import removal_order
from installers.spec import ClusterSpec
from tasks.kubeconfig import kubeconfig
from tasks.node_tasks import reset
from tasks.remove import (cordon, delete_node, drain, etcd_member_remove, hosts_block,
                          kube_vip_leave, quorum_check, reachable, verify_removal)


@flow(name="remove_nodes", on_cancellation=[kill_remote_steps], on_crashed=[kill_remote_steps])
def remove_nodes(spec: ClusterSpec, nodes: list[str], force: bool = False,
                 lock_wait_s: float = 30) -> dict:
    """Remove the named nodes from the spec's running cluster (force: dead nodes, not contacted)."""
    with kai_run(spec, "remove_nodes", nodes=nodes, options={"force": force},
                 lock_wait_s=lock_wait_s) as (run, plan):
        kubeconfig(plan.get("kubeconfig"))
        quorum_check(plan.get("quorum-check"))
        reachable(plan.get("reachable"))
        cordon(plan.get("cordon"))
        for node in removal_order(plan):
            drain(plan.get(f"drain-{node}"))
            kube_vip_leave(plan.get(f"kube-vip-leave-{node}"))
            reset(plan.get(f"reset-{node}"))
            etcd_member_remove(plan.get(f"etcd-member-remove-{node}"))
            delete_node(plan.get(f"delete-node-{node}"))
        hosts_block(plan.get("hosts-block"))
        return verify_removal(plan.get("verify"))
