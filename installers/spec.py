"""The cluster spec: one pydantic tree, its defaults, derived facts and JSON Schema (its rules per
mode: installers/mode_rules.py, `validate_for_mode`, re-exported here).

Pydantic checks the shape (types, enums, unknown fields); `check_rules` (spec_rules.py) checks the
meaning (addresses, CIDRs, names, cross-field rules), with the value checks of spec_values.py.
`load_spec` reports every problem of both kinds at once (spec_problems.py), each prefixed with its
field path (`nodes[2].address: not an IP address: '10.0.0.300'`). Secrets are never values here:
only file paths and Prefect Secret block names. Loading contacts nothing.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StringConstraints,
                      ValidationInfo, model_validator)

from installers import modes, step_kinds
from installers import versions as V
from installers.spec_loading import MAX_STRING_LENGTH, SpecError
from installers.spec_values import is_ip

MODES = modes.planned_names()  # the modes with a plan of their own (installers/modes.py)
STEP_KINDS = step_kinds.names()  # installers/step_kinds.py: kind → task → node script → policy
StepKind = Literal[STEP_KINDS]  # type: ignore[valid-type]
# Steps that look at the cluster until it is healthy or their deadline passes (no retries):
# `verify` ends an install, `health` is the verify step of the health mode (shorter deadline).
POLLING_STEP_KINDS = tuple(k.name for k in step_kinds.STEP_KINDS if k.polling)
# Names of the checks in installers/preflight.py (here so that the spec can validate `ignore`).
PREFLIGHT_CHECKS = ("facts", "os", "arch", "cpus", "memory", "disk", "swap", "cgroup", "modules",
                    "binaries", "ports", "hostname_unique", "mac_unique", "product_uuid_unique",
                    "clock_skew", "systemd", "already_in_cluster", "version_change")


# Control characters (C0, DEL, C1), Unicode line/paragraph separators and lone surrogates: no
# spec value needs them, and each can end a line or a record in some file or protocol kai writes
# (Python's splitlines() alone breaks on \x1c-\x1e, \x85, U+2028; a surrogate cannot be UTF-8).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _no_control_characters(value: str) -> str:
    if (found := _CONTROL.search(value)):
        raise ValueError(f"contains a control character (U+{ord(found.group()):04X})")
    return value


# Every string of the spec (values, mapping keys, list items): bounded and free of control
# characters, checked by pydantic before any rule sees it.
Text = Annotated[str, StringConstraints(max_length=MAX_STRING_LENGTH),
                 AfterValidator(_no_control_characters)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- the tree ----------------------------------------------------------------------------------

class Packages(_Model):
    repo_url: Text = Field(V.PKGS_K8S_IO, description="base of the pkgs.k8s.io-style package repos")


class Kubernetes(_Model):
    version: Text = Field(V.DEFAULT_KUBERNETES_MINOR,
                         description=f"MAJOR.MINOR or MAJOR.MINOR.PATCH; minors {list(V.KUBERNETES_MINORS)}")
    packages: Packages = Packages()

    @property
    def minor(self) -> str:
        return V.resolve_kubernetes_version(self.version)[0]

    @property
    def full_version(self) -> str:
        return V.resolve_kubernetes_version(self.version)[1]


class NodeEndpoint(_Model):
    """All-in-one style: the first control plane's address, port 6443."""
    type: Literal["node"] = "node"


class KubeVipEndpoint(_Model):
    type: Literal["kube_vip"]
    address: Text = Field(description="virtual IP (ARP mode); not any node's address")
    interface: Text = Field(description="network interface that carries the VIP, e.g. eth0")


class LoadBalancerEndpoint(_Model):
    type: Literal["load_balancer"]
    address: Text = Field(description="IP or DNS name of an existing load balancer")
    port: int = Field(6443, ge=1, le=65535)


Endpoint = Annotated[Union[NodeEndpoint, KubeVipEndpoint, LoadBalancerEndpoint],
                     Field(discriminator="type")]


class Networking(_Model):
    pod_cidr: Text = "10.244.0.0/16"
    service_cidr: Text = "10.96.0.0/12"
    node_cidr_mask: int = Field(24, ge=1, le=128, description="prefix length of each node's pod range")
    cni: Literal["cilium", "calico", "flannel"] = V.DEFAULT_CNI
    kube_proxy_mode: Literal["iptables", "nftables"] = "iptables"
    dns_domain: Text = "cluster.local"


class Containerd(_Model):
    source: Literal["release", "distro", "mirror"] = "release"
    version: Text = V.CONTAINERD_DEFAULT
    runc_version: Text = V.RUNC_DEFAULT
    cni_plugins_version: Text = V.CNI_PLUGINS_DEFAULT
    sandbox_image: Text | None = Field(None, description="default: the pause image of the Kubernetes minor")
    registry_mirrors: dict[Text, list[Text]] = Field(
        default_factory=dict, description="registry (e.g. docker.io) -> mirror endpoint URLs")


