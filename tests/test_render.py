import dataclasses
import re
import string
import tomllib

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from installers import kubeadm, render
from installers.plan import HostJob, build_plan
from installers.spec import SpecError, load_spec
from tests.spec_factory import aio, ha

# Field names from kubernetes/kubernetes cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go (json tags).
# A dict is a struct (its allowed keys); [dict] is a list of such structs; None is a leaf.
ARG = {"name": None, "value": None}
API_ENDPOINT = {"advertiseAddress": None, "bindPort": None}
TAINT = {"key": None, "value": None, "effect": None, "timeAdded": None}
NODE_REGISTRATION = {"name": None, "criSocket": None, "taints": [TAINT], "kubeletExtraArgs": [ARG],
                     "ignorePreflightErrors": None, "imagePullPolicy": None, "imagePullSerial": None}
TIMEOUTS = {"controlPlaneComponentHealthCheck": None, "kubeletHealthCheck": None,
            "kubernetesAPICall": None, "etcdAPICall": None, "tlsBootstrap": None, "discovery": None,
            "upgradeManifests": None}
COMPONENT = {"extraArgs": [ARG], "extraVolumes": None, "extraEnvs": None}
TYPE_META = {"apiVersion": None, "kind": None}
V1BETA4 = {
    "InitConfiguration": {**TYPE_META, "bootstrapTokens": None, "dryRun": None,
                          "nodeRegistration": NODE_REGISTRATION, "localAPIEndpoint": API_ENDPOINT,
                          "certificateKey": None, "skipPhases": None, "patches": None, "timeouts": TIMEOUTS},
    "ClusterConfiguration": {
        **TYPE_META,
        "etcd": {"local": {"imageRepository": None, "imageTag": None, "dataDir": None, "extraArgs": [ARG],
                           "extraEnvs": None, "serverCertSANs": None, "peerCertSANs": None},
                 "external": None},
        "networking": {"serviceSubnet": None, "podSubnet": None, "dnsDomain": None},
        "kubernetesVersion": None, "controlPlaneEndpoint": None,
        "apiServer": {**COMPONENT, "certSANs": None}, "controllerManager": COMPONENT, "scheduler": COMPONENT,
        "dns": {"imageRepository": None, "imageTag": None, "disabled": None}, "proxy": {"disabled": None},
        "certificatesDir": None, "imageRepository": None, "featureGates": None, "clusterName": None,
        "encryptionAlgorithm": None, "certificateValidityPeriod": None, "caCertificateValidityPeriod": None},
    "JoinConfiguration": {
        **TYPE_META, "dryRun": None, "nodeRegistration": NODE_REGISTRATION, "caCertPath": None,
        "discovery": {"bootstrapToken": {"token": None, "apiServerEndpoint": None, "caCertHashes": None,
                                         "unsafeSkipCAVerification": None},
                      "file": None, "tlsBootstrapToken": None},
        "controlPlane": {"localAPIEndpoint": API_ENDPOINT, "certificateKey": None},
        "skipPhases": None, "patches": None, "timeouts": TIMEOUTS},
}


def assert_fields(obj, schema, path="$"):
    if schema is None:
        return
    if isinstance(schema, list):
        assert isinstance(obj, list), path
        for i, item in enumerate(obj):
            assert_fields(item, schema[0], f"{path}[{i}]")
        return
    assert isinstance(obj, dict), path
    unknown = set(obj) - set(schema)
    assert not unknown, f"{path}: not v1beta4 fields: {unknown}"
    for key, value in obj.items():
        assert_fields(value, schema[key], f"{path}.{key}")


def docs_by_kind(text):
    return {d["kind"]: d for d in yaml.safe_load_all(text)}


