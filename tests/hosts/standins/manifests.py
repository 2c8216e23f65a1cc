"""Small stand-in manifests for the mirror: the real object shapes (and names) of the CNI and
local-path-provisioner manifests, without the real images' work. Used by tests/hosts/mirror.py only
(not installed on the hosts)."""

from __future__ import annotations

import json

import yaml


def _ns(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def _sa(name: str, ns: str) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}}


def _rbac(name: str, ns: str, rules: list[dict]) -> list[dict]:
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
         "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]},
    ]


def _daemonset(name: str, ns: str, app: str, image: str, sa: str, host_network: bool = True) -> dict:
    labels = {"k8s-app": app}
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"hostNetwork": host_network, "serviceAccountName": sa,
                                           "priorityClassName": "system-node-critical",
                                           "tolerations": [{"operator": "Exists"}],
                                           "containers": [{"name": name, "image": image}]}}}}


def _deployment(name: str, ns: str, image: str, sa: str, replicas: int = 1) -> dict:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"serviceAccountName": sa, "containers": [{"name": name, "image": image}]}}}}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the JSON in ConfigMaps) as literal blocks, like the upstream manifests."""


_Dumper.add_representer(str, lambda d, s: d.represent_scalar(
    "tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def _dump(docs: list[dict]) -> str:
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False)


def cni_manifest(cni: str, version: str) -> str:
    if cni == "flannel":
        net_conf = json.dumps({"Network": "10.244.0.0/16", "EnableNFTables": False,
                               "Backend": {"Type": "vxlan"}}, indent=2)
        cni_conf = json.dumps({"name": "cbr0", "cniVersion": "0.3.1", "plugins": [
            {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]}, indent=2)
        ns = "kube-flannel"
        return _dump([
            {**_ns(ns), "metadata": {"name": ns, "labels": {"k8s-app": "flannel",
                                                            "pod-security.kubernetes.io/enforce": "privileged"}}},
            *_rbac("flannel", ns, [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]),
            _sa("flannel", ns),
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-flannel-cfg", "namespace": ns,
                                                                   "labels": {"app": "flannel", "tier": "node"}},
             "data": {"cni-conf.json": cni_conf, "net-conf.json": net_conf}},
            _daemonset("kube-flannel-ds", ns, "flannel", f"ghcr.io/flannel-io/flannel:v{version}", "flannel"),
        ])
    if cni == "calico":
        ns = "kube-system"
        return _dump([
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "calico-config", "namespace": ns},
             "data": {"typha_service_name": "none", "calico_backend": "bird", "veth_mtu": "0"}},
            {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
             "metadata": {"name": "ippools.crd.projectcalico.org"},
             "spec": {"group": "crd.projectcalico.org", "names": {"kind": "IPPool", "plural": "ippools"},
                      "scope": "Cluster", "versions": [{"name": "v1", "served": True, "storage": True,
                                                        "schema": {"openAPIV3Schema": {"type": "object"}}}]}},
            *_rbac("calico-node", ns, [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]),
            _sa("calico-node", ns),
            _sa("calico-kube-controllers", ns),
            _daemonset("calico-node", ns, "calico-node", f"docker.io/calico/node:v{version}", "calico-node"),
            _deployment("calico-kube-controllers", ns, f"docker.io/calico/kube-controllers:v{version}",
                        "calico-kube-controllers"),
        ])
    if cni == "cilium":
        ns = "kube-system"
        return _dump([
            _sa("cilium", ns),
            _sa("cilium-operator", ns),
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cilium-config", "namespace": ns},
             "data": {"ipam": "kubernetes", "routing-mode": "tunnel", "tunnel-protocol": "vxlan"}},
            *_rbac("cilium", ns, [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]),
            _daemonset("cilium", ns, "cilium", f"quay.io/cilium/cilium:v{version}", "cilium"),
            _deployment("cilium-operator", ns, f"quay.io/cilium/operator-generic:v{version}", "cilium-operator"),
        ])
    raise ValueError(f"unknown CNI {cni!r}")


def local_path_manifest(version: str) -> str:
    ns = "local-path-storage"
    return _dump([
        _ns(ns),
        _sa("local-path-provisioner-service-account", ns),
        *_rbac("local-path-provisioner-role", ns, [{"apiGroups": [""], "resources": ["persistentvolumes"],
                                                    "verbs": ["get", "list", "watch", "create", "delete"]}]),
        _deployment("local-path-provisioner", ns, f"rancher/local-path-provisioner:v{version}",
                    "local-path-provisioner-service-account"),
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "local-path"},
         "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer",
         "reclaimPolicy": "Delete"},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "local-path-config", "namespace": ns},
         "data": {"config.json": json.dumps({"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES",
                                                              "paths": ["/opt/local-path-provisioner"]}]})}},
    ])
