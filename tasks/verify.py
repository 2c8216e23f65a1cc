"""Verify the cluster from the controller: API, nodes Ready, system and CNI pods, storage, certs.

A polling step: it looks at the cluster every few seconds until it is healthy or the step's
deadline passes (nodes turn Ready only after the CNI is up, so the first looks are expected to find
problems) — no retries, so a broken cluster is FAILED in bounded time, with a message naming every
failing check and its last error. Then it publishes what it found twice: as data, a one-row table
artifact `cluster-facts` (the wrapper's `cluster_info`, deployments/run_status.py), and as the
markdown artifact `cluster-info`, the run's summary for people in the Prefect UI.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from installers.cluster_check import (FACTS_ARTIFACT_KEY, POLL_S, ClusterReport, check_cluster,
                                      poll_until_healthy, unhealthy_message)
from installers.plan import Step
from installers.spec import ClusterSpec
from tasks.context import current_run
from tasks.step_task import step_task


class ClusterUnhealthy(Exception):
    pass


@step_task
def verify(step: Step, kubeconfig: str | None = None) -> dict:
    run = current_run()
    logger = get_run_logger()
    path = Path(kubeconfig or run.info.get("kubeconfig_path") or run.cluster_dir / "admin.conf")
    expected = [n.name for n in run.spec.nodes]
    storage_class = "local-path" if run.spec.storage.local_path else None
    deadline_s = step.policy.deadline_s or step.policy.timeout_s
    look = partial(_look, path, expected, storage_class, step.policy.timeout_s)
    outcome = poll_until_healthy(
        look, deadline_s, poll_s=POLL_S, stop=run.cancel,
        on_wait=lambda report: logger.info("verify: waiting — %s", "; ".join(report.problems[:3])))
    report = outcome.report
    for warning in report.warnings:
        logger.warning("verify: %s", warning)
    info = cluster_facts(run.spec, report, path)
    run.info.update(info)
    create_table_artifact([info], key=FACTS_ARTIFACT_KEY, description=f"cluster {run.spec.name} (data)")
    create_markdown_artifact(render_report(run.spec.name, report, path), key="cluster-info",
                             description=f"cluster {run.spec.name}")
    if not outcome.healthy:
        raise ClusterUnhealthy(unhealthy_message(run.spec.name, outcome, deadline_s))
    logger.info("verify: %d node(s) Ready, %d pods, API %s", len(report.nodes),
                sum(report.pods_by_namespace.values()), report.version)
    return info


def cluster_facts(spec: ClusterSpec, report: ClusterReport, kubeconfig: Path) -> dict:
    """What the last look found (nodes with roles, readiness, kubelet version, InternalIP and
    creation time; pods per namespace; API version; storage classes; certificates; problems)
    and what the spec says of the cluster's networks (CNI, pod and service CIDRs): JSON data."""
    net = spec.networking
    return report.as_dict() | {"kubeconfig_path": str(kubeconfig), "cluster": spec.name,
                               "cni": net.cni, "pod_cidr": net.pod_cidr, "service_cidr": net.service_cidr}


def _look(path: Path, expected: list[str], storage_class: str | None, timeout_s: float,
          deadline: float) -> ClusterReport:
    return check_cluster(path, expected, expect_storage_class=storage_class, timeout=timeout_s,
                         deadline=deadline)


def render_report(cluster: str, r: ClusterReport, kubeconfig: Path) -> str:
    lines = [f"# Cluster `{cluster}` — {'healthy' if r.healthy else 'NOT healthy'}", "",
             f"API server `{r.server}` version `{r.version}`; kubeconfig `{kubeconfig}` (mode 0600)", "",
             "| node | roles | ready | kubelet | address |", "|---|---|---|---|---|"]
    lines += [f"| {n.name} | {', '.join(n.roles)} | {'yes' if n.ready else 'NO'} | {n.kubelet_version} "
              f"| {n.address} |" for n in r.nodes]
    lines += ["", "| namespace | pods |", "|---|---|"]
    lines += [f"| {ns} | {count} |" for ns, count in r.pods_by_namespace.items()]
    lines += ["", "Storage classes: " + (", ".join(r.storage_classes) or "none"), ""]
    lines += [f"- {what} expires {date}" for what, date in r.cert_expiry.items()]
    if r.problems:
        lines += ["", "## Problems"] + [f"- {p}" for p in r.problems]
    if r.unchecked:
        lines += ["", "Not checked before the deadline: " + ", ".join(r.unchecked)]
    if r.warnings:
        lines += ["", "## Warnings"] + [f"- {w}" for w in r.warnings]
    return "\n".join(lines)
