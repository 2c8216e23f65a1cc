"""Checks of single spec values: names, addresses, CIDRs, URLs, labels, taints, file paths.

Each takes one value (no spec, no model) and says what is wrong with it as one message naming the
value; the cross-field rules in spec_rules.py put the field path in front. Contacts nothing.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import TYPE_CHECKING, Union
from urllib.parse import urlsplit

from installers.spec_loading import SHOWN_PATH_CHARS, non_regular_file_kind, shown

if TYPE_CHECKING:
    from installers.spec import Node

# Use every pattern with fullmatch: `$` also matches before a trailing newline. [0-9], never \d:
# \d also matches non-ASCII digits ('١', '５').
RFC1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_NAME = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
SEMVER = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")
BLOCK_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")   # Prefect block document names
USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\$?")
REGISTRY = re.compile(r"_default|[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?")
IMAGE_REF = re.compile(
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
    return bool(RFC1123_LABEL.fullmatch(value))


def is_ip(value: str) -> bool:
    try:
        parse_ip(value)
        return True
    except ValueError:
        return False


def ip_or_problem(value: str) -> tuple[IPAddress | None, str | None]:
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


def unusable_address_problem(addr: IPAddress, *, node: "Node | None" = None,
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


def url_problem(value: str) -> str | None:
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


def label_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and not DNS_NAME.fullmatch(prefix):
        return f"label key prefix is not a DNS name: {shown(key)}"
    if not _LABEL_NAME.fullmatch(name):
        return f"not a label key (≤63 of [A-Za-z0-9._-], alphanumeric at both ends): {shown(key)}"
    return None


def reserved_label_problem(key: str) -> str | None:
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


def taint_problem(taint: str) -> str | None:
    kv, sep, effect = taint.rpartition(":")
    if not sep or effect not in _TAINT_EFFECTS:
        return f"not a taint (key=value:Effect, Effect one of {', '.join(_TAINT_EFFECTS)}): {shown(taint)}"
    key, _, value = kv.partition("=")
    if label_key_problem(key) or not LABEL_VALUE.fullmatch(value):
        return f"not a taint (bad key or value): {shown(taint)}"
    return None


def parse_taint(taint: str) -> dict[str, str]:
    kv, _, effect = taint.rpartition(":")
    key, _, value = kv.partition("=")
    out = {"key": key, "effect": effect}
    if value:
        out["value"] = value
    return out


def check_network(value: str, path: str, problems: list[str]):
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


def path_problem(value: str) -> str | None:
    """A key or known_hosts path must name a regular file: a device or FIFO is read forever."""
    if not value.strip():
        return "empty path"
    absolute = os.path.normpath(os.path.expanduser(value))
    if any((absolute + "/").startswith(tree) for tree in _DEVICE_TREES):
        return f"not a regular file (a device or kernel file): {shown(value, SHOWN_PATH_CHARS)}"
    if (kind := non_regular_file_kind(value)):
        return f"not a regular file ({kind}): {shown(value, SHOWN_PATH_CHARS)}"
    return None



def check_host(value: str, path: str, problems: list[str], *, loopback: bool = False) -> None:
    """An IP address (no zone, usable for a host) or a DNS name."""
    if DNS_NAME.fullmatch(value):
        return
    addr, problem = ip_or_problem(value)
    if addr is None:
        if "zone ID" not in (problem or ""):
            problem = f"not an IP address or DNS name: {shown(value)}"
        problems.append(f"{path}: {problem}")
    elif (msg := unusable_address_problem(addr, loopback=loopback)):
        problems.append(f"{path}: {msg}")

