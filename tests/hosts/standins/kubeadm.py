#!/usr/bin/python3
"""kubeadm stand-in: exactly the subcommands kai runs (docs/architecture.md §3), strictly, and the
day-2 ones: upgrade plan / apply / node (version policy of cmd/kubeadm/app/phases/upgrade/policy.go),
certs check-expiration / renew all (standin_certs.py).

Writes real PKI, kubeconfigs and static pod manifests (the kubelet stand-in runs etcd's with Debian's
etcd), adds and removes etcd members as kubeadm does, and runs the API stand-in as
kai-standin-apiserver.service. Every invocation is journaled to /var/log/kai-standins.jsonl.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

import yaml  # noqa: E402

import standin_certs as certs  # noqa: E402
import standin_etcd as etcd  # noqa: E402
import standin_pki as pki  # noqa: E402
from standin_common import Api, Fail, parse_version, run_main, version  # noqa: E402
from standin_config import ConfigError, load_config  # noqa: E402

K8S = Path("/etc/kubernetes")
PKI = K8S / "pki"
MANIFESTS = K8S / "manifests"
KUBELET_DIR = Path("/var/lib/kubelet")
ETCD_DIR = Path("/var/lib/etcd")
API_STATE = Path("/var/lib/kai-standin-apiserver")
API_UNIT = Path("/etc/systemd/system/kai-standin-apiserver.service")
HERE = Path(__file__).resolve().parent
CRI_SOCKET = Path("/run/containerd/containerd.sock")
CERT_KEY_TTL_S = 2 * 3600
_DUR = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms)")


def parse_duration(text: str) -> float:
    if text in ("0", "0s"):
        return 0.0
    parts = _DUR.findall(text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise Fail(f'invalid argument "{text}" for "--ttl" flag: time: invalid duration "{text}"')
    mult = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(a) * mult[b] for a, b in parts)


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise Fail(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def say(msg: str) -> None:
    print(msg, flush=True)


# --- preflight ------------------------------------------------------------------------------------

def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def preflight(ignore: list[str], control_plane: bool, joining: bool) -> None:
    say("[preflight] Running pre-flight checks")
    errors: list[tuple[str, str]] = []
    if os.geteuid() != 0:
        errors.append(("IsPrivilegedUser", "user is not running as root"))
    for binary in ("kubelet", "crictl", "ip", "iptables", "mount", "nsenter"):
        if not shutil.which(binary):
            errors.append((f"FileExisting-{binary}", f"{binary} not found in system path"))
    if sh("systemctl", "is-active", "--quiet", "containerd", check=False).returncode != 0 or not CRI_SOCKET.exists():
        errors.append(("CRI", f"container runtime is not running: validate service connection: "
                              f"dial unix {CRI_SOCKET}: connect: no such file or directory"))
    if sh("systemctl", "is-enabled", "--quiet", "kubelet", check=False).returncode != 0:
        errors.append(("Service-Kubelet", "kubelet service is not enabled, please run "
                                          "'systemctl enable kubelet.service'"))
    if len(Path("/proc/swaps").read_text().strip().splitlines()) > 1:
        errors.append(("Swap", "running with swap on is not supported. Please disable swap"))
    if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() != "1":
        errors.append(("FileContent--proc-sys-net-ipv4-ip_forward",
                       "/proc/sys/net/ipv4/ip_forward contents are not set to 1"))
    if MANIFESTS.exists() and any(MANIFESTS.iterdir()):
        errors.append(("DirAvailable--etc-kubernetes-manifests", f"{MANIFESTS} is not empty"))
    for conf in ("kubelet.conf", "bootstrap-kubelet.conf") if joining else ():
        if (K8S / conf).exists():
            errors.append((f"FileAvailable--etc-kubernetes-{conf}", f"{K8S / conf} already exists"))
    if joining and (PKI / "ca.crt").exists():
        errors.append(("FileAvailable--etc-kubernetes-pki-ca.crt", f"{PKI / 'ca.crt'} already exists"))
    if control_plane:
        if not joining and (K8S / "admin.conf").exists():
            errors.append(("FileAvailable--etc-kubernetes-admin.conf", f"{K8S / 'admin.conf'} already exists"))
        if ETCD_DIR.exists() and any(ETCD_DIR.iterdir()):
            errors.append(("DirAvailable--var-lib-etcd", f"{ETCD_DIR} is not empty"))
        for port in (6443, etcd.CLIENT_PORT, etcd.PEER_PORT):
            if not _port_free(port):
                errors.append((f"Port-{port}", f"Port {port} is in use"))
    if not _port_free(10250):
        errors.append(("Port-10250", "Port 10250 is in use"))
    ignored = {i.lower() for i in ignore}
    fatal = [(n, m) for n, m in errors if n.lower() not in ignored and "all" not in ignored]
    for n, m in errors:
        if (n, m) not in fatal:
            say(f"\t[WARNING {n}]: {m}")
    if fatal:
        lines = "\n".join(f"\t[ERROR {n}]: {m}" for n, m in fatal)
        raise Fail(f"error execution phase preflight: [preflight] Some fatal errors occurred:\n{lines}\n"
                   "[preflight] If you know what you are doing, you can make a check non-fatal with "
                   "`--ignore-preflight-errors=...`")


# --- config helpers -------------------------------------------------------------------------------

def read_config(path: str) -> dict[str, dict]:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise Fail(f"unable to read config from {path!r}: {e}") from e
    try:
        return load_config(text)
    except ConfigError as e:
        raise Fail(f"{path}: {e}") from e


def host_port(endpoint: str, default_port: int) -> tuple[str, int]:
    if endpoint.startswith("["):
        host, _, port = endpoint[1:].partition("]:")
    elif endpoint.count(":") == 1:
        host, _, port = endpoint.partition(":")
    else:
        host, port = endpoint, ""
    return host, int(port or default_port)


def default_address() -> str:
    out = sh("ip", "-4", "-o", "addr", "show", "scope", "global").stdout.split()
    for i, w in enumerate(out):
        if w == "inet":
            return out[i + 1].split("/")[0]
    raise Fail("unable to select an IP from default routes")


def node_name(nodereg: dict) -> str:
    return nodereg.get("name") or socket.gethostname().lower()


def check_version(cluster: dict) -> str:
    mine = version()
    want = (cluster.get("kubernetesVersion") or f"v{mine}").removeprefix("v")
    wmaj, wmin = (int(x) for x in want.split(".")[:2])
    mmaj, mmin = (int(x) for x in mine.split(".")[:2])
    if (wmaj, wmin) > (mmaj, mmin) or want.split(".") > mine.split(".") and (wmaj, wmin) == (mmaj, mmin):
        raise Fail(f'this version of kubeadm only supports deploying clusters with the control plane '
                   f'version <= v{mine}. Current version: v{want}')
    if (wmaj, wmin) < (mmaj, mmin - 1):
        raise Fail(f'this version of kubeadm only supports deploying clusters with the control plane '
                   f'version >= v{mmaj}.{mmin - 1}.0. Current version: v{want}')
    return want


# --- files ----------------------------------------------------------------------------------------

def write_pair(name: str, key, cert) -> None:
    pki.write_private(PKI / f"{name}.key", pki.key_pem(key))
    pki.write_private(PKI / f"{name}.crt", pki.cert_pem(cert), 0o644)


def load_ca(name: str = "ca"):
    return pki.load_key((PKI / f"{name}.key").read_bytes()), pki.load_cert((PKI / f"{name}.crt").read_bytes())


def make_shared_certs() -> None:
    say("[certs] Generating \"ca\" certificate and key")
    write_pair("ca", *pki.new_ca("kubernetes"))
    say("[certs] Generating \"front-proxy-ca\" certificate and key")
    write_pair("front-proxy-ca", *pki.new_ca("front-proxy-ca"))
    say("[certs] Generating \"etcd/ca\" certificate and key")
    write_pair("etcd/ca", *pki.new_ca("etcd-ca"))
    say("[certs] Generating \"sa\" key and public key")
    sa = pki.new_key()
    pki.write_private(PKI / "sa.key", pki.key_pem(sa))
    pki.write_private(PKI / "sa.pub", pki.pub_pem(sa), 0o644)


def make_node_certs(name: str, address: str, endpoint_host: str, cluster: dict) -> None:
    ca_key, ca = load_ca("ca")
    days = certs.leaf_days()  # a year, or the test knob's (standin_certs)
    svc_net = ipaddress.ip_network((cluster.get("networking") or {}).get("serviceSubnet") or "10.96.0.0/12")
    domain = (cluster.get("networking") or {}).get("dnsDomain") or "cluster.local"
    sans = [name, "kubernetes", "kubernetes.default", "kubernetes.default.svc", f"kubernetes.default.svc.{domain}",
            str(svc_net[1]), address, endpoint_host] + list((cluster.get("apiServer") or {}).get("certSANs") or [])
    say(f"[certs] apiserver serving cert is signed for DNS names and IPs {sorted(set(sans))}")
    write_pair("apiserver", *pki.issue(ca_key, ca, "kube-apiserver", sans=list(dict.fromkeys(sans)), server=True, days=days))
    write_pair("apiserver-kubelet-client", *pki.issue(ca_key, ca, "kube-apiserver-kubelet-client",
                                                      orgs=("kubeadm:cluster-admins",), client=True,
                                                      days=days))
    fp_key, fp = load_ca("front-proxy-ca")
    write_pair("front-proxy-client", *pki.issue(fp_key, fp, "front-proxy-client", client=True, days=days))
    e_key, e = load_ca("etcd/ca")
    write_pair("etcd/server", *pki.issue(e_key, e, name, sans=[name, "localhost", address, "127.0.0.1"],
                                         server=True, client=True, days=days))
    write_pair("etcd/peer", *pki.issue(e_key, e, name, sans=[name, "localhost", address], server=True, client=True,
                                       days=days))
    write_pair("etcd/healthcheck-client", *pki.issue(e_key, e, "kube-etcd-healthcheck-client", client=True, days=days))
    write_pair("apiserver-etcd-client", *pki.issue(e_key, e, "kube-apiserver-etcd-client", client=True, days=days))


def write_kubeconfig(file: str, server: str, cn: str, orgs: tuple[str, ...]) -> None:
    ca_key, ca = load_ca("ca")
    k, c = pki.issue(ca_key, ca, cn, orgs=orgs, client=True, days=certs.leaf_days())
    say(f'[kubeconfig] Writing "{file}" kubeconfig file')
    pki.write_private(K8S / file, pki.kubeconfig(server, pki.cert_pem(ca), cn, pki.cert_pem(c), pki.key_pem(k)).encode())


def static_pod(component: str, image: str, command: list[str]) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": component, "namespace": "kube-system",
                     "labels": {"component": component, "tier": "control-plane"}},
        "spec": {"hostNetwork": True, "priorityClassName": "system-node-critical",
                 "containers": [{"name": component, "image": image, "command": command}]}}, sort_keys=False)


ETCD_CLIENT_FLAGS = [f"--etcd-cafile={PKI}/etcd/ca.crt", f"--etcd-certfile={PKI}/apiserver-etcd-client.crt",
                     f"--etcd-keyfile={PKI}/apiserver-etcd-client.key", "--etcd-servers=https://127.0.0.1:2379"]


def write_static_pods(v: str, address: str, port: int, cluster: dict) -> None:
    """The control-plane components' manifests (etcd's: write_etcd_manifest)."""
    repo = cluster.get("imageRepository") or "registry.k8s.io"
    pods = {
        "kube-apiserver": (f"{repo}/kube-apiserver:v{v}", ["kube-apiserver", f"--advertise-address={address}",
                                                            *ETCD_CLIENT_FLAGS, f"--secure-port={port}"]),
        "kube-controller-manager": (f"{repo}/kube-controller-manager:v{v}", ["kube-controller-manager"]),
        "kube-scheduler": (f"{repo}/kube-scheduler:v{v}", ["kube-scheduler"]),
    }
    MANIFESTS.mkdir(parents=True, exist_ok=True)
    for name, (image, cmd) in pods.items():
        say(f'[control-plane] Creating static Pod manifest for "{name}"')
        (MANIFESTS / f"{name}.yaml").write_text(static_pod(name, image, cmd))


def write_etcd_manifest(name: str, address: str, initial_cluster: str, existing: bool) -> None:
    """The local etcd's static pod; the kubelet stand-in starts Debian's etcd from it."""
    say('[etcd] Creating static Pod manifest for local etcd in "/etc/kubernetes/manifests"')
    MANIFESTS.mkdir(parents=True, exist_ok=True)
    (MANIFESTS / "etcd.yaml").write_text(etcd.manifest(etcd.pod_command(name, address, initial_cluster, existing)))


def etcd_endpoints(api: Api) -> list[str]:
    """The client URLs of the control planes' etcd members, from the control-plane Nodes."""
    code, body = api.request("GET", "/api/v1/nodes")
    if code != 200:
        raise Fail(f"error execution phase control-plane-join/etcd: listing the control-plane nodes: {code} {body}")
    out = []
    for n in body.get("items") or []:
        if "node-role.kubernetes.io/control-plane" in ((n.get("metadata") or {}).get("labels") or {}):
            out += [f"https://{a['address']}:{etcd.CLIENT_PORT}" for a in (n.get("status") or {}).get("addresses") or []
                    if a.get("type") == "InternalIP"]
    if not out:
        raise Fail("error execution phase control-plane-join/etcd: no control-plane node with an InternalIP")
    return out


