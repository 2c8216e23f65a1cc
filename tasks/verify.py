"""Verify the cluster from the controller: API, nodes Ready, system and CNI pods, storage, certs.

A polling step: it looks at the cluster every few seconds until it is healthy or the step's
deadline passes (nodes turn Ready only after the CNI is up, so the first looks are expected to find
problems) — no retries, so a broken cluster is FAILED in bounded time, with a message naming every
failing check and its last error. Then it publishes what it found twice: as data, a one-row table
artifact `cluster-facts` (the wrapper's `cluster_info`, deployments/run_status.py), and as the
markdown artifact `cluster-info`, the run's summary for people in the Prefect UI.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from installers.addons import MONITORING_WORKLOADS
from installers.cluster_check import (CERT_EXPIRING_EVENT, CERT_WARN_DAYS, FACTS_ARTIFACT_KEY,
                                      ClusterReport, check_cluster, version_drift)
from installers.cluster_poll import POLL_S, PollOutcome, poll_until_healthy, unhealthy_message
from installers.plan import Step
from installers.spec import ClusterSpec
from tasks.context import current_run
from tasks.step_task import step_task

# run.info: each node's installed versions, when the run read them (health: tasks/versions.py)
INSTALLED_VERSIONS = "installed_versions"
VERSIONS_UNREAD = "versions_unread"  # node -> why the run could not read its versions
# cluster_info's days left per certificate per control plane, when the run looked (certs mode)
CERTIFICATES_BY_NODE = "certificates_by_node"


class ClusterUnhealthy(Exception):
    pass


def poll_cluster(step: Step, look: Callable[[float], ClusterReport]) -> tuple[PollOutcome, float]:
    """Look at the cluster until it is healthy, the step's deadline passes or the run is
    cancelled, logging what it still waits for → (the outcome, the deadline in seconds).
    verify's and remove_nodes' verify_removal's."""
    logger = get_run_logger()
    deadline_s = step.policy.deadline_s or step.policy.timeout_s
    outcome = poll_until_healthy(
        look, deadline_s, poll_s=POLL_S, stop=current_run().cancel,
        on_wait=lambda report: logger.info("verify: waiting — %s", "; ".join(report.problems[:3])))
    return outcome, deadline_s


@step_task
def verify(step: Step, kubeconfig: str | None = None) -> dict:
    run = current_run()
    logger = get_run_logger()
    path = Path(kubeconfig or run.info.get("kubeconfig_path") or run.cluster_dir / "admin.conf")
    expected = [n.name for n in run.spec.nodes]
    storage_class = "local-path" if run.spec.storage.local_path else None
    workloads = MONITORING_WORKLOADS if run.spec.addons.monitoring else ()
    look = partial(_look, path, expected, storage_class, workloads, step.policy.timeout_s)
    outcome, deadline_s = poll_cluster(step, look)
    report = outcome.report
    drift = spec_drift(run.spec, report, run.info.get(INSTALLED_VERSIONS))
    report.warnings += [f"version drift: {line}" for line in drift]
    report.warnings += [f"version drift: node {node}: not checked, its versions were not read ({why})"
                        for node, why in sorted(run.info.get(VERSIONS_UNREAD, {}).items())]
    for warning in report.warnings:
        logger.warning("verify: %s", warning)
    alert_expiring_certificates(run.spec.name, report)
    info = cluster_facts(run.spec, report, path) | {"drift": drift}
    for key in (CERTIFICATES_BY_NODE, INSTALLED_VERSIONS):  # what the mode's node steps read
        if key in run.info:  # (tasks/certs.py, tasks/versions.py)
            info[key] = run.info[key]
    run.info.update(info)
    create_table_artifact([info], key=FACTS_ARTIFACT_KEY, description=f"cluster {run.spec.name} (data)")
    create_markdown_artifact(render_report(run.spec.name, report, path,
                                           run.info.get("applied_files", [])), key="cluster-info",
                             description=f"cluster {run.spec.name}")
    if not outcome.healthy:
        raise ClusterUnhealthy(unhealthy_message(run.spec.name, outcome, deadline_s))
    logger.info("verify: %d node(s) Ready, %d pods, API %s", len(report.nodes),
                sum(report.pods_by_namespace.values()), report.version)
    return info


