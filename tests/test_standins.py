"""The strict stand-ins, tested locally: config validation, tokens, CA hash, the API stand-in on 127.0.0.1."""

from __future__ import annotations

import base64
import io
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
import yaml

STANDINS = Path(__file__).parent / "hosts" / "standins"
sys.path.insert(0, str(STANDINS))

import standin_apiserver  # noqa: E402
import standin_common  # noqa: E402
import standin_config  # noqa: E402
import standin_pki as pki  # noqa: E402

from tests.support.etcd import etcd_members, etcdctl  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.test_flows_e2e import journal  # noqa: E402  (the stand-ins' journal on a host)

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
    _assert_refused_naming(change, field)


def test_v1beta3_is_rejected():
    with pytest.raises(standin_config.ConfigError, match="v1beta3.*no longer"):
        standin_config.load_config(VALID.replace("kubeadm.k8s.io/v1beta4", "kubeadm.k8s.io/v1beta3"))


def test_unknown_kind_is_rejected():
    with pytest.raises(standin_config.ConfigError, match='no kind "InitConfig"'):
        standin_config.load_config(VALID.replace("kind: InitConfiguration", "kind: InitConfig"))


@pytest.mark.parametrize("change, field", [
    # deep inside KubeletConfiguration: authentication.webhook is a KubeletWebhookAuthentication
    (("cgroupDriver: systemd", "cgroupDriver: systemd\nauthentication: {webhook: {enabled: true, cacheTTL: 2m, ttl: 1m}}"),
     'unknown field "authentication.webhook.ttl"'),
    (("cgroupDriver: systemd", "cgroupDriver: systemd\nlogging: {options: {json: {splitStream: true, colour: 1}}}"),
     'unknown field "logging.options.json.colour"'),
    (("cgroupDriver: systemd", "cgroupDriver: systemd\nmaxPods: lots"), "maxPods"),
    (("cgroupDriver: systemd", "cgroupDriver: systemd\nevictionHard: [memory.available]"), "evictionHard"),
    (("cgroupDriver: systemd", "cgroupDriver: systemd\nFailSwapOn: false"), 'unknown field "FailSwapOn"'),
    (("mode: nftables", "mode: nftables\nconntrack: {maxPerCore: 0, tcpTimeout: 1s}"),
     'unknown field "conntrack.tcpTimeout"'),
    (("mode: nftables", "mode: nftables\nclientConnection: {qps: fast}"), "clientConnection.qps"),
    (("  taints: []", "  taints: [{key: a, effect: NoSchedule, operator: Exists}]"),
     'unknown field "nodeRegistration.taints[0].operator"'),
    (("etcd: {local: {dataDir: /var/lib/etcd}}",
      "etcd: {local: {dataDir: /var/lib/etcd, extraEnvs: [{name: A, valueFrom: {secretKeyRef: {name: s, key: k, path: p}}}]}}"),
     'unknown field "etcd.local.extraEnvs[0].valueFrom.secretKeyRef.path"'),
])
def test_nested_unknown_or_mistyped_field_is_named(change, field):
    _assert_refused_naming(change, field)


def _assert_refused_naming(change, field):
    """VALID with `change` applied is refused, the error naming `field`."""
    old, new = change
    assert old in VALID
    with pytest.raises(standin_config.ConfigError) as e:
        standin_config.load_config(VALID.replace(old, new))
    assert field in str(e.value)


def test_nested_known_fields_are_accepted():
    text = VALID.replace("cgroupDriver: systemd", """cgroupDriver: systemd
authentication: {webhook: {enabled: true, cacheTTL: 2m0s}, x509: {clientCAFile: /etc/kubernetes/pki/ca.crt}}
evictionHard: {memory.available: 100Mi}
reservedMemory: [{numaNode: 0, limits: {memory: 1Gi}}]
logging: {format: json, verbosity: 2, vmodule: [{filePattern: "kubelet*", verbosity: 4}]}
registerWithTaints: [{key: a, value: b, effect: NoSchedule}]""").replace("mode: nftables", """mode: nftables
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 24h0m0s}
clientConnection: {qps: 5.5, burst: 10}""")
    kinds = standin_config.load_config(text)
    assert kinds["KubeletConfiguration"]["reservedMemory"][0]["limits"] == {"memory": "1Gi"}


UPGRADE_CONFIG = """\
apiVersion: kubeadm.k8s.io/v1beta4
kind: UpgradeConfiguration
apply: {kubernetesVersion: v1.37.1, forceUpgrade: true, certificateRenewal: false, SkipPhases: []}
node: {certificateRenewal: false, etcdUpgrade: true}
plan: {kubernetesVersion: v1.37.1}
diff: {contextLines: 3}
timeouts: {upgradeManifests: 5m0s}
"""


def test_upgrade_configuration_sub_structs_are_checked():
    assert standin_config.load_config(UPGRADE_CONFIG)["UpgradeConfiguration"]["apply"]["forceUpgrade"] is True
    # SkipPhases has no json tag in UpgradeApplyConfiguration: the strict decoder wants the Go name
    with pytest.raises(standin_config.ConfigError, match='unknown field "apply.skipPhases"'):
        standin_config.load_config(UPGRADE_CONFIG.replace("SkipPhases", "skipPhases"))
    with pytest.raises(standin_config.ConfigError, match='unknown field "node.kubernetesVersion"'):
        standin_config.load_config(UPGRADE_CONFIG.replace("node: {", "node: {kubernetesVersion: v1.37.1, "))


