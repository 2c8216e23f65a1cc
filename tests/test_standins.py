"""The strict stand-ins, tested locally: config validation, tokens, CA hash, the API stand-in on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import re
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

STANDINS = Path(__file__).parent / "hosts" / "standins"
sys.path.insert(0, str(STANDINS))

import standin_apiserver  # noqa: E402
import standin_common  # noqa: E402
import standin_config  # noqa: E402
import standin_pki as pki  # noqa: E402

from tests.support.ports import free_port  # noqa: E402

VALID = """\
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint: {advertiseAddress: 10.250.0.2, bindPort: 6443}
nodeRegistration:
  name: cp-1
  criSocket: unix:///run/containerd/containerd.sock
  taints: []
  kubeletExtraArgs:
  - {name: node-ip, value: 10.250.0.2}
timeouts: {controlPlaneComponentHealthCheck: 4m0s}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.36.4
controlPlaneEndpoint: 10.250.0.2:6443
networking: {podSubnet: 10.244.0.0/16, serviceSubnet: 10.96.0.0/12, dnsDomain: cluster.local}
apiServer:
  certSANs: [10.250.0.2]
  extraArgs: [{name: audit-log-maxage, value: "7"}]
etcd: {local: {dataDir: /var/lib/etcd}}
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
failCgroupV1: false
---
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
"""


def test_valid_v1beta4_config_is_accepted():
    kinds = standin_config.load_config(VALID)
    assert set(kinds) == {"InitConfiguration", "ClusterConfiguration", "KubeletConfiguration",
                          "KubeProxyConfiguration"}
    assert kinds["InitConfiguration"]["nodeRegistration"]["name"] == "cp-1"


@pytest.mark.parametrize("change, field", [
    (("nodeRegistration:\n", "nodeRegistration:\n  colour: blue\n"), "nodeRegistration.colour"),
    (("networking:", "networkin:"), "networkin"),
    (("kind: InitConfiguration\n", "kind: InitConfiguration\ntimeoutForControlPlane: 4m\n"),
     "timeoutForControlPlane"),
    (("  extraArgs: [{name: audit-log-maxage, value: \"7\"}]", "  extraArgs: {audit-log-maxage: \"7\"}"),
     "apiServer.extraArgs"),
    (("  kubeletExtraArgs:\n  - {name: node-ip, value: 10.250.0.2}", "  kubeletExtraArgs: {node-ip: x}"),
     "nodeRegistration.kubeletExtraArgs"),
    (("cgroupDriver: systemd", "cgroupDrivr: systemd"), "cgroupDrivr"),
    (("timeouts: {controlPlaneComponentHealthCheck: 4m0s}", "timeouts: {controlPlaneComponentHealthCheck: soon}"),
     "timeouts.controlPlaneComponentHealthCheck"),
])
def test_bad_config_names_the_field(change, field):
    old, new = change
    assert old in VALID
    with pytest.raises(standin_config.ConfigError) as e:
        standin_config.load_config(VALID.replace(old, new))
    assert field in str(e.value)


def test_v1beta3_is_rejected():
    with pytest.raises(standin_config.ConfigError, match="v1beta3.*no longer"):
        standin_config.load_config(VALID.replace("kubeadm.k8s.io/v1beta4", "kubeadm.k8s.io/v1beta3"))


def test_unknown_kind_is_rejected():
    with pytest.raises(standin_config.ConfigError, match='no kind "InitConfig"'):
        standin_config.load_config(VALID.replace("kind: InitConfiguration", "kind: InitConfig"))


def test_token_format_and_masking():
    tokens = {pki.new_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(pki.TOKEN_RE.match(t) for t in tokens)
    t, key = pki.new_token(), pki.new_certificate_key()
    assert pki.CERT_KEY_RE.match(key)
    masked = standin_common.mask_argv(["init", "phase", "upload-certs", "--certificate-key", key,
                                       f"--token={t}", f"x{t}y"])
    assert key not in json.dumps(masked) and t not in json.dumps(masked)
    assert masked[:4] == ["init", "phase", "upload-certs", "--certificate-key"]


def test_ca_hash_agrees_with_openssl(tmp_path):
    _, ca = pki.new_ca()
    (tmp_path / "ca.crt").write_bytes(pki.cert_pem(ca))
    # The pipeline from the kubeadm docs (join: "--discovery-token-ca-cert-hash").
    out = subprocess.run(
        "openssl x509 -pubkey -in ca.crt | openssl rsa -pubin -outform der 2>/dev/null"
        " | openssl dgst -sha256 -hex | sed 's/^.* //'",
        shell=True, cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    assert len(out) == 64
    assert pki.ca_cert_hash(ca) == f"sha256:{out}"


def test_jws_detached_signature_depends_on_the_secret():
    sig = pki.jws_detached("abcdef", "0123456789abcdef", "payload")
    assert sig.count(".") == 2 and sig.split(".")[1] == ""
    assert pki.jws_verify("abcdef", "0123456789abcdef", "payload", sig)
    assert not pki.jws_verify("abcdef", "0123456789abcdeX", "payload", sig)


def test_certs_encryption_needs_the_certificate_key():
    files = {n: f"data-{n}".encode() for n in pki.SHARED_CERTS}
    key = pki.new_certificate_key()
    enc = pki.encrypt_certs(files, key)
    assert pki.decrypt_certs(enc, key) == files
    from cryptography.exceptions import InvalidTag
    with pytest.raises(InvalidTag):
        pki.decrypt_certs(enc, pki.new_certificate_key())


# --- the API stand-in on 127.0.0.1 -------------------------------------------------------------

@pytest.fixture(scope="module")
def api(tmp_path_factory):
    d = tmp_path_factory.mktemp("api")
    ca_key, ca = pki.new_ca()
    _, srv = None, None
    srv_key, srv = pki.issue(ca_key, ca, "kube-apiserver", sans=["127.0.0.1", "kubernetes"], server=True)
    adm_key, adm = pki.issue(ca_key, ca, "kubernetes-admin", orgs=("kubeadm:cluster-admins",), client=True)
    files = {"ca.crt": pki.cert_pem(ca), "ca.key": pki.key_pem(ca_key), "srv.crt": pki.cert_pem(srv),
             "srv.key": pki.key_pem(srv_key), "adm.crt": pki.cert_pem(adm), "adm.key": pki.key_pem(adm_key)}
    for n, b in files.items():
        (d / n).write_bytes(b)
    port = free_port()
    args = standin_apiserver.parse_args([
        "--bind", "127.0.0.1", "--port", str(port), "--cert", str(d / "srv.crt"), "--key", str(d / "srv.key"),
        "--ca", str(d / "ca.crt"), "--ca-key", str(d / "ca.key"), "--state-dir", str(d / "state"),
        "--endpoint", f"127.0.0.1:{port}", "--node-grace", "5"])
    server = standin_apiserver.serve(args)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
    ctx.load_cert_chain(d / "adm.crt", d / "adm.key")
    admin = httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ctx, timeout=5)
    yield {"url": f"https://127.0.0.1:{port}", "dir": d, "admin": admin, "ca": ca, "ca_key": ca_key,
           "server": server}
    admin.close()
    server.shutdown()
    server.server_close()


def _node_client(api, name):
    key, cert = pki.issue(api["ca_key"], api["ca"], f"system:node:{name}", orgs=("system:nodes",), client=True)
    d = api["dir"]
    (d / f"{name}.crt").write_bytes(pki.cert_pem(cert))
    (d / f"{name}.key").write_bytes(pki.key_pem(key))
    ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
    ctx.load_cert_chain(d / f"{name}.crt", d / f"{name}.key")
    return httpx.Client(base_url=api["url"], verify=ctx, timeout=5)


def test_without_client_cert_is_unauthorized(api):
    anon = httpx.Client(base_url=api["url"], verify=ssl.create_default_context(cafile=str(api["dir"] / "ca.crt")), timeout=5)
    r = anon.get("/api/v1/nodes")
    assert r.status_code == 401
    assert anon.get("/readyz").text == "ok"  # public, like the real one


def test_foreign_client_cert_fails_tls(api, tmp_path):
    other_key, other_ca = pki.new_ca("someone-else")
    k, c = pki.issue(other_key, other_ca, "kubernetes-admin", orgs=("system:masters",), client=True)
    (tmp_path / "c.crt").write_bytes(pki.cert_pem(c))
    (tmp_path / "c.key").write_bytes(pki.key_pem(k))
    ctx = ssl.create_default_context(cafile=str(api["dir"] / "ca.crt"))
    ctx.load_cert_chain(tmp_path / "c.crt", tmp_path / "c.key")
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(api["url"] + "/api/v1/nodes", verify=ctx, timeout=5)


def test_nodes_become_ready_after_cni_and_heartbeat_and_apply_creates_pods(api):
    admin = api["admin"]
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "cp-1", "labels": {
        "node-role.kubernetes.io/control-plane": ""}},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                   "nodeInfo": {"kubeletVersion": "v1.36.4"}}}
    kubelet = _node_client(api, "cp-1")
    assert kubelet.post("/api/v1/nodes", json=node).status_code == 201
    assert kubelet.patch("/api/v1/nodes/cp-1/status", json={}).status_code == 200
    assert kubelet.patch("/api/v1/nodes/other/status", json={}).status_code == 403
    items = admin.get("/api/v1/nodes").json()["items"]
    assert [n["metadata"]["name"] for n in items] == ["cp-1"]
    assert items[0]["metadata"]["creationTimestamp"].endswith("Z")  # server-set, like the real one
    ready = items[0]["status"]["conditions"][0]
    assert ready["type"] == "Ready" and ready["status"] == "False"  # no CNI yet

    ds = """\
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: kube-flannel-ds, namespace: kube-flannel}
spec:
  selector: {matchLabels: {app: flannel}}
  template:
    metadata: {labels: {app: flannel}}
    spec: {hostNetwork: true, containers: [{name: kube-flannel, image: flannel}]}
