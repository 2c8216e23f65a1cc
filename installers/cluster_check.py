"""Ask a cluster how it is, over the Kubernetes API, as the admin kubeconfig's client certificate.

Used by the verify step after an install and by the schedulable `health` flow. Plain httpx against
the API server's real paths (/readyz, /version, /api/v1/nodes, /api/v1/pods, storage classes),
with the kubeconfig's CA pinned and its client certificate presented (installers/kube_api.py); no
kubectl needed. A polling step's looks until healthy or its deadline: installers/cluster_poll.py.
"""

from __future__ import annotations

import datetime as dt
import re
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography import x509

# KubeconfigCredentials: also imported from here by callers
from installers.kube_api import KubeconfigCredentials, describe_error, is_ready  # noqa: F401

CERT_WARN_DAYS = 30
# The Prefect event a health run emits per certificate under CERT_WARN_DAYS (deployments/alerts.py
# turns it into a notification); its resource is `kai.cluster.<name>`.
CERT_EXPIRING_EVENT = "kai.certificate.expiring"
# The Prefect artifact (a one-row table) in which verify publishes what it found (tasks/verify.py),
# read back as a run's `cluster_info` (deployments/run_status.py).
FACTS_ARTIFACT_KEY = "cluster-facts"


@dataclass
class NodeInfo:
    name: str
    roles: list[str]
    ready: bool
    kubelet_version: str
    address: str              # the InternalIP
    created: str = ""         # metadata.creationTimestamp (RFC 3339): the node's age
    container_runtime: str = ""  # status.nodeInfo.containerRuntimeVersion, e.g. containerd://2.1.4


# The checks of one look at the cluster, in the order they run. Each fails on its own, with its
# own error, so a report (and a polling step's final message) can name every one that failed.
CHECKS = ("api", "etcd", "nodes", "pods", "storage", "workloads", "certificates")
NOT_CHECKED = "not checked before the deadline"


@dataclass
class ClusterReport:
    server: str
    version: str = ""
    nodes: list[NodeInfo] = field(default_factory=list)
    pods_by_namespace: dict[str, int] = field(default_factory=dict)
    not_ready_pods: list[str] = field(default_factory=list)
    storage_classes: list[str] = field(default_factory=list)
    workloads: dict[str, str] = field(default_factory=dict)  # "Kind ns/name" -> ready | problem
    cert_expiry: dict[str, str] = field(default_factory=dict)  # what -> ISO date
    cert_days_left: dict[str, int] = field(default_factory=dict)  # what -> whole days left
    etcd: str = ""            # "ok", or why it is not known (the API server's /readyz/etcd)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failed_checks: dict[str, list[str]] = field(default_factory=dict)  # check -> its problems
    unchecked: list[str] = field(default_factory=list)  # checks the look's deadline cut off

    @property
    def healthy(self) -> bool:
        return not self.problems and not self.unchecked

    def fail(self, check: str, problem: str) -> None:
        self.problems.append(problem)
        self.failed_checks.setdefault(check, []).append(problem)

    def as_dict(self) -> dict:
        return {
            "healthy": self.healthy,
            "server": self.server,
            "version": self.version,
            "nodes": [vars(n) for n in self.nodes],
            "pod_count_by_namespace": self.pods_by_namespace,
            "not_ready_pods": self.not_ready_pods,
            "storage_classes": self.storage_classes,
            "workloads": self.workloads,
            "certificate_expiry": self.cert_expiry,
            "certificate_days_left": self.cert_days_left,
            "etcd": self.etcd,
            "problems": self.problems,
            "warnings": self.warnings,
            "failed_checks": self.failed_checks,
        }


def _expiry(cert: x509.Certificate) -> dt.datetime:
    return cert.not_valid_after_utc


class CheckFailed(Exception):
    """One check could not get its answer from the API server (the message says why)."""


@dataclass
class _Look:
    """One look's connection to the API server; every request ends by the look's deadline."""

    api: httpx.Client
    timeout: float
    deadline: float | None  # time.monotonic() value; None: only `timeout` per request

    def request_timeout(self) -> float:
        if self.deadline is None:
            return self.timeout
        # at least a second: a request cut to nothing would report a timeout, not the real error
        return max(1.0, min(self.timeout, self.deadline - time.monotonic()))

    def get(self, path: str) -> httpx.Response:
        try:
            return self.api.get(path, timeout=self.request_timeout())
        except httpx.HTTPError as exc:
            raise CheckFailed(f"GET {path}: {describe_error(exc)}") from None

    def get_json(self, path: str) -> dict:
        resp = self.get(path)
        if resp.status_code != 200:
            raise CheckFailed(f"GET {path} answered {resp.status_code}: {resp.text[:200]}")
        try:
            return resp.json()
        except ValueError:
            raise CheckFailed(f"GET {path} answered something that is not JSON: {resp.text[:200]!r}") from None


@dataclass
class _Expectations:
    """What a healthy cluster has: these nodes, this storage class, a valid serving certificate."""

    creds: KubeconfigCredentials
    nodes: list[str]
    storage_class: str | None
    workloads: tuple[tuple[str, str, str], ...] = ()  # (kind, namespace, name) that must be ready


