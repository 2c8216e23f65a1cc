"""remove_nodes' steps: one Prefect task per step kind (installers/step_kinds.py).

The node steps run their script through tasks/node_step.py like every other step. Two run on the
controller, over the Kubernetes API with the admin kubeconfig the run fetched first:
`quorum_check`, the live half of installers/removal.py's refusals (the running cluster's
control-plane Nodes, before anything changes), and `verify_removal`, which polls until the
remaining nodes are Ready and the removed ones gone, then publishes the cluster facts and the
`removal-report` artifact saying which entries to delete from the spec.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from installers import removal
from installers.cluster_check import ClusterReport, check_cluster
from installers.cluster_poll import unhealthy_message
from installers.kube_api import KubeconfigCredentials
from installers.plan import Step
from installers.remove_plan import removal_order
from tasks.context import current_run
from tasks.node_step import HostOutcome, run_node_step
from tasks.step_task import step_task
from tasks.verify import FACTS_ARTIFACT_KEY, ClusterUnhealthy, cluster_facts, poll_cluster, render_report

CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
REPORT_ARTIFACT_KEY = "removal-report"


class RemovalRefused(Exception):
    """The running cluster refuses the removal (quorum): never retried."""

    retryable = False


def _kubeconfig() -> Path:
    run = current_run()
    return Path(run.info.get("kubeconfig_path") or run.cluster_dir / "admin.conf")


def registered_nodes(kubeconfig: Path, timeout: float) -> tuple[list[str], list[str]]:
    """(every registered Node, those with the control-plane role), from the API."""
    creds = KubeconfigCredentials(kubeconfig)
    with creds.client(timeout) as api:
        resp = api.get("/api/v1/nodes")
        resp.raise_for_status()
        items = resp.json().get("items", [])
    names = [i["metadata"]["name"] for i in items]
    cps = [i["metadata"]["name"] for i in items
           if CONTROL_PLANE_LABEL in (i["metadata"].get("labels") or {})]
    return names, cps


@step_task
def quorum_check(step: Step) -> dict:
    """On the controller: the running cluster's control planes keep etcd quorum without the ones
    to remove (installers/removal.py), before anything changes."""
    run = current_run()
    logger = get_run_logger()
    nodes = removal_order(run.plan)
    registered, cps = registered_nodes(_kubeconfig(), step.policy.timeout_s)
    problems, notes = removal.live_problems(cps, registered, nodes)
    for note in notes:
        logger.info("quorum-check: %s", note)
    stale = [n.name for n in run.spec.nodes if n.name not in registered and n.name not in nodes]
    if stale:
        logger.warning("quorum-check: the spec lists %s, which the cluster does not have: was it "
                       "removed earlier? Delete it from the spec", ", ".join(stale))
    if problems:
        raise RemovalRefused("refused, nothing was changed: " + "; ".join(problems))
    logger.info("quorum-check: the cluster has %d control plane(s) (%s); removing %s keeps quorum",
                len(cps), ", ".join(cps), ", ".join(nodes))
    return {"registered": registered, "control_planes": cps}


@step_task
def reachable(step: Step) -> list[HostOutcome]:
    """`remove-reachable.sh` on each node to remove: it answers over SSH (else: refused before
    anything changes; a dead node is removed with --force)."""
    try:
        return run_node_step(step)
    except Exception as exc:
        exc.args = (f"{exc}\n(a node that is dead for good is removed with --force: without "
                    f"drain or reset)",)
        raise


@step_task
def cordon(step: Step) -> list[HostOutcome]:
    """`remove-cordon.sh` on the anchor control plane: kubectl cordon every node to remove."""
    return run_node_step(step)


@step_task
def drain(step: Step) -> list[HostOutcome]:
    """`remove-drain.sh` on the anchor control plane (step kind `remove_drain`): kubectl drain one node (PDBs honoured,
    a timeout, the error naming the pods that block)."""
    return run_node_step(step)


@step_task
def kube_vip_leave(step: Step) -> list[HostOutcome]:
    """`remove-kube-vip.sh` on a control plane to remove: its kube-vip goes, the VIP answers from
    another control plane before this one's API server stops."""
    return run_node_step(step)