class Proxy(_Model):
    http: Text | None = None
    https: Text | None = None
    no_proxy: list[Text] = Field(default_factory=list,
                                description="completed automatically with localhost, CIDRs, nodes, endpoint")


class Runtime(_Model):
    containerd: Containerd = Containerd()
    proxy: Proxy | None = None


class Mirror(_Model):
    url: Text = Field(description="base URL of a kai mirror (docs/architecture.md §6)")


class Kubelet(_Model):
    fail_cgroup_v1: bool = True
    max_pods: int | None = Field(None, ge=1, le=2500)


class Storage(_Model):
    local_path: bool = True


class Addons(_Model):
    monitoring: bool = Field(False, description="metrics-server and the kube-prometheus stack "
                                                "(Prometheus, Alertmanager, node-exporter, "
                                                "kube-state-metrics, Grafana)")
    metrics_server_kubelet_insecure_tls: bool = Field(
        True, description="metrics-server scrapes the kubelets without verifying their serving "
                          "certificates (kubeadm's kubelets serve self-signed ones); as kubespray, "
                          "k0s and KubeKey do. false: only with kubelet serving certificates signed "
                          "by the cluster CA (serverTLSBootstrap and CSR approval, which kai does not "
                          "set up), else metrics-server never becomes Ready")
    checksums: dict[Text, Text] = Field(
        default_factory=dict,
        description="file name -> sha256 pin for a CNI manifest or chart, helm or a monitoring "
                    "release file (installers/addons.py); wins over the versions table's pin")


class Bastion(_Model):
    host: Text
    port: int = Field(22, ge=1, le=65535)
    user: Text = "root"
    private_key_file: Text | None = None
    private_key_secret: Text | None = None
    private_key_passphrase_secret: Text | None = None
    password_secret: Text | None = None
    known_hosts_file: Text | None = None
    host_key_fingerprints: list[Text] = Field(default_factory=list)


class SSHOverrides(_Model):
    """Per-node overrides of the top-level ssh block (unset fields inherit)."""
    user: Text | None = None
    port: int | None = Field(None, ge=1, le=65535)
    private_key_file: Text | None = None
    private_key_secret: Text | None = None
    private_key_passphrase_secret: Text | None = None
    password_secret: Text | None = None
    sudo: Literal["none", "nopasswd", "password"] | None = None
    sudo_password_secret: Text | None = None
    bastion: Bastion | None = None
    known_hosts_file: Text | None = None
    connect_timeout: float | None = Field(None, gt=0, le=600)


class SSH(_Model):
    user: Text = "root"
    port: int = Field(22, ge=1, le=65535)
    private_key_file: Text | None = None
    private_key_secret: Text | None = Field(None, description="Prefect Secret block name")
    private_key_passphrase_secret: Text | None = Field(
        None, description="Prefect Secret block holding the private key's passphrase")
    password_secret: Text | None = Field(None, description="Prefect Secret block name")
    sudo: Literal["none", "nopasswd", "password"] = "none"
    sudo_password_secret: Text | None = Field(None, description="Prefect Secret block name")
    bastion: Bastion | None = None
    known_hosts_file: Text | None = None
    host_key_fingerprints: dict[Text, list[Text]] = Field(
        default_factory=dict, description="node name or address -> ['SHA256:…']")
    accept_new_host_keys: bool = False
    connect_timeout: float = Field(10, gt=0, le=600)


class Node(_Model):
    name: Text
    address: Text
    roles: list[Literal["control-plane", "worker"]] = Field(min_length=1)
    labels: dict[Text, Text] = Field(default_factory=dict)
    taints: list[Text] = Field(default_factory=list, description="key=value:Effect or key:Effect")
    connection: Literal["ssh", "local"] = Field(
        "ssh", description="how kai reaches the node: over SSH, or `local`: the node is the machine "
                           "kai runs on, its steps run as local processes (as root, or through "
                           "`sudo -n`); the ssh settings do not apply to it")
    ssh: SSHOverrides | None = None

    @property
    def is_control_plane(self) -> bool:
        return "control-plane" in self.roles


class StepPolicyOverride(_Model):
    retries: int | None = Field(None, ge=0, le=100, description="extra attempts after the first")
    retry_delay_s: float | None = Field(None, ge=0, le=3600,
                                        description="wait before the first retry; doubles each retry")
    max_retry_delay_s: float | None = Field(None, ge=0, le=3600,
                                            description="cap on the doubling wait between retries")
    timeout_s: float | None = Field(None, gt=0, le=86400,
                                    description="per attempt and host; for verify/health: per look")
    deadline_s: float | None = Field(None, gt=0, le=86400,
                                     description="verify/health only: poll the cluster until then")