def join_etcd(name: str, address: str, timeout_s: float) -> None:
    """kubeadm's control-plane-join/etcd phase: add this node as a member, then its manifest with
    initial-cluster-state=existing, then wait until the local member serves."""
    endpoints = etcd_endpoints(admin_api())
    say(f"[etcd] Adding etcd member: https://{address}:{etcd.PEER_PORT}")
    try:
        initial = etcd.member_add(endpoints, name, f"https://{address}:{etcd.PEER_PORT}")
    except etcd.EtcdError as e:
        raise Fail(str(e)) from e
    say(f"[etcd] Announced new etcd member joining to the existing etcd cluster: {initial}")
    write_etcd_manifest(name, address, initial, existing=True)
    wait_etcd(timeout_s)


def wait_etcd(timeout_s: float) -> None:
    say(f"[etcd] Waiting for the new etcd member to join the cluster. This can take up to {int(timeout_s)}s")
    deadline, last = time.time() + timeout_s, ""
    while time.time() < deadline:
        r = etcd.etcdctl([f"https://127.0.0.1:{etcd.CLIENT_PORT}"], "endpoint", "health")
        if r.returncode == 0:
            return
        last = (r.stderr or r.stdout).strip()
        time.sleep(1)
    raise Fail(f"error execution phase control-plane-join/etcd: the local etcd member is not healthy: {last}")


