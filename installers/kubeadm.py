"""kubeadm v1beta4 configuration files, rendered with yaml.safe_dump (never string templates).

Field names follow the Go types in kubernetes/kubernetes
cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go. Join files carry placeholders for the secrets
(`__KAI_JOIN_TOKEN__`, `__KAI_CA_CERT_HASH__`, `__KAI_CERTIFICATE_KEY__`): kubeadm-join.sh
substitutes them on the node, so no secret exists at plan time.
"""

from __future__ import annotations

import yaml

from installers.spec import KubeVipEndpoint, ClusterSpec, Node
from installers.spec_values import parse_taint

KUBEADM_API = "kubeadm.k8s.io/v1beta4"
KUBELET_API = "kubelet.config.k8s.io/v1beta1"
KUBEPROXY_API = "kubeproxy.config.k8s.io/v1alpha1"
CRI_SOCKET = "unix:///run/containerd/containerd.sock"
API_PORT = 6443

JOIN_TOKEN_PLACEHOLDER = "__KAI_JOIN_TOKEN__"
CA_CERT_HASH_PLACEHOLDER = "__KAI_CA_CERT_HASH__"      # the secret is the full "sha256:<hex>"
CERTIFICATE_KEY_PLACEHOLDER = "__KAI_CERTIFICATE_KEY__"
CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


def _dump(doc: dict, comment: str = "") -> str:
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=1 << 16)
    return "".join(f"# {line}\n" for line in comment.splitlines()) + text


def _taints(spec: ClusterSpec, node: Node, all_in_one: bool) -> list[dict]:
    taints = [parse_taint(t) for t in node.taints]
    # A dedicated control plane keeps kubeadm's taint (we write the list explicitly, so we must
    # add it ourselves); all-in-one and control-plane+worker nodes stay schedulable.
    # (Unless the user's list has it already: two taints with one key+effect are refused.)
    implied = (CONTROL_PLANE_TAINT["key"], CONTROL_PLANE_TAINT["effect"])
    if node.is_control_plane and "worker" not in node.roles and not all_in_one \
            and implied not in {(t["key"], t["effect"]) for t in taints}:
        taints.insert(0, dict(CONTROL_PLANE_TAINT))
    return taints


def _node_registration(spec: ClusterSpec, node: Node, all_in_one: bool) -> dict:
    extra = [{"name": "node-ip", "value": node.address}]
    if node.labels:
        extra.append({"name": "node-labels",
                      "value": ",".join(f"{k}={v}" for k, v in sorted(node.labels.items()))})
    return {
        "name": node.name,
        "criSocket": CRI_SOCKET,
        "taints": _taints(spec, node, all_in_one),
        "kubeletExtraArgs": extra,
        "imagePullPolicy": "IfNotPresent",
    }


def cert_sans(spec: ClusterSpec) -> list[str]:
    sans = [spec.endpoint_host()] + [n.address for n in spec.control_planes()]
    sans += [n.name for n in spec.control_planes()] + ["127.0.0.1", "localhost"]
    return list(dict.fromkeys(sans))


def init_documents(spec: ClusterSpec, node: Node, *, all_in_one: bool) -> list[dict]:
    net = spec.networking
    init = {
        "apiVersion": KUBEADM_API,
        "kind": "InitConfiguration",
        "localAPIEndpoint": {"advertiseAddress": node.address, "bindPort": API_PORT},
        "nodeRegistration": _node_registration(spec, node, all_in_one),
        "timeouts": {"controlPlaneComponentHealthCheck": "4m0s", "kubeletHealthCheck": "4m0s"},
    }
    if isinstance(spec.control_plane_endpoint, KubeVipEndpoint):
        # kube-vip's static pod is placed before init so the VIP answers when kubeadm needs it;
        # that one known file must not fail kubeadm's "manifests dir is empty" preflight check.
        init["nodeRegistration"]["ignorePreflightErrors"] = ["DirAvailable--etc-kubernetes-manifests"]
    cluster = {
        "apiVersion": KUBEADM_API,
        "kind": "ClusterConfiguration",
        "clusterName": spec.name,
        "kubernetesVersion": f"v{spec.kubernetes.full_version}",
        # Always set, even all-in-one: without it a later move to HA is unsupported.
        "controlPlaneEndpoint": spec.endpoint(),
        "networking": {"podSubnet": net.pod_cidr, "serviceSubnet": net.service_cidr,
                       "dnsDomain": net.dns_domain},
        "etcd": {"local": {"dataDir": "/var/lib/etcd"}},
        "apiServer": {"certSANs": cert_sans(spec)},
        "controllerManager": {"extraArgs": [
            {"name": "node-cidr-mask-size", "value": str(net.node_cidr_mask)}]},
        "certificateValidityPeriod": "8760h0m0s",
        "caCertificateValidityPeriod": "87600h0m0s",
    }
    kubelet = {
        "apiVersion": KUBELET_API,
        "kind": "KubeletConfiguration",
        "cgroupDriver": "systemd",
        "failCgroupV1": spec.kubelet.fail_cgroup_v1,
    }
    if spec.kubelet.max_pods is not None:
        kubelet["maxPods"] = spec.kubelet.max_pods
    proxy = {
        "apiVersion": KUBEPROXY_API,
        "kind": "KubeProxyConfiguration",
        "mode": net.kube_proxy_mode,
        "clusterCIDR": net.pod_cidr,
    }
    return [init, cluster, kubelet, proxy]


def render_init(spec: ClusterSpec, node: Node, *, all_in_one: bool) -> str:
    docs = init_documents(spec, node, all_in_one=all_in_one)
    head = "kubeadm init configuration rendered by kai"
    if all_in_one and not docs[0]["nodeRegistration"]["taints"]:
        head += ("\nnodeRegistration.taints: [] IS the untaint: kubeadm leaves the control-plane\n"
                 "taint off, so workloads schedule on this all-in-one node")
    parts = [_dump(docs[0], head)] + [_dump(d) for d in docs[1:]]
    return "---\n".join(parts)


def join_document(spec: ClusterSpec, node: Node) -> dict:
    doc: dict = {
        "apiVersion": KUBEADM_API,
        "kind": "JoinConfiguration",
        "discovery": {"bootstrapToken": {
            "token": JOIN_TOKEN_PLACEHOLDER,
            "apiServerEndpoint": spec.endpoint(),
            "caCertHashes": [CA_CERT_HASH_PLACEHOLDER],   # always pin the CA
        }},
        "nodeRegistration": _node_registration(spec, node, all_in_one=False),
        "timeouts": {"discovery": "5m0s", "tlsBootstrap": "5m0s"},
    }
    if node.is_control_plane:
        doc["controlPlane"] = {
            "localAPIEndpoint": {"advertiseAddress": node.address, "bindPort": API_PORT},
            "certificateKey": CERTIFICATE_KEY_PLACEHOLDER,
        }
    return doc


def render_join(spec: ClusterSpec, node: Node) -> str:
    return _dump(join_document(spec, node),
                 "kubeadm join configuration rendered by kai; kubeadm-join.sh substitutes the\n"
                 "join token, CA hash and certificate key placeholders from secrets on the node")