@step_task
def etcd_member_remove(step: Step) -> list[HostOutcome]:
    """`remove-etcd-member.sh` on the anchor control plane: etcdctl member remove of a dead
    control plane (--force)."""
    return run_node_step(step)


@step_task
def delete_node(step: Step) -> list[HostOutcome]:
    """`remove-delete-node.sh` on the anchor control plane: kubectl delete node, then check it
    stays gone."""
    return run_node_step(step)


@step_task
def hosts_block(step: Step) -> list[HostOutcome]:
    """`hosts-block.sh` on each remaining node: kai's /etc/hosts block without the removed nodes."""
    return run_node_step(step)


@step_task
def verify_removal(step: Step) -> dict:
    """On the controller: poll until the remaining nodes are Ready and the removed ones gone;
    publish the cluster facts and the removal report."""
    run = current_run()
    logger = get_run_logger()
    path = _kubeconfig()
    removed = removal_order(run.plan)
    expected = [n.name for n in run.spec.nodes if n.name not in removed]
    storage_class = "local-path" if run.spec.storage.local_path else None
    look = partial(_look, path, expected, removed, storage_class, step.policy.timeout_s)
    outcome, deadline_s = poll_cluster(step, look)
    report = outcome.report
    info = cluster_facts(run.spec, report, path) | {"removed_nodes": removed}
    run.info.update(info)
    create_table_artifact([info], key=FACTS_ARTIFACT_KEY, description=f"cluster {run.spec.name} (data)")
    create_markdown_artifact(render_report(run.spec.name, report, path), key="cluster-info",
                             description=f"cluster {run.spec.name}")
    create_markdown_artifact(removal_report(run, removed, outcome.healthy), key=REPORT_ARTIFACT_KEY,
                             description=f"nodes removed from {run.spec.name}")
    if not outcome.healthy:
        raise ClusterUnhealthy(unhealthy_message(run.spec.name, outcome, deadline_s))
    logger.info("verify: %s removed; %d node(s) Ready. %s", ", ".join(removed), len(report.nodes),
                removal.spec_edit_note(run.spec, removed))
    return info


def _look(path: Path, expected: list[str], removed: list[str], storage_class: str | None,
          timeout_s: float, deadline: float) -> ClusterReport:
    report = check_cluster(path, expected, expect_storage_class=storage_class, timeout=timeout_s,
                           deadline=deadline)
    for node in report.nodes:
        if node.name in removed:
            report.fail("nodes", f"node {node.name} is registered again after its removal "
                                 f"(is its kubelet running?)")
    return report


def removal_report(run, removed: list[str], healthy: bool) -> str:
    by_name = {n.name: n for n in run.spec.nodes}
    forced = not any(s.kind == "reset" for s in run.plan.steps())
    lines = [f"# Nodes removed from `{run.spec.name}`" + ("" if healthy else " — cluster NOT healthy"),
             "", "| node | address | role | drained | reset on the node | etcd member | Node deleted |",
             "|---|---|---|---|---|---|---|"]
    for name in removed:
        node = by_name[name]
        cp = node.is_control_plane
        etcd = ("—" if not cp else "removed from another control plane" if forced
                else "removed by its kubeadm reset")
        lines.append(f"| {name} | {node.address} | {'control plane' if cp else 'worker'} "
                     f"| {'no (--force)' if forced else 'yes'} "
                     f"| {'no (--force: not contacted)' if forced else 'yes'} | {etcd} | yes |")
    lines += ["", f"**Edit the spec:** {removal.spec_edit_note(run.spec, removed)}."]
    if forced:
        lines += ["", "The removed nodes were not contacted: wipe or reinstall them before they "
                      "come back, or their kubelet registers the Node again."]
    return "\n".join(lines)