def _kai_rendered_configs():
    from installers import kubeadm as kai_kubeadm
    from installers.spec import load_spec
    from tests.spec_factory import aio, ha

    out = []
    spec = load_spec(aio(kubelet={"fail_cgroup_v1": False, "max_pods": 200}))
    out.append(("aio init", kai_kubeadm.render_init(spec, spec.nodes[0], all_in_one=True)))
    spec = load_spec(ha())
    out.append(("ha init", kai_kubeadm.render_init(spec, spec.nodes[0], all_in_one=False)))
    out += [(f"ha join {n.name}", kai_kubeadm.render_join(spec, n)) for n in spec.nodes[1:]]
    return out


def test_kais_rendered_configs_pass_the_generated_schemas():
    rendered = _kai_rendered_configs()
    assert len(rendered) >= 5
    for what, text in rendered:
        kinds = standin_config.load_config(text)   # raises, naming the field, on any mismatch
        assert kinds, what


def test_generated_schemas_come_from_the_go_types():
    """The checked-in table is what gen_schemas.py makes of the committed Go declarations."""
    import gen_schemas
    missing = [s.local for s in gen_schemas.SOURCES if not (gen_schemas.TYPES / s.local).exists()]
    assert not missing, f"the Go files behind the table are committed (types/SOURCES.md): {missing}"
    assert gen_schemas.render() == (STANDINS / "standin_schemas.py").read_text()


def test_go_struct_parser_follows_encoding_json():
    import gen_schemas
    go = """package p

import (
\tmetav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type Inner struct {
\tA string `json:"a,omitempty"`
\tHidden string `json:"-"`
}

type Outer struct {
\tmetav1.TypeMeta `json:",inline"`
\tInner `json:",inline"`
\tPtr *Inner `json:"ptr,omitempty"`
\tList []Inner `json:"list"`
\tM map[string][]string `json:"m"`
\tD *metav1.Duration `json:"d"`
\tMode Mode `json:"mode"`
\tNoTag []string
}

type Mode string
"""
    meta = gen_schemas.parse_go("package v1\ntype TypeMeta struct {\n\tKind string `json:\"kind,omitempty\"`\n"
                                "\tAPIVersion string `json:\"apiVersion,omitempty\"`\n}\n",
                                "k8s.io/apimachinery/pkg/apis/meta/v1")
    gen = gen_schemas.Generator({"x/p": gen_schemas.parse_go(go, "x/p"), meta.path: meta})
    gen.struct("x/p.Outer")
    assert gen.structs["x/p.Outer"] == {
        "kind": "str", "apiVersion": "str", "a": "str", "ptr": ["ref", "x/p.Inner"],
        "list": ["list", ["ref", "x/p.Inner"]], "m": ["map", ["list", "str"]], "d": "duration",
        "mode": "str", "NoTag": ["list", "str"]}
    assert gen.structs["x/p.Inner"] == {"a": "str"}


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


# --- day 2 against the API stand-in on 127.0.0.1: kubectl cordon/drain/delete, kubeadm upgrade ----

import kubeadm as kubeadm_standin  # noqa: E402
import kubectl as kubectl_standin  # noqa: E402
from tests.hosts import version_skew  # noqa: E402

DAY2_NODES = ("n-1", "n-2")


@pytest.fixture(scope="module")
def day2(tmp_path_factory):
    """An API stand-in of its own: nodes n-1 and n-2 Ready (CNI applied, kubelets heartbeating with
    a version), an admin kubeconfig file, and a control-plane manifest for kubeadm upgrade."""
    d = tmp_path_factory.mktemp("day2")
    ca_key, ca = pki.new_ca()
    srv_key, srv = pki.issue(ca_key, ca, "kube-apiserver", sans=["127.0.0.1"], server=True)
    adm_key, adm = pki.issue(ca_key, ca, "kubernetes-admin", orgs=("kubeadm:cluster-admins",), client=True)
    (d / "pki").mkdir()
    for n, b in {"pki/ca.crt": pki.cert_pem(ca), "ca.crt": pki.cert_pem(ca), "pki/ca.key": pki.key_pem(ca_key),
                 "srv.crt": pki.cert_pem(srv),
                 "srv.key": pki.key_pem(srv_key)}.items():
        (d / n).write_bytes(b)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    (d / "admin.conf").write_text(pki.kubeconfig(url, pki.cert_pem(ca), "kubernetes-admin", pki.cert_pem(adm),
                                                 pki.key_pem(adm_key)))
    (d / "manifests").mkdir()
    for comp in kubeadm_standin.UPGRADED_COMPONENTS:
        cmd = [comp] + (["--advertise-address=127.0.0.1", f"--secure-port={port}"] if comp == "kube-apiserver" else [])
        (d / "manifests" / f"{comp}.yaml").write_text(
            kubeadm_standin.static_pod(comp, f"registry.k8s.io/{comp}:v1.36.4", cmd))
    args = standin_apiserver.parse_args([
        "--bind", "127.0.0.1", "--port", str(port), "--cert", str(d / "srv.crt"), "--key", str(d / "srv.key"),
        "--ca", str(d / "pki/ca.crt"), "--ca-key", str(d / "pki/ca.key"), "--state-dir", str(d / "state"),
        "--endpoint", f"127.0.0.1:{port}", "--node-grace", "5",
        "--manifest", str(d / "manifests" / "kube-apiserver.yaml")])
    server = standin_apiserver.serve(args)
    cluster = server.RequestHandlerClass.cluster
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ctx = ssl.create_default_context(cafile=str(d / "pki/ca.crt"))
    ctx.load_cert_chain(*_write_pair(d, "adm", adm_key, adm))
    admin = httpx.Client(base_url=url, verify=ctx, timeout=5)
    hdr = {"Content-Type": "application/apply-patch+yaml"}
    stop = threading.Event()
    kubelets = {n: _node_client({"ca_key": ca_key, "ca": ca, "dir": d, "url": url}, n) for n in DAY2_NODES}
    kubelet_version = {n: "v1.36.4" for n in DAY2_NODES}
    for n, k in kubelets.items():
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}},
                "status": {"nodeInfo": {"kubeletVersion": "v1.36.4"}}}
        assert k.post("/api/v1/nodes", json=node).status_code == 201

    def heartbeats():
        while not stop.is_set():
            for n, k in kubelets.items():
                if n in kubelet_version:
                    k.patch(f"/api/v1/nodes/{n}/status", json={"status": {"nodeInfo": {"kubeletVersion": kubelet_version[n]}}})
            stop.wait(0.5)

    threading.Thread(target=heartbeats, daemon=True).start()
    admin.patch("/api/v1/namespaces/kube-flannel", params={"fieldManager": "t"}, headers=hdr,
                content="apiVersion: v1\nkind: Namespace\nmetadata: {name: kube-flannel}\n")
    admin.patch("/apis/apps/v1/namespaces/kube-flannel/daemonsets/kube-flannel-ds", params={"fieldManager": "t"},
                headers=hdr, content="apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: kube-flannel-ds, "
                "namespace: kube-flannel}\nspec: {template: {metadata: {labels: {app: flannel}}, spec: {hostNetwork: true}}}\n")
    _wait(lambda: all(n["status"]["conditions"][0]["status"] == "True" for n in admin.get("/api/v1/nodes").json()["items"]))
    def apply(text: str) -> None:  # server-side apply, as kubectl apply --server-side does
        path = "/" + standin_apiserver.resource_path(yaml.safe_load(text))
        r = admin.patch(path, params={"fieldManager": "t", "force": "true"}, headers=hdr, content=text)
        assert r.status_code in (200, 201), r.text

    yield {"dir": d, "url": url, "admin": admin, "kubelet_version": kubelet_version, "cluster": cluster,
           "apply": apply}
    stop.set()
    admin.close()
    server.shutdown()
    server.server_close()


