"""The one place for each version, URL, port and host requirement kai relies on.

Validation (spec.py), the plan (plan.py), the node scripts' inputs and the API's `GET /modes`
all read these tables; nothing else hard-codes a version or a URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # avoid an import cycle: spec.py imports this module
    from installers.spec import ClusterSpec


# --- Kubernetes --------------------------------------------------------------------------------

@dataclass(frozen=True)
class KubernetesMinor:
    minor: str          # "1.36"
    default_patch: str  # "1.36.4"
    pause_image: str    # the sandbox image this minor's kubeadm expects


KUBERNETES_MINORS: dict[str, KubernetesMinor] = {
    "1.35": KubernetesMinor("1.35", "1.35.8", "registry.k8s.io/pause:3.10.1"),
    "1.36": KubernetesMinor("1.36", "1.36.4", "registry.k8s.io/pause:3.10.1"),
    "1.37": KubernetesMinor("1.37", "1.37.1", "registry.k8s.io/pause:3.10.1"),
}
DEFAULT_KUBERNETES_MINOR = "1.36"
PKGS_K8S_IO = "https://pkgs.k8s.io"


def resolve_kubernetes_version(version: str) -> tuple[str, str]:
    """"1.36" or "1.36.4" -> ("1.36", "1.36.4"). Raises ValueError for unsupported minors."""
    parts = version.removeprefix("v").split(".")
    # ASCII digits only: str.isdigit() also takes '²' and '١', which kubeadm and apt do not
    if len(parts) not in (2, 3) or not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError(f"not a Kubernetes version (want MAJOR.MINOR or MAJOR.MINOR.PATCH): {version!r}")
    minor = f"{parts[0]}.{parts[1]}"
    if minor not in KUBERNETES_MINORS:
        raise ValueError(
            f"unsupported Kubernetes minor {minor!r} (supported: {', '.join(KUBERNETES_MINORS)})")
    full = ".".join(parts) if len(parts) == 3 else KUBERNETES_MINORS[minor].default_patch
    return minor, full


# --- Container runtime -------------------------------------------------------------------------

CONTAINERD_DEFAULT = "2.3.4"      # 2.3 is LTS to April 2028
CONTAINERD_MIN_SUPPORTED = "2.0"  # older majors are end of life (warning, not error)
RUNC_DEFAULT = "1.4.0"
CNI_PLUGINS_DEFAULT = "1.8.0"

CONTAINERD_UPSTREAM = "https://github.com/containerd/containerd/releases/download"
RUNC_UPSTREAM = "https://github.com/opencontainers/runc/releases/download"
CNI_PLUGINS_UPSTREAM = "https://github.com/containernetworking/plugins/releases/download"

# `{arch}` stays a literal placeholder in every binary URL: the architecture is a fact of the
# node (facts.sh: arch), unknown at plan time; the node script substitutes amd64|arm64.
ARCH_PLACEHOLDER = "{arch}"
ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}

KUBE_VIP_IMAGE = "ghcr.io/kube-vip/kube-vip:v1.0.1"


# --- Add-ons -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PortSpec:
    port: str           # "179" or "4244-4245"
    proto: str = "tcp"


@dataclass(frozen=True)
class CniRelease:
    name: str
    version: str
    manifest_url: str | None   # None: no single-file upstream manifest (must come from a mirror)
    manifest_file: str          # file name in the mirror layout
    sha256: str | None
    ports: tuple[PortSpec, ...]


CNIS: dict[str, CniRelease] = {
    "calico": CniRelease(
        "calico", "3.31.2",
        "https://raw.githubusercontent.com/projectcalico/calico/v3.31.2/manifests/calico.yaml",
        "calico.yaml", None,
        (PortSpec("179"), PortSpec("4789", "udp"), PortSpec("5473"))),
    "flannel": CniRelease(
        "flannel", "0.27.4",
        "https://github.com/flannel-io/flannel/releases/download/v0.27.4/kube-flannel.yml",
        "kube-flannel.yml", None,
        (PortSpec("8472", "udp"),)),
    # Cilium publishes a Helm chart, not a manifest: cni.sh renders the pinned chart with a
    # pinned helm (`helm template`) and applies the result server-side (CNI_CHARTS below).
    "cilium": CniRelease(
        "cilium", "1.18.4", None, "cilium.yaml", None,
        (PortSpec("4240"), PortSpec("4244-4245"), PortSpec("8472", "udp"))),
}
DEFAULT_CNI = "calico"


@dataclass(frozen=True)
class HelmChart:
    """A chart of a Helm repository: {repo}/{name}-{version}.tgz, its sha256 published as the
    entry's `digest` in {repo}/index.yaml (what `helm pull --verify`-less installs trust)."""
    name: str
    version: str
    repo: str
    sha256: str | None = None   # a reviewed pin; None: the repository index's digest alone

    @property
    def file(self) -> str:
        return f"{self.name}-{self.version}.tgz"


# CNIs installed from a chart (cni.sh: helm template + server-side apply), not a manifest.
CNI_CHARTS: dict[str, HelmChart] = {
    "cilium": HelmChart("cilium", "1.18.4", "https://helm.cilium.io"),
}

# helm itself: get.helm.sh/helm-v{V}-linux-{arch}.tar.gz, with a .sha256sum file beside it.
HELM_VERSION = "3.19.0"
HELM_UPSTREAM = "https://get.helm.sh"
HELM_SHA256: dict[str, str] = {}   # arch -> reviewed pin; empty: the published .sha256sum alone