def write_kubelet_files(kinds: dict, nodereg: dict, address: str) -> None:
    KUBELET_DIR.mkdir(parents=True, exist_ok=True)
    kubelet_cfg = dict(kinds.get("KubeletConfiguration") or {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration", "cgroupDriver": "systemd"})
    (KUBELET_DIR / "config.yaml").write_text(yaml.safe_dump(kubelet_cfg, sort_keys=False))
    args = [f"--container-runtime-endpoint={nodereg.get('criSocket') or 'unix://' + str(CRI_SOCKET)}"]
    args += [f"--{a['name']}={a['value']}" for a in nodereg.get("kubeletExtraArgs") or []]
    if nodereg.get("name"):
        args.append(f"--hostname-override={nodereg['name']}")
    (KUBELET_DIR / "kubeadm-flags.env").write_text(f'KUBELET_KUBEADM_ARGS="{" ".join(args)}"\n')
    say('[kubelet-start] Writing kubelet environment file with flags to file "/var/lib/kubelet/kubeadm-flags.env"')
    say('[kubelet-start] Writing kubelet configuration to file "/var/lib/kubelet/config.yaml"')


def start_kubelet(timeout_s: float) -> None:
    say("[kubelet-start] Starting the kubelet")
    sh("systemctl", "restart", "kubelet")
    say("[kubelet-check] Waiting for a healthy kubelet at http://127.0.0.1:10248/healthz. This can take up to 4m0s")
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen("http://127.0.0.1:10248/healthz", timeout=2) as r:
                if r.read() == b"ok":
                    say("[kubelet-check] The kubelet is healthy")
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise Fail("error execution phase kubelet-start: The HTTP call equal to 'curl -sSL "
               "http://127.0.0.1:10248/healthz' returned error: the kubelet is not healthy")


def start_apiserver(name: str, port: int, endpoint: str) -> None:
    cmd = [sys.executable, str(HERE / "standin_apiserver.py"), "--bind", "0.0.0.0", "--port", str(port),
           "--cert", str(PKI / "apiserver.crt"), "--key", str(PKI / "apiserver.key"), "--ca", str(PKI / "ca.crt"),
           "--ca-key", str(PKI / "ca.key"), "--state-dir", str(API_STATE), "--endpoint", endpoint,
           "--name", name, *ETCD_CLIENT_FLAGS]
    API_UNIT.write_text(
        "[Unit]\nDescription=kai stand-in for the Kubernetes API server\nAfter=network-online.target\n\n"
        f"[Service]\nExecStart={' '.join(cmd)}\nRestart=always\nRestartSec=2\n\n"
        "[Install]\nWantedBy=multi-user.target\n")
    sh("systemctl", "daemon-reload")
    sh("systemctl", "enable", "--now", API_UNIT.name)


def wait_api(server: str, timeout_s: float) -> None:
    say(f"[api-check] Waiting for a healthy API server. This can take up to {int(timeout_s)}s")
    api = Api(server, (PKI / "ca.crt").read_bytes())
    deadline = time.time() + timeout_s
    last = ""
    while time.time() < deadline:
        try:
            code, body = api.request("GET", "/readyz")
            if code == 200:
                say("[api-check] The API server is healthy")
                return
            last = f"{code} {body}"
        except OSError as e:
            last = str(e)
        time.sleep(0.5)
    raise Fail(f"error execution phase wait-control-plane: API server at {server} not healthy: {last}")


def admin_api() -> Api:
    kc = pki.read_kubeconfig((K8S / "admin.conf").read_text())
    return Api(kc["server"], kc["ca"], kc["cert"], kc["key"])


def node_object(name: str, address: str, control_plane: bool, taints: list | None) -> dict:
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
              "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"}
    if control_plane:
        labels["node-role.kubernetes.io/control-plane"] = ""
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
        if taints is None:
            taints = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints or []},
            "status": {"addresses": [{"type": "InternalIP", "address": address},
                                     {"type": "Hostname", "address": name}],
                       "nodeInfo": {"kubeletVersion": f"v{kubelet_version()}", "kubeProxyVersion": "",
                                    "containerRuntimeVersion": containerd_version(),
                                    "operatingSystem": "linux", "architecture": "amd64"}}}


def kubelet_version() -> str:
    r = sh("kubelet", "--version", check=False)
    return r.stdout.strip().removeprefix("Kubernetes v") or version()


def containerd_version() -> str:
    r = sh("containerd", "--version", check=False)
    words = r.stdout.split()
    return f"containerd://{words[2].lstrip('v')}" if len(words) >= 3 else "containerd://unknown"


def create_token(api: Api, ttl_s: float, description: str, token: str | None = None) -> str:
    token = token or pki.new_token()
    tid, tsecret = token.split(".")
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    data = {"token-id": b64(tid), "token-secret": b64(tsecret),
            "usage-bootstrap-authentication": b64("true"), "usage-bootstrap-signing": b64("true"),
            "auth-extra-groups": b64("system:bootstrappers:kubeadm:default-node-token")}
    if description:
        data["description"] = b64(description)
    if ttl_s > 0:
        data["expiration"] = b64(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + ttl_s)))
    code, body = api.request("POST", "/api/v1/namespaces/kube-system/secrets", {
        "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": f"bootstrap-token-{tid}", "namespace": "kube-system"}, "data": data})
    if code != 201:
        raise Fail(f"failed to create bootstrap token: {code} {body}")
    return token


def upload_config(api, cluster: dict, *, force: bool = False) -> None:
    """The upload-config phase: ClusterConfiguration into kube-system/kubeadm-config (server-side
    apply; an upgrade takes the field over with force, as kubeadm does)."""
    say('[upload-config] Storing the configuration used in ConfigMap "kubeadm-config" in the "kube-system" Namespace')
    query = "?fieldManager=kubeadm" + ("&force=true" if force else "")
    code, body = api.request("PATCH", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config" + query,
                             {"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
                              "data": {"ClusterConfiguration": yaml.safe_dump(cluster)}},
                             content_type="application/apply-patch+yaml")
    if code not in (200, 201):
        raise Fail(f"error execution phase upload-config: {code} {body}")


def upload_certs(api: Api, certificate_key: str) -> None:
    if not pki.CERT_KEY_RE.match(certificate_key):
        raise Fail("error execution phase upload-certs: error uploading certs: error decoding certificate "
                   "key: the certificate key must be a hex encoded string of 32 bytes")
    files = {n: (PKI / n).read_bytes() for n in pki.SHARED_CERTS}
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": "kubeadm-certs", "namespace": "kube-system",
                           "annotations": {"kai-standin/expires": str(time.time() + CERT_KEY_TTL_S)}},
              "data": pki.encrypt_certs(files, certificate_key)}
    code, body = api.request("PATCH", "/api/v1/namespaces/kube-system/secrets/kubeadm-certs?fieldManager=kubeadm&force=true",
                             secret, content_type="application/apply-patch+yaml")
    if code not in (200, 201):
        raise Fail(f"error execution phase upload-certs: {code} {body}")
    say('[upload-certs] Storing the certificates in Secret "kubeadm-certs" in the "kube-system" Namespace')


# --- subcommands ----------------------------------------------------------------------------------