def _write_pair(d: Path, name: str, key, cert) -> tuple[Path, Path]:
    (d / f"{name}.crt").write_bytes(pki.cert_pem(cert))
    (d / f"{name}.key").write_bytes(pki.key_pem(key))
    return d / f"{name}.crt", d / f"{name}.key"


def _wait(cond, timeout: float = 15, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _run_standin(main, argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a stand-in's main, as its process would end (run_main's
    `error:` line for a Fail)."""
    capsys.readouterr()
    try:
        rc = main(argv)
    except standin_common.Fail as e:
        print(f"error: {e}", file=sys.stderr)
        rc = 1
    except SystemExit as e:
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def _kubectl(day2, capsys, *argv) -> tuple[int, str, str]:
    return _run_standin(kubectl_standin.main, ["--kubeconfig", str(day2["dir"] / "admin.conf"), *argv],
                        capsys)


def _pods(day2, **labels) -> list[dict]:
    items = day2["admin"].get("/api/v1/pods").json()["items"]
    return [p for p in items if all(p["metadata"]["labels"].get(k) == v for k, v in labels.items())]


def _deployment(name: str, replicas: int, emptydir: bool = False) -> str:
    volumes = ", volumes: [{name: scratch, emptyDir: {}}]" if emptydir else ""
    return (f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: default}}\n"
            f"spec: {{replicas: {replicas}, selector: {{matchLabels: {{app: {name}}}}}, template: "
            f"{{metadata: {{labels: {{app: {name}}}}}, spec: {{containers: [{{name: c, image: x}}]{volumes}}}}}}}\n")


def _pdb(name: str, app: str, min_available) -> str:
    return (f"apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: {name}, namespace: default}}\n"
            f"spec: {{minAvailable: {min_available}, selector: {{matchLabels: {{app: {app}}}}}}}\n")


def test_kubectl_cordon_and_uncordon(day2, capsys):
    assert _kubectl(day2, capsys, "cordon", "n-2")[:2] == (0, "node/n-2 cordoned\n")
    assert day2["admin"].get("/api/v1/nodes/n-2").json()["spec"]["unschedulable"] is True
    assert _kubectl(day2, capsys, "cordon", "n-2")[:2] == (0, "node/n-2 already cordoned\n")
    rc, out, _ = _kubectl(day2, capsys, "get", "nodes")
    assert rc == 0 and re.search(r"n-2\s+Ready,SchedulingDisabled\s+<none>\s+\d+s\s+v1.36.4", out), out
    assert _kubectl(day2, capsys, "uncordon", "n-2")[:2] == (0, "node/n-2 uncordoned\n")
    assert not day2["admin"].get("/api/v1/nodes/n-2").json()["spec"].get("unschedulable")
    rc, _, err = _kubectl(day2, capsys, "cordon", "nope")
    assert rc == 1 and 'nodes "nope" not found' in err


def test_kubectl_refuses_unknown_flags(day2, capsys):
    for argv in (("drain", "n-1", "--delete-local-data"), ("drain", "n-1", "--timeout", "soon"),
                 ("cordon", "n-1", "--force"), ("delete", "node", "n-1", "--now")):
        rc, _, err = _kubectl(day2, capsys, *argv)
        assert rc == 2, (argv, err)


def test_drain_refuses_daemonset_and_bare_pods_without_the_flags(day2, capsys):
    day2["apply"]("apiVersion: v1\nkind: Pod\nmetadata: {name: bare, namespace: default}\n"
                  "spec: {nodeName: n-1, containers: [{name: c, image: x}]}\n")
    rc, out, err = _kubectl(day2, capsys, "drain", "n-1")
    assert rc == 1 and out == "node/n-1 cordoned\n"
    assert re.search(r"cannot delete DaemonSet-managed Pods \(use --ignore-daemonsets to ignore\): "
                     r"kube-system/kube-proxy-\w+, kube-flannel/kube-flannel-ds-\w+", err), err
    assert "cannot delete Pods that declare no controller (use --force to override): default/bare" in err
    assert 'error: unable to drain node "n-1" due to error: [' in err
    assert any(p["metadata"]["name"] == "bare" for p in _pods(day2))  # nothing was evicted
    assert _kubectl(day2, capsys, "uncordon", "n-1")[0] == 0
    assert day2["admin"].delete("/api/v1/namespaces/default/pods/bare").status_code == 200


def test_drain_blocked_by_a_pdb_names_the_pod(day2, capsys):
    day2["apply"](_deployment("solo", 1))
    day2["apply"](_pdb("solo-pdb", "solo", 1))
    _wait(lambda: all(p["status"]["conditions"][0]["status"] == "True" for p in _pods(day2, app="solo")))
    (pod,) = _pods(day2, app="solo")
    node, name = pod["spec"]["nodeName"], pod["metadata"]["name"]
    t0 = time.monotonic()
    rc, out, err = _kubectl(day2, capsys, "drain", node, "--ignore-daemonsets", "--timeout=2s")
    assert rc == 1, out + err
    assert f"evicting pod default/{name}" in out
    assert (f'error when evicting pods/"{name}" -n "default" (will retry after 5s): Cannot evict pod as it would '
            "violate the pod's disruption budget.") in err
    assert f'error: unable to drain node "{node}" due to error: error when evicting pods/"{name}" -n "default": ' \
           "global timeout reached: 2s, continuing command..." in err
    assert 4.5 < time.monotonic() - t0 < 10  # one refused eviction, the 5 s retry wait, then the timeout
    assert [p["metadata"]["name"] for p in _pods(day2, app="solo")] == [name]  # still there
    pdb = day2["admin"].get("/apis/policy/v1/namespaces/default/poddisruptionbudgets/solo-pdb").json()["status"]
    assert pdb == {"expectedPods": 1, "currentHealthy": 1, "desiredHealthy": 1, "disruptionsAllowed": 0}
    assert _kubectl(day2, capsys, "uncordon", node)[0] == 0
    for path in ("/apis/apps/v1/namespaces/default/deployments/solo",
                 "/apis/policy/v1/namespaces/default/poddisruptionbudgets/solo-pdb"):
        assert day2["admin"].delete(path).status_code == 200


def test_drain_evicts_through_the_pdb_one_pod_at_a_time(day2, capsys):
    day2["apply"](_deployment("web", 2, emptydir=True))
    day2["apply"](_pdb("web-pdb", "web", 1))
    _wait(lambda: len(_pods(day2, app="web")) == 2 and
          all(p["status"]["conditions"][0]["status"] == "True" for p in _pods(day2, app="web")))
    on_n1 = [p["metadata"]["name"] for p in _pods(day2, app="web") if p["spec"]["nodeName"] == "n-1"]
    # the replicas spread over both nodes; move the other one to n-1 first so that draining n-1
    # needs two evictions, the second one waiting for the first replacement to be Ready
    if len(on_n1) < 2:
        assert _kubectl(day2, capsys, "drain", "n-2", "--ignore-daemonsets", "--delete-emptydir-data",
                        "--timeout=30s")[0] == 0
        assert _kubectl(day2, capsys, "uncordon", "n-2")[0] == 0
        _wait(lambda: all(p["status"]["conditions"][0]["status"] == "True" for p in _pods(day2, app="web")))
    before = {p["metadata"]["name"] for p in _pods(day2, app="web")}
    assert {p["spec"]["nodeName"] for p in _pods(day2, app="web")} == {"n-1"}
    rc, out, err = _kubectl(day2, capsys, "drain", "n-1", "--ignore-daemonsets", "--delete-emptydir-data",
                            "--grace-period=10", "--timeout=30s")
    assert rc == 0, out + err
    assert out.startswith("node/n-1 cordoned\n") and out.endswith("node/n-1 drained\n")
    assert re.search(r"Warning: ignoring DaemonSet-managed Pods: kube-system/kube-proxy-\w+, "
                     r"kube-flannel/kube-flannel-ds-\w+", err), err
    assert "deleting Pods with local storage: default/web-" in err
    for name in before:
        assert f"evicting pod default/{name}\n" in out and f"pod/{name} evicted\n" in out
    assert err.count("would violate the pod's disruption budget") >= 1  # the second waited for the first
    after = _pods(day2, app="web")
    assert {p["spec"]["nodeName"] for p in after} == {"n-2"} and not before & {p["metadata"]["name"] for p in after}
    assert _kubectl(day2, capsys, "uncordon", "n-1")[0] == 0


def test_node_version_follows_the_kubelet_and_delete_node(day2, capsys):
    day2["kubelet_version"]["n-2"] = "v1.37.1"  # the kubelet restarted from the new package
    _wait(lambda: "v1.37.1" in _kubectl(day2, capsys, "get", "nodes")[1], what="n-2 at v1.37.1")
    rc, out, _ = _kubectl(day2, capsys, "get", "nodes", "-o", "json")
    versions = {n["metadata"]["name"]: n["status"]["nodeInfo"]["kubeletVersion"] for n in json.loads(out)["items"]}
    assert versions == {"n-1": "v1.36.4", "n-2": "v1.37.1"}
    del day2["kubelet_version"]["n-2"]  # its kubelet stopped (kubeadm reset), then the node is deleted
    assert _kubectl(day2, capsys, "delete", "node", "n-2")[:2] == (0, 'node "n-2" deleted\n')
    rc, _, err = _kubectl(day2, capsys, "delete", "node", "n-2")
    assert rc == 1 and 'nodes "n-2" not found' in err
    assert _kubectl(day2, capsys, "delete", "node/n-2", "--ignore-not-found")[:2] == (0, "")
    assert [n["metadata"]["name"] for n in day2["admin"].get("/api/v1/nodes").json()["items"]] == ["n-1"]


def _kubeadm(day2, capsys, monkeypatch, *argv, stdin: str = "") -> tuple[int, str, str]:
    d = day2["dir"]
    monkeypatch.setattr(kubeadm_standin, "K8S", d)
    monkeypatch.setattr(kubeadm_standin, "PKI", d / "pki")
    monkeypatch.setattr(kubeadm_standin, "MANIFESTS", d / "manifests")
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return _run_standin(kubeadm_standin.main, list(argv), capsys)


def test_kubeadm_upgrade_refuses_unknown_flags_and_bad_bools(day2, capsys, monkeypatch):
    for argv in (("upgrade", "apply", "v1.37.1", "--colour"), ("upgrade", "apply", "--certificate-renewal=maybe"),
                 ("upgrade", "node", "v1.37.1"), ("upgrade", "plan", "--yes"), ("upgrade", "diff")):
        assert _kubeadm(day2, capsys, monkeypatch, *argv)[0] == 2, argv


@pytest.mark.parametrize("target, cluster, kubeadm_v, kubelets, mandatory, skippable", [
    ("1.37.1", "1.36.4", "1.37.1", {"a": "1.36.4"}, [], []),
    ("1.36.5", "1.36.4", "1.36.5", {}, [], []),
    ("1.38.0", "1.36.4", "1.38.0", {}, ['"v1.38.0" is too high; kubeadm can upgrade only 1 minor version at a time'], []),
    ("1.37.1", "1.36.4", "1.36.4", {}, ["at least one minor release higher than the kubeadm minor release (37 > 36)"], []),
    ("1.36.9", "1.36.4", "1.36.4", {}, [], ['higher than the kubeadm version "v1.36.4". Upgrade kubeadm first']),
    ("1.36.4", "1.37.1", "1.37.1", {}, [], ["Kubeadm version v1.37.1 can only be used to upgrade to Kubernetes version 1.37"]),
    ("1.35.8", "1.37.1", "1.37.1", {}, ['downgrade to "v1.35.8" is too low; kubeadm can downgrade only 1 minor'],
     ["can only be used to upgrade to Kubernetes version 1.37"]),
    ("1.37.1", "1.36.4", "1.37.1", {"a": "1.35.8", "b": "1.36.4"}, [],
     ["There are kubelets in this cluster that are too old that have these versions [v1.35.8]"]),
])
def test_kubeadm_upgrade_version_policy(target, cluster, kubeadm_v, kubelets, mandatory, skippable):
    got_m, got_s = kubeadm_standin.version_policy(target, cluster, kubeadm_v, kubelets)
    assert len(got_m) == len(mandatory) and all(want in got for want, got in zip(mandatory, got_m)), got_m
    assert len(got_s) == len(skippable) and all(want in got for want, got in zip(skippable, got_s)), got_s


def test_kubeadm_upgrade_plan_apply_and_node(day2, capsys, monkeypatch):
    d, cluster = day2["dir"], day2["cluster"]
    admin = day2["admin"]
    admin.patch("/api/v1/namespaces/kube-system/configmaps/kubeadm-config", params={"fieldManager": "kubeadm"},
                headers={"Content-Type": "application/apply-patch+yaml"},
                content="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kubeadm-config, namespace: kube-system}\n"
                        "data: {ClusterConfiguration: 'kubernetesVersion: v1.36.4\n'}\n")
    assert admin.get("/version").json()["gitVersion"] == "v1.36.4"  # from the manifest's image
    monkeypatch.setattr(standin_common, "version", lambda: "1.37.1")   # kubeadm 1.37.1 is installed
    monkeypatch.setattr(kubeadm_standin, "version", lambda: "1.37.1")
    rc, out, err = _kubeadm(day2, capsys, monkeypatch, "upgrade", "plan")
    assert rc == 0, err
    assert "[upgrade/versions] Cluster version: v1.36.4" in out and "kubeadm upgrade apply v1.37.1" in out
    assert re.search(r"kubelet\s+n-1\s+v1.36.4\s+v1.37.1", out), out

    rc, out, err = _kubeadm(day2, capsys, monkeypatch, "upgrade", "apply", "v1.38.0", "-y", "--force")
    assert rc == 1 and '"v1.38.0" is too high; kubeadm can upgrade only 1 minor version at a time' in err
    rc, out, err = _kubeadm(day2, capsys, monkeypatch, "upgrade", "apply", "v1.37.1", stdin="n\n")
    assert rc == 1 and "won't proceed" in err
    assert "v1.36.4" in (d / "manifests" / "kube-apiserver.yaml").read_text()  # nothing changed

    # The kubelet's part: restart the API server when its manifest changes (here: in-process).
    stop = threading.Event()

    def kubelet():
        while not stop.is_set():
            v = standin_apiserver.manifest_version(d / "manifests" / "kube-apiserver.yaml", d / "state")
            time.sleep(0.3)  # the restart takes a moment
            cluster.version = v
    threading.Thread(target=kubelet, daemon=True).start()
    try:
        (d / "upgrade.yaml").write_text(UPGRADE_CONFIG.replace("SkipPhases: []", "SkipPhases: [addon/coredns]"))
        rc, out, err = _kubeadm(day2, capsys, monkeypatch, "upgrade", "apply", "--config", str(d / "upgrade.yaml"))
        assert rc == 0, out + err
        assert '[upgrade] SUCCESS! A control plane node of your cluster was upgraded to "v1.37.1".' in out
        assert admin.get("/version").json()["gitVersion"] == "v1.37.1"
        for comp in kubeadm_standin.UPGRADED_COMPONENTS:
            assert f"{comp}:v1.37.1" in (d / "manifests" / f"{comp}.yaml").read_text()
        assert list((d / "tmp").glob("kubeadm-backup-manifests-*/kube-apiserver.yaml"))
        cm = admin.get("/api/v1/namespaces/kube-system/configmaps/kubeadm-config").json()
        assert "kubernetesVersion: v1.37.1" in cm["data"]["ClusterConfiguration"]
        # a second control plane (here: the same files again) follows the cluster's version
        rc, out, err = _kubeadm(day2, capsys, monkeypatch, "upgrade", "node", "--certificate-renewal=false")
        assert rc == 0, out + err
        assert "Current and new manifests of kube-apiserver are equal, skipping upgrade" in out
        # going down: one minor is an error only --force skips, as in kubeadm's policy
        rc, _, err = _kubeadm(day2, capsys, monkeypatch, "upgrade", "apply", "v1.36.4", "-y")
        assert rc == 1 and "Kubeadm version v1.37.1 can only be used to upgrade to Kubernetes version 1.37" in err
        assert "Can be bypassed if you pass the --force flag" in err
        assert admin.get("/version").json()["gitVersion"] == "v1.37.1"
        monkeypatch.setattr(kubeadm_standin, "version", lambda: "1.36.4")  # an old kubeadm refuses
        rc, _, err = _kubeadm(day2, capsys, monkeypatch, "upgrade", "node")
        assert rc == 1 and "upgrade kubeadm first" in err
    finally:
        stop.set()


def _events(*rows) -> list:
    return [version_skew.Event(t, node, node, comp, v, ev) for t, node, comp, v, ev in rows]


def test_skew_checker_accepts_a_rolling_upgrade():
    events = _events(
        (1, "cp-1", "kube-apiserver", "1.36.4", "start"), (2, "cp-2", "kube-apiserver", "1.36.4", "start"),
        (3, "cp-1", "kubelet", "1.36.4", "start"), (4, "w-1", "kubelet", "1.35.8", "start"),
        (10, "cp-1", "kube-apiserver", "1.36.4", "stop"), (11, "cp-1", "kube-apiserver", "1.37.1", "start"),
        (20, "cp-2", "kube-apiserver", "1.36.4", "stop"), (21, "cp-2", "kube-apiserver", "1.37.1", "start"),
        (30, "cp-1", "kubelet", "1.36.4", "stop"), (31, "cp-1", "kubelet", "1.37.1", "start"),
        (40, "w-1", "kubelet", "1.35.8", "stop"), (41, "w-1", "kubelet", "1.37.1", "start"))
    assert version_skew.skew_violations(events) == []


def test_skew_checker_finds_a_kubelet_newer_than_an_api_server():
    events = _events(
        (1, "cp-1", "kube-apiserver", "1.36.4", "start"), (2, "cp-2", "kube-apiserver", "1.36.4", "start"),
        (3, "w-1", "kubelet", "1.36.4", "start"),
        (10, "cp-1", "kube-apiserver", "1.36.4", "stop"), (11, "cp-1", "kube-apiserver", "1.37.1", "start"),
        # the worker's kubelet is upgraded before cp-2's API server: a violation until t=21
        (12, "w-1", "kubelet", "1.36.4", "stop"), (13, "w-1", "kubelet", "1.37.1", "start"),
        (20, "cp-2", "kube-apiserver", "1.36.4", "stop"), (21, "cp-2", "kube-apiserver", "1.37.1", "start"))
    v = version_skew.skew_violations(events)
    assert v == ["t=13.000 (after kubelet v1.37.1 start on w-1): kubelet v1.37.1 on w-1 is newer than "
                 "kube-apiserver v1.36.4 on cp-2"]


def test_skew_checker_finds_api_servers_two_minors_apart_and_too_old_kubelets():
    events = _events((1, "cp-1", "kube-apiserver", "1.35.8", "start"), (2, "w-1", "kubelet", "1.33.0", "start"),
                     (3, "cp-2", "kube-apiserver", "1.37.1", "start"))
    v = version_skew.skew_violations(events)
    assert len(v) == 2 and "more than 1 minor apart" in v[0] + v[1] and "more than 3 minors older" in v[0] + v[1]


def test_skew_checker_reads_journal_lines():
    line = json.dumps({"time": 5.0, "host": "h", "node": "w-1", "component": "kubelet", "version": "v1.36.4",
                       "event": "start", "pid": 1})
    (e,) = version_skew.parse_journal(line + "\n")
    assert (e.node, e.component, e.version, e.minor) == ("w-1", "kubelet", "v1.36.4", (1, 36))


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
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --allow-change-held-packages kubeadm kubelet kubectl >/dev/null
            apt-mark hold kubeadm kubelet kubectl >/dev/null
            systemctl enable kubelet
        """, timeout=300)
    print(f"\nprepared {len(targets)} host(s) in {time.monotonic() - t0:.1f}s")
    return hosts, targets, url


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
    journal_before = len(journal(cp))  # a reset host keeps its journal: earlier modules' calls
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
    # a real etcd: Debian's, one member, the API's objects in it
    assert cp.exec("etcd --version").stdout.startswith("etcd Version: 3.")
    assert etcd_members(cp) == [cp.name]
    keys = etcdctl(cp, "get --prefix --keys-only /registry/kai-standin/objects/api/v1/nodes/").stdout.split()
    assert keys == [f"/registry/kai-standin/objects/api/v1/nodes/{cp.name}"]

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

    if len(targets) > 1:  # a second control plane: a second etcd member
        w = targets[1]
        cert_key = cp.exec("kubeadm certs certificate-key").stdout.strip()
        cp.exec(f"kubeadm init phase upload-certs --upload-certs --certificate-key {cert_key} "
                "--skip-certificate-key-print")
        join = f"""\
apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
nodeRegistration: {{name: {w.name}, criSocket: unix:///run/containerd/containerd.sock,
  kubeletExtraArgs: [{{name: node-ip, value: {w.address}}}]}}
controlPlane: {{localAPIEndpoint: {{advertiseAddress: {w.address}, bindPort: 6443}}, certificateKey: "{cert_key}"}}
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
        assert cert_key not in w.exec("cat /var/log/kai-standins.jsonl").stdout
        assert etcd_members(cp) == etcd_members(w) == sorted([cp.name, w.name])
        assert "--initial-cluster-state=existing" in w.exec("cat /etc/kubernetes/manifests/etcd.yaml").stdout
        # etcd replicates: written through the second API server, read through the first
        (tmp_path / "w").mkdir()
        w_admin = _admin_client(w, tmp_path / "w")
        w_admin.base_url = f"https://{w.address}:6443"  # its admin.conf names the first one
        r = w_admin.post("/api/v1/namespaces/default/configmaps", json={
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "via-second", "namespace": "default"}})
        assert r.status_code == 201, r.text
        _wait(lambda: admin.get("/api/v1/namespaces/default/configmaps/via-second").status_code == 200, 10,
              "the object written on the second control plane, on the first")
        # kubeadm reset removes the node's own member; the other control plane keeps serving
        r = w.exec("kubeadm reset -f", check=False, timeout=120)
        assert r.returncode == 0 and "Removing the etcd member of this node: removed etcd member" in r.stdout, \
            r.stdout + r.stderr
        assert etcd_members(cp) == [cp.name]
        assert w.exec("crictl ps --name etcd --state running -q").stdout.strip() == ""
        assert w.exec("ls /var/lib/etcd", check=False).returncode != 0
        assert admin.get("/api/v1/namespaces/default/configmaps/via-second").status_code == 200

    entries = journal(cp)[journal_before:]   # this test's calls only
    inits = [e for e in entries if e["argv"][:2] == ["kubeadm", "init"] and "phase" not in e["argv"]]
    assert [e["exit_code"] for e in inits] == [1, 0, 1]
    assert any(e["argv"][:2] == ["kubectl", "--kubeconfig"] and e["exit_code"] == 0 for e in entries)

    r = cp.exec("kubeadm reset -f --cleanup-tmp-dir", check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "this is the only etcd member" in r.stdout
    assert cp.exec("ls /etc/kubernetes/manifests").stdout.strip() == ""
    assert cp.exec("systemctl is-active kai-standin-etcd", check=False).stdout.strip() != "active"
    assert cp.exec("systemctl is-active kubelet", check=False).stdout.strip() != "active"


def _apt_minor(h, url: str, minor: str, *pkgs: str) -> None:
    """Point the host at pkgs.k8s.io's repository for `minor` (the mirror's copy) and install,
    the documented way: the packages are held (as kai holds them), unheld for the upgrade only."""
    names = " ".join(p.split("=", 1)[0] for p in pkgs)
    r = h.exec(f"""set -e
        echo 'deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] {url}/pkgs.k8s.io/core:/stable:/v{minor}/deb/ /' \
            > /etc/apt/sources.list.d/kubernetes.list
        apt-get update -qq
        apt-mark unhold {names} >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {' '.join(pkgs)} >/dev/null
        apt-mark hold {names} >/dev/null
    """, timeout=300, check=False)
    assert r.returncode == 0, f"apt on {h.name} ({minor}: {pkgs}): {r.stdout}{r.stderr}"


def _kubectl_on(h, *args: str, check: bool = True, timeout: float = 180):
    r = h.exec("kubectl --kubeconfig /etc/kubernetes/admin.conf " + " ".join(args), check=False, timeout=timeout)
    if check:
        assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stdout}{r.stderr}"
    return r


def _node_versions(admin) -> dict[str, str]:
    return {n["metadata"]["name"]: n["status"]["nodeInfo"]["kubeletVersion"]
            for n in admin.get("/api/v1/nodes").json()["items"]}


@pytest.mark.hosts
def test_hosts_upgrade_minor_drain_and_remove_a_node(cluster_hosts, tmp_path):
    """1.36 -> 1.37 in kubeadm's documented order, then a node removal; the version journals of
    both hosts must show no moment that broke the skew policy."""
    hosts, targets, url = cluster_hosts
    if len(targets) < 2:
        pytest.fail("this test needs 2 booted hosts (KAI_TEST_HOSTS >= 2)")
    cp, w = targets
    new_minor = "1.37"
    new = __import__("installers.versions", fromlist=["x"]).KUBERNETES_MINORS[new_minor].default_patch
    pkg = f"{new}-1.1"
    for h in (cp, w):  # whatever an earlier test left running
        h.exec("kubeadm reset -f --cleanup-tmp-dir; : > /var/log/kai-standin-versions.jsonl", check=False, timeout=120)
    cp.put_file("/root/kubeadm.yaml", _host_config(cp))
    r = cp.exec("kubeadm init --config /root/kubeadm.yaml --skip-token-print --skip-certificate-key-print",
                check=False, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    cp.exec(f"curl -fsS -o /root/flannel.yml {url}/manifests/flannel/v0.27.4/kube-flannel.yml")
    _kubectl_on(cp, "apply --server-side --force-conflicts -f /root/flannel.yml")
    token = cp.exec("kubeadm token create --ttl 1h --description kai-test").stdout.strip()
    ca_hash = pki.ca_cert_hash(pki.load_cert(cp.exec("cat /etc/kubernetes/pki/ca.crt").stdout.encode()))
    w.put_file("/root/join.yaml", f"""\
apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
nodeRegistration: {{name: {w.name}, criSocket: unix:///run/containerd/containerd.sock,
  kubeletExtraArgs: [{{name: node-ip, value: {w.address}}}]}}
discovery:
  bootstrapToken: {{token: "{token}", apiServerEndpoint: "{cp.address}:6443", caCertHashes: ["{ca_hash}"]}}
""", 0o600)
    r = w.exec("kubeadm join --config /root/join.yaml", check=False, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    admin = _admin_client(cp, tmp_path)
    _wait(lambda: all(n["status"]["conditions"][0]["status"] == "True"
                      for n in admin.get("/api/v1/nodes").json()["items"]), 60, "both nodes Ready")
    cp.put_file("/root/web.yaml", _deployment("web", 2, emptydir=True) + "---\n" + _pdb("web-pdb", "web", 1))
    _kubectl_on(cp, "apply --server-side --force-conflicts -f /root/web.yaml")
    assert _node_versions(admin) == {cp.name: "v1.36.4", w.name: "v1.36.4"}

    # control plane: kubeadm first, then `upgrade apply`; the kubelet restarts the API server
    _apt_minor(cp, url, new_minor, f"kubeadm={pkg}")
    r = cp.exec("kubeadm upgrade plan", check=False, timeout=120)
    assert r.returncode == 0 and f"kubeadm upgrade apply v{new}" in r.stdout, r.stdout + r.stderr
    r = cp.exec("kubeadm upgrade apply v1.38.0 -y", check=False, timeout=120)
    assert r.returncode != 0 and "kubeadm can upgrade only 1 minor version at a time" in r.stderr
    t0 = time.monotonic()
    r = cp.exec(f"kubeadm upgrade apply v{new} -y", check=False, timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr + cp.journal("kubelet")
    print(f"kubeadm upgrade apply: {time.monotonic() - t0:.1f}s")
    assert admin.get("/version").json()["gitVersion"] == f"v{new}"
    # then its kubelet: drained, upgraded, restarted, uncordoned
    r = _kubectl_on(cp, f"drain {cp.name} --ignore-daemonsets --delete-emptydir-data --timeout=120s")
    assert f"node/{cp.name} drained" in r.stdout
    _apt_minor(cp, url, new_minor, f"kubelet={pkg}", f"kubectl={pkg}")
    cp.exec("systemctl daemon-reload && systemctl restart kubelet")
    _kubectl_on(cp, f"uncordon {cp.name}")
    _wait(lambda: _node_versions(admin)[cp.name] == f"v{new}", 30, "the control plane's kubelet version")

    # worker: drain, kubeadm, `upgrade node`, kubelet, uncordon
    r = _kubectl_on(cp, f"drain {w.name} --ignore-daemonsets --delete-emptydir-data --timeout=120s")
    assert f"node/{w.name} drained" in r.stdout
    _apt_minor(w, url, new_minor, f"kubeadm={pkg}")
    r = w.exec("kubeadm upgrade node", check=False, timeout=120)
    assert r.returncode == 0 and "Not a control plane node" in r.stdout, r.stdout + r.stderr
    _apt_minor(w, url, new_minor, f"kubelet={pkg}", f"kubectl={pkg}")
    w.exec("systemctl daemon-reload && systemctl restart kubelet")
    _kubectl_on(cp, f"uncordon {w.name}")
    _wait(lambda: _node_versions(admin) == {cp.name: f"v{new}", w.name: f"v{new}"}, 30, "both kubelets upgraded")
    out = _kubectl_on(cp, "get nodes").stdout
    assert re.search(rf"{w.name}\s+Ready\s+<none>\s+\S+\s+v{new}", out), out

    events = version_skew.read_journals([cp, w])
    assert {(e.component, e.version) for e in events if e.event == "start"} >= {
        ("kube-apiserver", "1.36.4"), ("kube-apiserver", new), ("kubelet", "1.36.4"), ("kubelet", new)}
    assert version_skew.skew_violations(events) == []

    # node removal: drain, reset (stops its kubelet), delete the Node
    _kubectl_on(cp, f"drain {w.name} --ignore-daemonsets --delete-emptydir-data --timeout=120s")
    assert w.exec("kubeadm reset -f", check=False, timeout=120).returncode == 0
    assert w.name in _node_versions(admin)  # reset leaves the Node, like kubeadm's
    assert f'node "{w.name}" deleted' in _kubectl_on(cp, f"delete node {w.name}").stdout
    time.sleep(6)  # longer than a heartbeat: a still-running kubelet would have registered it again
    assert set(_node_versions(admin)) == {cp.name}
    web = [p for p in admin.get("/api/v1/namespaces/default/pods").json()["items"]
           if p["metadata"]["labels"].get("app") == "web"]
    assert {p["spec"]["nodeName"] for p in web} == {cp.name}
    assert cp.exec("kubeadm reset -f --cleanup-tmp-dir", check=False, timeout=120).returncode == 0