def test_init_config_uses_only_v1beta4_fields_and_the_right_values():
    spec = load_spec(ha())
    docs = docs_by_kind(kubeadm.render_init(spec, spec.nodes[0], all_in_one=False))
    assert set(docs) == {"InitConfiguration", "ClusterConfiguration", "KubeletConfiguration",
                         "KubeProxyConfiguration"}
    for kind in ("InitConfiguration", "ClusterConfiguration"):
        assert docs[kind]["apiVersion"] == "kubeadm.k8s.io/v1beta4"
        assert_fields(docs[kind], V1BETA4[kind])
    init, cluster = docs["InitConfiguration"], docs["ClusterConfiguration"]
    assert init["nodeRegistration"]["name"] == "cp-1"
    assert init["nodeRegistration"]["taints"] == [{"key": "node-role.kubernetes.io/control-plane",
                                                   "effect": "NoSchedule"}]
    assert init["localAPIEndpoint"] == {"advertiseAddress": "192.168.10.11", "bindPort": 6443}
    assert cluster["controlPlaneEndpoint"] == "192.168.10.100:6443"
    assert "192.168.10.100" in cluster["apiServer"]["certSANs"]
    assert cluster["kubernetesVersion"] == "v1.36.4"
    assert cluster["networking"] == {"podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/12",
                                     "dnsDomain": "cluster.local"}
    assert cluster["controllerManager"]["extraArgs"] == [{"name": "node-cidr-mask-size", "value": "24"}]
    kubelet = docs["KubeletConfiguration"]
    assert kubelet["apiVersion"] == "kubelet.config.k8s.io/v1beta1"
    assert kubelet["cgroupDriver"] == "systemd" and kubelet["failCgroupV1"] is True
    proxy = docs["KubeProxyConfiguration"]
    assert proxy["apiVersion"] == "kubeproxy.config.k8s.io/v1alpha1" and proxy["mode"] == "iptables"


def test_all_in_one_is_untainted_and_says_why():
    spec = load_spec(aio(kubelet={"fail_cgroup_v1": False, "max_pods": 200},
                         networking={"kube_proxy_mode": "nftables"}))
    text = kubeadm.render_init(spec, spec.nodes[0], all_in_one=True)
    docs = docs_by_kind(text)
    assert docs["InitConfiguration"]["nodeRegistration"]["taints"] == []
    assert "taints: [] IS the untaint" in text
    assert docs["ClusterConfiguration"]["controlPlaneEndpoint"] == "192.168.10.11:6443"
    assert docs["KubeletConfiguration"]["failCgroupV1"] is False
    assert docs["KubeletConfiguration"]["maxPods"] == 200
    assert docs["KubeProxyConfiguration"]["mode"] == "nftables"


def test_labels_and_taints_reach_node_registration():
    d = ha()
    d["nodes"][3].update(labels={"tier": "apps", "example.com/zone": "a"}, taints=["dedicated=batch:NoSchedule"])
    d["nodes"][2]["roles"] = ["control-plane", "worker"]
    spec = load_spec(d)
    join = yaml.safe_load(kubeadm.render_join(spec, spec.node("worker-1")))
    reg = join["nodeRegistration"]
    assert {"name": "node-labels", "value": "example.com/zone=a,tier=apps"} in reg["kubeletExtraArgs"]
    assert reg["taints"] == [{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}]
    # a control plane that is also a worker stays schedulable
    cpw = yaml.safe_load(kubeadm.render_join(spec, spec.node("cp-3")))
    assert cpw["nodeRegistration"]["taints"] == []


def test_join_configs():
    spec = load_spec(ha())
    worker = yaml.safe_load(kubeadm.render_join(spec, spec.node("worker-1")))
    cp = yaml.safe_load(kubeadm.render_join(spec, spec.node("cp-2")))
    for doc in (worker, cp):
        assert_fields(doc, V1BETA4["JoinConfiguration"])
        bt = doc["discovery"]["bootstrapToken"]
        assert bt == {"token": "__KAI_JOIN_TOKEN__", "apiServerEndpoint": "192.168.10.100:6443",
                      "caCertHashes": ["__KAI_CA_CERT_HASH__"]}
    assert "controlPlane" not in worker
    assert cp["controlPlane"] == {"localAPIEndpoint": {"advertiseAddress": "192.168.10.12", "bindPort": 6443},
                                  "certificateKey": "__KAI_CERTIFICATE_KEY__"}
    assert cp["nodeRegistration"]["name"] == "cp-2"