def cmd_init(a) -> int:
    kinds = read_config(a.config)
    if "JoinConfiguration" in kinds:
        raise Fail("a JoinConfiguration cannot be used with `kubeadm init`")
    init = kinds.get("InitConfiguration", {})
    cluster = kinds.get("ClusterConfiguration", {})
    v = check_version(cluster)
    say(f"[init] Using Kubernetes version: v{v}")
    nodereg = init.get("nodeRegistration") or {}
    lep = init.get("localAPIEndpoint") or {}
    address, port = lep.get("advertiseAddress") or default_address(), lep.get("bindPort") or 6443
    name = node_name(nodereg)
    endpoint = cluster.get("controlPlaneEndpoint") or f"{address}:{port}"
    ep_host, ep_port = host_port(endpoint, port)
    endpoint = f"{ep_host}:{ep_port}" if ":" not in ep_host else f"[{ep_host}]:{ep_port}"
    preflight(nodereg.get("ignorePreflightErrors") or [], control_plane=True, joining=False)

    say('[certs] Using certificateDir folder "/etc/kubernetes/pki"')
    PKI.mkdir(parents=True, exist_ok=True)
    API_STATE.mkdir(parents=True, exist_ok=True)
    make_shared_certs()
    make_node_certs(name, address, ep_host, cluster)
    server = f"https://{endpoint}"
    write_kubeconfig("admin.conf", server, "kubernetes-admin", ("kubeadm:cluster-admins",))
    write_kubeconfig("super-admin.conf", server, "kubernetes-super-admin", ("system:masters",))
    write_kubeconfig("kubelet.conf", server, f"system:node:{name}", ("system:nodes",))
    write_kubeconfig("controller-manager.conf", server, "system:kube-controller-manager", ())
    write_kubeconfig("scheduler.conf", server, "system:kube-scheduler", ())
    write_etcd_manifest(name, address, f"{name}=https://{address}:{etcd.PEER_PORT}", existing=False)
    write_static_pods(v, address, port, cluster)
    write_kubelet_files(kinds, nodereg, address)
    timeouts = init.get("timeouts") or {}
    start_kubelet(parse_duration(timeouts.get("kubeletHealthCheck", "4m")))
    start_apiserver(name, port, endpoint)
    # The API is checked on this node's own address: the endpoint (a VIP) may come later.
    wait_api(f"https://{address}:{port}", parse_duration(timeouts.get("controlPlaneComponentHealthCheck", "4m")))

    kc = pki.read_kubeconfig((K8S / "super-admin.conf").read_text())
    api = Api(f"https://{address}:{port}", kc["ca"], kc["cert"], kc["key"])
    upload_config(api, cluster)
    if a.upload_certs:
        key = init.get("certificateKey") or pki.new_certificate_key()
        upload_certs(api, key)
        if not a.skip_certificate_key_print:
            say(f"[upload-certs] Using certificate key:\n{key}")
    say(f"[mark-control-plane] Marking the node {name} as control-plane by adding the labels: "
        "[node-role.kubernetes.io/control-plane node.kubernetes.io/exclude-from-external-load-balancers]")
    code, body = api.request("POST", "/api/v1/nodes", node_object(name, address, True, nodereg.get("taints")))
    if code not in (200, 201):
        raise Fail(f"error execution phase mark-control-plane: {code} {body}")
    tokens = [t.get("token") for t in init.get("bootstrapTokens") or []] or [None]
    created = [create_token(api, 24 * 3600, "", t) for t in tokens]
    say("[bootstrap-token] Configured RBAC rules to allow Node Bootstrap tokens to post CSRs in order for nodes to get long term certificate credentials")
    say("[addons] Applied essential addon: CoreDNS")
    say("[addons] Applied essential addon: kube-proxy")
    say("\nYour Kubernetes control-plane has initialized successfully!\n\n"
        "To start using your cluster, you need to run the following as a regular user:\n\n"
        "  mkdir -p $HOME/.kube\n  sudo cp -i /etc/kubernetes/admin.conf $HOME/.kube/config\n"
        "  sudo chown $(id -u):$(id -g) $HOME/.kube/config\n\n"
        "You should now deploy a pod network to the cluster.\n"
        'Run "kubectl apply -f [podnetwork].yaml" with one of the options listed at:\n'
        "  https://kubernetes.io/docs/concepts/cluster-administration/addons/\n")
    token_text = "<value withheld>" if a.skip_token_print else created[0]
    ca_hash = pki.ca_cert_hash(load_ca("ca")[1])
    say("Then you can join any number of worker nodes by running the following on each as root:\n\n"
        f"kubeadm join {endpoint} --token {token_text} \\\n\t--discovery-token-ca-cert-hash {ca_hash}")
    return 0


def discover(bt: dict) -> tuple[bytes, str]:
    """Token discovery like kubeadm's: read cluster-info anonymously, check the JWS signature made
    with the token, then pin the CA by its public-key hash. -> (CA PEM, server URL)."""
    token = bt.get("token") or ""
    m = pki.TOKEN_RE.match(token)
    if not m:
        raise Fail('error execution phase preflight: couldn\'t validate the identity of the API Server: '
                   'the bootstrap token is invalid: it must match "[a-z0-9]{6}.[a-z0-9]{16}"')
    tid, tsecret = m[1], m[2]
    endpoint = bt.get("apiServerEndpoint") or ""
    if not endpoint:
        raise Fail("discovery.bootstrapToken.apiServerEndpoint: Required value")
    say(f"[discovery] Trying to connect to API Server {endpoint!r}")
    api = Api(endpoint, None)
    deadline, last = time.time() + 60, ""
    while time.time() < deadline:
        try:
            code, cm = api.request("GET", "/api/v1/namespaces/kube-public/configmaps/cluster-info")
            if code == 200:
                break
            last = f"{code}"
        except OSError as e:
            last = str(e)
        say(f"[discovery] Failed to request cluster-info, will try again: {last}")
        time.sleep(1)
    else:
        raise Fail(f"error execution phase preflight: couldn't validate the identity of the API Server: "
                   f"failed to request the cluster-info ConfigMap: {last}")
    data = cm.get("data") or {}
    sig = data.get(f"jws-kubeconfig-{tid}")
    if not sig:
        raise Fail(f'error execution phase preflight: couldn\'t validate the identity of the API Server: '
                   f'could not find a JWS signature in the cluster-info ConfigMap for token ID "{tid}"')
    if not pki.jws_verify(tid, tsecret, data["kubeconfig"], sig):
        raise Fail("error execution phase preflight: couldn't validate the identity of the API Server: "
                   "failed to verify JWS signature of received cluster info object, can't trust this API Server")
    kc = yaml.safe_load(data["kubeconfig"])["clusters"][0]["cluster"]
    ca_pem = base64.b64decode(kc["certificate-authority-data"])
    found = pki.ca_cert_hash(pki.load_cert(ca_pem))
    pins = bt.get("caCertHashes") or []
    if not pins and not bt.get("unsafeSkipCAVerification"):
        raise Fail("discovery.bootstrapToken.caCertHashes: Invalid value: using token-based discovery without "
                   "caCertHashes can be unsafe. Set unsafeSkipCAVerification as true in your kubeadm config "
                   "file or pass --discovery-token-unsafe-skip-ca-verification flag to continue")
    if pins and found not in pins:
        raise Fail(f"error execution phase preflight: couldn't validate the identity of the API Server: "
                   f'cluster CA found in cluster-info ConfigMap is invalid: none of the public keys "{found}" are pinned')
    say(f"[discovery] Cluster info signature and contents are valid and TLS certificate validates against "
        f"pinned roots, will use API Server {endpoint!r}")
    return ca_pem, kc["server"]


