#!/usr/bin/python3
"""The Kubernetes API stand-in: HTTPS, client-certificate or bootstrap-token authentication, a small
honest subset of the real paths, and a state file so a restart keeps the cluster.

Run by kubeadm's stand-in as kai-standin-apiserver.service on every control plane, with its objects
in the node's etcd member (--etcd-servers, like kube-apiserver's flags; standin_etcd.EtcdState):
etcd replicates them between control planes. Without --etcd-servers (the local unit tests) the
state is a JSON file in --state-dir.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

import yaml  # noqa: E402

import standin_etcd as etcd  # noqa: E402
import standin_crds as crds  # noqa: E402
import standin_pki as pki  # noqa: E402
from standin_common import version, version_event  # noqa: E402

CNI_DAEMONSETS = ("calico-node", "kube-flannel-ds", "cilium")
READY_DELAY_S = 2.0
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
CLUSTER_SCOPED = {"namespaces", "nodes", "storageclasses", "clusterroles", "clusterrolebindings",
                  "customresourcedefinitions", "priorityclasses", "persistentvolumes",
                  "mutatingwebhookconfigurations", "validatingwebhookconfigurations",
                  "apiservices", "csidrivers", "ingressclasses", "runtimeclasses"}
ADMIN_GROUPS = {"system:masters", "kubeadm:cluster-admins"}
NODE_READABLE = ("/api/v1/namespaces/kube-system/configmaps/kubeadm-config",
                 "/api/v1/namespaces/kube-system/configmaps/kubelet-config")
MANIFEST = Path("/etc/kubernetes/manifests/kube-apiserver.yaml")
RUNNING_MANIFEST = "running-manifest.sha256"  # in --state-dir: what this process was started from


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def plural(kind: str) -> str:
    k = kind.lower()
    if k.endswith("s"):
        return k + "es"
    if k.endswith("y"):
        return k[:-1] + "ies"
    return k + "s"


def resource_path(obj: dict) -> str:
    """The REST path of an object (without leading slash), like kubectl computes it."""
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    meta = obj.get("metadata") or {}
    base = f"api/{api_version}" if "/" not in api_version else f"apis/{api_version}"
    res = plural(kind)
    if res in CLUSTER_SCOPED:
        return f"{base}/{res}/{meta.get('name')}"
    return f"{base}/namespaces/{meta.get('namespace') or 'default'}/{res}/{meta.get('name')}"


SECTIONS = ("objects", "times", "heartbeats", "cluster", "placements")


class State:
    """Flat sections of JSON values in a file, persisted atomically on every write (the local
    unit tests' store; on the test hosts the state is in etcd)."""

    SECTIONS = SECTIONS

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.RLock()
        self.data = {s: {} for s in self.SECTIONS}
        if path.exists():
            self.data.update(json.loads(path.read_text()))

    def apply(self, ops: list[list]) -> None:
        with self.lock:
            for op in ops:
                if op[0] == "set":
                    self.data[op[1]][op[2]] = op[3]
                elif op[0] == "del":
                    self.data[op[1]].pop(op[2], None)
            self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)

    def get(self, section: str, key: str, default=None):
        with self.lock:
            return self.data[section].get(key, default)

    def items(self, section: str) -> list[tuple[str, object]]:
        with self.lock:
            return list(self.data[section].items())