"""
    path = "/apis/apps/v1/namespaces/kube-flannel/daemonsets/kube-flannel-ds"
    hdr = {"Content-Type": "application/apply-patch+yaml"}
    r = admin.patch(path, params={"fieldManager": "kubectl", "force": "true"}, content=ds, headers=hdr)
    assert r.status_code == 404 and "kube-flannel" in r.text  # namespace first, like the real API
    ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: kube-flannel}\n"
    assert admin.patch("/api/v1/namespaces/kube-flannel", params={"fieldManager": "kubectl"},
                       content=ns, headers=hdr).status_code == 201
    r = admin.patch(path, params={"fieldManager": "kubectl", "force": "true"}, content=ds, headers=hdr)
    assert r.status_code == 201, r.text
    assert admin.patch(path, content=ds, headers=hdr).status_code == 422  # fieldManager required

    pods = admin.get("/api/v1/namespaces/kube-flannel/pods").json()["items"]
    assert len(pods) == 1 and pods[0]["spec"]["nodeName"] == "cp-1"
    deadline = time.time() + 10
    while time.time() < deadline:
        kubelet.patch("/api/v1/nodes/cp-1/status", json={})
        nodes = admin.get("/api/v1/nodes").json()["items"]
        pods = admin.get("/api/v1/pods").json()["items"]
        if nodes[0]["status"]["conditions"][0]["status"] == "True" and \
                all(p["status"]["conditions"][0]["status"] == "True" for p in pods if p["spec"]["nodeName"]):
            break
        time.sleep(0.5)
    assert nodes[0]["status"]["conditions"][0]["status"] == "True"
    names = {p["metadata"]["name"] for p in pods}
    assert {"etcd-cp-1", "kube-apiserver-cp-1", "kube-scheduler-cp-1"} <= names
    ds_status = admin.get(path).json()["status"]
    assert ds_status["numberReady"] == ds_status["desiredNumberScheduled"] == 1

    # A stopped kubelet: after the grace period the node goes NotReady.
    time.sleep(5.5)
    node = admin.get("/api/v1/nodes/cp-1").json()
    assert node["status"]["conditions"][0]["status"] == "Unknown"


def test_state_survives_a_restart(api):
    state = json.loads((api["dir"] / "state" / "state.json").read_text())
    assert "api/v1/nodes/cp-1" in state["objects"]
    assert any("/daemonsets/kube-flannel-ds" in k for k in state["objects"])


def test_bootstrap_token_discovery_and_csr(api):
    admin = api["admin"]
    token = pki.new_token()
    tid, tsecret = token.split(".")
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    exp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
              "metadata": {"name": f"bootstrap-token-{tid}", "namespace": "kube-system"},
              "data": {"token-id": b64(tid), "token-secret": b64(tsecret), "expiration": b64(exp),
                       "usage-bootstrap-authentication": b64("true"), "usage-bootstrap-signing": b64("true")}}
    assert admin.post("/api/v1/namespaces/kube-system/secrets", json=secret).status_code == 201
    anon = httpx.Client(base_url=api["url"], verify=False, timeout=5)
    info = anon.get("/api/v1/namespaces/kube-public/configmaps/cluster-info").json()["data"]
    assert pki.jws_verify(tid, tsecret, info["kubeconfig"], info[f"jws-kubeconfig-{tid}"])
    csr_key = pki.new_key()
    csr = pki.new_csr(csr_key, "system:node:w-1", ("system:nodes",))
    from cryptography.hazmat.primitives import serialization
    body = {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"generateName": "csr-"},
            "spec": {"signerName": "kubernetes.io/kube-apiserver-client-kubelet", "usages": ["client auth"],
                     "request": base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode()}}
    path = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
    assert anon.post(path, json=body, headers={"Authorization": f"Bearer {tid}.{'x' * 16}"}).status_code == 401
    r = anon.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    cert = pki.load_cert(base64.b64decode(r.json()["status"]["certificate"]))
    assert pki.cert_subject(cert) == ("system:node:w-1", ["system:nodes"])


# --- on booted hosts (marker `hosts`): packages from the mirror, init / apply / join / reset ------

from tests.hosts.mirror import MIRROR_PORT, build_mirror, mirror_service, mirror_versions  # noqa: E402

MINOR = "1.36"


@pytest.fixture(scope="module")
def cluster_hosts(booted_hosts):
    hosts = booted_hosts
    t0 = time.monotonic()
    root = build_mirror()
    if "mirror" not in hosts._service_procs:  # another module may have started it
        hosts.start_service(mirror_service(root))
    url = f"http://{hosts.bridge.gateway}:{MIRROR_PORT}"
    v = mirror_versions(root)
    targets = list(hosts)[:2]
    for h in targets:
        if h.exec("test -e /etc/kubernetes/admin.conf", check=False).returncode == 0:
            hosts.reset([h])  # a previous module left a cluster behind
        # The hosts' apt goes through the gateway's Debian-only proxy; the mirror is reached directly.
        h.put_file("/etc/apt/apt.conf.d/02kai-mirror-direct",
                   f'Acquire::http::Proxy::{hosts.bridge.gateway} "DIRECT";\n')
        # What kai's containerd.sh / kube-packages.sh / os-prep.sh do, reduced to the essentials.
        h.exec(f"""set -e
            cd /tmp
            curl -fsS -o ctd.tgz {url}/containerd/v{v['containerd']}/containerd-{v['containerd']}-linux-amd64.tar.gz
            tar -C /usr/local -xzf ctd.tgz
            curl -fsS -o /usr/local/sbin/runc {url}/runc/v{v['runc']}/runc.amd64 && chmod 755 /usr/local/sbin/runc
            printf '[Unit]\\nAfter=network.target\\n[Service]\\nExecStart=/usr/local/bin/containerd\\nRestart=always\\n[Install]\\nWantedBy=multi-user.target\\n' \
                > /etc/systemd/system/containerd.service
            systemctl daemon-reload && systemctl enable --now containerd
            sysctl -qw net.ipv4.ip_forward=1
            mkdir -p /etc/apt/keyrings
            curl -fsS {url}/pkgs.k8s.io/core:/stable:/v{MINOR}/deb/Release.key | gpg --batch --yes --dearmor -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg
            echo 'deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] {url}/pkgs.k8s.io/core:/stable:/v{MINOR}/deb/ /' > /etc/apt/sources.list.d/kubernetes.list
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubeadm kubelet kubectl >/dev/null
            systemctl enable kubelet
        """, timeout=300)
    print(f"\nprepared {len(targets)} host(s) in {time.monotonic() - t0:.1f}s")
    return hosts, targets, url


def _host_journal(h) -> list[dict]:
    return [json.loads(line) for line in h.exec("cat /var/log/kai-standins.jsonl").stdout.splitlines()]


def _admin_client(h, d: Path) -> httpx.Client:
    kc = pki.read_kubeconfig(h.exec("cat /etc/kubernetes/admin.conf").stdout)
    (d / "ca.crt").write_bytes(kc["ca"])
    (d / "c.crt").write_bytes(kc["cert"])
    (d / "c.key").write_bytes(kc["key"])
    ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
    ctx.load_cert_chain(d / "c.crt", d / "c.key")
    return httpx.Client(base_url=kc["server"], verify=ctx, timeout=10)


def _host_config(h) -> str:
    return f"""\
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint: {{advertiseAddress: {h.address}, bindPort: 6443}}
nodeRegistration:
  name: {h.name}
  criSocket: unix:///run/containerd/containerd.sock
  taints: []
  kubeletExtraArgs: [{{name: node-ip, value: {h.address}}}]
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.36.4
controlPlaneEndpoint: {h.address}:6443
networking: {{podSubnet: 10.244.0.0/16, serviceSubnet: 10.96.0.0/12}}
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
failCgroupV1: false
"""


@pytest.mark.hosts
def test_hosts_init_apply_join_reset(cluster_hosts, tmp_path):
    hosts, targets, url = cluster_hosts
    cp = targets[0]
    assert cp.exec("kubelet --version").stdout.strip() == "Kubernetes v1.36.4"
    assert cp.exec("kubeadm version -o short").stdout.strip() == "v1.36.4"
    assert cp.exec("systemctl is-active kubelet", check=False).stdout.strip() != "active"  # not started by apt

    cp.put_file("/root/kubeadm.yaml", _host_config(cp).replace("failCgroupV1: false", "failCgroupV1: false\ncolour: blue"))
    r = cp.exec("kubeadm init --config /root/kubeadm.yaml --skip-token-print", check=False)
    assert r.returncode != 0 and 'unknown field "colour"' in r.stderr

    cp.put_file("/root/kubeadm.yaml", _host_config(cp))
    t0 = time.monotonic()
    r = cp.exec("kubeadm init --config /root/kubeadm.yaml --skip-token-print --skip-certificate-key-print",
                check=False, timeout=300)
    init_s = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr + cp.journal("kai-standin-apiserver")
    assert "Your Kubernetes control-plane has initialized successfully!" in r.stdout
    assert not re.search(r"[a-z0-9]{6}\.[a-z0-9]{16}", r.stdout + r.stderr)
    print(f"kubeadm init: {init_s:.1f}s")

    admin = _admin_client(cp, tmp_path)
    nodes = admin.get("/api/v1/nodes").json()["items"]
    assert [n["metadata"]["name"] for n in nodes] == [cp.name]
    assert "node-role.kubernetes.io/control-plane" in nodes[0]["metadata"]["labels"]
    assert nodes[0]["status"]["conditions"][0]["status"] != "True"  # no CNI yet
    anon = httpx.get(f"https://{cp.address}:6443/api/v1/nodes", verify=False, timeout=10)
    assert anon.status_code == 401

    r = cp.exec("kubeadm init --config /root/kubeadm.yaml --skip-token-print", check=False)
    assert r.returncode != 0 and "DirAvailable--etc-kubernetes-manifests" in r.stderr

    flannel = f"{url}/manifests/flannel/v0.27.4/kube-flannel.yml"
    cp.exec(f"curl -fsS -o /root/flannel.yml {flannel}")
    r = cp.exec("kubectl --kubeconfig /etc/kubernetes/admin.conf apply --server-side --force-conflicts "
                "-f /root/flannel.yml", check=False)
    assert r.returncode == 0, r.stderr
    assert "daemonset.apps/kube-flannel-ds serverside-applied" in r.stdout.replace("daemonset/", "daemonset.apps/")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        node = admin.get(f"/api/v1/nodes/{cp.name}").json()
        if node["status"]["conditions"][0]["status"] == "True":
            break
        time.sleep(1)
    assert node["status"]["conditions"][0]["status"] == "True", node
    print(f"node Ready {time.monotonic() - t0:.1f}s after the CNI apply")

    token = cp.exec("kubeadm token create --ttl 1h --description kai-test").stdout.strip()
    assert pki.TOKEN_RE.match(token)
    ca_hash = pki.ca_cert_hash(pki.load_cert(cp.exec("cat /etc/kubernetes/pki/ca.crt").stdout.encode()))

    if len(targets) > 1:
        w = targets[1]
        join = f"""\
apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
nodeRegistration: {{name: {w.name}, criSocket: unix:///run/containerd/containerd.sock,
  kubeletExtraArgs: [{{name: node-ip, value: {w.address}}}]}}
discovery:
  bootstrapToken: {{token: "{token}", apiServerEndpoint: "{cp.address}:6443", caCertHashes: ["{{hash}}"]}}
"""
        w.put_file("/root/join.yaml", join.replace("{hash}", "sha256:" + "0" * 64), 0o600)
        r = w.exec("kubeadm join --config /root/join.yaml", check=False, timeout=120)
        assert r.returncode != 0 and "none of the public keys" in r.stderr
        w.put_file("/root/join.yaml", join.replace("{hash}", ca_hash), 0o600)
        t0 = time.monotonic()
        r = w.exec("kubeadm join --config /root/join.yaml", check=False, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        print(f"kubeadm join: {time.monotonic() - t0:.1f}s")
        names = {n["metadata"]["name"] for n in admin.get("/api/v1/nodes").json()["items"]}
        assert names == {cp.name, w.name}
        assert token not in w.exec("cat /var/log/kai-standins.jsonl").stdout

    entries = _host_journal(cp)
    inits = [e for e in entries if e["argv"][:2] == ["kubeadm", "init"]]
    assert [e["exit_code"] for e in inits] == [1, 0, 1]
    assert any(e["argv"][:2] == ["kubectl", "--kubeconfig"] and e["exit_code"] == 0 for e in entries)

    r = cp.exec("kubeadm reset -f --cleanup-tmp-dir", check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    assert cp.exec("ls /etc/kubernetes/manifests").stdout.strip() == ""
    assert cp.exec("systemctl is-active kubelet", check=False).stdout.strip() != "active"