def cmd_join(a) -> int:
    kinds = read_config(a.config)
    join = kinds.get("JoinConfiguration")
    if join is None or "InitConfiguration" in kinds:
        raise Fail(f"{a.config}: `kubeadm join --config` needs a JoinConfiguration (and no InitConfiguration)")
    disc = join.get("discovery") or {}
    if not disc.get("bootstrapToken"):
        raise Fail("discovery: the stand-in supports only discovery.bootstrapToken")
    nodereg = join.get("nodeRegistration") or {}
    cp = join.get("controlPlane")
    name = node_name(nodereg)
    preflight(nodereg.get("ignorePreflightErrors") or [], control_plane=cp is not None, joining=True)
    bt = disc["bootstrapToken"]
    ca_pem, server = discover(bt)
    token = disc.get("tlsBootstrapToken") or bt["token"]
    boot = Api(bt["apiServerEndpoint"], ca_pem, bearer=token)
    address = ((cp or {}).get("localAPIEndpoint") or {}).get("advertiseAddress") or default_address()
    for a_ in nodereg.get("kubeletExtraArgs") or []:
        if a_["name"] == "node-ip":
            address = a_["value"]
    PKI.mkdir(parents=True, exist_ok=True)
    if cp is not None:
        say("[preflight] Running pre-flight checks before initializing the new control plane instance")
        code, secret = boot.request("GET", "/api/v1/namespaces/kube-system/secrets/kubeadm-certs")
        if code != 200:
            raise Fail('error execution phase control-plane-prepare/download-certs: error downloading certs: '
                       'error downloading the secret: Secret "kubeadm-certs" was not found in the "kube-system" '
                       'Namespace. This Secret might have expired. Please, run `kubeadm init phase upload-certs '
                       '--upload-certs` on a control plane to generate a new one')
        key = cp.get("certificateKey") or ""
        if not pki.CERT_KEY_RE.match(key):
            raise Fail("error execution phase control-plane-prepare/download-certs: error downloading certs: "
                       "error decoding certificate key: encoding/hex: invalid byte")
        try:
            files = pki.decrypt_certs(secret["data"], key)
        except Exception as e:  # cryptography's InvalidTag: the wrong key
            raise Fail("error execution phase control-plane-prepare/download-certs: error downloading certs: "
                       "failed to decrypt: cipher: message authentication failed") from e
        say("[download-certs] Downloading the certificates in Secret \"kubeadm-certs\" in the \"kube-system\" Namespace")
        for n, data in files.items():
            pki.write_private(PKI / n, data, 0o600 if n.endswith(".key") else 0o644)
        API_STATE.mkdir(parents=True, exist_ok=True)
        lep = cp.get("localAPIEndpoint") or {}
        port = lep.get("bindPort") or 6443
        ep_host, _ = host_port(server.removeprefix("https://"), 6443)
        make_node_certs(name, address, ep_host, {})
        write_kubeconfig("admin.conf", server, "kubernetes-admin", ("kubeadm:cluster-admins",))
        write_kubeconfig("controller-manager.conf", server, "system:kube-controller-manager", ())
        write_kubeconfig("scheduler.conf", server, "system:kube-scheduler", ())
        write_static_pods(version(), address, port, {})
    else:
        pki.write_private(PKI / "ca.crt", ca_pem, 0o644)
    # TLS bootstrap: a kubelet client certificate signed through a CSR authenticated by the token.
    say("[kubelet-start] Writing kubelet configuration to file \"/var/lib/kubelet/config.yaml\"")
    key = pki.new_key()
    from cryptography.hazmat.primitives import serialization
    csr = pki.new_csr(key, f"system:node:{name}", ("system:nodes",))
    code, obj = boot.request("POST", "/apis/certificates.k8s.io/v1/certificatesigningrequests", {
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"generateName": "csr-"},
        "spec": {"signerName": "kubernetes.io/kube-apiserver-client-kubelet", "usages": ["client auth"],
                 "request": base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode()}})
    if code != 201:
        raise Fail(f"error execution phase kubelet-start: TLS bootstrap failed: {code} {obj}")
    cert_pem = base64.b64decode(obj["status"]["certificate"])
    pki.write_private(K8S / "kubelet.conf", pki.kubeconfig(server, ca_pem, f"system:node:{name}", cert_pem,
                                                           pki.key_pem(key)).encode())
    write_kubelet_files({}, nodereg, address)
    start_kubelet(parse_duration((join.get("timeouts") or {}).get("kubeletHealthCheck", "4m")))
    if cp is not None:
        cp_timeout = parse_duration((join.get("timeouts") or {}).get("controlPlaneComponentHealthCheck", "4m"))
        join_etcd(name, address, cp_timeout)
        start_apiserver(name, port, server.removeprefix("https://"))
        wait_api(f"https://{address}:{port}", cp_timeout)
        api = admin_api()
    else:
        api = Api(server, ca_pem, cert_pem, pki.key_pem(key))
    code, body = api.request("POST", "/api/v1/nodes", node_object(name, address, cp is not None, nodereg.get("taints")))
    if code not in (200, 201):
        raise Fail(f"error execution phase kubelet-start: registering node {name}: {code} {body}")
    if cp is not None:
        say("\nThis node has joined the cluster and a new control plane instance was created:\n\n"
            "* Certificate signing request was sent to apiserver and approval was received.\n"
            "* The Kubelet was informed of the new secure connection details.\n"
            "* Control plane label and taint were applied to the new node.\n"
            "* The Kubernetes control plane instances scaled up.\n"
            "* A new etcd member was added to the local/stacked etcd cluster.\n")
    else:
        say("\nThis node has joined the cluster:\n"
            "* Certificate signing request was sent to apiserver and a response was received.\n"
            "* The Kubelet was informed of the new secure connection details.\n\n"
            "Run 'kubectl get nodes' on the control-plane to see this node join the cluster.\n")
    return 0


def cmd_token_create(a) -> int:
    if not (K8S / "admin.conf").exists():
        raise Fail(f"failed to load admin kubeconfig: open {K8S / 'admin.conf'}: no such file or directory")
    print(create_token(admin_api(), parse_duration(a.ttl), a.description))
    return 0


def cmd_certificate_key(a) -> int:
    print(pki.new_certificate_key())
    return 0


def cmd_upload_certs(a) -> int:
    if not a.upload_certs:
        raise Fail("the upload-certs phase needs --upload-certs")
    if a.config:  # like the real one: InitConfiguration.certificateKey, unless the flag overrides it
        init_cfg = read_config(a.config).get("InitConfiguration", {})
        a.certificate_key = a.certificate_key or init_cfg.get("certificateKey")
    if not a.certificate_key:
        raise Fail("upload-certs: no certificate key (--certificate-key or certificateKey in --config)")
    if not (K8S / "admin.conf").exists():
        raise Fail(f"failed to load admin kubeconfig: open {K8S / 'admin.conf'}: no such file or directory")
    say("[upload-certs] Storing the certificates in Secret \"kubeadm-certs\" in the \"kube-system\" Namespace")
    upload_certs(admin_api(), a.certificate_key)
    if not a.skip_certificate_key_print:
        say(f"[upload-certs] Using certificate key:\n{a.certificate_key}")
    return 0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def remove_etcd_member() -> None:
    """reset's remove-etcd-member phase: a control plane's member leaves the etcd cluster (a
    failure is a warning, as in kubeadm: the node may be the one that is broken)."""
    if not (MANIFESTS / "etcd.yaml").exists():
        return
    try:
        peer_url = etcd.manifest_flag((MANIFESTS / "etcd.yaml").read_text(), "initial-advertise-peer-urls")
        say(f"[reset] Removing the etcd member of this node: {etcd.member_remove_self(peer_url or '')}")
    except (etcd.EtcdError, OSError, subprocess.TimeoutExpired, ValueError) as e:
        say(f"[reset] Failed to remove etcd member: {e}. Please manually remove this etcd member using etcdctl")


RESET_PHASES = ("preflight", "remove-etcd-member", "cleanup-node")   # `kubeadm reset phase --help`