class PreflightSettings(_Model):
    ignore: list[Text] = Field(default_factory=list,
                              description=f"checks whose errors become warnings: {list(PREFLIGHT_CHECKS)}")


class EtcdBackupSettings(_Model):
    directory: Text | None = Field(None, description="where etcd_backup stores snapshots on the controller "
                                                     "(default: <state dir>/clusters/<name>/etcd-backups)")
    keep: int = Field(7, ge=1, le=10000, description="etcd_backup keeps this many newest snapshots of the cluster")


class ClusterSpec(_Model):
    name: Text = Field(description="cluster name (RFC 1123 label)")
    kubernetes: Kubernetes = Kubernetes()
    control_plane_endpoint: Endpoint = NodeEndpoint()
    networking: Networking = Networking()
    runtime: Runtime = Runtime()
    mirror: Mirror | None = None
    kubelet: Kubelet = Kubelet()
    storage: Storage = Storage()
    addons: Addons = Addons()
    nodes: list[Node] = Field(min_length=1)
    ssh: SSH = SSH()
    steps: dict[StepKind, StepPolicyOverride] = Field(default_factory=dict)
    preflight: PreflightSettings = PreflightSettings()
    etcd_backup: EtcdBackupSettings = EtcdBackupSettings()

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> "ClusterSpec":
        # load_spec runs the rules itself (to merge them with pydantic's errors); anyone else who
        # validates the model (e.g. Prefect, for a flow parameter) gets them here.
        if not (info.context or {}).get("skip_rules"):
            from installers.spec_rules import check_rules  # it reads this module's classes
            problems = check_rules(self)
            if problems:
                raise ValueError("; ".join(problems))
        return self

    # --- derived facts ---
    def control_planes(self) -> list[Node]:
        return [n for n in self.nodes if n.is_control_plane]

    def workers(self) -> list[Node]:
        return [n for n in self.nodes if not n.is_control_plane]

    def first_control_plane(self) -> Node:
        return self.control_planes()[0]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def endpoint_host(self) -> str:
        ep = self.control_plane_endpoint
        if isinstance(ep, (KubeVipEndpoint, LoadBalancerEndpoint)):
            return ep.address
        return self.first_control_plane().address

    def endpoint_port(self) -> int:
        ep = self.control_plane_endpoint
        return ep.port if isinstance(ep, LoadBalancerEndpoint) else 6443

    def endpoint(self) -> str:
        """Concrete host:port (IPv6 in brackets) — kubeadm's controlPlaneEndpoint."""
        host = self.endpoint_host()
        if is_ip(host) and ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
        return f"{host}:{self.endpoint_port()}"

    def sandbox_image(self) -> str:
        return (self.runtime.containerd.sandbox_image
                or V.KUBERNETES_MINORS[self.kubernetes.minor].pause_image)

    def effective_no_proxy(self) -> list[str]:
        proxy = self.runtime.proxy
        items = list(proxy.no_proxy if proxy else [])
        items += ["localhost", "127.0.0.1", self.networking.pod_cidr, self.networking.service_cidr]
        items += [n.address for n in self.nodes]
        items += [self.endpoint_host(), ".svc", f".{self.networking.dns_domain}"]
        return list(dict.fromkeys(items))

    def effective_ssh(self, node_name: str) -> SSH:
        """The top-level ssh block with this node's overrides applied."""
        over = self.node(node_name).ssh
        if over is None:
            return self.ssh
        return self.ssh.model_copy(update=over.model_dump(exclude_none=True))


def spec_warnings(spec: ClusterSpec) -> list[str]:
    w: list[str] = []
    c = spec.runtime.containerd
    if c.source != "distro" and V.version_tuple(c.version) < V.version_tuple(V.CONTAINERD_MIN_SUPPORTED):
        w.append(f"runtime.containerd.version: containerd {c.version} is end of life "
                 f"(use ≥ {V.CONTAINERD_DEFAULT}); kubelet cannot take the cgroup driver from it")
    if not spec.kubelet.fail_cgroup_v1:
        w.append("kubelet.fail_cgroup_v1: false lets the kubelet run on cgroup v1, which is "
                 "deprecated; plan a move to cgroup v2")
    if spec.ssh.accept_new_host_keys:
        w.append("ssh.accept_new_host_keys: unknown host keys will be trusted on first use")
    return w


def load_spec(source: str | Path | dict | ClusterSpec) -> ClusterSpec:
    """Parse and validate; raises SpecError listing every problem. Contacts nothing."""
    from installers.spec_problems import collect_problems  # it reads this module's classes
    spec, problems = collect_problems(source)
    if problems or spec is None:
        raise SpecError(problems or ["<spec>: invalid"])
    return spec


def spec_json_schema() -> dict:
    return ClusterSpec.model_json_schema()


# The rules that depend on the mode (installers/mode_rules.py; it reads this module's classes).
from installers.mode_rules import validate_for_mode  # noqa: E402,F401
