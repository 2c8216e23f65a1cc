"""The plan of remove_nodes: one phase of checks, then one phase per node, then the other nodes.

    check     kubeconfig (anchor) → quorum-check (controller: the running cluster's control
              planes) → reachable (each node to remove answers over SSH; not with --force)
    cordon    every node to remove, at once: a drained pod must not land on the next one
    remove-N  per node, workers first, one node at a time (etcd changes one member at a time):
              drain-N (anchor) → kube-vip-leave-N (a control plane, kube-vip endpoint: the VIP
              moves before its API server stops) → reset-N (on N: kubeadm reset — which removes
              a reachable control plane's own etcd member — and kai's cleanup, done-markers
              included) → etcd-member-remove-N (anchor; --force control planes only: their own
              reset cannot run) → delete-node-N (anchor: `kubectl delete node`, after the reset
              stopped N's kubelet, which would register the Node again)
    hosts     kai's /etc/hosts block on every remaining node lists only the remaining nodes
    verify    the remaining nodes Ready, the removed ones gone; the report artifact says which
              entries to delete from the spec

--force (a dead node): no reachable, cordon, drain, kube-vip-leave or reset steps — nothing runs
on the removed nodes, which are never contacted. The rules (refusals, anchor): installers/removal.py.
"""

from __future__ import annotations

from installers import removal, render
# build_plan imports this module when it plans a removal
from installers.plan import _kubeconfig_phase, reset_job
from installers.plan_model import HostJob, Phase, Plan, host_job, plan_step, policy_for
from installers.spec import ClusterSpec, KubeVipEndpoint, LoadBalancerEndpoint, Node

NODE_PHASE_PREFIX = "remove-"


# --- jobs -----------------------------------------------------------------------------------------
# `anchor`: the control plane that runs the cluster-side work for the node being removed
# (installers/removal.py).

def reachable_job(spec: ClusterSpec, node: Node) -> HostJob:
    return host_job("reachable", node, {"KAI_NODE_NAME": node.name})


def cordon_job(spec: ClusterSpec, anchor: Node, nodes: list[Node]) -> HostJob:
    return host_job("cordon", anchor, {"KAI_NODES": " ".join(n.name for n in nodes)})


def remove_drain_job(spec: ClusterSpec, anchor: Node, node: Node) -> HostJob:
    # kubectl's own timeout ends before the step's: its error names the pod that blocks
    timeout = max(10, int(policy_for(spec, "remove_drain").timeout_s) - 30)
    return host_job("remove_drain", anchor, {"KAI_NODE_NAME": node.name, "KAI_DRAIN_TIMEOUT_S": str(timeout)})


def kube_vip_leave_job(spec: ClusterSpec, node: Node) -> HostJob:
    return host_job("kube_vip_leave", node, {"KAI_VIP": spec.endpoint_host(),
                                             "KAI_VIP_PORT": str(spec.endpoint_port())})


def etcd_member_remove_job(spec: ClusterSpec, anchor: Node, node: Node) -> HostJob:
    return host_job("etcd_member_remove", anchor, {"KAI_NODE_NAME": node.name})


def delete_node_job(spec: ClusterSpec, anchor: Node, node: Node) -> HostJob:
    return host_job("delete_node", anchor, {"KAI_NODE_NAME": node.name})


def hosts_block_job(spec: ClusterSpec, node: Node, listed: list[Node]) -> HostJob:
    """kai's /etc/hosts block listing only `listed` (the nodes that stay)."""
    return host_job("hosts_block", node, files={
        "hosts": render.hosts_block(spec.model_copy(update={"nodes": listed}))})


# --- phases ---------------------------------------------------------------------------------------