def test_containerd_configs_parse():
    spec = load_spec(aio(runtime={"containerd": {"sandbox_image": "registry.example:5000/pause:3.10.1"}}))
    v3 = tomllib.loads(render.containerd_config_v3(spec))
    assert v3["version"] == 3
    runc = v3["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]
    assert runc["options"]["SystemdCgroup"] is True
    images = v3["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == "registry.example:5000/pause:3.10.1"
    assert images["registry"]["config_path"] == "/etc/containerd/certs.d"
    v2 = tomllib.loads(render.containerd_config_v2(spec))
    cri = v2["plugins"]["io.containerd.grpc.v1.cri"]
    assert v2["version"] == 2 and cri["sandbox_image"] == "registry.example:5000/pause:3.10.1"
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    assert cri["registry"]["config_path"] == "/etc/containerd/certs.d"


def test_registry_mirror_files():
    spec = load_spec(aio(runtime={"containerd": {"registry_mirrors": {
        "docker.io": ["https://m1.example", "http://127.0.0.1:5000"], "registry.k8s.io": ["https://m2.example"]}}}))
    files = render.registry_mirror_files(spec)
    listing = [line.split("\t") for line in files["mirrors.list"].splitlines()]
    assert listing == [["docker.io", "mirror-0.toml"], ["registry.k8s.io", "mirror-1.toml"]]
    docker = tomllib.loads(files["mirror-0.toml"])
    assert docker["server"] == "https://registry-1.docker.io"
    assert list(docker["host"]) == ["https://m1.example", "http://127.0.0.1:5000"]
    assert docker["host"]["https://m1.example"]["capabilities"] == ["pull", "resolve"]
    assert render.registry_mirror_files(load_spec(aio())) == {}


def parse_systemd_env(text: str) -> dict[str, str]:
    """Inverse of render.systemd_quote for Environment="K=V" lines."""
    out = {}
    for line in text.splitlines():
        if not line.startswith("Environment="):
            continue
        raw = line[len("Environment="):]
        assert raw[0] == raw[-1] == '"'
        body, value, i = raw[1:-1], [], 0
        while i < len(body):
            ch = body[i]
            if ch == "\\":
                value.append(body[i + 1]); i += 2
            elif ch == "%":
                assert body[i + 1] == "%"; value.append("%"); i += 2
            else:
                assert ch != '"', "unescaped quote"
                value.append(ch); i += 1
        k, _, v = "".join(value).partition("=")
        out[k] = v
    return out


def test_proxy_dropin_and_download_proxy():
    spec = load_spec(aio(runtime={"proxy": {"http": "http://p.example:3128", "https": "http://p.example:3129"}}))
    text = render.proxy_dropin(spec)
    assert text.splitlines()[1] == "[Service]"
    env = parse_systemd_env(text)
    assert env["HTTP_PROXY"] == "http://p.example:3128" and env["HTTPS_PROXY"] == "http://p.example:3129"
    assert env["NO_PROXY"].split(",") == spec.effective_no_proxy()
    assert render.download_proxy(spec) == "http://p.example:3129"
    assert render.proxy_dropin(load_spec(aio())) is None
    files = build_plan(spec, "all_in_one").step("kube-packages").jobs[0].files
    assert files["kubelet-proxy.conf"] == text


def test_os_files():
    spec = load_spec(ha())
    files = render.os_prep_files(spec)
    assert "net.ipv4.ip_forward = 1" in files["sysctl.conf"]
    assert files["modules.conf"].split("\n")[1:3] == ["overlay", "br_netfilter"]
    lines = files["hosts"].splitlines()
    assert lines[0].startswith(render.HOSTS_BEGIN) and lines[-1] == render.HOSTS_END
    assert "192.168.10.21\tworker-1" in lines and len(lines) == 2 + len(spec.nodes)


def test_kube_vip_manifest_uses_super_admin_only_during_init():
    spec = load_spec(ha())
    for phase, conf in (("pre-init", "/etc/kubernetes/super-admin.conf"),
                        ("post-init", "/etc/kubernetes/admin.conf"), ("join", "/etc/kubernetes/admin.conf")):
        pod = yaml.safe_load(render.kube_vip_manifest(spec, phase))
        assert pod["spec"]["volumes"][0]["hostPath"]["path"] == conf
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["address"] == "192.168.10.100" and env["vip_interface"] == "eth0"
        assert env["vip_arp"] == "true" and env["cp_enable"] == "true" and env["port"] == "6443"
        assert env["vip_leaderelection"] == "true"
        assert pod["spec"]["hostNetwork"] is True


def test_storage_class_is_default():
    sc = yaml.safe_load(render.default_storage_class())
    assert sc["kind"] == "StorageClass"
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert sc["provisioner"] == "rancher.io/local-path"


def test_toml_str_escapes():
    for s in ['a"b', "a\\b", "line\nbreak", "tab\t", "\x01ctl", "''' \"\"\"", "ünï"]:
        assert tomllib.loads(f"k = {render.toml_str(s)}")["k"] == s


# --- hostile values ----------------------------------------------------------------------------

NASTY = "'\"$()`;|&<>\\!*?#{}[]%~^=+@" + string.ascii_letters[:6] + string.digits[:3]
SHELL_META = set("'\"$()`;|&<>\\")
# every generated value holds at least one shell metacharacter
hostile = st.text(alphabet=NASTY, min_size=1, max_size=24).filter(lambda s: bool(SHELL_META & set(s)))
hostile_iface = st.text(alphabet=NASTY, min_size=1, max_size=15).filter(lambda s: bool(SHELL_META & set(s)))
SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_.:-]+$")


def _all_text(job: HostJob):
    yield "script", job.script
    yield "node", job.node
    yield "address", job.address
    for k in job.env:
        yield "env-name", k
    for k in job.files:
        yield "file-name", k
    for k in job.secret_env:
        yield "secret-name", k


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=hostile, proxy_path=hostile, iface=hostile_iface, no_proxy=hostile, mpath=hostile)
def test_hostile_values_stay_data(path, proxy_path, iface, no_proxy, mpath):
    mirror_url = f"https://m.example/{path}"
    proxy_url = f"http://proxy.example:3128/{proxy_path}"
    base_url = f"http://127.0.0.1:8000/{mpath}"
    d = ha(endpoint={"type": "kube_vip", "address": "192.168.10.100", "interface": iface},
           runtime={"containerd": {"registry_mirrors": {"docker.io": [mirror_url]}},
                    "proxy": {"http": proxy_url, "https": proxy_url, "no_proxy": [no_proxy]}},
           mirror={"url": base_url})
    spec = load_spec(d)   # these values survive validation: they must stay data everywhere
    plan = build_plan(spec, "ha")
    values = [mirror_url, proxy_url, iface, no_proxy, base_url]
    seen = {"toml": 0, "yaml": 0, "systemd": 0}
    for step in plan.steps():
        assert not hasattr(step, "command")
        for job in step.jobs:
            # (a) never in anything that could become a command line: only env values and files
            for where, text in _all_text(job):
                assert SAFE_TOKEN.match(text), (where, text)
                for v in values:
                    assert v not in text, (where, v)
            assert job.script.endswith(".sh") and set(job.script) <= set(string.ascii_lowercase + "-.")
            for k, v in job.env.items():
                assert k.startswith("KAI_") and isinstance(v, str)
            # (b) every file still parses, with the values intact
            for name, text in job.files.items():
                if name.endswith(".yaml"):
                    docs = list(yaml.safe_load_all(text))
                    assert docs and all(isinstance(doc, dict) for doc in docs)
                    seen["yaml"] += 1
                    if name == "kube-vip.yaml":
                        env = {e["name"]: e.get("value") for e in docs[0]["spec"]["containers"][0]["env"]}
                        assert env["vip_interface"] == iface
                elif name.endswith(".toml"):
                    parsed = tomllib.loads(text)
                    seen["toml"] += 1
                    if name.startswith("mirror-"):
                        assert list(parsed["host"]) == [mirror_url]
                elif name.endswith(".conf") and "[Service]" in text:
                    env = parse_systemd_env(text)
                    seen["systemd"] += 1
                    assert env["HTTP_PROXY"] == proxy_url and env["HTTPS_PROXY"] == proxy_url
                    assert no_proxy in env["NO_PROXY"].split(",")
    assert all(seen.values()), seen
    urls = plan.step("runtime").jobs[0].env
    assert urls["KAI_CONTAINERD_URL"].startswith(base_url.rstrip("/") + "/containerd/")
    assert urls["KAI_DOWNLOAD_PROXY"] == proxy_url