# Monitoring (spec: addons.monitoring): metrics-server's release manifest and kube-prometheus's
# release (the prometheus-operator project's stack: operator, Prometheus, Alertmanager,
# node-exporter, kube-state-metrics, Grafana), both applied server-side by monitoring.sh.
METRICS_SERVER_VERSION = "0.8.1"
METRICS_SERVER_FILE = "components.yaml"
METRICS_SERVER_UPSTREAM = (f"https://github.com/kubernetes-sigs/metrics-server/releases/download/"
                           f"v{METRICS_SERVER_VERSION}/{METRICS_SERVER_FILE}")
METRICS_SERVER_SHA256: str | None = None
KUBE_PROMETHEUS_VERSION = "0.17.0"
KUBE_PROMETHEUS_FILE = f"kube-prometheus-{KUBE_PROMETHEUS_VERSION}.tar.gz"
KUBE_PROMETHEUS_UPSTREAM = (f"https://github.com/prometheus-operator/kube-prometheus/archive/refs/"
                            f"tags/v{KUBE_PROMETHEUS_VERSION}.tar.gz")
KUBE_PROMETHEUS_SHA256: str | None = None

LOCAL_PATH_VERSION = "0.0.32"
LOCAL_PATH_FILE = "local-path-storage.yaml"
LOCAL_PATH_UPSTREAM = (
    f"https://raw.githubusercontent.com/rancher/local-path-provisioner/v{LOCAL_PATH_VERSION}"
    f"/deploy/{LOCAL_PATH_FILE}")
LOCAL_PATH_SHA256: str | None = None


# --- Host requirements -------------------------------------------------------------------------

CONTROL_PLANE_PORTS = (PortSpec("6443"), PortSpec("2379-2380"), PortSpec("10250"),
                       PortSpec("10257"), PortSpec("10259"))
WORKER_PORTS = (PortSpec("10250"), PortSpec("10256"))
# The NodePort range 30000-32767 is not probed: listing 2768 ports per host buys little.

REQUIRED_MODULES = ("overlay", "br_netfilter")
# Binaries kubeadm needs that neither os-prep.sh nor the packages install.
REQUIRED_BINARIES = ("ip", "iptables", "mount", "nsenter", "sysctl", "systemctl", "curl", "tar")
OPTIONAL_BINARIES = ("ebtables", "ethtool", "socat", "conntrack", "tc")

SUPPORTED_OS = ("debian", "ubuntu", "rhel", "rocky", "almalinux")
MIN_CONTROL_PLANE_CPUS = 2
MIN_CONTROL_PLANE_MEM_MB = 1700
MIN_WORKER_MEM_MB = 1024           # below this: warning
MIN_DISK_MB = 4096                 # below this: error
RECOMMENDED_DISK_MB = 20480        # below this: warning
MAX_CLOCK_SKEW_S = 30


def expand_ports(ports: tuple[PortSpec, ...] | list[PortSpec]) -> list[int]:
    out: set[int] = set()
    for p in ports:
        lo, _, hi = p.port.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return sorted(out)


def ports_for(roles: list[str] | tuple[str, ...], cni: str) -> list[int]:
    """Ports that must be free on a node with these roles, for this CNI."""
    specs: list[PortSpec] = list(CNIS[cni].ports)
    if "control-plane" in roles:
        specs += CONTROL_PLANE_PORTS
    specs += WORKER_PORTS  # every node runs a kubelet and kube-proxy
    return expand_ports(specs)


# --- Download URLs (upstream vs mirror layout, docs/architecture.md §6) ------------------------

@dataclass(frozen=True)
class Downloads:
    containerd: str
    runc: str
    cni_plugins: str
    k8s_repo: str          # base; the repo is $base/core:/stable:/v$MINOR/{deb,rpm}/
    cni_manifest: str      # "" when there is none upstream (cilium: a chart, installers/addons.py)
    local_path: str


def download_urls(spec: "ClusterSpec") -> Downloads:
    c = spec.runtime.containerd
    cni = CNIS[spec.networking.cni]
    a = ARCH_PLACEHOLDER
    if spec.mirror is not None:
        m = spec.mirror.url.rstrip("/")
        return Downloads(
            containerd=f"{m}/containerd/v{c.version}/containerd-{c.version}-linux-{a}.tar.gz",
            runc=f"{m}/runc/v{c.runc_version}/runc.{a}",
            cni_plugins=f"{m}/cni-plugins/v{c.cni_plugins_version}/"
                        f"cni-plugins-linux-{a}-v{c.cni_plugins_version}.tgz",
            k8s_repo=f"{m}/pkgs.k8s.io",
            cni_manifest=f"{m}/manifests/{cni.name}/v{cni.version}/{cni.manifest_file}",
            local_path=f"{m}/manifests/local-path-provisioner/v{LOCAL_PATH_VERSION}/{LOCAL_PATH_FILE}",
        )
    return Downloads(
        containerd=f"{CONTAINERD_UPSTREAM}/v{c.version}/containerd-{c.version}-linux-{a}.tar.gz",
        runc=f"{RUNC_UPSTREAM}/v{c.runc_version}/runc.{a}",
        cni_plugins=f"{CNI_PLUGINS_UPSTREAM}/v{c.cni_plugins_version}/"
                    f"cni-plugins-linux-{a}-v{c.cni_plugins_version}.tgz",
        k8s_repo=spec.kubernetes.packages.repo_url.rstrip("/"),
        cni_manifest=cni.manifest_url or "",
        local_path=LOCAL_PATH_UPSTREAM,
    )


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".") if x.isascii() and x.isdigit())
