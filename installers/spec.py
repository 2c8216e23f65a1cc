"""The cluster spec: one pydantic tree, defaults, every validation rule, JSON Schema.

Pydantic checks the shape (types, enums, unknown fields); `check_rules` checks the meaning
(addresses, CIDRs, names, cross-field rules) and collects every problem, each prefixed with its
field path (`nodes[2].address: not an IP address: '10.0.0.300'`). `load_spec` reports both kinds
together. Secrets are never values here: only file paths and Prefect Secret block names.
Loading contacts nothing.
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StringConstraints,
                      ValidationError, ValidationInfo, model_validator)

from installers import modes, step_kinds
from installers import versions as V
from installers.patterns import FINGERPRINT
from installers.spec_loading import (MAX_STRING_LENGTH, SHOWN_PATH_CHARS, SpecError, check_data_size,
                                     non_regular_file_kind, one_line, parse_yaml, read_spec_file,
                                     shown)

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


def check_step_policies(steps: dict[str, StepPolicyOverride]) -> list[str]:
    """Overrides that cannot mean what they say: retries on a polling step, a deadline on a
    retrying one, a backoff cap below the first delay."""
    p: list[str] = []
    for kind, over in steps.items():
        path = f"steps.{kind}"
        if kind in POLLING_STEP_KINDS:
            for name in ("retries", "retry_delay_s", "max_retry_delay_s"):
                if getattr(over, name) is not None:
                    p.append(f"{path}.{name}: {kind} polls the cluster until deadline_s instead of "
                             f"retrying; set deadline_s (and timeout_s per look) instead")
        elif over.deadline_s is not None:
            p.append(f"{path}.deadline_s: only the polling steps ({', '.join(POLLING_STEP_KINDS)}) "
                     f"take a deadline; {kind} is bounded by retries, retry_delay_s, "
                     f"max_retry_delay_s and timeout_s")
        if (over.retry_delay_s is not None and over.max_retry_delay_s is not None
                and over.max_retry_delay_s < over.retry_delay_s):
            p.append(f"{path}.max_retry_delay_s: {over.max_retry_delay_s:g} s is below retry_delay_s "
                     f"{over.retry_delay_s:g} s (the cap must be at least the first wait)")
    return p


class PreflightSettings(_Model):
    ignore: list[Text] = Field(default_factory=list,
                              description=f"checks whose errors become warnings: {list(PREFLIGHT_CHECKS)}")


class ClusterSpec(_Model):
    name: Text = Field(description="cluster name (RFC 1123 label)")
    kubernetes: Kubernetes = Kubernetes()
    control_plane_endpoint: Endpoint = NodeEndpoint()
    networking: Networking = Networking()
    runtime: Runtime = Runtime()
    mirror: Mirror | None = None
    kubelet: Kubelet = Kubelet()
    storage: Storage = Storage()
    nodes: list[Node] = Field(min_length=1)
    ssh: SSH = SSH()
    steps: dict[StepKind, StepPolicyOverride] = Field(default_factory=dict)
    preflight: PreflightSettings = PreflightSettings()

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> "ClusterSpec":
        # load_spec runs the rules itself (to merge them with pydantic's errors); anyone else who
        # validates the model (e.g. Prefect, for a flow parameter) gets them here.
        if not (info.context or {}).get("skip_rules"):
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
        if _is_ip(host) and ipaddress.ip_address(host).version == 6:
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


# --- value checks ------------------------------------------------------------------------------

# Use every pattern with fullmatch: `$` also matches before a trailing newline. [0-9], never \d:
# \d also matches non-ASCII digits ('١', '５').
_RFC1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_NAME = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_SEMVER = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")
_BLOCK_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")   # Prefect block document names
_USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\$?")
_REGISTRY = re.compile(r"_default|[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?")
_IMAGE_REF = re.compile(
    r"[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?")
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
# Label keys in the kubernetes.io / k8s.io namespaces the kubelet may set on its own Node
# (k8s.io/kubelet/pkg/apis/well_known_labels.go); any other key there makes kubelet refuse
# --node-labels and the node never registers.
_KUBELET_LABELS = frozenset({
    "kubernetes.io/hostname", "kubernetes.io/os", "kubernetes.io/arch",
    "beta.kubernetes.io/os", "beta.kubernetes.io/arch", "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type", "topology.kubernetes.io/zone", "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region"})
_KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")
# Paths where a "file" is a device or a kernel interface: reading one as a key never ends.
_DEVICE_TREES = ("/dev/", "/proc/", "/sys/")

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def parse_ip(value: str) -> IPAddress:
    """An IP address without an IPv6 zone ID; ValueError otherwise.

    ipaddress accepts 'fe80::1%<anything>' and keeps the zone (newlines included) in str(): a
    zone would travel into /etc/hosts, NO_PROXY, kubeadm files. Addresses on nodes are global."""
    addr = ipaddress.ip_address(value)
    if getattr(addr, "scope_id", None) is not None:
        raise ValueError("an IPv6 zone ID ('%…') is not allowed")
    return addr


def is_node_name(value: str) -> bool:
    return bool(_RFC1123_LABEL.fullmatch(value))


def _is_ip(value: str) -> bool:
    try:
        parse_ip(value)
        return True
    except ValueError:
        return False


def _ip_or_problem(value: str) -> tuple[IPAddress | None, str | None]:
    try:
        return parse_ip(value), None
    except ValueError as exc:
        if "zone ID" in str(exc):
            return None, f"{exc}: {shown(value)}"
        return None, f"not an IP address: {shown(value)}"


def _loopback_allowed(node: "Node | None") -> bool:
    """Whether an address may be a loopback one. Not yet: kai reaches every node over SSH at its
    address. A node marked local (the old clients' issue) will lift this — here, in one place."""
    return False


def _unusable_address_problem(addr: IPAddress, *, node: "Node | None" = None,
                              loopback: bool = False) -> str | None:
    """Addresses that cannot name one reachable machine (a node, the VIP, a load balancer)."""
    plain = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped else addr
    if plain.is_unspecified:
        return f"{addr} is the unspecified address, not a host's"
    if plain.is_multicast:
        return f"{addr} is a multicast address, not a host's"
    if plain == _BROADCAST:
        return f"{addr} is the broadcast address, not a host's"
    if plain.is_loopback and not (loopback or _loopback_allowed(node)):
        return f"{addr} is a loopback address; kai reaches every host over the network"
    return None


def _url_problem(value: str) -> str | None:
    if any(ch.isspace() for ch in value):
        return f"not a URL (contains whitespace): {shown(value)}"
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # raises for a port that is not a number in 0-65535
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535"
        return f"not a URL ({exc}): {shown(value)}"
    if not ok:
        return f"not an http(s) URL: {shown(value)}"
    return None


def _label_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and not _DNS_NAME.fullmatch(prefix):
        return f"label key prefix is not a DNS name: {shown(key)}"
    if not _LABEL_NAME.fullmatch(name):
        return f"not a label key (≤63 of [A-Za-z0-9._-], alphanumeric at both ends): {shown(key)}"
    return None


def _reserved_label_problem(key: str) -> str | None:
    """kubelet refuses --node-labels in the kubernetes.io / k8s.io namespaces except its own."""
    prefix = key.rpartition("/")[0]
    reserved = any(prefix == ns or prefix.endswith("." + ns) for ns in ("kubernetes.io", "k8s.io"))
    allowed = key in _KUBELET_LABELS or any(
        prefix == ns or prefix.endswith("." + ns) for ns in _KUBELET_LABEL_NAMESPACES)
    if reserved and not allowed:
        return (f"the kubelet refuses label {shown(key)}: in kubernetes.io and k8s.io only "
                f"{', '.join(_KUBELET_LABEL_NAMESPACES)} prefixes and the well-known node labels "
                f"are allowed (node-role.kubernetes.io/* must be set with kubectl after the join)")
    return None


def _taint_problem(taint: str) -> str | None:
    kv, sep, effect = taint.rpartition(":")
    if not sep or effect not in _TAINT_EFFECTS:
        return f"not a taint (key=value:Effect, Effect one of {', '.join(_TAINT_EFFECTS)}): {shown(taint)}"
    key, _, value = kv.partition("=")
    if _label_key_problem(key) or not _LABEL_VALUE.fullmatch(value):
        return f"not a taint (bad key or value): {shown(taint)}"
    return None


def parse_taint(taint: str) -> dict[str, str]:
    kv, _, effect = taint.rpartition(":")
    key, _, value = kv.partition("=")
    out = {"key": key, "effect": effect}
    if value:
        out["value"] = value
    return out


def _network(value: str, path: str, problems: list[str]):
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        detail = "has host bits set" if "host bits" in str(exc) else "not a CIDR"
        problems.append(f"{path}: {detail}: {shown(value)}")
        return None
    if getattr(net.network_address, "scope_id", None) is not None:
        problems.append(f"{path}: an IPv6 zone ID ('%…') is not allowed: {shown(value)}")
        return None
    return net


def _path_problem(value: str) -> str | None:
    """A key or known_hosts path must name a regular file: a device or FIFO is read forever."""
    if not value.strip():
        return "empty path"
    absolute = os.path.normpath(os.path.expanduser(value))
    if any((absolute + "/").startswith(tree) for tree in _DEVICE_TREES):
        return f"not a regular file (a device or kernel file): {shown(value, SHOWN_PATH_CHARS)}"
    if (kind := non_regular_file_kind(value)):
        return f"not a regular file ({kind}): {shown(value, SHOWN_PATH_CHARS)}"
    return None


def _check_ssh_common(block: Any, path: str, problems: list[str]) -> None:
    # every *_secret field names a Prefect Secret block: derived from the model, so that a new
    # one cannot be left without the check
    for field in (f for f in type(block).model_fields if f.endswith("_secret")):
        value = getattr(block, field, None)
        if value is not None and not _BLOCK_NAME.fullmatch(value):
            problems.append(f"{path}.{field}: not a Prefect Secret block name "
                            f"(lowercase letters, digits, dashes): {shown(value)}")
    if getattr(block, "private_key_file", None) and getattr(block, "private_key_secret", None):
        problems.append(f"{path}: set private_key_file or private_key_secret, not both")
    for field in ("private_key_file", "known_hosts_file"):
        value = getattr(block, field, None)
        if value is not None and (msg := _path_problem(value)):
            problems.append(f"{path}.{field}: {msg}")
    user = getattr(block, "user", None)
    if user is not None and not _USER_NAME.fullmatch(user):
        problems.append(f"{path}.user: not a user name: {shown(user)}")
    bastion = getattr(block, "bastion", None)
    if bastion is not None:
        # loopback allowed: a bastion may be the local end of a tunnel
        _check_host(bastion.host, f"{path}.bastion.host", problems, loopback=True)
        _check_ssh_common(bastion, f"{path}.bastion", problems)
        for i, fp in enumerate(bastion.host_key_fingerprints):
            if not FINGERPRINT.fullmatch(fp):
                problems.append(f"{path}.bastion.host_key_fingerprints[{i}]: not a SHA256 fingerprint "
                                f"('SHA256:' + 43 base64 characters, no '=' padding): {shown(fp)}")


def _check_host(value: str, path: str, problems: list[str], *, loopback: bool = False) -> None:
    """An IP address (no zone, usable for a host) or a DNS name."""
    if _DNS_NAME.fullmatch(value):
        return
    addr, problem = _ip_or_problem(value)
    if addr is None:
        if "zone ID" not in (problem or ""):
            problem = f"not an IP address or DNS name: {shown(value)}"
        problems.append(f"{path}: {problem}")
    elif (msg := _unusable_address_problem(addr, loopback=loopback)):
        problems.append(f"{path}: {msg}")


def check_rules(spec: ClusterSpec) -> list[str]:
    """Every semantic and cross-field problem of a structurally valid spec, with field paths."""
    p: list[str] = []

    if not _RFC1123_LABEL.fullmatch(spec.name):
        p.append(f"name: not an RFC 1123 label (lowercase letters, digits, '-', ≤63): {shown(spec.name)}")

    try:
        V.resolve_kubernetes_version(spec.kubernetes.version)
    except ValueError as exc:
        p.append(f"kubernetes.version: {exc}")
    if (msg := _url_problem(spec.kubernetes.packages.repo_url)):
        p.append(f"kubernetes.packages.repo_url: {msg}")

    # networks
    net = spec.networking
    pod = _network(net.pod_cidr, "networking.pod_cidr", p)
    svc = _network(net.service_cidr, "networking.service_cidr", p)
    if pod and svc and pod.version == svc.version and pod.overlaps(svc):
        p.append(f"networking.service_cidr: overlaps networking.pod_cidr ({svc} and {pod})")
    if svc and svc.version == 4 and svc.prefixlen < 12:
        p.append(f"networking.service_cidr: too large for the API server (IPv4 prefix must be ≥ /12): {svc}")
    if pod:
        if net.node_cidr_mask < pod.prefixlen or net.node_cidr_mask > pod.max_prefixlen:
            p.append(f"networking.node_cidr_mask: /{net.node_cidr_mask} does not fit inside pod_cidr {pod}")
        elif 2 ** (net.node_cidr_mask - pod.prefixlen) < len(spec.nodes):
            p.append(f"networking.pod_cidr: {pod} holds only {2 ** (net.node_cidr_mask - pod.prefixlen)} "
                     f"node ranges of /{net.node_cidr_mask}, but the spec has {len(spec.nodes)} nodes")
    if not _DNS_NAME.fullmatch(net.dns_domain):
        p.append(f"networking.dns_domain: not a DNS name: {shown(net.dns_domain)}")
    cni = V.CNIS[net.cni]
    if cni.manifest_url is None and spec.mirror is None:
        p.append(f"networking.cni: {net.cni} has no single-file upstream manifest; "
                 f"set mirror.url and put a rendered manifest at "
                 f"manifests/{cni.name}/v{cni.version}/{cni.manifest_file}")

    # nodes
    names: dict[str, int] = {}
    addresses: dict[IPAddress, int] = {}   # parsed: 'FD00::1' and 'fd00:0::1' are one address
    for i, node in enumerate(spec.nodes):
        _check_node(node, f"nodes[{i}]", i, spec, names, addresses, (pod, svc), p)
    if not spec.control_planes():
        p.append("nodes: no node has the role control-plane")

    _check_endpoint(spec.control_plane_endpoint, addresses, (pod, svc), p)

    # runtime
    c = spec.runtime.containerd
    for field in ("version", "runc_version", "cni_plugins_version"):
        value = getattr(c, field)
        if not _SEMVER.fullmatch(value):
            p.append(f"runtime.containerd.{field}: not a version (X.Y.Z): {shown(value)}")
    if c.source == "mirror" and spec.mirror is None:
        p.append("runtime.containerd.source: 'mirror' needs mirror.url")
    if c.sandbox_image is not None and not _IMAGE_REF.fullmatch(c.sandbox_image):
        p.append(f"runtime.containerd.sandbox_image: not an image reference: {shown(c.sandbox_image)}")
    for registry, endpoints in c.registry_mirrors.items():
        rpath = f"runtime.containerd.registry_mirrors[{shown(registry)}]"
        if not _REGISTRY.fullmatch(registry):
            p.append(f"{rpath}: not a registry host[:port] (or _default): {shown(registry)}")
        if not endpoints:
            p.append(f"{rpath}: needs at least one mirror URL")
        for j, url in enumerate(endpoints):
            if (msg := _url_problem(url)):
                p.append(f"{rpath}[{j}]: {msg}")
    proxy = spec.runtime.proxy
    if proxy is not None:
        for field in ("http", "https"):
            value = getattr(proxy, field)
            if value is not None and (msg := _url_problem(value)):
                p.append(f"runtime.proxy.{field}: {msg}")
        for j, item in enumerate(proxy.no_proxy):
            if not item or re.search(r"[\s,]", item):
                p.append(f"runtime.proxy.no_proxy[{j}]: not a host, domain or CIDR: {shown(item)}")
    if spec.mirror is not None and (msg := _url_problem(spec.mirror.url)):
        p.append(f"mirror.url: {msg}")

    # ssh
    _check_ssh_common(spec.ssh, "ssh", p)
    if spec.ssh.sudo == "password" and not (spec.ssh.sudo_password_secret or spec.ssh.password_secret):
        p.append("ssh.sudo: 'password' needs sudo_password_secret or password_secret")
    # pins are looked up by the text as written (tasks/targets.py), so compare texts here
    known = set(names) | {n.address for n in spec.nodes} | (
        {spec.ssh.bastion.host} if spec.ssh.bastion else set())
    for key, fps in spec.ssh.host_key_fingerprints.items():
        kpath = f"ssh.host_key_fingerprints[{shown(key)}]"
        if key not in known:
            p.append(f"{kpath}: not a node name or address of this spec")
        for j, fp in enumerate(fps):
            if not FINGERPRINT.fullmatch(fp):
                p.append(f"{kpath}[{j}]: not a SHA256 fingerprint "
                         f"('SHA256:' + 43 base64 characters, no '=' padding): {shown(fp)}")

    for j, check in enumerate(spec.preflight.ignore):
        if check not in PREFLIGHT_CHECKS:
            p.append(f"preflight.ignore[{j}]: unknown check {shown(check)} "
                     f"(known: {', '.join(PREFLIGHT_CHECKS)})")
    p += check_step_policies(spec.steps)
    return p


def _check_node(node: Node, path: str, index: int, spec: ClusterSpec, names: dict[str, int],
                addresses: dict[IPAddress, int], cidrs: tuple, p: list[str]) -> None:
    if not _RFC1123_LABEL.fullmatch(node.name):
        p.append(f"{path}.name: not an RFC 1123 label (lowercase letters, digits, '-', ≤63): "
                 f"{shown(node.name)}")
    elif node.name in names:
        p.append(f"{path}.name: duplicate node name {shown(node.name)} (also nodes[{names[node.name]}])")
    names.setdefault(node.name, index)
    addr, problem = _ip_or_problem(node.address)
    if addr is None:
        p.append(f"{path}.address: {problem}")
    else:
        if (msg := _unusable_address_problem(addr, node=node)):
            p.append(f"{path}.address: {msg}")
        if addr in addresses:
            p.append(f"{path}.address: duplicate address {addr} (also nodes[{addresses[addr]}])")
        addresses.setdefault(addr, index)
        for cidr, field in zip(cidrs, ("pod_cidr", "service_cidr")):
            if cidr and addr.version == cidr.version and addr in cidr:
                p.append(f"{path}.address: {addr} lies inside networking.{field} {cidr}")
    if len(set(node.roles)) != len(node.roles):
        p.append(f"{path}.roles: duplicate role")
    for key, value in node.labels.items():
        if (msg := _label_key_problem(key) or _reserved_label_problem(key)):
            p.append(f"{path}.labels: {msg}")
        if not _LABEL_VALUE.fullmatch(value) or len(value) > 63:
            p.append(f"{path}.labels[{shown(key)}]: not a label value (≤63 of [A-Za-z0-9._-]): "
                     f"{shown(value)}")
    first_taint: dict[tuple[str, str], int] = {}
    for j, taint in enumerate(node.taints):
        if (msg := _taint_problem(taint)):
            p.append(f"{path}.taints[{j}]: {msg}")
            continue
        t = parse_taint(taint)
        ident = (t["key"], t["effect"])
        if ident in first_taint:  # the API server refuses a Node with two: kubelet never registers
            p.append(f"{path}.taints[{j}]: a second taint with key {shown(t['key'])} and effect "
                     f"{t['effect']} (also taints[{first_taint[ident]}]); a key+effect pair must be unique")
        first_taint.setdefault(ident, j)
    if node.ssh is not None:
        _check_ssh_common(node.ssh, f"{path}.ssh", p)
        if node.ssh.sudo == "password" and not (
                node.ssh.sudo_password_secret or node.ssh.password_secret
                or spec.ssh.sudo_password_secret or spec.ssh.password_secret):
            p.append(f"{path}.ssh.sudo: 'password' needs sudo_password_secret or password_secret")


def _check_endpoint(ep: Any, addresses: dict[IPAddress, int], cidrs: tuple, p: list[str]) -> None:
    if isinstance(ep, KubeVipEndpoint):
        vip, problem = _ip_or_problem(ep.address)
        if vip is None:
            p.append(f"control_plane_endpoint.address: {problem}")
        else:
            if (msg := _unusable_address_problem(vip)):
                p.append(f"control_plane_endpoint.address: {msg}")
            if vip in addresses:
                p.append(f"control_plane_endpoint.address: the kube-vip address {vip} is also "
                         f"the address of nodes[{addresses[vip]}]; it must be a free IP")
            for cidr, field in zip(cidrs, ("pod_cidr", "service_cidr")):
                if cidr and vip.version == cidr.version and vip in cidr:
                    p.append(f"control_plane_endpoint.address: {vip} lies inside networking.{field} {cidr}")
        if not ep.interface or len(ep.interface) > 15 or re.search(r"[/:\s]", ep.interface) \
                or ep.interface in (".", ".."):
            p.append(f"control_plane_endpoint.interface: not a network interface name: {shown(ep.interface)}")
    elif isinstance(ep, LoadBalancerEndpoint):
        # a load balancer may be on loopback: a local proxy on every node is a common layout
        _check_host(ep.address, "control_plane_endpoint.address", p, loopback=True)


def validate_for_mode(spec: ClusterSpec, mode: str, nodes: list[str] | None = None) -> list[str]:
    """Rules that depend on the mode (an argument, not part of the spec)."""
    p: list[str] = []
    cps = spec.control_planes()
    if mode not in MODES:
        if mode in modes.names():  # e.g. rebuild: no plan of its own
            return [f"mode: {mode} has no plan of its own, it runs other modes' plans one after "
                    f"another (planned modes: {', '.join(MODES)})"]
        return [f"mode: unknown mode {shown(mode)} (known: {', '.join(MODES)})"]
    if mode == "all_in_one":
        if len(spec.nodes) != 1:
            p.append(f"nodes: all_in_one needs exactly one node, the spec has {len(spec.nodes)}")
        elif not spec.nodes[0].is_control_plane:
            p.append("nodes[0].roles: the all_in_one node must have the role control-plane")
    elif mode == "ha":
        if len(cps) < 3:
            p.append(f"nodes: ha needs at least 3 control-plane nodes (etcd quorum), the spec has {len(cps)}")
        elif len(cps) % 2 == 0:
            p.append(f"nodes: ha needs an odd number of control-plane nodes (etcd quorum), "
                     f"the spec has {len(cps)}")
        if isinstance(spec.control_plane_endpoint, NodeEndpoint):
            p.append("control_plane_endpoint.type: ha needs kube_vip or load_balancer, not node")
    elif mode == "add_nodes":
        if not nodes:
            p.append("nodes: add_nodes needs the names of the nodes to add (--nodes a,b)")
        else:
            known = {n.name for n in spec.nodes}
            for name in nodes:
                if name not in known:
                    p.append(f"nodes: {shown(name)} (to add) is not a node of the spec")
            if cps and cps[0].name in nodes:
                p.append(f"nodes: {cps[0].name!r} is the first control plane; it cannot be added, "
                         f"the cluster is built around it")
            if len(set(nodes)) != len(nodes):
                p.append("nodes: a node is named twice in the list to add")
    if nodes and not modes.get(mode).takes_nodes:
        p.append(f"nodes: a list of nodes only applies to add_nodes, not {mode}")
    return p


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


# --- loading -----------------------------------------------------------------------------------

_UNION_TAGS = {"node", "kube_vip", "load_balancer"}


def _clean_loc(loc: tuple) -> list:
    out: list = []
    for i, part in enumerate(loc):
        if i > 0 and loc[i - 1] == "control_plane_endpoint" and part in _UNION_TAGS:
            continue  # pydantic adds the discriminator tag to the path
        out.append(part)
    return out


def format_path(loc: list | tuple) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == "[key]":
            text += " (key)"
        elif isinstance(part, str) and part.replace("-", "_").isidentifier() and len(part) <= 64:
            text += f".{part}" if text else part
        else:  # a mapping key given by the user: quoted, escaped, shortened
            text += f"[{shown(part)}]"
    return text or "<spec>"


def _model_at(loc: list) -> type[BaseModel] | None:
    """The model class that owns the last element of loc, to suggest field names."""
    model: Any = ClusterSpec
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        model = None
        for cand in _walk_types(ann):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                model = cand
                break
    return model


def _walk_types(ann: Any):
    yield ann
    for arg in getattr(ann, "__args__", ()) or ():
        yield from _walk_types(arg)


def _format_error(err: dict) -> str:
    loc = _clean_loc(tuple(err.get("loc", ())))
    path = format_path(loc)
    kind = err.get("type")
    if kind == "extra_forbidden":
        msg = "unknown field"
        owner = _model_at(loc)
        if owner is not None and isinstance(loc[-1], str) and len(loc[-1]) <= 64:
            close = difflib.get_close_matches(loc[-1], list(owner.model_fields), n=1)
            if close:
                msg += f" (did you mean {close[0]!r}?)"
    elif kind == "missing":
        msg = "required field missing"
    else:
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if "input" in err and kind not in ("model_type", "dict_type", "list_type"):
            msg += f": {shown(err['input'])}" if not isinstance(err["input"], (dict, list)) else ""
    return one_line(f"{path}: {msg}")


_DROPPED = object()


def _drop(data: Any, loc: list, kind: str | None) -> bool:
    """Remove the offending value so the rest can still be checked; False if impossible.

    A missing required field removes its parent mapping instead (e.g. an incomplete
    control_plane_endpoint falls back to its default); a bad scalar in a list is removed
    from the list (after all errors were seen, so indexes stay right)."""
    if kind == "missing":
        loc = loc[:-1]
    if loc and loc[-1] == "[key]":  # a bad mapping key: remove the key (and its value)
        loc = loc[:-1]
        if len(loc) < 2 or not isinstance(loc[-1], str):
            return False
    if not loc:
        return False
    parent = data
    for part in loc[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError):
            return True  # an ancestor was already removed for another error
        except TypeError:
            return False
    last = loc[-1]
    if isinstance(parent, dict) and isinstance(last, str) and last in parent:
        del parent[last]
        return True
    if (isinstance(parent, list) and isinstance(last, int) and last < len(parent)
            and not isinstance(parent[last], (dict, list))):
        parent[last] = _DROPPED
        return True
    return False


def _purge_dropped(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _purge_dropped(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_purge_dropped(v) for v in data if v is not _DROPPED]
    return data


def _looks_like_path(source: Any) -> bool:
    if isinstance(source, Path):
        return True
    if not isinstance(source, str) or "\n" in source or "\0" in source:
        return False
    return os.path.exists(source) or source.endswith((".yaml", ".yml", ".json"))


def _parse_source(source: Any) -> Any:
    """The spec as plain data; SpecError for anything that cannot be one (spec_loading.py)."""
    if isinstance(source, ClusterSpec):
        return source.model_dump(mode="json")
    if isinstance(source, dict):
        check_data_size(source)  # before deepcopy, which recurses
        return copy.deepcopy(source)
    if _looks_like_path(source):
        data = parse_yaml(read_spec_file(source))
    elif isinstance(source, str):
        data = parse_yaml(source)
    else:
        raise SpecError([f"<spec>: expected a path, YAML text or a mapping, got {type(source).__name__}"])
    if not isinstance(data, dict):
        raise SpecError(["<spec>: the spec must be a YAML mapping (name:, nodes:, …)"])
    return data


def collect_problems(source: Any) -> tuple[ClusterSpec | None, list[str]]:
    """(spec or None, every problem). Structural errors are dropped one by one so that the
    semantic rules still run on what remains."""
    data = _parse_source(source)
    problems: list[str] = []
    reported: set[tuple] = set()   # locations with a problem: their later "missing" is no news
    for _ in range(8):
        try:
            spec = ClusterSpec.model_validate(data, context={"skip_rules": True})
            break
        except ValidationError as exc:
            errors = exc.errors()
            for err in errors:
                loc = tuple(_clean_loc(tuple(err["loc"])))
                if err.get("type") == "missing" and loc in reported:
                    continue
                reported.add(loc)
                msg = _format_error(err)
                if msg not in problems:
                    problems.append(msg)
            dropped = [_drop(data, _clean_loc(tuple(err["loc"])), err.get("type")) for err in errors]
            if not all(dropped):
                return None, problems
            data = _purge_dropped(data)
    else:
        return None, problems
    for msg in check_rules(spec):
        msg = one_line(msg)
        if msg not in problems:
            problems.append(msg)
    return spec, problems


def load_spec(source: str | Path | dict | ClusterSpec) -> ClusterSpec:
    """Parse and validate; raises SpecError listing every problem. Contacts nothing."""
    spec, problems = collect_problems(source)
    if problems or spec is None:
        raise SpecError(problems or ["<spec>: invalid"])
    return spec


def spec_json_schema() -> dict:
    return ClusterSpec.model_json_schema()