def spec_drift(spec: ClusterSpec, report: ClusterReport,
               installed: dict[str, dict[str, str]] | None = None) -> list[str]:
    """Each node's kubelet and containerd against the spec (containerd from the distribution is
    not pinned, so not compared), and kubeadm where the run read the nodes' binaries (health's
    node_versions step: tasks/versions.py)."""
    containerd = spec.runtime.containerd
    return version_drift(report.nodes, spec.kubernetes.full_version,
                         None if containerd.source == "distro" else containerd.version, installed)


def alert_expiring_certificates(cluster: str, report: ClusterReport) -> None:
    """An event per certificate under CERT_WARN_DAYS: kai's alert automation (deployments/alerts.py)
    sends it to the user's notification block."""
    for what, days in report.cert_days_left.items():
        if days < CERT_WARN_DAYS:
            emit_certificate_expiring(cluster, what, days, report.cert_expiry.get(what, ""))


def emit_certificate_expiring(cluster: str, certificate: str, days_left: int, expires: str) -> None:
    """The `kai.certificate.expiring` event of one certificate (health and the certs mode). The
    event names the run (emit_event relates it to the flow run it is sent from)."""
    from prefect.events import emit_event
    from prefect.runtime import flow_run

    emit_event(CERT_EXPIRING_EVENT, resource={"prefect.resource.id": f"kai.cluster.{cluster}",
                                              "prefect.resource.name": cluster},
               payload={"cluster": cluster, "certificate": certificate, "days_left": days_left,
                        "expires": expires, "run_name": flow_run.name or "", "run_id": flow_run.id or ""})


def cluster_facts(spec: ClusterSpec, report: ClusterReport, kubeconfig: Path) -> dict:
    """What the last look found (nodes with roles, readiness, kubelet version, InternalIP and
    creation time; pods per namespace; API version; storage classes; certificates; problems)
    and what the spec says of the cluster's networks (CNI, pod and service CIDRs): JSON data."""
    net = spec.networking
    return report.as_dict() | {"kubeconfig_path": str(kubeconfig), "cluster": spec.name,
                               "cni": net.cni, "pod_cidr": net.pod_cidr, "service_cidr": net.service_cidr}


def _look(path: Path, expected: list[str], storage_class: str | None,
          workloads: tuple[tuple[str, str, str], ...], timeout_s: float,
          deadline: float) -> ClusterReport:
    return check_cluster(path, expected, expect_storage_class=storage_class,
                         expect_workloads=workloads, timeout=timeout_s, deadline=deadline)


def render_report(cluster: str, r: ClusterReport, kubeconfig: Path,
                  applied_files: list[dict] | None = None) -> str:
    lines = [f"# Cluster `{cluster}` — {'healthy' if r.healthy else 'NOT healthy'}", "",
             f"API server `{r.server}` version `{r.version}`; kubeconfig `{kubeconfig}` (mode 0600)", "",
             "| node | roles | ready | kubelet | address |", "|---|---|---|---|---|"]
    lines += [f"| {n.name} | {', '.join(n.roles)} | {'yes' if n.ready else 'NO'} | {n.kubelet_version} "
              f"| {n.address} |" for n in r.nodes]
    lines += ["", "| namespace | pods |", "|---|---|"]
    lines += [f"| {ns} | {count} |" for ns, count in r.pods_by_namespace.items()]
    lines += ["", "Storage classes: " + (", ".join(r.storage_classes) or "none"), ""]
    if r.workloads:
        lines += ["| add-on workload | state |", "|---|---|"]
        lines += [f"| {w} | {state} |" for w, state in r.workloads.items()] + [""]
    if applied_files:
        lines += ["| applied file | sha256 | verified against | step |", "|---|---|---|---|"]
        lines += [f"| {f['file']} | `{f['sha256']}` | {f['verified_by']} | {f['step']} |"
                  for f in applied_files] + [""]
    lines += [f"- {what} expires {date} ({r.cert_days_left.get(what, '?')} days left)"
              for what, date in r.cert_expiry.items()]
    lines += ["", f"etcd: {r.etcd or 'not checked'}"]
    if r.problems:
        lines += ["", "## Problems"] + [f"- {p}" for p in r.problems]
    if r.unchecked:
        lines += ["", "Not checked before the deadline: " + ", ".join(r.unchecked)]
    if r.warnings:
        lines += ["", "## Warnings"] + [f"- {w}" for w in r.warnings]
    return "\n".join(lines)