def _reset_phases(value: str) -> tuple[str, ...]:
    phases = tuple(p for p in value.split(",") if p)
    unknown = [p for p in phases if p not in RESET_PHASES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown reset phase(s) {unknown}: kubeadm reset has {list(RESET_PHASES)}")
    return phases


def cmd_reset(a) -> int:
    if not a.force:
        raise Fail("reset needs -f here (no interactive confirmation in the stand-in)")
    say("[reset] Reading configuration from the cluster...")
    # Like kubeadm, reset leaves the Node object alone: removing a node ends with
    # `kubectl delete node` (after this reset stopped the kubelet, which would register it again).
    if "remove-etcd-member" not in a.skip_phases:
        remove_etcd_member()
    if "cleanup-node" in a.skip_phases:
        raise Fail("the stand-in does not model reset without cleanup-node")
    say("[reset] Stopping the kubelet service")
    sh("systemctl", "stop", "kubelet", check=False)
    if etcd.UNIT.exists():  # the etcd "container": kubeadm reset removes the node's containers
        sh("systemctl", "stop", etcd.UNIT.name, check=False)
        etcd.UNIT.unlink()
        sh("systemctl", "daemon-reload", check=False)
    if API_UNIT.exists():
        sh("systemctl", "disable", "--now", API_UNIT.name, check=False)
        API_UNIT.unlink()
        sh("systemctl", "daemon-reload", check=False)
    say("[reset] Deleting contents of directories: [/etc/kubernetes/manifests /var/lib/kubelet /etc/kubernetes/pki]")
    for d in (MANIFESTS, KUBELET_DIR, PKI):
        if d.exists():
            for p in d.iterdir():
                _remove(p)
    for p in (ETCD_DIR, API_STATE):
        _remove(p)
    for f in ("admin.conf", "super-admin.conf", "kubelet.conf", "bootstrap-kubelet.conf",
              "controller-manager.conf", "scheduler.conf"):
        _remove(K8S / f)
    if a.cleanup_tmp_dir:
        _remove(K8S / "tmp")
    say("\nThe reset process does not clean CNI configuration. To do so, you must remove /etc/cni/net.d\n\n"
        "The reset process does not reset or clean up iptables rules or IPVS tables.\n"
        "The reset process does not clean your kubeconfig files and you must remove them manually.")
    return 0


# --- upgrade: plan, apply, node -------------------------------------------------------------------

UPGRADED_COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
MAX_MINOR_UPGRADE_SKEW = 1     # kubeadm's MaximumAllowedMinorVersionUpgradeSkew
MAX_MINOR_DOWNGRADE_SKEW = 1   # MaximumAllowedMinorVersionDowngradeSkew
MAX_MINOR_KUBELET_SKEW = 1     # MaximumAllowedMinorVersionKubeletSkew (what `upgrade apply` checks)


def go_bool(text: str) -> bool:
    """A Go bool flag's value: --certificate-renewal=false."""
    v = {"1": True, "t": True, "true": True, "T": True, "TRUE": True, "True": True,
         "0": False, "f": False, "false": False, "F": False, "FALSE": False, "False": False}.get(text)
    if v is None:
        raise argparse.ArgumentTypeError(f'invalid argument "{text}": strconv.ParseBool: parsing "{text}": invalid syntax')
    return v


def read_upgrade_config(path: str | None) -> dict:
    """The UpgradeConfiguration of --config (other kinds are ignored with a warning, like kubeadm)."""
    if not path:
        return {}
    kinds = read_config(path)
    for kind, doc in kinds.items():
        if kind != "UpgradeConfiguration":
            say(f"[config] WARNING: Ignored configuration document with GroupVersionKind "
                f"{doc['apiVersion']}, Kind={kind}")
    cfg = kinds.get("UpgradeConfiguration") or {}
    for sub in ("apply", "node", "plan"):
        if (cfg.get(sub) or {}).get("dryRun"):
            raise Fail(f"{path}: {sub}.dryRun: the stand-in does not implement dry runs")
    return cfg


def upgrade_api(kubeconfig: str | None) -> Api:
    path = Path(kubeconfig or K8S / "admin.conf")
    if not kubeconfig and not path.exists() and (K8S / "kubelet.conf").exists():
        path = K8S / "kubelet.conf"  # `upgrade node` on a worker: the kubelet's credentials
    try:
        kc = pki.read_kubeconfig(path.read_text())
    except OSError as e:
        raise Fail(f"couldn't create a Kubernetes client from file {str(path)!r}: failed to load "
                   f"admin kubeconfig: open {path}: no such file or directory") from e
    return Api(kc["server"], kc["ca"], kc["cert"], kc["key"])


def cluster_configuration(api: Api) -> dict:
    say('[upgrade/config] Reading configuration from the "kubeadm-config" ConfigMap in namespace "kube-system"...')
    code, cm = api.request("GET", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
    if code != 200:
        raise Fail(f'[upgrade/config] FATAL: failed to get config map: {code} '
                   f'{cm.get("message") if isinstance(cm, dict) else cm}')
    return yaml.safe_load((cm.get("data") or {}).get("ClusterConfiguration") or "") or {}


def cluster_version(api: Api) -> str:
    code, body = api.request("GET", "/version")
    if code != 200:
        raise Fail(f"[upgrade/versions] FATAL: Unable to fetch cluster version: {code} {body}")
    return body["gitVersion"].removeprefix("v")


def cluster_nodes(api: Api) -> list[dict]:
    code, body = api.request("GET", "/api/v1/nodes")
    if code != 200:
        raise Fail(f"[upgrade/versions] FATAL: Unable to fetch kubelet versions: {code} {body}")
    return body["items"]


def kubelet_versions(api: Api) -> dict[str, str]:
    return {n["metadata"]["name"]: ((n.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "")
            .removeprefix("v") for n in cluster_nodes(api)}


def version_policy(target: str, cluster: str, kubeadm_v: str, kubelets: dict[str, str]) -> tuple[list, list]:
    """kubeadm's EnforceVersionPolicies (cmd/kubeadm/app/phases/upgrade/policy.go) for released
    versions -> (mandatory errors, errors --force may skip)."""
    new, cur, own = parse_version(target), parse_version(cluster), parse_version(kubeadm_v)
    mandatory, skippable = [], []
    if new[1] > cur[1] + MAX_MINOR_UPGRADE_SKEW:
        mandatory.append(f'Specified version to upgrade to "v{target}" is too high; kubeadm can upgrade only '
                         f'{MAX_MINOR_UPGRADE_SKEW} minor version at a time')
    if new[1] < cur[1] - MAX_MINOR_DOWNGRADE_SKEW:
        mandatory.append(f'Specified version to downgrade to "v{target}" is too low; kubeadm can downgrade only '
                         f'{MAX_MINOR_DOWNGRADE_SKEW} minor version at a time')
    if own < new:
        if new[1] > own[1]:
            mandatory.append(f'Specified version to upgrade to "v{target}" is at least one minor release higher '
                             f'than the kubeadm minor release ({new[1]} > {own[1]}). Such an upgrade is not supported')
        else:
            skippable.append(f'Specified version to upgrade to "v{target}" is higher than the kubeadm version '
                             f'"v{kubeadm_v}". Upgrade kubeadm first using the tool you used to install kubeadm')
    if own[0] > new[0] or own[1] > new[1]:
        skippable.append(f"Kubeadm version v{kubeadm_v} can only be used to upgrade to Kubernetes version "
                         f"{own[0]}.{own[1]}")
    too_old = sorted({f"v{v}" for v in kubelets.values() if v and new[1] > parse_version(v)[1] + MAX_MINOR_KUBELET_SKEW})
    if too_old:
        skippable.append(f"There are kubelets in this cluster that are too old that have these versions "
                         f"[{' '.join(too_old)}]")
    return mandatory, skippable


def enforce_version_policy(api: Api, target: str, force: bool) -> str:
    cluster = cluster_version(api)
    say(f"[upgrade/versions] Cluster version: v{cluster}")
    say(f"[upgrade/versions] kubeadm version: v{version()}")
    mandatory, skippable = version_policy(target, cluster, version(), kubelet_versions(api))
    listed = lambda errs: "".join(f"\t- {e}\n" for e in errs)  # noqa: E731
    if mandatory:
        raise Fail("[upgrade/version] FATAL: the --version argument is invalid due to these fatal errors:\n\n"
                   f"{listed(mandatory)}\nPlease fix the misalignments highlighted above and try upgrading again")
    if skippable and not force:
        raise Fail("[upgrade/version] FATAL: the --version argument is invalid due to these errors:\n\n"
                   f"{listed(skippable)}\nCan be bypassed if you pass the --force flag")
    if skippable:
        say(f"[upgrade/version] Found {len(skippable)} potential version compatibility errors but skipping "
            f"since the --force flag is set: \n\n{listed(skippable)}")
    return cluster


def upgrade_preflight(ignore: list[str]) -> None:
    say("[preflight] Running pre-flight checks.")
    ignored = {i.lower() for i in ignore}
    if os.geteuid() != 0 and not ({"isprivilegeduser", "all"} & ignored):
        raise Fail("[preflight] Some fatal errors occurred:\n\t[ERROR IsPrivilegedUser]: user is not running as root")


def local_api_url() -> str:
    """This control plane's own API server, from its manifest (the endpoint may be a VIP)."""
    pod = yaml.safe_load((MANIFESTS / "kube-apiserver.yaml").read_text())
    args = dict(a.split("=", 1) for a in pod["spec"]["containers"][0]["command"][1:] if "=" in a)
    return f"https://{args['--advertise-address']}:{args.get('--secure-port', '6443')}"


def upgrade_static_pods(target: str, timeout_s: float) -> None:
    """Rewrite the control-plane manifests to the target version (backups under /etc/kubernetes/tmp);
    the kubelet restarts the API server from its manifest. Waits until this node's API server
    answers with the new version; on timeout the old manifests are put back, like kubeadm's rollback."""
    backup = K8S / "tmp" / f"kubeadm-backup-manifests-{time.strftime('%Y-%m-%d-%H-%M-%S')}"
    old: dict[Path, str] = {}
    for comp in UPGRADED_COMPONENTS:
        manifest = MANIFESTS / f"{comp}.yaml"
        text = manifest.read_text()
        pod = yaml.safe_load(text)
        image = pod["spec"]["containers"][0]["image"]
        new_image = f"{image.rsplit(':', 1)[0]}:v{target}"
        if new_image == image:
            say(f"[upgrade/staticpods] Current and new manifests of {comp} are equal, skipping upgrade")
            continue
        backup.mkdir(parents=True, exist_ok=True)
        (backup / manifest.name).write_text(text)
        pod["spec"]["containers"][0]["image"] = new_image
        old[manifest] = text
        manifest.write_text(yaml.safe_dump(pod, sort_keys=False))
        say(f'[upgrade/staticpods] Moved new manifest to "{manifest}" and backed up old manifest to '
            f'"{backup / manifest.name}"')
    if MANIFESTS / "kube-apiserver.yaml" not in old:
        return
    say("[upgrade/staticpods] Waiting for the kubelet to restart the component")
    say(f"[upgrade/staticpods] This can take up to {int(timeout_s // 60)}m{int(timeout_s % 60)}s")
    api = Api(local_api_url(), (PKI / "ca.crt").read_bytes(), timeout=3)
    deadline, seen = time.time() + timeout_s, ""
    while time.time() < deadline:
        try:
            code, body = api.request("GET", "/version")
            seen = body.get("gitVersion", "") if code == 200 and isinstance(body, dict) else f"{code}"
            if seen == f"v{target}":
                say('[upgrade/staticpods] Component "kube-apiserver" upgraded successfully!')
                return
        except OSError as e:
            seen = str(e)
        time.sleep(0.5)
    for manifest, text in old.items():
        manifest.write_text(text)
    raise Fail("[upgrade/apply] FATAL: couldn't upgrade control plane. kubeadm has tried to recover everything "
               "into the earlier state. Errors faced: failed to obtain static Pod hash for component "
               f"kube-apiserver: timed out waiting for the condition (the API server answers {seen!r})")


def upgrade_timeout(cfg: dict) -> float:
    return parse_duration((cfg.get("timeouts") or {}).get("upgradeManifests") or "5m")


def cmd_upgrade_plan(a) -> int:
    cfg = read_upgrade_config(a.config)
    plan = cfg.get("plan") or {}
    upgrade_preflight(a.ignore_preflight_errors or plan.get("ignorePreflightErrors") or [])
    api = upgrade_api(a.kubeconfig)
    cluster_configuration(api)
    say("[upgrade] Running cluster health checks")
    say("[upgrade] Fetching available versions to upgrade to")
    cluster, own = cluster_version(api), version()
    target = (a.version or plan.get("kubernetesVersion") or f"v{own}").removeprefix("v")
    parse_version(target)
    say(f"[upgrade/versions] Cluster version: v{cluster}")
    say(f"[upgrade/versions] kubeadm version: v{own}")
    say(f"[upgrade/versions] Target version: v{target}")
    say(f"[upgrade/versions] Latest version in the v{'.'.join(cluster.split('.')[:2])} series: v{cluster}\n")
    if target == cluster:
        say("Awesome, you're up-to-date! Enjoy!")
        return 0
    kubelets = kubelet_versions(api)
    rows = [("kubelet", n, f"v{v}", f"v{target}") for n, v in sorted(kubelets.items())]
    say("Components that must be upgraded manually after you have upgraded the control plane with "
        "'kubeadm upgrade apply':")
    say(table(("COMPONENT", "NODE", "CURRENT", "TARGET"), rows))
    say(f"\nUpgrade to the latest version in the v{'.'.join(target.split('.')[:2])} series:\n")
    cps = sorted(n["metadata"]["name"] for n in cluster_nodes(api)
                 if "node-role.kubernetes.io/control-plane" in (n["metadata"].get("labels") or {}))
    rows = [(c, n, f"v{cluster}", f"v{target}") for c in UPGRADED_COMPONENTS for n in cps]
    rows.append(("kube-proxy", "", f"v{cluster}", f"v{target}"))
    say(table(("COMPONENT", "NODE", "CURRENT", "TARGET"), rows))
    say(f"\nYou can now apply the upgrade by executing the following command:\n\n\tkubeadm upgrade apply v{target}\n")
    return 0


def table(header: tuple, rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("   ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])


def cmd_upgrade_apply(a) -> int:
    cfg = read_upgrade_config(a.config)
    apply = cfg.get("apply") or {}
    target = a.version or apply.get("kubernetesVersion")
    if not target:
        raise Fail("missing one or more required arguments. Required arguments: [version]")
    target = target.removeprefix("v")
    parse_version(target)
    force = bool(a.force or apply.get("forceUpgrade"))
    upgrade_preflight(a.ignore_preflight_errors or apply.get("ignorePreflightErrors") or [])
    if not (MANIFESTS / "kube-apiserver.yaml").exists():
        raise Fail("[upgrade/apply] FATAL: this is not a control plane node: "
                   f"{MANIFESTS / 'kube-apiserver.yaml'} does not exist")
    api = upgrade_api(a.kubeconfig)
    cluster_cfg = cluster_configuration(api)
    say("[upgrade] Running cluster health checks")
    enforce_version_policy(api, target, force)
    if not (a.yes or force):
        print("[upgrade] Are you sure you want to proceed? [y/N]: ", end="", flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            raise Fail("won't proceed; the user didn't answer (Y|y) in order to continue")
    say(f'[upgrade/version] You have chosen to change the cluster version to "v{target}"')
    upgrade_static_pods(target, upgrade_timeout(cfg))
    cluster_cfg["kubernetesVersion"] = f"v{target}"
    upload_config(api, cluster_cfg, force=True)
    say('[kubelet-start] Writing kubelet configuration to file "/var/lib/kubelet/config.yaml"')
    say("[addons] Applied essential addon: CoreDNS")
    say("[addons] Applied essential addon: kube-proxy")
    say(f'\n[upgrade] SUCCESS! A control plane node of your cluster was upgraded to "v{target}".\n\n'
        "[upgrade] Now please proceed with upgrading the rest of the nodes by following the right order.")
    return 0


def cmd_upgrade_node(a) -> int:
    cfg = read_upgrade_config(a.config)
    node_cfg = cfg.get("node") or {}
    upgrade_preflight(a.ignore_preflight_errors or node_cfg.get("ignorePreflightErrors") or [])
    api = upgrade_api(a.kubeconfig)
    target = (cluster_configuration(api).get("kubernetesVersion") or "").removeprefix("v")
    if not target:
        raise Fail("[upgrade] FATAL: the kubeadm-config ConfigMap has no kubernetesVersion")
    # What `upgrade apply`'s policy calls unsupported: this kubeadm cannot write a newer minor.
    if parse_version(target)[:2] > parse_version(version())[:2]:
        raise Fail(f'[upgrade] FATAL: the cluster version "v{target}" is at least one minor release higher than '
                   f"the kubeadm version \"v{version()}\": upgrade kubeadm first using the tool you used to install kubeadm")
    if (MANIFESTS / "kube-apiserver.yaml").exists():
        say("[upgrade] Upgrading your Static Pod-hosted control plane instance to version "
            f'"v{target}"...')
        upgrade_static_pods(target, upgrade_timeout(cfg))
    else:
        say("[upgrade] Skipping phase. Not a control plane node.")
    say('[upgrade] Backing up kubelet config file to "/etc/kubernetes/tmp/kubeadm-kubelet-config.yaml"')
    say('[kubelet-start] Writing kubelet configuration to file "/var/lib/kubelet/config.yaml"')
    say("[upgrade] The configuration for this node was successfully upgraded!\n"
        "[upgrade] Now you should go ahead and upgrade the kubelet package using your package manager.")
    return 0


def cmd_certs_check_expiration(a) -> int:
    if a.output not in certs.OUTPUT_FORMATS:
        raise Fail(f'unable to match a printer suitable for the output format "{a.output}", allowed '
                   f'formats are: {",".join(certs.OUTPUT_FORMATS)} (the stand-in\'s)')
    sys.stdout.write(certs.check_expiration(a.output, Path(a.cert_dir)))
    return 0


def cmd_certs_renew_all(a) -> int:
    if not (Path(a.cert_dir) / "ca.crt").exists():
        raise Fail(f"couldn't load the certificate authority: open {Path(a.cert_dir) / 'ca.crt'}: "
                   "no such file or directory")
    certs.renew_all(say, Path(a.cert_dir))
    return 0


def cmd_version(a) -> int:
    if a.output != "short":
        raise Fail(f'invalid output format: {a.output} (the stand-in supports "-o short")')
    print(f"v{version()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubeadm", allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", allow_abbrev=False)
    init.add_argument("--config", required=True)
    init.add_argument("--upload-certs", action="store_true")
    init.add_argument("--skip-token-print", action="store_true")
    init.add_argument("--skip-certificate-key-print", action="store_true")
    init.set_defaults(fn=cmd_init)
    join = sub.add_parser("join", allow_abbrev=False)
    join.add_argument("--config", required=True)
    join.set_defaults(fn=cmd_join)
    token = sub.add_parser("token", allow_abbrev=False).add_subparsers(dest="token_cmd", required=True)
    create = token.add_parser("create", allow_abbrev=False)
    create.add_argument("--ttl", required=True)
    create.add_argument("--description", required=True)
    create.set_defaults(fn=cmd_token_create)
    certs_cmd = sub.add_parser("certs", allow_abbrev=False).add_subparsers(dest="certs_cmd", required=True)
    certs_cmd.add_parser("certificate-key", allow_abbrev=False).set_defaults(fn=cmd_certificate_key)
    # -o: kubeadm's long name is --output in some releases' docs, --experimental-output in others
    check = certs_cmd.add_parser("check-expiration", allow_abbrev=False)
    check.add_argument("-o", "--output", "--experimental-output", dest="output", default="text")
    check.add_argument("--cert-dir", default=str(PKI))
    check.set_defaults(fn=cmd_certs_check_expiration)
    renew = certs_cmd.add_parser("renew", allow_abbrev=False).add_subparsers(dest="renew_cmd", required=True)
    renew_all = renew.add_parser("all", allow_abbrev=False)  # single certificates: not implemented
    renew_all.add_argument("--cert-dir", default=str(PKI))
    renew_all.set_defaults(fn=cmd_certs_renew_all)
    reset = sub.add_parser("reset", allow_abbrev=False)
    reset.add_argument("-f", "--force", action="store_true")
    reset.add_argument("--cleanup-tmp-dir", action="store_true")
    reset.add_argument("--skip-phases", type=_reset_phases, default=())
    reset.set_defaults(fn=cmd_reset)
    ver = sub.add_parser("version", allow_abbrev=False)
    ver.add_argument("-o", "--output", required=True)
    ver.set_defaults(fn=cmd_version)
    upgrade = sub.add_parser("upgrade", allow_abbrev=False).add_subparsers(dest="upgrade_cmd", required=True)
    plan = upgrade.add_parser("plan", allow_abbrev=False)
    plan.add_argument("version", nargs="?")
    apply = upgrade.add_parser("apply", allow_abbrev=False)
    apply.add_argument("version", nargs="?")
    apply.add_argument("-y", "--yes", action="store_true")
    apply.add_argument("-f", "--force", action="store_true")
    node = upgrade.add_parser("node", allow_abbrev=False)
    for sp in (plan, apply, node):
        sp.add_argument("--config")
        sp.add_argument("--kubeconfig")
        sp.add_argument("--ignore-preflight-errors", type=lambda v: v.split(","))
    for sp in (apply, node):  # accepted, no-ops: the stand-in renews no certificates, keeps etcd
        for flag in GO_BOOL_FLAGS:
            sp.add_argument(flag, type=go_bool)
    plan.set_defaults(fn=cmd_upgrade_plan)
    apply.set_defaults(fn=cmd_upgrade_apply)
    node.set_defaults(fn=cmd_upgrade_node)
    return p


def upload_certs_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubeadm init phase upload-certs", allow_abbrev=False)
    p.add_argument("--upload-certs", action="store_true")
    p.add_argument("--certificate-key")
    p.add_argument("--config")
    p.add_argument("--skip-certificate-key-print", action="store_true")
    p.set_defaults(fn=cmd_upload_certs)
    return p


GO_BOOL_FLAGS = ("--certificate-renewal", "--etcd-upgrade")


def go_bool_flags(argv: list[str]) -> list[str]:
    """Go bool flags take no separate value: bare `--etcd-upgrade` is `--etcd-upgrade=true`, and only
    `--etcd-upgrade=false` turns it off (a following word stays a positional argument)."""
    return [f"{a}=true" if a in GO_BOOL_FLAGS else a for a in argv]


def main(argv: list[str]) -> int:
    if argv[:1] == ["upgrade"]:
        argv = go_bool_flags(argv)
    if argv[:2] == ["init", "phase"]:
        if argv[2:3] != ["upload-certs"]:
            raise Fail(f"unknown phase {argv[2:3]} (the stand-in implements: init phase upload-certs)")
        args = upload_certs_parser().parse_args(argv[3:])
    else:
        args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(run_main("kubeadm", main))
