"""Where the add-ons a spec installs come from, and what proves each file is the right one.

Every file a CNI or monitoring step applies is downloaded by the node script and checked against
every sha256 known for it (kai_fetch_verified in lib.sh):
- a pin: the spec's `addons.checksums[<file name>]`, else the versions table's reviewed pin;
- a published list: the project's checksum file (helm's `.sha256sum`, a Helm repository's
  index.yaml `digest`) or, from a mirror, the `.sha256` file the mirror keeps beside each file.
A file with neither is applied unverified and says so; every file's sha256 is reported
(`$KAI_OUT_DIR/files.sha256` → the run's `applied-files` artifact and the cluster-info report).

Mirror layout (docs/architecture.md §6), in addition to the runtime and package files:
    {mirror}/helm/v{V}/helm-v{V}-linux-{arch}.tar.gz            (+ .sha256sum, upstream format)
    {mirror}/charts/{chart}/index.yaml + {chart}-{V}.tgz         (a Helm repository)
    {mirror}/manifests/{name}/v{V}/{file}                        (+ {file}.sha256)
Pure: reads the spec and the versions table, contacts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from installers import versions as V

if TYPE_CHECKING:
    from installers.spec import ClusterSpec

MONITORING_NAMESPACE = "monitoring"
# kube-prometheus also ships prometheus-adapter, which serves the same APIService
# (v1beta1.metrics.k8s.io) as metrics-server: two owners of one API fight. kai installs
# metrics-server for that API and leaves the adapter's files out (monitoring.sh).
KUBE_PROMETHEUS_SKIPPED_PREFIX = "prometheusAdapter-"

# What verify checks once monitoring is on: (kind, namespace, name). Deployments must have all
# replicas available, DaemonSets a ready pod per scheduled node, the operator's custom objects
# the condition Available=True (set by prometheus-operator once their StatefulSets are ready).
MONITORING_WORKLOADS: tuple[tuple[str, str, str], ...] = (
    ("Deployment", "kube-system", "metrics-server"),
    ("Deployment", MONITORING_NAMESPACE, "prometheus-operator"),
    ("Deployment", MONITORING_NAMESPACE, "kube-state-metrics"),
    ("Deployment", MONITORING_NAMESPACE, "grafana"),
    ("DaemonSet", MONITORING_NAMESPACE, "node-exporter"),
    ("Prometheus", MONITORING_NAMESPACE, "k8s"),
    ("Alertmanager", MONITORING_NAMESPACE, "main"),
)
CUSTOM_WORKLOAD_GROUP = "monitoring.coreos.com/v1"


@dataclass(frozen=True)
class Source:
    """One file a step downloads: where from, its pin (may be empty) and the URL of a list that
    publishes its sha256 (may be empty)."""
    url: str
    sha256: str
    sums_url: str


def _mirror(spec: "ClusterSpec") -> str | None:
    return spec.mirror.url.rstrip("/") if spec.mirror is not None else None


def pin(spec: "ClusterSpec", file_name: str, table_pin: str | None) -> str:
    """The spec's pin for a file name wins over the versions table's (a reviewed override)."""
    return spec.addons.checksums.get(file_name) or table_pin or ""


def helm(spec: "ClusterSpec") -> Source:
    v = V.HELM_VERSION
    name = f"helm-v{v}-linux-{V.ARCH_PLACEHOLDER}.tar.gz"
    base = f"{m}/helm/v{v}" if (m := _mirror(spec)) else V.HELM_UPSTREAM
    # HELM_SHA256 is per arch: the script picks the node's (KAI_HELM_SHA256_<arch>)
    return Source(f"{base}/{name}", "", f"{base}/{name}.sha256sum")


def helm_pins(spec: "ClusterSpec") -> dict[str, str]:
    """KAI_HELM_SHA256_amd64 / _arm64: a pin per architecture (empty when none is known)."""
    return {f"KAI_HELM_SHA256_{arch}": pin(spec, f"helm-v{V.HELM_VERSION}-linux-{arch}.tar.gz",
                                           V.HELM_SHA256.get(arch))
            for arch in ("amd64", "arm64")}


def cni_chart(spec: "ClusterSpec") -> tuple[V.HelmChart, Source] | None:
    """The chart the spec's CNI is installed from (None: a manifest CNI)."""
    chart = V.CNI_CHARTS.get(spec.networking.cni)
    if chart is None:
        return None
    repo = f"{m}/charts/{chart.name}" if (m := _mirror(spec)) else chart.repo.rstrip("/")
    return chart, Source(f"{repo}/{chart.file}", pin(spec, chart.file, chart.sha256),
                         f"{repo}/index.yaml")


def cni_manifest(spec: "ClusterSpec") -> Source:
    cni = V.CNIS[spec.networking.cni]
    url = V.download_urls(spec).cni_manifest
    return Source(url, pin(spec, cni.manifest_file, cni.sha256),
                  f"{url}.sha256" if _mirror(spec) and url else "")


def cilium_values(spec: "ClusterSpec") -> str:
    """The chart values kai sets (YAML): IPAM from the node pod CIDRs kubeadm's controller
    manager allocates out of networking.pod_cidr, kube-proxy kept, and no more operator
    replicas than nodes (the operator's replicas refuse to share a node)."""
    replicas = min(2, len(spec.nodes))
    return ("ipam:\n  mode: kubernetes\n"
            "kubeProxyReplacement: false\n"
            f"operator:\n  replicas: {replicas}\n")


def metrics_server(spec: "ClusterSpec") -> Source:
    return _manifest(spec, "metrics-server", V.METRICS_SERVER_VERSION, V.METRICS_SERVER_FILE,
                     V.METRICS_SERVER_UPSTREAM, V.METRICS_SERVER_SHA256)


def kube_prometheus(spec: "ClusterSpec") -> Source:
    return _manifest(spec, "kube-prometheus", V.KUBE_PROMETHEUS_VERSION, V.KUBE_PROMETHEUS_FILE,
                     V.KUBE_PROMETHEUS_UPSTREAM, V.KUBE_PROMETHEUS_SHA256)


def _manifest(spec: "ClusterSpec", name: str, version: str, file: str, upstream: str,
              table_pin: str | None) -> Source:
    if (m := _mirror(spec)):
        url = f"{m}/manifests/{name}/v{version}/{file}"
        return Source(url, pin(spec, file, table_pin), f"{url}.sha256")
    return Source(upstream, pin(spec, file, table_pin), "")


def known_files() -> set[str]:
    """The file names `addons.checksums` may pin (anything else is a typo: validation says so)."""
    names = {c.manifest_file for c in V.CNIS.values()} | {c.file for c in V.CNI_CHARTS.values()}
    names |= {f"helm-v{V.HELM_VERSION}-linux-{arch}.tar.gz" for arch in ("amd64", "arm64")}
    names |= {V.METRICS_SERVER_FILE, V.KUBE_PROMETHEUS_FILE}
    return names
