"""The add-on files of the tests' mirror (installers/addons.py's layout), in the upstream shapes:

- helm's release archive helm-v{V}-linux-amd64.tar.gz (+ .sha256sum): linux-amd64/helm is the
  helm stand-in (standins/helm.py) as a Python zip application;
- a Helm repository charts/cilium/: index.yaml (digest per entry, an older release listed too)
  and cilium-{V}.tgz: Chart.yaml, values.yaml, values.schema.json, templates/ with the stand-in
  cilium objects (standins/manifests.py) and the values kai sets;
- metrics-server's components.yaml and kube-prometheus's release archive (kube-prometheus-{V}/
  manifests/setup: the namespace and the CRDs; manifests/: Prometheus, Alertmanager, a
  ServiceMonitor, a PrometheusRule, the operator, node-exporter, kube-state-metrics, Grafana and
  prometheus-adapter, which kai leaves out), each with a .sha256 beside it;
- a .sha256 beside every CNI manifest.
Upstream files cannot be fetched here; these have the same file names, layout and object shapes.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
import time
import zipapp
from pathlib import Path

import yaml

from installers import versions as V

from .standins import manifests as m

STANDINS = Path(__file__).resolve().parent / "standins"
ARCH = "amd64"
# sentinels replaced by template actions after dumping (YAML would quote a "{{ }}" string)
_REPLICAS, _IPAM = 987654321, "kai-ipam-mode-placeholder"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _targz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o755, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _write(path: Path, data: bytes, sums: str | None = None) -> None:
    """Write a file and, when asked, its checksum file (`.sha256sum` or `.sha256`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if sums:
        (path.parent / f"{path.name}{sums}").write_text(f"{sha256(data)}  {path.name}\n")


def helm_archive() -> bytes:
    """helm-v{V}-linux-amd64.tar.gz with linux-amd64/helm = the stand-in as a zip application."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "src")
        src.mkdir()
        for name in ("helm.py", "standin_common.py"):
            (src / name).write_bytes((STANDINS / name).read_bytes())
        (src / "__main__.py").write_text("import sys\nimport helm\nfrom standin_common import run_main\n"
                                        "sys.exit(run_main('helm', helm.main))\n")
        target = Path(tmp, "helm")
        zipapp.create_archive(src, target, interpreter="/usr/bin/python3")
        return _targz({f"linux-{ARCH}/helm": target.read_bytes(), f"linux-{ARCH}/LICENSE": b"Apache-2.0\n"})


def cilium_chart(version: str) -> bytes:
    docs = yaml.safe_load_all(m.cni_manifest("cilium", version))
    templates = []
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            doc["data"]["ipam"] = _IPAM
        if doc["kind"] == "Deployment":
            doc["spec"]["replicas"] = _REPLICAS
        templates.append(doc)
    text = m._dump(templates).replace("namespace: kube-system", "namespace: {{ .Release.Namespace }}")
    text = text.replace(str(_REPLICAS), "{{ .Values.operator.replicas }}")
    text = text.replace(_IPAM, "{{ .Values.ipam.mode }}")
    chart = {"apiVersion": "v2", "name": "cilium", "version": version, "appVersion": version,
             "kubeVersion": ">= 1.21.0-0", "description": "eBPF-based Networking, Security, and Observability"}
    values = {"ipam": {"mode": "cluster-pool"}, "kubeProxyReplacement": False,
              "operator": {"replicas": 2}}
    schema = {"type": "object", "additionalProperties": False, "properties": {
        "ipam": {"type": "object", "additionalProperties": False,
                 "properties": {"mode": {"type": "string"}}},
        "kubeProxyReplacement": {"type": "boolean"},
        "operator": {"type": "object", "additionalProperties": False,
                     "properties": {"replicas": {"type": "integer"}}}}}
    return _targz({"cilium/Chart.yaml": yaml.safe_dump(chart).encode(),
                   "cilium/values.yaml": yaml.safe_dump(values).encode(),
                   "cilium/values.schema.json": json.dumps(schema, indent=2).encode(),
                   "cilium/templates/cilium.yaml": text.encode()})


def chart_index(name: str, releases: dict[str, bytes]) -> str:
    """A Helm repository index: one entry per release, newest first, digest = sha256 of the .tgz
    (a maintainers list inside each entry, as upstream indexes have)."""
    entries = [{"apiVersion": "v2", "appVersion": v, "created": "2026-11-01T00:00:00Z",
                "description": "eBPF-based Networking, Security, and Observability",
                "digest": sha256(data), "keywords": ["BPF", "CNI"],
                "maintainers": [{"email": "maintainer@cilium.invalid", "name": "cilium"}],
                "name": name, "urls": [f"{name}-{v}.tgz"], "version": v}
               for v, data in releases.items()]
    return yaml.safe_dump({"apiVersion": "v1", "entries": {name: entries},
                           "generated": "2026-11-01T00:00:00Z"}, sort_keys=True)


def _crd(plural: str, kind: str, group: str = "monitoring.coreos.com") -> dict:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "names": {"kind": kind, "plural": plural, "listKind": f"{kind}List",
                                               "singular": kind.lower()},
                     "scope": "Namespaced",
                     "versions": [{"name": "v1", "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": {"type": "object"}},
                                   "subresources": {"status": {}}}]}}


def _metrics_server_deployment(ns: str, version: str) -> dict:
    """Shaped like the release's: the container's args as upstream's components.yaml lists them
    (monitoring.sh adds --kubelet-insecure-tls at their indentation)."""
    d = m._deployment("metrics-server", ns, f"registry.k8s.io/metrics-server/metrics-server:v{version}",
                      "metrics-server")
    d["spec"]["template"]["spec"]["containers"][0]["args"] = [
        "--cert-dir=/tmp", "--secure-port=10250",
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
        "--kubelet-use-node-status-port", "--metric-resolution=15s"]
    return d


def metrics_server_manifest(version: str) -> str:
    ns = "kube-system"
    return m._dump([
        m._sa("metrics-server", ns),
        *m._rbac("system:metrics-server", ns, [{"apiGroups": [""], "resources": ["nodes/metrics"],
                                                 "verbs": ["get"]}]),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "metrics-server", "namespace": ns},
         "spec": {"ports": [{"name": "https", "port": 443, "targetPort": "https"}],
                  "selector": {"k8s-app": "metrics-server"}}},
        _metrics_server_deployment(ns, version),
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
         "metadata": {"name": "v1beta1.metrics.k8s.io"},
         "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100,
                  "versionPriority": 100, "insecureSkipTLSVerify": True,
                  "service": {"name": "metrics-server", "namespace": ns}}},
    ])


def kube_prometheus_archive(version: str) -> bytes:
    ns = "monitoring"
    top = f"kube-prometheus-{version}/manifests"
    setup = {
        "namespace.yaml": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}],
        "0alertmanagerCustomResourceDefinition.yaml": [_crd("alertmanagers", "Alertmanager")],
        "0prometheusCustomResourceDefinition.yaml": [_crd("prometheuses", "Prometheus")],
        "0prometheusruleCustomResourceDefinition.yaml": [_crd("prometheusrules", "PrometheusRule")],
        "0servicemonitorCustomResourceDefinition.yaml": [_crd("servicemonitors", "ServiceMonitor")],
    }

    def ds(name, app, image):
        d = m._daemonset(name, ns, app, image, name)
        d["spec"]["template"]["spec"].pop("priorityClassName")
        return d

    main = {
        "alertmanager-alertmanager.yaml": [{"apiVersion": "monitoring.coreos.com/v1", "kind": "Alertmanager",
                                            "metadata": {"name": "main", "namespace": ns},
                                            "spec": {"replicas": 3, "version": "0.28.1"}}],
        "alertmanager-serviceAccount.yaml": [m._sa("alertmanager-main", ns)],
        "grafana-deployment.yaml": [m._deployment("grafana", ns, "grafana/grafana:12.1.0", "grafana")],
        "grafana-serviceAccount.yaml": [m._sa("grafana", ns)],
        "kubeStateMetrics-deployment.yaml": [m._deployment(
            "kube-state-metrics", ns, "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.17.0",
            "kube-state-metrics")],
        "kubeStateMetrics-serviceAccount.yaml": [m._sa("kube-state-metrics", ns)],
        "nodeExporter-daemonset.yaml": [ds("node-exporter", "node-exporter", "quay.io/prometheus/node-exporter:v1.9.1")],
        "nodeExporter-serviceAccount.yaml": [m._sa("node-exporter", ns)],
        "prometheus-prometheus.yaml": [{"apiVersion": "monitoring.coreos.com/v1", "kind": "Prometheus",
                                        "metadata": {"name": "k8s", "namespace": ns},
                                        "spec": {"replicas": 2, "version": "3.5.0",
                                                 "serviceAccountName": "prometheus-k8s"}}],
        "prometheus-prometheusRule.yaml": [{"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                                            "metadata": {"name": "prometheus-k8s-prometheus-rules", "namespace": ns},
                                            "spec": {"groups": []}}],
        "prometheus-serviceAccount.yaml": [m._sa("prometheus-k8s", ns)],
        "prometheusAdapter-apiService.yaml": [{
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100,
                     "versionPriority": 100, "insecureSkipTLSVerify": True,
                     "service": {"name": "prometheus-adapter", "namespace": ns}}}],
        "prometheusAdapter-deployment.yaml": [m._deployment(
            "prometheus-adapter", ns, "registry.k8s.io/prometheus-adapter/prometheus-adapter:v0.12.0",
            "prometheus-adapter")],
        "prometheusOperator-deployment.yaml": [m._deployment(
            "prometheus-operator", ns, "quay.io/prometheus-operator/prometheus-operator:v0.85.0",
            "prometheus-operator")],
        "prometheusOperator-serviceAccount.yaml": [m._sa("prometheus-operator", ns)],
        "prometheusOperator-serviceMonitor.yaml": [{"apiVersion": "monitoring.coreos.com/v1",
                                                    "kind": "ServiceMonitor",
                                                    "metadata": {"name": "prometheus-operator", "namespace": ns},
                                                    "spec": {"endpoints": [{"port": "https"}],
                                                             "selector": {"matchLabels": {"app": "prometheus-operator"}}}}],
    }
    members = {f"{top}/setup/{n}": m._dump(d).encode() for n, d in setup.items()}
    members |= {f"{top}/{n}": m._dump(d).encode() for n, d in main.items()}
    return _targz(members)


def pinned_versions() -> dict:
    """What the add-on files depend on (part of the mirror's cache key)."""
    return {"helm": V.HELM_VERSION, "charts": {n: c.version for n, c in V.CNI_CHARTS.items()},
            "metrics-server": V.METRICS_SERVER_VERSION, "kube-prometheus": V.KUBE_PROMETHEUS_VERSION}


def build_addon_files(root: Path, cnis: dict[str, tuple[str, str]]) -> None:
    """Everything above under a mirror root (the CNI manifests are already there)."""
    for name, (version, file) in cnis.items():
        manifest = root / "manifests" / name / f"v{version}" / file
        if manifest.exists():
            _write(manifest, manifest.read_bytes(), ".sha256")
    hv = V.HELM_VERSION
    _write(root / "helm" / f"v{hv}" / f"helm-v{hv}-linux-{ARCH}.tar.gz", helm_archive(), ".sha256sum")
    for name, chart in V.CNI_CHARTS.items():
        older = ".".join(chart.version.split(".")[:2] + [str(max(0, int(chart.version.split(".")[2]) - 1))])
        releases = {chart.version: cilium_chart(chart.version), older: cilium_chart(older)}
        repo = root / "charts" / name
        for v, data in releases.items():
            _write(repo / f"{name}-{v}.tgz", data)
        (repo / "index.yaml").write_text(chart_index(name, releases))
    _write(root / "manifests" / "metrics-server" / f"v{V.METRICS_SERVER_VERSION}" / V.METRICS_SERVER_FILE,
           metrics_server_manifest(V.METRICS_SERVER_VERSION).encode(), ".sha256")
    _write(root / "manifests" / "kube-prometheus" / f"v{V.KUBE_PROMETHEUS_VERSION}" / V.KUBE_PROMETHEUS_FILE,
           kube_prometheus_archive(V.KUBE_PROMETHEUS_VERSION), ".sha256")