def _check_api(look: _Look, report: ClusterReport, want: _Expectations) -> None:
    try:
        ready = look.get("/readyz")
    except CheckFailed as exc:
        raise CheckFailed(f"API server {want.creds.server} unreachable: {exc}") from None
    if ready.status_code != 200:
        report.fail("api", f"API server /readyz answered {ready.status_code}: {ready.text[:200]}")
    report.version = look.get_json("/version").get("gitVersion", "")


def _check_etcd(look: _Look, report: ClusterReport, want: _Expectations) -> None:
    """The API server's own view of its etcd (a real kube-apiserver serves /readyz/etcd)."""
    answer = look.get("/readyz/etcd")
    if answer.status_code == 200:
        report.etcd = "ok"
    elif answer.status_code == 404:
        # TODO(etcd helper, issue #12 §1): the API stand-in does not serve /readyz/etcd yet; once
        # it keeps its objects in a real etcd it should, and this branch only remains for API
        # servers that hide the check
        report.etcd = "unknown: the API server does not report it (/readyz/etcd 404)"
        report.warnings.append(f"etcd health not checked: {report.etcd}")
    else:
        report.etcd = f"not healthy: /readyz/etcd answered {answer.status_code}"
        report.fail("etcd", f"etcd {report.etcd}: {answer.text[:200]}")


def _check_nodes(look: _Look, report: ClusterReport, want: _Expectations) -> None:
    for item in look.get_json("/api/v1/nodes").get("items", []):
        meta, status = item["metadata"], item.get("status", {})
        roles = sorted(k.split("/", 1)[1] for k in meta.get("labels", {})
                       if k.startswith("node-role.kubernetes.io/"))
        address = next((a["address"] for a in status.get("addresses", [])
                        if a.get("type") == "InternalIP"), "")
        report.nodes.append(NodeInfo(meta["name"], roles or ["worker"],
                                     is_ready(status.get("conditions", [])),
                                     status.get("nodeInfo", {}).get("kubeletVersion", ""), address,
                                     meta.get("creationTimestamp", ""),
                                     status.get("nodeInfo", {}).get("containerRuntimeVersion", "")))
    seen = {n.name for n in report.nodes}
    for name in want.nodes:
        if name not in seen:
            report.fail("nodes", f"node {name} is not registered in the cluster")
    for node in report.nodes:
        if not node.ready:
            report.fail("nodes", f"node {node.name} is not Ready")


def _check_pods(look: _Look, report: ClusterReport, want: _Expectations) -> None:
    counts: Counter[str] = Counter()
    for pod in look.get_json("/api/v1/pods").get("items", []):
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        counts[ns] += 1
        status = pod.get("status", {})
        if status.get("phase") == "Succeeded":
            continue
        if status.get("phase") != "Running" or not is_ready(status.get("conditions", [])):
            report.not_ready_pods.append(f"{ns}/{name}")
    report.pods_by_namespace = dict(sorted(counts.items()))
    if report.not_ready_pods:
        shown = ", ".join(report.not_ready_pods[:10])
        report.fail("pods", f"{len(report.not_ready_pods)} pod(s) not ready: {shown}")
    if "kube-system" not in counts:
        report.fail("pods", "no pods in kube-system")


def _check_storage(look: _Look, report: ClusterReport, want: _Expectations) -> None:
    classes = look.get_json("/apis/storage.k8s.io/v1/storageclasses").get("items", [])
    report.storage_classes = [c["metadata"]["name"] for c in classes]
    if want.storage_class and want.storage_class not in report.storage_classes:
        report.fail("storage", f"storage class {want.storage_class} missing")


# kind -> its API collection (the workloads add-ons bring: installers/addons.py)
WORKLOAD_COLLECTIONS = {
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
    "DaemonSet": "/apis/apps/v1/namespaces/{ns}/daemonsets/{name}",
    "StatefulSet": "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}",
    "Prometheus": "/apis/monitoring.coreos.com/v1/namespaces/{ns}/prometheuses/{name}",
    "Alertmanager": "/apis/monitoring.coreos.com/v1/namespaces/{ns}/alertmanagers/{name}",
}


