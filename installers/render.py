"""Files the node scripts install: containerd config (v3 and v2), certs.d hosts.toml, systemd
proxy drop-ins, sysctl/modules/hosts, the kube-vip static pod and the default StorageClass.

Every value from the spec goes through a serializer or an escaper (yaml.safe_dump, toml_str,
systemd_quote), so a hostile value cannot change the structure of a file.
"""

from __future__ import annotations

import ipaddress

import yaml

from installers import versions as V
from installers.spec import ClusterSpec, KubeVipEndpoint
from installers.spec_values import is_node_name, parse_ip

CERTS_D = "/etc/containerd/certs.d"


# --- escaping ----------------------------------------------------------------------------------

def toml_str(value: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for ch in value:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def systemd_quote(value: str) -> str:
    """A double-quoted systemd unit value: backslash, quote escaped; '%' doubled (specifiers)."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("control characters cannot appear in a systemd unit value")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def _yaml(doc: dict) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=1 << 16)


# --- containerd --------------------------------------------------------------------------------

def containerd_config_v3(spec: ClusterSpec) -> str:
    """containerd 2.x. Written whole: the 2.x default has no SystemdCgroup line to edit."""
    return "\n".join([
        "# containerd 2.x configuration rendered by kai",
        "version = 3",
        "",
        "[plugins.'io.containerd.cri.v1.images'.pinned_images]",
        f"  sandbox = {toml_str(spec.sandbox_image())}",
        "",
        "[plugins.'io.containerd.cri.v1.images'.registry]",
        f"  config_path = {toml_str(CERTS_D)}",
        "",
        "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]",
        "  runtime_type = \"io.containerd.runc.v2\"",
        "",
        "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]",
        "  SystemdCgroup = true",
        "",
    ])


def containerd_config_v2(spec: ClusterSpec) -> str:
    """containerd 1.6/1.7 (e.g. Debian 12's 1.6.20)."""
    cri = '[plugins."io.containerd.grpc.v1.cri"'
    return "\n".join([
        "# containerd 1.x configuration rendered by kai",
        "version = 2",
        "",
        f"{cri}]",
        f"  sandbox_image = {toml_str(spec.sandbox_image())}",
        "",
        f"{cri}.containerd.runtimes.runc]",
        "  runtime_type = \"io.containerd.runc.v2\"",
        "",
        f"{cri}.containerd.runtimes.runc.options]",
        "  SystemdCgroup = true",
        "",
        f"{cri}.registry]",
        f"  config_path = {toml_str(CERTS_D)}",
        "",
    ])


def _registry_server(registry: str) -> str | None:
    if registry == "_default":
        return None
    return "https://registry-1.docker.io" if registry == "docker.io" else f"https://{registry}"


def hosts_toml(registry: str, endpoints: list[str]) -> str:
    lines = [f"# {CERTS_D}/{registry}/hosts.toml rendered by kai"]
    server = _registry_server(registry)
    if server:
        lines += [f"server = {toml_str(server)}"]
    for url in endpoints:
        lines += ["", f"[host.{toml_str(url)}]", '  capabilities = ["pull", "resolve"]']
    return "\n".join(lines) + "\n"


def registry_mirror_files(spec: ClusterSpec) -> dict[str, str]:
    """mirrors.list (`<registry>\\t<file>` per line) + mirror-N.toml; empty when no mirrors."""
    mirrors = spec.runtime.containerd.registry_mirrors
    if not mirrors:
        return {}
    files: dict[str, str] = {}
    listing = []
    for i, (registry, endpoints) in enumerate(sorted(mirrors.items())):
        name = f"mirror-{i}.toml"
        files[name] = hosts_toml(registry, endpoints)
        listing.append(f"{registry}\t{name}")
    files["mirrors.list"] = "\n".join(listing) + "\n"
    return files


def proxy_dropin(spec: ClusterSpec) -> str | None:
    """`[Service] Environment=` drop-in for containerd/kubelet; None without a proxy."""
    proxy = spec.runtime.proxy
    if proxy is None or not (proxy.http or proxy.https):
        return None
    lines = ["# systemd drop-in rendered by kai: proxy for this service only", "[Service]"]
    if proxy.http:
        lines.append("Environment=" + systemd_quote(f"HTTP_PROXY={proxy.http}"))
    if proxy.https:
        lines.append("Environment=" + systemd_quote(f"HTTPS_PROXY={proxy.https}"))
    lines.append("Environment=" + systemd_quote("NO_PROXY=" + ",".join(spec.effective_no_proxy())))
    return "\n".join(lines) + "\n"


def download_proxy(spec: ClusterSpec) -> str:
    proxy = spec.runtime.proxy
    if proxy is None:
        return ""
    return proxy.https or proxy.http or ""


def runtime_files(spec: ClusterSpec) -> dict[str, str]:
    files = {"config-v3.toml": containerd_config_v3(spec),
             "config-v2.toml": containerd_config_v2(spec)}
    files.update(registry_mirror_files(spec))
    if (dropin := proxy_dropin(spec)) is not None:
        files["proxy.conf"] = dropin
    return files


# --- OS files ----------------------------------------------------------------------------------

def sysctl_conf(spec: ClusterSpec) -> str:
    lines = ["# rendered by kai: Kubernetes networking prerequisites",
             "net.ipv4.ip_forward = 1",
             "net.bridge.bridge-nf-call-iptables = 1",
             "net.bridge.bridge-nf-call-ip6tables = 1"]
    if ipaddress.ip_network(spec.networking.pod_cidr).version == 6:
        lines += ["net.ipv6.conf.all.forwarding = 1", "net.ipv6.conf.default.forwarding = 1"]
    return "\n".join(lines) + "\n"


def modules_conf() -> str:
    return "# rendered by kai: loaded at boot\n" + "".join(f"{m}\n" for m in V.REQUIRED_MODULES)


HOSTS_BEGIN = "# BEGIN kai managed block"
HOSTS_END = "# END kai managed block"


def _hosts_name(name: str) -> str:
    if not is_node_name(name):  # validation refuses these; a spec built around it must not pass
        raise ValueError(f"not an RFC 1123 label, cannot go into /etc/hosts: {name!r}")
    return name


def hosts_block(spec: ClusterSpec) -> str:
    """Lines between the markers replace any previous kai block in /etc/hosts.

    Each line is built from a parsed address (canonical text, never a zone ID: parse_ip refuses
    them) and a checked RFC 1123 name, so no spec text reaches the file as it was written."""
    lines = [f"{HOSTS_BEGIN} (cluster {_hosts_name(spec.name)})"]
    lines += [f"{parse_ip(n.address)}\t{_hosts_name(n.name)}" for n in spec.nodes]
    lines.append(HOSTS_END)
    return "\n".join(lines) + "\n"


def os_prep_files(spec: ClusterSpec) -> dict[str, str]:
    return {"sysctl.conf": sysctl_conf(spec), "modules.conf": modules_conf(),
            "hosts": hosts_block(spec)}


# --- kube-vip ----------------------------------------------------------------------------------

KUBE_VIP_PHASES = ("pre-init", "post-init", "join")


def kube_vip_manifest(spec: ClusterSpec, phase: str) -> str:
    """Static pod, ARP mode, control-plane VIP with leader election.

    During `kubeadm init` admin.conf has no rights yet (it is bound through a ClusterRoleBinding
    that init creates later), so the first control plane uses super-admin.conf until init is
    done (kube-vip#684); post-init and join use admin.conf."""
    ep = spec.control_plane_endpoint
    if not isinstance(ep, KubeVipEndpoint):
        raise ValueError("kube-vip manifest needs control_plane_endpoint.type kube_vip")
    if phase not in KUBE_VIP_PHASES:
        raise ValueError(f"kube-vip phase must be one of {KUBE_VIP_PHASES}, got {phase!r}")
    kubeconfig = ("/etc/kubernetes/super-admin.conf" if phase == "pre-init"
                  else "/etc/kubernetes/admin.conf")
    cidr = "32" if ipaddress.ip_address(ep.address).version == 4 else "128"
    env = {"vip_arp": "true", "port": "6443", "vip_interface": ep.interface, "vip_cidr": cidr,
           "cp_enable": "true", "cp_namespace": "kube-system", "svc_enable": "false",
           "vip_leaderelection": "true", "vip_leasename": "plndr-cp-lock",
           "vip_leaseduration": "5", "vip_renewdeadline": "3", "vip_retryperiod": "1",
           "address": ep.address}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "kube-vip", "namespace": "kube-system"},
        "spec": {
            "containers": [{
                "name": "kube-vip",
                "image": V.KUBE_VIP_IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "args": ["manager"],
                "env": [{"name": "vip_nodename",
                         "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
                       + [{"name": k, "value": v} for k, v in env.items()],
                "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
                "volumeMounts": [{"mountPath": "/etc/kubernetes/admin.conf", "name": "kubeconfig"}],
            }],
            "hostAliases": [{"hostnames": ["kubernetes"], "ip": "127.0.0.1"}],
            "hostNetwork": True,
            "volumes": [{"name": "kubeconfig", "hostPath": {"path": kubeconfig}}],
        },
    }
    return f"# kube-vip static pod rendered by kai (phase {phase})\n" + _yaml(pod)


# --- storage -----------------------------------------------------------------------------------

def default_storage_class() -> str:
    sc = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": "local-path",
                     "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "rancher.io/local-path",
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Delete",
    }
    return "# default StorageClass rendered by kai\n" + _yaml(sc)
