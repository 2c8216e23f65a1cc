"""The spec's meaning: every semantic and cross-field rule pydantic's types cannot say.

`check_rules` runs one function per section of the spec (name and versions, networking, nodes,
control-plane endpoint, runtime, add-ons, ssh, preflight, steps) and returns every problem of every
section at once, each prefixed with its field path (`nodes[2].address: not an IP address: …`).
The checks of single values live in spec_values.py; the model in spec.py. Contacts nothing.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from installers import versions as V
from installers.addons import known_files
from installers.patterns import FINGERPRINT
from installers.spec import (POLLING_STEP_KINDS, PREFLIGHT_CHECKS, ClusterSpec, KubeVipEndpoint,
                             LoadBalancerEndpoint, Node, StepPolicyOverride)
from installers.spec_loading import shown
from installers.spec_values import (BLOCK_NAME, DNS_NAME, IMAGE_REF, LABEL_VALUE, REGISTRY,
                                    RFC1123_LABEL, SEMVER, USER_NAME, IPAddress, check_host,
                                    check_network, ip_or_problem, label_key_problem, parse_taint,
                                    path_problem, reserved_label_problem, taint_problem,
                                    unusable_address_problem, url_problem)

SHA256_HEX = re.compile(r"[0-9a-f]{64}")

# (pod_cidr, service_cidr), each None where the spec's value is not a CIDR
Cidrs = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network | None, ...]


def check_rules(spec: ClusterSpec) -> list[str]:
    """Every semantic and cross-field problem of a structurally valid spec, with field paths."""
    p: list[str] = []
    _check_name_and_versions(spec, p)
    cidrs = _check_networking(spec, p)
    addresses = _check_nodes(spec, cidrs, p)
    _check_endpoint(spec.control_plane_endpoint, addresses, cidrs, p)
    _check_runtime(spec, p)
    _check_addons(spec, p)
    _check_ssh(spec, p)
    _check_preflight(spec, p)
    p += check_step_policies(spec.steps)
    return p


def _check_name_and_versions(spec: ClusterSpec, p: list[str]) -> None:
    if not RFC1123_LABEL.fullmatch(spec.name):
        p.append(f"name: not an RFC 1123 label (lowercase letters, digits, '-', ≤63): {shown(spec.name)}")
    try:
        V.resolve_kubernetes_version(spec.kubernetes.version)
    except ValueError as exc:
        p.append(f"kubernetes.version: {exc}")
    if (msg := url_problem(spec.kubernetes.packages.repo_url)):
        p.append(f"kubernetes.packages.repo_url: {msg}")


def _check_networking(spec: ClusterSpec, p: list[str]) -> Cidrs:
    """The CIDRs (and how many nodes they hold), DNS domain, CNI; → (pod, service) networks."""
    net = spec.networking
    pod = check_network(net.pod_cidr, "networking.pod_cidr", p)
    svc = check_network(net.service_cidr, "networking.service_cidr", p)
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
    if not DNS_NAME.fullmatch(net.dns_domain):
        p.append(f"networking.dns_domain: not a DNS name: {shown(net.dns_domain)}")
    cni = V.CNIS[net.cni]
    if cni.manifest_url is None and net.cni not in V.CNI_CHARTS and spec.mirror is None:
        p.append(f"networking.cni: {net.cni} has no single-file upstream manifest; "
                 f"set mirror.url and put a rendered manifest at "
                 f"manifests/{cni.name}/v{cni.version}/{cni.manifest_file}")
    return pod, svc


def _check_addons(spec: ClusterSpec, p: list[str]) -> None:
    known = known_files()
    for name, digest in spec.addons.checksums.items():
        path = f"addons.checksums[{shown(name)}]"
        if name not in known:
            p.append(f"{path}: not a file kai downloads for an add-on (known: {', '.join(sorted(known))})")
        if not SHA256_HEX.fullmatch(digest):
            p.append(f"{path}: not a sha256 (64 lowercase hex digits): {shown(digest)}")


def _inside_cidrs(addr: IPAddress, cidrs: Cidrs) -> list[str]:
    """'lies inside networking.pod_cidr …' for each cluster network that holds addr."""
    return [f"{addr} lies inside networking.{field} {cidr}"
            for cidr, field in zip(cidrs, ("pod_cidr", "service_cidr"))
            if cidr and addr.version == cidr.version and addr in cidr]


# --- nodes and roles ---------------------------------------------------------------------------

def _check_nodes(spec: ClusterSpec, cidrs: Cidrs, p: list[str]) -> dict[IPAddress, int]:
    """Each node, names and addresses unique, a control plane; → address -> first node index."""
    names: dict[str, int] = {}
    addresses: dict[IPAddress, int] = {}   # parsed: 'FD00::1' and 'fd00:0::1' are one address
    for i, node in enumerate(spec.nodes):
        _check_node(node, f"nodes[{i}]", i, spec, names, addresses, cidrs, p)
    if not spec.control_planes():
        p.append("nodes: no node has the role control-plane")
    return addresses


def _check_node(node: Node, path: str, index: int, spec: ClusterSpec, names: dict[str, int],
                addresses: dict[IPAddress, int], cidrs: Cidrs, p: list[str]) -> None:
    if not RFC1123_LABEL.fullmatch(node.name):
        p.append(f"{path}.name: not an RFC 1123 label (lowercase letters, digits, '-', ≤63): "
                 f"{shown(node.name)}")
    elif node.name in names:
        p.append(f"{path}.name: duplicate node name {shown(node.name)} (also nodes[{names[node.name]}])")
    names.setdefault(node.name, index)
    addr, problem = ip_or_problem(node.address)
    if addr is None:
        p.append(f"{path}.address: {problem}")
    else:
        if (msg := unusable_address_problem(addr, node=node)):
            p.append(f"{path}.address: {msg}")
        if addr in addresses:
            p.append(f"{path}.address: duplicate address {addr} (also nodes[{addresses[addr]}])")
        addresses.setdefault(addr, index)
        p += [f"{path}.address: {msg}" for msg in _inside_cidrs(addr, cidrs)]
    if len(set(node.roles)) != len(node.roles):
        p.append(f"{path}.roles: duplicate role")
    _check_labels_and_taints(node, path, p)
    if node.connection == "local":
        first_local = next(i for i, n in enumerate(spec.nodes) if n.connection == "local")
        if first_local != index:
            p.append(f"{path}.connection: only one node can be the local machine "
                     f"(also nodes[{first_local}])")
        if node.ssh is not None:
            p.append(f"{path}.ssh: a node with connection 'local' is not reached over SSH; "
                     "remove its ssh block")
    elif node.ssh is not None:
        _check_ssh_common(node.ssh, f"{path}.ssh", p)
        if node.ssh.sudo == "password" and not (
                node.ssh.sudo_password_secret or node.ssh.password_secret
                or spec.ssh.sudo_password_secret or spec.ssh.password_secret):
            p.append(f"{path}.ssh.sudo: 'password' needs sudo_password_secret or password_secret")


def _check_labels_and_taints(node: Node, path: str, p: list[str]) -> None:
    for key, value in node.labels.items():
        if (msg := label_key_problem(key) or reserved_label_problem(key)):
            p.append(f"{path}.labels: {msg}")
        if not LABEL_VALUE.fullmatch(value) or len(value) > 63:
            p.append(f"{path}.labels[{shown(key)}]: not a label value (≤63 of [A-Za-z0-9._-]): "
                     f"{shown(value)}")
    first_taint: dict[tuple[str, str], int] = {}
    for j, taint in enumerate(node.taints):
        if (msg := taint_problem(taint)):
            p.append(f"{path}.taints[{j}]: {msg}")
            continue
        t = parse_taint(taint)
        ident = (t["key"], t["effect"])
        if ident in first_taint:  # the API server refuses a Node with two: kubelet never registers
            p.append(f"{path}.taints[{j}]: a second taint with key {shown(t['key'])} and effect "
                     f"{t['effect']} (also taints[{first_taint[ident]}]); a key+effect pair must be unique")
        first_taint.setdefault(ident, j)


# --- control-plane endpoint (kube-vip, load balancer) ------------------------------------------

def _check_endpoint(ep: Any, addresses: dict[IPAddress, int], cidrs: Cidrs, p: list[str]) -> None:
    if isinstance(ep, KubeVipEndpoint):
        vip, problem = ip_or_problem(ep.address)
        if vip is None:
            p.append(f"control_plane_endpoint.address: {problem}")
        else:
            if (msg := unusable_address_problem(vip)):
                p.append(f"control_plane_endpoint.address: {msg}")
            if vip in addresses:
                p.append(f"control_plane_endpoint.address: the kube-vip address {vip} is also "
                         f"the address of nodes[{addresses[vip]}]; it must be a free IP")
            p += [f"control_plane_endpoint.address: {msg}" for msg in _inside_cidrs(vip, cidrs)]
        if not ep.interface or len(ep.interface) > 15 or re.search(r"[/:\s]", ep.interface) \
                or ep.interface in (".", ".."):
            p.append(f"control_plane_endpoint.interface: not a network interface name: {shown(ep.interface)}")
    elif isinstance(ep, LoadBalancerEndpoint):
        # a load balancer may be on loopback: a local proxy on every node is a common layout
        check_host(ep.address, "control_plane_endpoint.address", p, loopback=True)


# --- runtime and mirror ------------------------------------------------------------------------

def _check_runtime(spec: ClusterSpec, p: list[str]) -> None:
    c = spec.runtime.containerd
    for field in ("version", "runc_version", "cni_plugins_version"):
        value = getattr(c, field)
        if not SEMVER.fullmatch(value):
            p.append(f"runtime.containerd.{field}: not a version (X.Y.Z): {shown(value)}")
    if c.source == "mirror" and spec.mirror is None:
        p.append("runtime.containerd.source: 'mirror' needs mirror.url")
    if c.sandbox_image is not None and not IMAGE_REF.fullmatch(c.sandbox_image):
        p.append(f"runtime.containerd.sandbox_image: not an image reference: {shown(c.sandbox_image)}")
    for registry, endpoints in c.registry_mirrors.items():
        rpath = f"runtime.containerd.registry_mirrors[{shown(registry)}]"
        if not REGISTRY.fullmatch(registry):
            p.append(f"{rpath}: not a registry host[:port] (or _default): {shown(registry)}")
        if not endpoints:
            p.append(f"{rpath}: needs at least one mirror URL")
        for j, url in enumerate(endpoints):
            if (msg := url_problem(url)):
                p.append(f"{rpath}[{j}]: {msg}")
    proxy = spec.runtime.proxy
    if proxy is not None:
        for field in ("http", "https"):
            value = getattr(proxy, field)
            if value is not None and (msg := url_problem(value)):
                p.append(f"runtime.proxy.{field}: {msg}")
        for j, item in enumerate(proxy.no_proxy):
            if not item or re.search(r"[\s,]", item):
                p.append(f"runtime.proxy.no_proxy[{j}]: not a host, domain or CIDR: {shown(item)}")
    if spec.mirror is not None and (msg := url_problem(spec.mirror.url)):
        p.append(f"mirror.url: {msg}")


# --- ssh ---------------------------------------------------------------------------------------

def _check_ssh(spec: ClusterSpec, p: list[str]) -> None:
    _check_ssh_common(spec.ssh, "ssh", p)
    if spec.ssh.sudo == "password" and not (spec.ssh.sudo_password_secret or spec.ssh.password_secret):
        p.append("ssh.sudo: 'password' needs sudo_password_secret or password_secret")
    # pins are looked up by the text as written (tasks/targets.py), so compare texts here
    known = {n.name for n in spec.nodes} | {n.address for n in spec.nodes} | (
        {spec.ssh.bastion.host} if spec.ssh.bastion else set())
    for key, fps in spec.ssh.host_key_fingerprints.items():
        kpath = f"ssh.host_key_fingerprints[{shown(key)}]"
        if key not in known:
            p.append(f"{kpath}: not a node name or address of this spec")
        p += _fingerprint_problems(fps, kpath)


def _fingerprint_problems(fingerprints: list[str], path: str) -> list[str]:
    return [f"{path}[{j}]: not a SHA256 fingerprint ('SHA256:' + 43 base64 characters, no '=' "
            f"padding): {shown(fp)}" for j, fp in enumerate(fingerprints) if not FINGERPRINT.fullmatch(fp)]


def _check_ssh_common(block: Any, path: str, problems: list[str]) -> None:
    """What the top-level ssh block, a node's overrides and a bastion share."""
    # every *_secret field names a Prefect Secret block: derived from the model, so that a new
    # one cannot be left without the check
    for field in (f for f in type(block).model_fields if f.endswith("_secret")):
        value = getattr(block, field, None)
        if value is not None and not BLOCK_NAME.fullmatch(value):
            problems.append(f"{path}.{field}: not a Prefect Secret block name "
                            f"(lowercase letters, digits, dashes): {shown(value)}")
    if getattr(block, "private_key_file", None) and getattr(block, "private_key_secret", None):
        problems.append(f"{path}: set private_key_file or private_key_secret, not both")
    for field in ("private_key_file", "known_hosts_file"):
        value = getattr(block, field, None)
        if value is not None and (msg := path_problem(value)):
            problems.append(f"{path}.{field}: {msg}")
    user = getattr(block, "user", None)
    if user is not None and not USER_NAME.fullmatch(user):
        problems.append(f"{path}.user: not a user name: {shown(user)}")
    bastion = getattr(block, "bastion", None)
    if bastion is not None:
        # loopback allowed: a bastion may be the local end of a tunnel
        check_host(bastion.host, f"{path}.bastion.host", problems, loopback=True)
        _check_ssh_common(bastion, f"{path}.bastion", problems)
        problems += _fingerprint_problems(bastion.host_key_fingerprints,
                                          f"{path}.bastion.host_key_fingerprints")


# --- preflight and step policies ---------------------------------------------------------------

def _check_preflight(spec: ClusterSpec, p: list[str]) -> None:
    for j, check in enumerate(spec.preflight.ignore):
        if check not in PREFLIGHT_CHECKS:
            p.append(f"preflight.ignore[{j}]: unknown check {shown(check)} "
                     f"(known: {', '.join(PREFLIGHT_CHECKS)})")


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
