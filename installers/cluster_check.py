"""Ask a cluster how it is, over the Kubernetes API, as the admin kubeconfig's client certificate.

Used by the verify step after an install and by the schedulable `health` flow. Plain httpx against
the API server's real paths (/readyz, /version, /api/v1/nodes, /api/v1/pods, storage classes),
with the kubeconfig's CA pinned and its client certificate presented; no kubectl needed.
"""

from __future__ import annotations

import base64
import datetime as dt
import socket
import ssl
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import yaml
from cryptography import x509

CERT_WARN_DAYS = 30


@dataclass
class NodeInfo:
    name: str
    roles: list[str]
    ready: bool
    kubelet_version: str
    address: str


@dataclass
class ClusterReport:
    server: str
    version: str = ""
    nodes: list[NodeInfo] = field(default_factory=list)
    pods_by_namespace: dict[str, int] = field(default_factory=dict)
    not_ready_pods: list[str] = field(default_factory=list)
    storage_classes: list[str] = field(default_factory=list)
    cert_expiry: dict[str, str] = field(default_factory=dict)  # what -> ISO date
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {
            "server": self.server,
            "version": self.version,
            "nodes": [vars(n) for n in self.nodes],
            "pod_count_by_namespace": self.pods_by_namespace,
            "not_ready_pods": self.not_ready_pods,
            "storage_classes": self.storage_classes,
            "certificate_expiry": self.cert_expiry,
            "problems": self.problems,
            "warnings": self.warnings,
        }


class KubeconfigCredentials:
    """The first cluster and user of a kubeconfig as an SSL context (files removed on close)."""

    def __init__(self, kubeconfig: Path):
        config = yaml.safe_load(Path(kubeconfig).read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        self.server = cluster["server"].rstrip("/")
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        self.client_cert = base64.b64decode(user["client-certificate-data"])
        key = base64.b64decode(user["client-key-data"])
        self.context = ssl.create_default_context(cadata=ca)
        # ssl only loads a client key from a file: a private 0700 dir, deleted right away
        with tempfile.TemporaryDirectory(prefix="kai-cred-") as tmp:
            cert_path, key_path = Path(tmp, "c.pem"), Path(tmp, "k.pem")
            cert_path.write_bytes(self.client_cert)
            key_path.touch(mode=0o600)
            key_path.write_bytes(key)
            self.context.load_cert_chain(cert_path, key_path)

    def client(self, timeout: float) -> httpx.Client:
        return httpx.Client(base_url=self.server, verify=self.context, timeout=timeout)

    def serving_cert(self, timeout: float) -> x509.Certificate:
        url = urlparse(self.server)
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout) as sock:
            with self.context.wrap_socket(sock, server_hostname=url.hostname) as tls:
                return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def _expiry(cert: x509.Certificate) -> dt.datetime:
    return cert.not_valid_after_utc


def _ready(conditions: list[dict]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions or [])


def check_cluster(
    kubeconfig: Path,
    expected_nodes: list[str],
    *,
    expect_storage_class: str | None = None,
    timeout: float = 10,
) -> ClusterReport:
    """One look at the cluster; every problem found is listed (nothing raised for cluster state)."""
    creds = KubeconfigCredentials(kubeconfig)
    report = ClusterReport(server=creds.server)
    now = dt.datetime.now(dt.timezone.utc)
    with creds.client(timeout) as api:
        try:
            ready = api.get("/readyz")
        except httpx.HTTPError as exc:
            report.problems.append(f"API server {creds.server} unreachable: {exc}")
            return report
        if ready.status_code != 200:
            report.problems.append(f"API server /readyz answered {ready.status_code}: {ready.text[:200]}")
        report.version = api.get("/version").json().get("gitVersion", "")

        for item in api.get("/api/v1/nodes").json().get("items", []):
            meta, status = item["metadata"], item.get("status", {})
            roles = sorted(k.split("/", 1)[1] for k in meta.get("labels", {})
                           if k.startswith("node-role.kubernetes.io/"))
            address = next((a["address"] for a in status.get("addresses", [])
                            if a.get("type") == "InternalIP"), "")
            report.nodes.append(NodeInfo(meta["name"], roles or ["worker"],
                                         _ready(status.get("conditions", [])),
                                         status.get("nodeInfo", {}).get("kubeletVersion", ""), address))
        seen = {n.name for n in report.nodes}
        for name in expected_nodes:
            if name not in seen:
                report.problems.append(f"node {name} is not registered in the cluster")
        for node in report.nodes:
            if not node.ready:
                report.problems.append(f"node {node.name} is not Ready")

        counts: Counter[str] = Counter()
        for pod in api.get("/api/v1/pods").json().get("items", []):
            ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            counts[ns] += 1
            status = pod.get("status", {})
            if status.get("phase") == "Succeeded":
                continue
            if status.get("phase") != "Running" or not _ready(status.get("conditions", [])):
                report.not_ready_pods.append(f"{ns}/{name}")
        report.pods_by_namespace = dict(sorted(counts.items()))
        if report.not_ready_pods:
            shown = ", ".join(report.not_ready_pods[:10])
            report.problems.append(f"{len(report.not_ready_pods)} pod(s) not ready: {shown}")
        if "kube-system" not in counts:
            report.problems.append("no pods in kube-system")

        classes = api.get("/apis/storage.k8s.io/v1/storageclasses").json().get("items", [])
        report.storage_classes = [c["metadata"]["name"] for c in classes]
        if expect_storage_class and expect_storage_class not in report.storage_classes:
            report.problems.append(f"storage class {expect_storage_class} missing")

    for what, cert in (("admin client certificate", x509.load_pem_x509_certificate(creds.client_cert)),
                       ("API server certificate", creds.serving_cert(timeout))):
        expires = _expiry(cert)
        report.cert_expiry[what] = expires.date().isoformat()
        days = (expires - now).days
        if days < 0:
            report.problems.append(f"{what} expired on {expires.date()}")
        elif days < CERT_WARN_DAYS:
            report.warnings.append(f"{what} expires in {days} days ({expires.date()}): renew with kubeadm certs renew")
    return report