def test_hostile_values_that_cannot_be_data_are_refused():
    d = aio(runtime={"proxy": {"http": "http://p.example/\nExecStart=/bin/sh",
                               "no_proxy": ["a\nb"]}})
    d["nodes"][0]["labels"] = {"x": "$(reboot)"}
    with pytest.raises(SpecError) as exc:
        load_spec(d)
    problems = exc.value.problems
    assert any(p.startswith("runtime.proxy.http:") for p in problems)
    assert any(p.startswith("runtime.proxy.no_proxy[0]:") for p in problems)
    assert any(p.startswith("nodes[0].labels['x']:") for p in problems)


def test_all_jobs_of_a_plan_are_frozen():
    job = build_plan(load_spec(aio()), "all_in_one").step("facts").jobs[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.script = "evil.sh"  # type: ignore[misc]


def test_join_config_has_exactly_the_three_placeholders_and_nothing_else_like_them():
    """kubeadm-join.sh refuses a file with any __KAI_…__ left after substitution: a comment that
    mentions the pattern would break every join."""
    import re

    from installers import kubeadm
    from installers.spec import load_spec
    from tests.spec_factory import ha

    spec = load_spec(ha())
    for node in spec.nodes[1:]:
        text = kubeadm.render_join(spec, node)
        found = sorted(set(re.findall(r"__KAI_[A-Za-z0-9_*…]*__", text)))
        expected = ["__KAI_CA_CERT_HASH__", "__KAI_JOIN_TOKEN__"]
        if node.is_control_plane:
            expected.insert(1, "__KAI_CERTIFICATE_KEY__")
        assert found == expected, (node.name, found)