def workload_problem(kind: str, obj: dict) -> str | None:
    """Why a workload is not ready yet (None: ready). Deployments and StatefulSets: every
    replica available; DaemonSets: a ready pod on every node it is scheduled to; the operator's
    custom objects: the condition Available=True."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if kind in ("Deployment", "StatefulSet"):
        want = spec.get("replicas", 1)
        have = status.get("availableReplicas" if kind == "Deployment" else "readyReplicas", 0) or 0
        return None if have >= want else f"{have} of {want} replica(s) available"
    if kind == "DaemonSet":
        want, have = status.get("desiredNumberScheduled", 0), status.get("numberReady", 0)
        if not want:
            return "scheduled on no node"
        return None if have >= want else f"{have} of {want} pod(s) ready"
    available = [c for c in status.get("conditions") or [] if c.get("type") == "Available"]
    if available and available[0].get("status") == "True":
        return None
    reason = available[0].get("message") or available[0].get("reason") if available else None
    return f"not Available ({reason or 'no Available condition yet'})"


def _check_workloads(look: _Look, report: ClusterReport, want: _Expectations) -> None:
    for kind, ns, name in want.workloads:
        label = f"{kind} {ns}/{name}"
        path = WORKLOAD_COLLECTIONS[kind].format(ns=ns, name=name)
        resp = look.get(path)
        if resp.status_code == 404:
            problem: str | None = "missing"
        elif resp.status_code != 200:
            raise CheckFailed(f"GET {path} answered {resp.status_code}: {resp.text[:200]}")
        else:
            problem = workload_problem(kind, resp.json())
        report.workloads[label] = problem or "ready"
        if problem:
            report.fail("workloads", f"{label}: {problem}")


def _check_certificates(look: _Look, report: ClusterReport, want: _Expectations) -> None:
    try:
        serving = want.creds.serving_cert(look.request_timeout())
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise CheckFailed(f"cannot read the API server certificate: {describe_error(exc)}") from None
    now = dt.datetime.now(dt.timezone.utc)
    for what, cert in (("admin client certificate", x509.load_pem_x509_certificate(want.creds.client_cert)),
                       ("API server certificate", serving)):
        expires = _expiry(cert)
        report.cert_expiry[what] = expires.date().isoformat()
        days = (expires - now).days
        report.cert_days_left[what] = days
        if days < 0:
            report.fail("certificates", f"{what} expired on {expires.date()}")
        elif days < CERT_WARN_DAYS:
            report.warnings.append(f"{what} expires in {days} days ({expires.date()}): renew with kubeadm certs renew")


_CHECK_FUNCTIONS = {"api": _check_api, "etcd": _check_etcd, "nodes": _check_nodes, "pods": _check_pods,
                    "storage": _check_storage, "workloads": _check_workloads,
                    "certificates": _check_certificates}


def check_cluster(
    kubeconfig: Path,
    expected_nodes: list[str],
    *,
    expect_storage_class: str | None = None,
    expect_workloads: tuple[tuple[str, str, str], ...] = (),
    timeout: float = 10,
    deadline: float | None = None,
) -> ClusterReport:
    """One look at the cluster; every check runs and every problem found is listed (nothing raised
    for cluster state). With a `deadline` (time.monotonic()), requests are cut short to end by it
    and the checks not reached by then are listed in `unchecked`."""
    creds = KubeconfigCredentials(kubeconfig)
    report = ClusterReport(server=creds.server)
    want = _Expectations(creds, expected_nodes, expect_storage_class, tuple(expect_workloads))
    with creds.client(timeout) as api:
        look = _Look(api, timeout, deadline)
        for name in CHECKS:
            if deadline is not None and time.monotonic() >= deadline:
                report.unchecked.append(name)
                continue
            try:
                _CHECK_FUNCTIONS[name](look, report, want)
            except CheckFailed as exc:
                report.fail(name, str(exc))
    return report


# --- drift: what the nodes run against what the spec says ----------------------------------------

def upstream_version(version: str) -> str:
    """The x.y.z a binary reports, without a leading v or a packager's suffix: a repackaged
    containerd says 1.6.20~ds1 (Debian), 1.7.27-1 or 1.7.27+dfsg; drift is about upstream's."""
    found = re.match(r"v?(\d+\.\d+\.\d+)", version.strip())
    return found.group(1) if found else version.strip()


def version_drift(nodes: list[NodeInfo], kubernetes: str, containerd: str | None,
                  installed: dict[str, dict[str, str]] | None = None) -> list[str]:
    """One line per node whose kubelet, kubeadm or containerd is not the spec's version
    (containerd None: not pinned, e.g. the distribution's package). The running kubelet and
    containerd from the Node objects' nodeInfo; `installed`: what each node's binaries say
    (node-versions.sh: kubeadm_version, kubelet_version), for the nodes the run could read."""
    drift = []
    running = {node.name: upstream_version(node.kubelet_version) for node in nodes}
    for node in nodes:
        kubelet = running[node.name]
        if kubelet and kubelet != kubernetes:
            drift.append(f"node {node.name}: kubelet {kubelet}, the spec says {kubernetes}")
        runtime, _, version = node.container_runtime.partition("://")
        if containerd and runtime == "containerd" and upstream_version(version) != containerd:
            drift.append(f"node {node.name}: containerd {version}, the spec says {containerd}")
    for name, found in sorted((installed or {}).items()):
        kubeadm = upstream_version(found.get("kubeadm_version", "unknown"))
        if kubeadm == "unknown":
            drift.append(f"node {name}: kubeadm answers no version (not installed?), the spec says {kubernetes}")
        elif kubeadm != kubernetes:
            drift.append(f"node {name}: kubeadm {kubeadm}, the spec says {kubernetes}")
        on_disk = upstream_version(found.get("kubelet_version", "unknown"))
        if on_disk not in ("unknown", kubernetes, running.get(name)):
            # a package changed under a kubelet that was not restarted (or one that is not running)
            drift.append(f"node {name}: the kubelet binary is {on_disk} but {running.get(name) or 'none'} "
                         f"runs, the spec says {kubernetes}")
    return drift