class Cluster:
    """The behaviour: auth, tokens, nodes, pods derived from what was applied."""

    def __init__(self, state: "State | etcd.EtcdState", ca_pem: bytes, ca_key_pem: bytes | None, endpoint: str,
                 node_grace_s: float):
        self.state, self.ca_pem, self.endpoint = state, ca_pem, endpoint
        self.ca_cert = pki.load_cert(ca_pem)
        self.ca_key = pki.load_key(ca_key_pem) if ca_key_pem else None
        self.node_grace_s = node_grace_s
        self.version = version()
        self.evictions = threading.Lock()

    # --- writes (etcd replicates them) -----------------------------------------------------------
    def write(self, ops: list[list]) -> None:
        self.state.apply(ops)

    def storage_ready(self) -> bool:
        """kube-apiserver's readyz etcd check, in short: the watch on etcd is up."""
        watching = getattr(self.state, "watching", None)
        return watching is None or watching.is_set()

    # --- tokens ----------------------------------------------------------------------------------
    def token_valid(self, token: str) -> str | None:
        """-> token id if `token` is a known, unexpired bootstrap token."""
        m = pki.TOKEN_RE.match(token or "")
        if not m:
            return None
        secret = self.state.get("objects", f"api/v1/namespaces/kube-system/secrets/bootstrap-token-{m[1]}")
        if not secret:
            return None
        data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
        if data.get("token-secret") != m[2]:
            return None
        exp = data.get("expiration")
        if exp and datetime.strptime(exp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp() < time.time():
            return None
        return m[1]

    def valid_tokens(self) -> list[tuple[str, str]]:
        out = []
        for key, obj in self.state.items("objects"):
            if key.startswith("api/v1/namespaces/kube-system/secrets/bootstrap-token-"):
                d = {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
                if self.token_valid(f"{d.get('token-id')}.{d.get('token-secret')}"):
                    out.append((d["token-id"], d["token-secret"]))
        return out

    def cluster_info(self) -> dict:
        kc = yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "", "cluster": {
                "certificate-authority-data": base64.b64encode(self.ca_pem).decode(),
                "server": f"https://{self.endpoint}"}}],
            "contexts": [], "current-context": "", "preferences": {}, "users": []})
        data = {"kubeconfig": kc}
        for tid, tsecret in self.valid_tokens():
            data[f"jws-kubeconfig-{tid}"] = pki.jws_detached(tid, tsecret, kc)
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cluster-info", "namespace": "kube-public"}, "data": data}

    # --- custom resources ------------------------------------------------------------------------
    def crds(self) -> list[tuple[dict, float | None]]:
        return [(o, self.state.get("times", k)) for k, o in self.state.items("objects")
                if k.startswith(crds.CRD_PREFIX)]

    def operator_status(self, key: str, pods: list[dict]) -> dict | None:
        """What prometheus-operator reports on its Prometheus and Alertmanager objects: Available
        once the operator runs (the stand-in has no StatefulSets for it to create)."""
        if not re.fullmatch(r"apis/monitoring\.coreos\.com/v1/namespaces/[^/]+/(prometheuses|alertmanagers)/[^/]+", key):
            return None
        running = any(o.get("kind") == "ReplicaSet" and o.get("name") == "prometheus-operator"
                      and p["status"]["conditions"][0]["status"] == "True"
                      for p in pods for o in p["metadata"].get("ownerReferences", []))
        return {"conditions": [{"type": "Available", "status": "True" if running else "False",
                                "reason": "" if running else "OperatorNotRunning",
                                "message": "" if running else "no ready prometheus-operator pod"}]}

    # --- nodes and pods --------------------------------------------------------------------------
    def nodes(self) -> list[tuple[str, dict]]:
        return [(k.rsplit("/", 1)[1], v) for k, v in self.state.items("objects")
                if k.startswith("api/v1/nodes/")]

    def cni_time(self) -> float | None:
        times = [self.state.get("times", k) for k, o in self.state.items("objects")
                 if "/daemonsets/" in k and o.get("metadata", {}).get("name") in CNI_DAEMONSETS]
        times = [t for t in times if t]
        return min(times) if times else None

    def node_ready(self, name: str, now: float) -> tuple[bool, str]:
        hb = self.state.get("heartbeats", name)
        if not hb or now - hb > self.node_grace_s:
            return False, "Kubelet stopped posting node status."
        cni = self.cni_time()
        if cni is None:
            return False, "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"
        born = max(cni, self.state.get("times", f"api/v1/nodes/{name}", 0))
        if now - born < READY_DELAY_S:
            return False, "container runtime network not ready: cni plugin initializing"
        return True, "kubelet is posting ready status"

    def node_view(self, name: str, obj: dict, now: float) -> dict:
        ready, message = self.node_ready(name, now)
        hb = self.state.get("heartbeats", name) or now
        node = json.loads(json.dumps(obj))
        node.setdefault("status", {})["conditions"] = [{
            "type": "Ready", "status": "True" if ready else ("False" if now - hb <= self.node_grace_s else "Unknown"),
            "reason": "KubeletReady" if ready else "KubeletNotReady", "message": message,
            "lastHeartbeatTime": rfc3339(hb), "lastTransitionTime": rfc3339(hb)}]
        return node

    def unschedulable(self, obj: dict) -> bool:
        return bool((obj.get("spec") or {}).get("unschedulable"))

    def place(self, pkey: str, spread: int, born: float, ready_nodes: list[str],
              schedulable: list[str], ops: list) -> tuple[str | None, float, int]:
        """Where replica `pkey` runs -> (node, born, generation). A placement sticks while its node
        is Ready (cordoning moves nothing, like the real scheduler); a pod on a node that is gone
        or NotReady, or evicted, is placed again on a schedulable Ready node (none: Pending)."""
        p = self.state.get("placements", pkey) or {}
        gen, born = p.get("gen", 0), p.get("born", born)
        if p.get("node") in ready_nodes:
            return p["node"], born, gen
        if not schedulable:
            return None, born, gen
        node = schedulable[(spread + gen) % len(schedulable)]
        ops.append(["set", "placements", pkey, {**p, "node": node, "gen": gen, "born": born}])
        return node, born, gen

    def pods(self, now: float) -> list[dict]:
        pods = []
        nodes = self.nodes()
        ready_nodes = [n for n, _ in nodes if self.node_ready(n, now)[0]]
        schedulable = [n for n, o in nodes if n in ready_nodes and not self.unschedulable(o)]
        cni = self.cni_time()
        ops: list = []

        def pod(name, ns, node, born, host_network, owner=None, labels=None, volumes=None,
                annotations=None):
            alive = node is not None and self.state.get("heartbeats", node) and \
                now - self.state.get("heartbeats", node) <= self.node_grace_s
            needs_net = not host_network
            runnable = alive and (not needs_net or node in ready_nodes)
            if runnable and needs_net and cni:
                born = max(born, cni)
            ready = bool(runnable and now - born >= READY_DELAY_S)
            p = {"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": name, "namespace": ns, "labels": labels or {},
                              "annotations": annotations or {}, "creationTimestamp": rfc3339(born)},
                 "spec": {"nodeName": node, "hostNetwork": host_network, "volumes": volumes or []},
                 "status": {"phase": "Running" if runnable else "Pending",
                            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
            if owner:
                p["metadata"]["ownerReferences"] = [owner]
            pods.append(p)

        def suffix(*parts) -> str:
            return hashlib.sha256("/".join(parts).encode()).hexdigest()[:5]

        def replica(pkey, base, spread, t, ns, host_net, owner, labels, volumes):
            node, born, gen = self.place(pkey, spread, t, ready_nodes, schedulable, ops)
            sfx = suffix(*pkey.split("#")) if gen == 0 else suffix(*pkey.split("#"), str(gen))
            pod(f"{base}-{sfx}", ns, node, born, host_net, owner, labels, volumes,
                {"kai-standin/placement": pkey})

        for name, obj in nodes:
            born = self.state.get("times", f"api/v1/nodes/{name}", now)
            labels = (obj.get("metadata") or {}).get("labels") or {}
            if "node-role.kubernetes.io/control-plane" in labels:
                for comp in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
                    # static pods: the API holds only their mirror, owned by the Node
                    pod(f"{comp}-{name}", "kube-system", name, born, True,
                        {"apiVersion": "v1", "kind": "Node", "name": name}, {"component": comp},
                        annotations={"kubernetes.io/config.mirror": suffix(comp, name)})
            pod(f"kube-proxy-{suffix('kube-proxy', name)}", "kube-system", name, born, True,
                {"kind": "DaemonSet", "name": "kube-proxy"}, {"k8s-app": "kube-proxy"})
        # kubeadm's upload-config phase marks the moment the addons (CoreDNS) were created.
        init_t = self.state.get("times", "api/v1/namespaces/kube-system/configmaps/kubeadm-config")
        if init_t:
            for i in range(2):
                replica(f"coredns#{i}", "coredns", i, init_t, "kube-system", False,
                        {"kind": "ReplicaSet", "name": "coredns"}, {"k8s-app": "kube-dns"}, [])
        for key, obj in self.state.items("objects"):
            meta = obj.get("metadata", {})
            t = self.state.get("times", key, now)
            ns = meta.get("namespace", "default")
            if "/pods/" in key:  # a bare Pod: no controller
                spec = obj.get("spec") or {}
                want = spec.get("nodeName")
                if want:
                    node, born = want, t
                else:
                    node, born, _ = self.place(key, 0, t, ready_nodes, schedulable, ops)
                pod(meta["name"], ns, node, born, bool(spec.get("hostNetwork")), None,
                    meta.get("labels"), spec.get("volumes"), {"kai-standin/placement": key})
                continue
            template = (obj.get("spec") or {}).get("template") or {}
            spec = template.get("spec") or {}
            host_net = bool(spec.get("hostNetwork"))
            labels = (template.get("metadata") or {}).get("labels") or {}
            if "/daemonsets/" in key:
                for n, _ in nodes:
                    born = max(t, self.state.get("times", f"api/v1/nodes/{n}", t))
                    pod(f"{meta['name']}-{suffix(key, n)}", ns, n, born, host_net,
                        {"kind": "DaemonSet", "name": meta["name"]}, labels, spec.get("volumes"))
            elif "/deployments/" in key:
                for i in range((obj.get("spec") or {}).get("replicas", 1)):
                    replica(f"{key}#{i}", meta["name"], i, t, ns, host_net,
                            {"kind": "ReplicaSet", "name": meta["name"]}, labels, spec.get("volumes"))
        if ops:
            self.write(ops)
        return pods

    # --- evictions and disruption budgets --------------------------------------------------------
    @staticmethod
    def selects(selector: dict | None, labels: dict) -> bool:
        """A LabelSelector (matchLabels + matchExpressions); {} selects everything (policy/v1)."""
        selector = selector or {}
        if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
            return False
        for e in selector.get("matchExpressions") or []:
            has, val = e["key"] in labels, labels.get(e["key"])
            ok = {"In": has and val in e.get("values", []), "NotIn": not has or val not in e.get("values", []),
                  "Exists": has, "DoesNotExist": not has}[e["operator"]]
            if not ok:
                return False
        return True

    def budget(self, pdb: dict, pods: list[dict]) -> dict:
        """PDB status from the live pods: expected, currentHealthy, desiredHealthy, disruptionsAllowed."""
        ns = pdb["metadata"].get("namespace", "default")
        spec = pdb.get("spec") or {}
        mine = [p for p in pods if p["metadata"]["namespace"] == ns and p["spec"]["nodeName"]
                and self.selects(spec.get("selector"), p["metadata"].get("labels") or {})]
        expected = len(mine)
        healthy = sum(p["status"]["conditions"][0]["status"] == "True" for p in mine)

        def scaled(v) -> int:  # IntOrString, percentages rounded up like the disruption controller
            if isinstance(v, str) and v.endswith("%"):
                return math.ceil(int(v[:-1]) * expected / 100)
            return int(v)

        if spec.get("minAvailable") is not None:
            desired = scaled(spec["minAvailable"])
        elif spec.get("maxUnavailable") is not None:
            desired = max(0, expected - scaled(spec["maxUnavailable"]))
        else:
            desired = 0
        return {"expectedPods": expected, "currentHealthy": healthy, "desiredHealthy": desired,
                "disruptionsAllowed": max(0, healthy - desired)}

    def evict(self, ns: str, name: str, now: float) -> tuple[int, dict]:
        """POST .../pods/{name}/eviction: honour the PodDisruptionBudgets, then the pod goes (a
        controller's replica is placed anew, not Ready for a moment; a bare Pod is deleted)."""
        # One eviction at a time: the budget read and the pod's removal must not interleave with
        # another eviction's (the real API server gets this from the PDB's resourceVersion).
        with self.evictions:
            return self._evict(ns, name, now)

    def _evict(self, ns: str, name: str, now: float) -> tuple[int, dict]:
        pods = self.pods(now)
        pod = next((p for p in pods if p["metadata"]["namespace"] == ns and p["metadata"]["name"] == name), None)
        if pod is None:
            return 404, status_body(404, "NotFound", f'pods "{name}" not found')
        pdbs = [(k, o) for k, o in self.state.items("objects")
                if k.startswith(f"apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/")
                and self.selects((o.get("spec") or {}).get("selector"), pod["metadata"].get("labels") or {})]
        if len(pdbs) > 1:
            return 500, status_body(500, "InternalError", "This pod has more than one PodDisruptionBudget, "
                                    "which the eviction subresource does not support.")
        if pdbs:
            b = self.budget(pdbs[0][1], pods)
            healthy_pod = pod["status"]["conditions"][0]["status"] == "True"
            allowed = b["disruptionsAllowed"] >= 1 if healthy_pod else b["currentHealthy"] >= b["desiredHealthy"]
            if not allowed:
                body = status_body(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.")
                body["details"] = {"causes": [{"reason": "DisruptionBudget", "message":
                                   f"The disruption budget {pdbs[0][1]['metadata']['name']} needs "
                                   f"{b['desiredHealthy']} healthy pods and has {b['currentHealthy']} currently"}]}
                return 429, body
        pkey = pod["metadata"]["annotations"].get("kai-standin/placement")
        if pkey and "/pods/" in pkey:
            self.write([["del", "objects", pkey], ["del", "times", pkey], ["del", "placements", pkey]])
        elif pkey:
            p = self.state.get("placements", pkey) or {}
            self.write([["set", "placements", pkey, {"node": None, "gen": p.get("gen", 0) + 1, "born": now}]])
        # DaemonSet and mirror pods: their controller (the kubelet) recreates them at once.
        return 201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    def with_status(self, key: str, obj: dict, pods: list[dict]) -> dict:
        """DaemonSet/Deployment/PodDisruptionBudget status computed from the pods."""
        obj = json.loads(json.dumps(obj))
        if key.startswith(crds.CRD_PREFIX):
            return crds.with_conditions(obj, self.state.get("times", key), time.time())
        if (operated := self.operator_status(key, pods)) is not None:
            obj["status"] = operated
            return obj
        name = obj.get("metadata", {}).get("name")
        ns = obj.get("metadata", {}).get("namespace")
        mine = [p for p in pods if p["metadata"]["namespace"] == ns and
                any(o["name"] == name for o in p["metadata"].get("ownerReferences", []))]
        ready = sum(p["status"]["conditions"][0]["status"] == "True" for p in mine)
        if "/daemonsets/" in key:
            obj["status"] = {"desiredNumberScheduled": len(mine), "currentNumberScheduled": len(mine),
                             "numberReady": ready, "numberAvailable": ready, "updatedNumberScheduled": len(mine)}
        elif "/deployments/" in key:
            obj["status"] = {"replicas": len(mine), "readyReplicas": ready, "availableReplicas": ready,
                             "updatedReplicas": len(mine)}
        elif "/poddisruptionbudgets/" in key:
            obj["status"] = self.budget(obj, pods)
        return obj


def status_body(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class Handler(BaseHTTPRequestHandler):
    cluster: Cluster  # set on the subclass by serve()
    server_version = "kai-standin-apiserver"

    def setup(self):
        super().setup()
        self.identity = ("anonymous", [])

    def log_message(self, fmt, *args):  # one line per request on stderr (journald)
        sys.stderr.write(f"{self.address_string()} {self.identity[0]} {fmt % args}\n")

    # --- plumbing --------------------------------------------------------------------------------
    def send_json(self, code: int, obj) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def status(self, code: int, reason: str, message: str) -> None:
        self.send_json(code, status_body(code, reason, message))

    def body(self):
        raw = self.raw_body
        ctype = (self.headers.get("Content-Type") or "").split(";")[0]
        if ctype in ("application/apply-patch+yaml", "application/yaml"):
            return yaml.safe_load(raw)
        return json.loads(raw or b"null")

    def authenticate(self) -> None:
        cert = self.connection.getpeercert()
        if cert:
            subject = dict(x[0] for x in cert["subject"])
            orgs = [v for rdn in cert["subject"] for k, v in rdn if k == "organizationName"]
            self.identity = (subject.get("commonName", ""), orgs)
            return
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            tid = self.cluster.token_valid(auth[7:].strip())
            if tid:
                self.identity = (f"system:bootstrap:{tid}", ["system:bootstrappers"])
            else:
                self.identity = ("invalid-token", [])

    @property
    def is_admin(self) -> bool:
        return bool(ADMIN_GROUPS & set(self.identity[1]))

    @property
    def node_name(self) -> str | None:
        cn, orgs = self.identity
        return cn.removeprefix("system:node:") if "system:nodes" in orgs else None

    @property
    def is_bootstrap(self) -> bool:
        return "system:bootstrappers" in self.identity[1]

    def route(self, method: str) -> None:
        try:
            # Read the body first, always: answering without draining it makes the close a reset.
            n = int(self.headers.get("Content-Length") or 0)
            self.raw_body = self.rfile.read(n) if n else b""
            self.authenticate()
            url = urllib.parse.urlsplit(self.path)
            path, query = url.path.rstrip("/"), urllib.parse.parse_qs(url.query)
            self.dispatch(method, path, query)
        except etcd.EtcdError as e:  # e.g. no quorum while a new member starts
            self.status(500, "InternalError", f"etcdserver: {e}")
        except (ValueError, KeyError, TypeError, yaml.YAMLError) as e:
            self.status(400, "BadRequest", f"{type(e).__name__}: {e}")

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_PATCH(self):
        self.route("PATCH")

    def do_PUT(self):
        self.route("PUT")

    def do_DELETE(self):
        self.route("DELETE")

    # --- the API ---------------------------------------------------------------------------------
    def dispatch(self, method: str, path: str, query: dict) -> None:
        c, now = self.cluster, time.time()
        if method == "GET" and path == "/readyz" and not c.storage_ready():
            return self.status(500, "InternalError", "[-]etcd failed: the watch on etcd is down")
        if method == "GET" and path == "/readyz/etcd":   # a real etcd behind it, or no such check
            check = getattr(c.state, "unhealthy", None)
            if check is None:
                return self.status(404, "NotFound", "the page could not be found")
            why = check()
            return self._text("ok") if why is None else self.status(
                500, "InternalError", f"[-]etcd failed: {why}")
        if method == "GET" and path in ("/readyz", "/livez", "/healthz"):
            return self._text("ok")
        if method == "GET" and path == "/version":
            v = c.version
            major, minor, _ = (v.split(".") + ["0", "0"])[:3]
            return self.send_json(200, {"major": major, "minor": minor, "gitVersion": f"v{v}",
                                        "platform": "linux/amd64"})
        if method == "GET" and path == "/api/v1/namespaces/kube-public/configmaps/cluster-info":
            return self.send_json(200, c.cluster_info())  # anonymous, like the real RBAC rule
        if self.identity[0] in ("anonymous", "invalid-token"):
            return self.status(401, "Unauthorized", "Unauthorized")

        if path == "/apis/certificates.k8s.io/v1/certificatesigningrequests" and method == "POST":
            return self._csr()
        if path == "/api/v1/namespaces/kube-system/secrets/kubeadm-certs" and method == "GET" \
                and (self.is_bootstrap or self.is_admin):
            return self._kubeadm_certs(now)
        if path.startswith("/api/v1/nodes"):
            return self._nodes(method, path, now)
        if method == "GET" and path in NODE_READABLE and (self.node_name or self.is_bootstrap):
            # kubeadm's RBAC: nodes read kubeadm-config and kubelet-config (join, upgrade node)
            obj = c.state.get("objects", path.lstrip("/"))
            if obj is None:
                return self.status(404, "NotFound", f'configmaps "{path.rsplit("/", 1)[1]}" not found')
            return self.send_json(200, obj)
        if self.is_bootstrap or self.node_name:
            return self.status(403, "Forbidden", f'User "{self.identity[0]}" cannot {method} {path}')

        # --- admin from here on ---
        if not self.is_admin:
            return self.status(403, "Forbidden", f'User "{self.identity[0]}" cannot {method} {path}')
        if method == "GET" and (path == "/api/v1/pods" or re.fullmatch(r"/api/v1/namespaces/[^/]+/pods", path)):
            ns = path.split("/")[4] if "/namespaces/" in path else None
            items = [p for p in c.pods(now) if ns is None or p["metadata"]["namespace"] == ns]
            return self.send_json(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)(/eviction)?", path)
        if m and method == "POST" and m[3]:
            body = self.body() or {}
            if body.get("kind") != "Eviction" or (body.get("metadata") or {}).get("name") != m[2]:
                return self.status(400, "BadRequest", f"the body is not an Eviction of pod {m[2]!r}")
            return self.send_json(*c.evict(m[1], m[2], now))
        if m and method == "GET" and not m[3]:
            pod = next((p for p in c.pods(now) if p["metadata"]["namespace"] == m[1]
                        and p["metadata"]["name"] == m[2]), None)
            if pod is None:
                return self.status(404, "NotFound", f'pods "{m[2]}" not found')
            return self.send_json(200, pod)
        m = re.fullmatch(r"/apis/([^/]+)/([^/]+)", path)
        if method == "GET" and m and crds.is_custom(f"{m[1]}/{m[2]}"):
            found = crds.discovery(c.crds(), m[1], m[2], now)  # kubectl's discovery of CRD groups
            if found is None:
                return self.status(404, "NotFound", f"the server could not find the requested resource ({path})")
            return self.send_json(200, found)
        key = path.lstrip("/")
        if method == "PATCH":
            return self._apply(key, query, now)
        if method == "POST":
            obj = self.body()
            obj_key = resource_path(obj)
            if not obj_key.startswith(key + "/"):
                return self.status(400, "BadRequest", f"object {obj_key} does not belong to {path}")
            if c.state.get("objects", obj_key):
                return self.status(409, "AlreadyExists", f"{obj_key} already exists")
            c.write([["set", "objects", obj_key, obj], ["set", "times", obj_key, now]])
            return self.send_json(201, obj)
        if method == "DELETE":
            if not c.state.get("objects", key):
                return self.status(404, "NotFound", f"{key} not found")
            c.write([["del", "objects", key], ["del", "times", key]])
            return self.send_json(200, {"kind": "Status", "status": "Success"})
        if method == "GET":
            obj = c.state.get("objects", key)
            if obj is not None:
                return self.send_json(200, c.with_status(key, obj, c.pods(now)))
            items = [(k, o) for k, o in c.state.items("objects") if k.rsplit("/", 1)[0] == key]
            if not items and not self._known_collection(key):
                return self.status(404, "NotFound", f"the server could not find the requested resource ({path})")
            pods = c.pods(now)
            kind = (items[0][1].get("kind") if items else key.rsplit("/", 1)[1].capitalize()) + "List"
            return self.send_json(200, {"kind": kind, "apiVersion": "v1", "metadata": {},
                                        "items": [c.with_status(k, o, pods) for k, o in items]})
        return self.status(405, "MethodNotAllowed", f"{method} {path}")

    @staticmethod
    def _known_collection(key: str) -> bool:
        return bool(re.fullmatch(r"(api/v1|apis/[^/]+/[^/]+)(/namespaces/[^/]+)?/[a-z]+", key))

    def _text(self, text: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text.encode())

    def _apply(self, key: str, query: dict, now: float) -> None:
        """Server-side apply: PATCH application/apply-patch+yaml on the object's own path."""
        c = self.cluster
        ctype = (self.headers.get("Content-Type") or "").split(";")[0]
        if ctype != "application/apply-patch+yaml":
            return self.status(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted media types include: application/apply-patch+yaml (got {ctype!r})")
        if not query.get("fieldManager"):
            return self.status(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
        obj = self.body()
        if not isinstance(obj, dict) or not obj.get("kind") or not obj.get("apiVersion"):
            return self.status(400, "BadRequest", "apply patch without apiVersion/kind")
        if crds.is_custom(obj["apiVersion"]):
            if (problem := crds.custom_object_problem(c.crds(), obj, key, now)):
                return self.status(404, "NotFound", problem)
            cluster_scoped = "/namespaces/" not in key
        else:
            want = resource_path(obj)
            if want != key:
                return self.status(400, "BadRequest", f"the object's path is {want!r}, the request's is {key!r}")
            cluster_scoped = plural(obj["kind"]) in CLUSTER_SCOPED
        if key.startswith(crds.CRD_PREFIX) and (problem := crds.crd_problem(obj)):
            return self.status(422, "Invalid", problem)
        ns = (obj.get("metadata") or {}).get("namespace")
        if cluster_scoped:
            ns = None
        elif ns is None:
            obj.setdefault("metadata", {})["namespace"] = key.split("/namespaces/")[1].split("/")[0]
            ns = obj["metadata"]["namespace"]
        if ns and ns not in BUILTIN_NAMESPACES and not c.state.get("objects", f"api/v1/namespaces/{ns}"):
            return self.status(404, "NotFound", f'namespaces "{ns}" not found')
        existing = c.state.get("objects", key)
        meta = obj.setdefault("metadata", {})
        meta["managedFields"] = [{"manager": query["fieldManager"][0], "operation": "Apply"}]
        meta.setdefault("creationTimestamp", (existing or {}).get("metadata", {}).get("creationTimestamp", rfc3339(now)))
        ops = [["set", "objects", key, obj]]
        if not existing:
            ops.append(["set", "times", key, now])
        c.write(ops)
        self.send_json(201 if not existing else 200, obj)

    def _csr(self) -> None:
        """Auto-approve kubelet client CSRs (what kubeadm's RBAC + csrapproving do for bootstrap)."""
        c = self.cluster
        if not (self.is_bootstrap or self.is_admin):
            return self.status(403, "Forbidden", f'User "{self.identity[0]}" cannot create certificatesigningrequests')
        if c.ca_key is None:
            return self.status(503, "ServiceUnavailable", "no CA key on this API server")
        obj = self.body()
        spec = obj.get("spec", {})
        if spec.get("signerName") != "kubernetes.io/kube-apiserver-client-kubelet":
            return self.status(422, "Invalid", f"unsupported signerName {spec.get('signerName')!r}")
        from cryptography import x509
        csr = x509.load_pem_x509_csr(base64.b64decode(spec["request"]))
        cn, orgs = pki.cert_subject(csr)
        if not cn.startswith("system:node:") or orgs != ["system:nodes"]:
            return self.status(403, "Forbidden", f"CSR subject {cn}/{orgs} is not a kubelet client")
        cert = pki.sign_csr(c.ca_key, c.ca_cert, csr)
        obj["status"] = {"certificate": base64.b64encode(pki.cert_pem(cert)).decode(),
                         "conditions": [{"type": "Approved", "status": "True", "reason": "AutoApproved"}]}
        self.send_json(201, obj)

    def _kubeadm_certs(self, now: float) -> None:
        secret = self.cluster.state.get("objects", "api/v1/namespaces/kube-system/secrets/kubeadm-certs")
        expires = (secret or {}).get("metadata", {}).get("annotations", {}).get("kai-standin/expires")
        if not secret or (expires and float(expires) < now):
            return self.status(404, "NotFound", 'secrets "kubeadm-certs" not found')
        self.send_json(200, secret)

    def _nodes(self, method: str, path: str, now: float) -> None:
        c = self.cluster
        parts = path.split("/")[4:]  # after /api/v1/nodes
        name = parts[0] if parts else None
        own = name is not None and name == self.node_name
        if method == "GET" and not parts and (self.is_admin or self.node_name):
            items = [c.node_view(n, o, now) for n, o in c.nodes()]
            return self.send_json(200, {"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": items})
        if method == "GET" and name and (self.is_admin or own):
            obj = c.state.get("objects", f"api/v1/nodes/{name}")
            if not obj:
                return self.status(404, "NotFound", f'nodes "{name}" not found')
            return self.send_json(200, c.node_view(name, obj, now))
        if method == "POST" and not parts:
            obj = self.body()
            name = obj["metadata"]["name"]
            if not (self.is_admin or name == self.node_name):
                return self.status(403, "Forbidden", f'User "{self.identity[0]}" cannot create node {name}')
            key = f"api/v1/nodes/{name}"
            existing = c.state.get("objects", key)
            if existing and not self.is_admin:
                return self.status(409, "AlreadyExists", f'nodes "{name}" already exists')
            # set by the server, like the real one (a client's value is ignored): the node's age
            obj.setdefault("metadata", {})["creationTimestamp"] = (existing or {}).get("metadata", {}).get(
                "creationTimestamp", rfc3339(now))
            c.write([["set", "objects", key, obj], ["set", "times", key, now]])
            return self.send_json(201, obj)
        if method == "PATCH" and name and parts[1:] == ["status"] and own:
            key = f"api/v1/nodes/{name}"
            obj = c.state.get("objects", key)
            if not obj:
                return self.status(404, "NotFound", f'nodes "{name}" not found')
            ops = [["set", "heartbeats", name, now]]
            info = ((self.body() or {}).get("status") or {}).get("nodeInfo")
            if info and {**obj.get("status", {}).get("nodeInfo", {}), **info} != obj.get("status", {}).get("nodeInfo"):
                obj = json.loads(json.dumps(obj))
                obj.setdefault("status", {}).setdefault("nodeInfo", {}).update(info)
                ops.append(["set", "objects", key, obj])  # e.g. kubeletVersion after an upgrade
            c.write(ops)
            return self.send_json(200, {"kind": "Node", "metadata": {"name": name}})
        if method == "PATCH" and name and not parts[1:] and self.is_admin:
            key = f"api/v1/nodes/{name}"
            obj = c.state.get("objects", key)
            if not obj:
                return self.status(404, "NotFound", f'nodes "{name}" not found')
            patch = self.body() or {}
            meta = obj.setdefault("metadata", {})
            meta.setdefault("labels", {}).update((patch.get("metadata") or {}).get("labels") or {})
            if "spec" in patch:
                obj.setdefault("spec", {}).update(patch["spec"])
            c.write([["set", "objects", key, obj]])
            return self.send_json(200, obj)
        if method == "DELETE" and name and (self.is_admin or own):
            key = f"api/v1/nodes/{name}"
            if not c.state.get("objects", key):
                return self.status(404, "NotFound", f'nodes "{name}" not found')
            c.write([["del", "objects", key], ["del", "times", key], ["del", "heartbeats", name]])
            return self.send_json(200, {"kind": "Status", "status": "Success"})
        return self.status(403, "Forbidden", f'User "{self.identity[0]}" cannot {method} {path}')


class TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, ctx: ssl.SSLContext):
        self.ctx = ctx
        super().__init__(addr, handler)

    def finish_request(self, request, client_address):
        # The TLS handshake happens in the worker thread, so a slow client cannot block accept().
        request.settimeout(10)
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # no or bad client certificate chain, plain HTTP, …: the handshake failed
        try:
            super().finish_request(tls, client_address)
        finally:
            try:
                tls.close()
            except OSError:
                pass


def manifest_version(manifest: Path, state_dir: Path) -> str | None:
    """The version of the kube-apiserver image in the static pod manifest this process runs
    (what kubeadm wrote, and `kubeadm upgrade` rewrites); records the manifest's hash so the
    kubelet stand-in can tell when the manifest changed under a running server."""
    try:
        text = manifest.read_text()
        image = yaml.safe_load(text)["spec"]["containers"][0]["image"]
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return None
    (state_dir / RUNNING_MANIFEST).write_text(hashlib.sha256(text.encode()).hexdigest() + "\n")
    return image.rsplit(":", 1)[1].removeprefix("v")


def serve(args) -> TLSServer:
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    if args.etcd_servers:
        if not (args.etcd_cafile and args.etcd_certfile and args.etcd_keyfile):
            raise SystemExit("--etcd-servers needs --etcd-cafile, --etcd-certfile and --etcd-keyfile")
        # kubeadm gives kube-apiserver its local member only: --etcd-servers=https://127.0.0.1:2379
        gateway = etcd.Gateway(args.etcd_servers.split(",")[0], args.etcd_cafile, args.etcd_certfile,
                               args.etcd_keyfile)
        state = etcd.EtcdState(gateway, SECTIONS)
    else:
        state = State(state_dir / "state.json")
    cluster = Cluster(state, Path(args.ca).read_bytes(),
                      Path(args.ca_key).read_bytes() if args.ca_key else None,
                      args.endpoint, args.node_grace)
    cluster.version = manifest_version(Path(args.manifest), state_dir) or version()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.load_verify_locations(args.ca)
    # Client certificates are verified against the cluster CA when presented; requests without one
    # are anonymous and get 401 except on the public paths (like the real API server).
    ctx.verify_mode = ssl.CERT_REQUIRED if args.require_client_cert else ssl.CERT_OPTIONAL
    handler = type("BoundHandler", (Handler,), {"cluster": cluster})
    return TLSServer((args.bind, args.port), handler, ctx)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="kai-standin-apiserver", allow_abbrev=False)
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--port", type=int, default=6443)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--ca-key")
    p.add_argument("--state-dir", default="/var/lib/kai-standin-apiserver")
    p.add_argument("--endpoint", required=True, help="controlPlaneEndpoint host:port for cluster-info")
    p.add_argument("--name", help="this control plane's node name")
    p.add_argument("--etcd-servers", help="etcd client URLs (the first is used); none: a state file")
    p.add_argument("--etcd-cafile")
    p.add_argument("--etcd-certfile")
    p.add_argument("--etcd-keyfile")
    p.add_argument("--node-grace", type=float, default=40.0, help="seconds without heartbeat -> NotReady")
    p.add_argument("--require-client-cert", action="store_true")
    p.add_argument("--manifest", default=str(MANIFEST), help="the static pod manifest: its image tag is the version")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    server = serve(args)
    v, node = server.RequestHandlerClass.cluster.version, args.name or socket.gethostname()
    version_event("kube-apiserver", node, v, "start")

    def stop(*_):
        version_event("kube-apiserver", node, v, "stop")
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"serving v{v} on {server.server_address}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