def remove_nodes_phases(spec: ClusterSpec, nodes: list[Node], *, force: bool = False) -> list[Phase]:
    names = [n.name for n in nodes]
    anchor = removal.anchor(spec, names)
    kubeconfig = _kubeconfig_phase(spec, anchor).steps
    check = [*kubeconfig,
             plan_step(spec, "quorum-check", "quorum_check",
                       "The running cluster keeps etcd quorum without the control planes to remove", [])]
    if not force:
        check.append(plan_step(spec, "reachable", "reachable", "Each node to remove answers over SSH",
                               [reachable_job(spec, n) for n in nodes]))
    phases = [Phase("check", "Check the removal before anything changes", tuple(check))]
    if not force:
        phases.append(Phase("cordon", "Cordon every node to remove", (
            plan_step(spec, "cordon", "cordon", f"kubectl cordon {' '.join(names)}",
                      [cordon_job(spec, anchor, nodes)]),)))
    for node in sorted(nodes, key=lambda n: n.is_control_plane):  # workers first
        phases.append(Phase(NODE_PHASE_PREFIX + node.name, _node_title(node, force),
                            tuple(_node_steps(spec, anchor, node, force))))
    left = removal.remaining(spec, names)
    phases.append(Phase("hosts", "The remaining nodes' /etc/hosts block", (
        plan_step(spec, "hosts-block", "hosts_block", f"kai's /etc/hosts block without {', '.join(names)}",
                  [hosts_block_job(spec, n, left) for n in left]),)))
    phases.append(Phase("verify", "Verify the cluster without the removed nodes", (
        plan_step(spec, "verify", "verify_removal",
                  "Remaining nodes Ready, removed nodes gone, system pods running", []),)))
    return phases


def _node_title(node: Node, force: bool) -> str:
    role = "control plane" if node.is_control_plane else "worker"
    return f"Remove {role} {node.name}" + (" (--force: not contacted)" if force else "")


def _node_steps(spec: ClusterSpec, anchor: Node, node: Node, force: bool) -> list:
    n = node.name
    steps = []
    if not force:
        steps.append(plan_step(spec, f"drain-{n}", "remove_drain",
                               f"kubectl drain {n} (PodDisruptionBudgets honoured)",
                               [remove_drain_job(spec, anchor, node)]))
        if node.is_control_plane and isinstance(spec.control_plane_endpoint, KubeVipEndpoint):
            steps.append(plan_step(spec, f"kube-vip-leave-{n}", "kube_vip_leave",
                                   f"kube-vip leaves {n}: the VIP answers from another control plane",
                                   [kube_vip_leave_job(spec, node)]))
        steps.append(plan_step(spec, f"reset-{n}", "reset",
                               f"kubeadm reset on {n}" + (" (removes its etcd member)"
                                                         if node.is_control_plane else "")
                               + ", kai's files and done-markers", [reset_job(spec, node, leave_etcd=True)]))
    elif node.is_control_plane:
        steps.append(plan_step(spec, f"etcd-member-remove-{n}", "etcd_member_remove",
                               f"etcdctl member remove {n} (from {anchor.name})",
                               [etcd_member_remove_job(spec, anchor, node)]))
    steps.append(plan_step(spec, f"delete-node-{n}", "delete_node", f"kubectl delete node {n}",
                           [delete_node_job(spec, anchor, node)]))
    return steps


def removal_order(plan: Plan) -> list[str]:
    """The removed nodes in the order the plan removes them."""
    return [ph.name[len(NODE_PHASE_PREFIX):] for ph in plan.phases
            if ph.name.startswith(NODE_PHASE_PREFIX)]


def plan_notes(spec: ClusterSpec, nodes: list[Node], *, force: bool = False) -> list[str]:
    names = [n.name for n in nodes]
    notes = [f"remove_nodes: {removal.spec_edit_note(spec, names)}"]
    if force:
        notes.append(f"remove_nodes --force: {', '.join(names)} will not be contacted (no drain, "
                     f"no reset): wipe or reinstall them before they come back, or their kubelet "
                     f"registers the Node again")
    cps = [n.name for n in nodes if n.is_control_plane]
    if cps and isinstance(spec.control_plane_endpoint, LoadBalancerEndpoint):
        notes.append(f"remove_nodes: take {', '.join(cps)} out of the load balancer's backends "
                     f"({spec.endpoint()}); kai does not manage the load balancer")
    return notes
