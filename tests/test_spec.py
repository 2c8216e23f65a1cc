import json

import pytest
from pydantic import ValidationError

from installers import versions as V
from installers.settings import KaiSettings
from installers.spec import (ClusterSpec, SpecError, load_spec, spec_json_schema, spec_warnings,
                             validate_for_mode)
from installers.spec_problems import collect_problems
from tests.spec_factory import aio, ha


def problems_of(data) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load_spec(data)
    return exc.value.problems


def test_minimal_all_in_one_gets_defaults_and_a_concrete_endpoint():
    spec = load_spec(aio())
    assert spec.kubernetes.minor == "1.36" and spec.kubernetes.full_version == "1.36.4"
    assert spec.endpoint() == "192.168.10.11:6443"
    assert spec.networking.cni == "calico"
    assert spec.runtime.containerd.version == V.CONTAINERD_DEFAULT
    assert spec.sandbox_image() == V.KUBERNETES_MINORS["1.36"].pause_image
    assert validate_for_mode(spec, "all_in_one") == []


def test_endpoints_resolve_to_host_port():
    assert load_spec(ha()).endpoint() == "192.168.10.100:6443"
    lb = load_spec(ha(endpoint={"type": "load_balancer", "address": "api.example.internal", "port": 8443}))
    assert lb.endpoint() == "api.example.internal:8443"
    v6 = load_spec(aio(nodes=[{"name": "n1", "address": "fd00::11", "roles": ["control-plane"]}]))
    assert v6.endpoint() == "[fd00::11]:6443"


def test_full_patch_version_is_kept():
    assert load_spec(aio(kubernetes={"version": "1.37.3"})).kubernetes.full_version == "1.37.3"


def _set(d: dict, path: str, value):
    keys = path.split(".")
    cur = d
    for k in keys[:-1]:
        cur = cur[int(k)] if k.isdigit() else cur.setdefault(k, {})
    last = keys[-1]
    if last.isdigit():
        cur[int(last)] = value
    else:
        cur[last] = value
    return d


BAD = [
    ("nodes.0.address", "10.0.0.300", "nodes[0].address: not an IP address: '10.0.0.300'"),
    ("networking.pod_cidr", "10.244.0.0/33", "networking.pod_cidr: not a CIDR: '10.244.0.0/33'"),
    ("networking.pod_cidr", "10.244.1.0/16", "networking.pod_cidr: has host bits set"),
    ("networking.service_cidr", "10.244.128.0/20", "networking.service_cidr: overlaps networking.pod_cidr"),
    ("networking.service_cidr", "10.0.0.0/8", "networking.service_cidr: too large"),
    ("nodes.0.address", "10.244.3.4", "nodes[0].address: 10.244.3.4 lies inside networking.pod_cidr"),
    ("nodes.0.address", "10.96.0.20", "nodes[0].address: 10.96.0.20 lies inside networking.service_cidr"),
    ("kubernetes.version", "1.30", "kubernetes.version: unsupported Kubernetes minor '1.30'"),
    ("kubernetes.version", "latest", "kubernetes.version: not a Kubernetes version"),
    ("name", "Demo_Cluster", "name: not an RFC 1123 label"),
    ("nodes.0.name", "Node_1", "nodes[0].name: not an RFC 1123 label"),
    ("networking.podcidr", "10.0.0.0/16", "networking.podcidr: unknown field (did you mean 'pod_cidr'?)"),
    ("clustername", "x", "clustername: unknown field"),
    ("nodes.0.roles", [], "nodes[0].roles: List should have at least 1 item"),
    ("nodes.0.roles", ["boss"], "nodes[0].roles[0]: Input should be 'control-plane' or 'worker'"),
    ("nodes.0.taints", ["dedicated=x:Sometimes"], "nodes[0].taints[0]: not a taint"),
    ("nodes.0.labels", {"bad key!": "v"}, "nodes[0].labels: not a label key"),
    ("nodes.0.labels", {"tier": "a b"}, "nodes[0].labels['tier']: not a label value"),
    ("networking.dns_domain", "Cluster..local", "networking.dns_domain: not a DNS name"),
    ("networking.cni", "weave", "networking.cni: Input should be 'cilium', 'calico' or 'flannel'"),
    ("addons.checksums", {"calico.yml": "0" * 64},
     "addons.checksums['calico.yml']: not a file kai downloads for an add-on"),
    ("addons.checksums", {"components.yaml": "ABC"},
     "addons.checksums['components.yaml']: not a sha256 (64 lowercase hex digits): 'ABC'"),
    ("addons.monitoring", "yes please", "addons.monitoring: Input should be a valid boolean"),
    ("runtime.containerd.source", "mirror", "runtime.containerd.source: 'mirror' needs mirror.url"),
    ("runtime.containerd.version", "2.3", "runtime.containerd.version: not a version (X.Y.Z): '2.3'"),
    ("runtime.containerd.sandbox_image", "pause 3.10", "runtime.containerd.sandbox_image: not an image reference"),
    ("runtime.containerd.registry_mirrors", {"docker.io": ["ftp://m"]},
     "runtime.containerd.registry_mirrors['docker.io'][0]: not an http(s) URL"),
    ("runtime.containerd.registry_mirrors", {"Docker IO": ["https://m"]},
     "runtime.containerd.registry_mirrors['Docker IO']: not a registry"),
    ("runtime.proxy", {"http": "http://proxy:3128\nX-Evil: 1"},
     "runtime.proxy.http: contains a control character (U+000A): 'http://proxy:3128\\nX-Evil: 1'"),
    ("runtime.proxy", {"http": "http://proxy:3128 X"}, "runtime.proxy.http: not a URL (contains whitespace"),
    ("runtime.proxy", {"no_proxy": ["a,b"]}, "runtime.proxy.no_proxy[0]: not a host, domain or CIDR"),
    ("mirror", {"url": "mirror.local"}, "mirror.url: not an http(s) URL"),
    ("ssh.private_key_secret", "My Key", "ssh.private_key_secret: not a Prefect Secret block name"),
    ("ssh.sudo", "password", "ssh.sudo: 'password' needs sudo_password_secret or password_secret"),
    ("ssh.host_key_fingerprints", {"node-1": ["MD5:aa"]}, "ssh.host_key_fingerprints['node-1'][0]: not a SHA256"),
    ("ssh.host_key_fingerprints", {"ghost": []}, "ssh.host_key_fingerprints['ghost']: not a node name"),
    ("ssh.port", 70000, "ssh.port: Input should be less than or equal to 65535"),
    ("preflight.ignore", ["swapp"], "preflight.ignore[0]: unknown check 'swapp'"),
    ("steps", {"runtme": {"retries": 1}}, "steps.runtme (key)"),
    ("steps", {"runtime": {"retries": -1}}, "steps.runtime.retries: Input should be greater than or equal to 0"),
    ("control_plane_endpoint", {"type": "load_balancer", "address": "bad_host!"},
     "control_plane_endpoint.address: not an IP address or DNS name"),
    ("control_plane_endpoint", {"type": "kube_vip", "address": "192.168.10.11", "interface": "eth0"},
     "control_plane_endpoint.address: the kube-vip address 192.168.10.11 is also the address of nodes[0]"),
    ("control_plane_endpoint", {"type": "kube_vip", "address": "192.168.10.100", "interface": "eth/0"},
     "control_plane_endpoint.interface: not a network interface name"),
    ("control_plane_endpoint", {"type": "kube_vip", "address": "192.168.10.100"},
     "control_plane_endpoint.interface: required field missing"),
    ("control_plane_endpoint", {"type": "bgp"}, "control_plane_endpoint: Input tag 'bgp' found using 'type'"),
]


@pytest.mark.parametrize("path,value,expected", BAD, ids=[b[2][:50] for b in BAD])
def test_each_rule_names_the_field(path, value, expected):
    problems = problems_of(_set(aio(), path, value))
    assert any(expected in p for p in problems), problems


def test_duplicate_names_and_addresses():
    d = ha()
    d["nodes"][4]["name"] = "cp-1"
    d["nodes"][3]["address"] = "192.168.10.12"
    problems = problems_of(d)
    assert "nodes[4].name: duplicate node name 'cp-1' (also nodes[0])" in problems
    assert "nodes[3].address: duplicate address 192.168.10.12 (also nodes[1])" in problems


def test_pod_cidr_too_small_for_the_node_count():
    problems = problems_of(ha(networking={"pod_cidr": "10.244.0.0/23", "node_cidr_mask": 24}))
    assert any(p.startswith("networking.pod_cidr: 10.244.0.0/23 holds only 2 node ranges of /24, "
                            "but the spec has 5 nodes") for p in problems), problems


def test_node_cidr_mask_larger_than_pod_cidr():
    problems = problems_of(aio(networking={"pod_cidr": "10.244.0.0/16", "node_cidr_mask": 8}))
    assert any(p.startswith("networking.node_cidr_mask: /8 does not fit") for p in problems)


def test_all_problems_are_reported_together():
    d = aio(kubernetes={"version": "1.20"}, networking={"pod_cidr": "10.96.0.0/16"},
            colour="blue")
    d["nodes"][0]["address"] = "10.0.0.300"
    d["nodes"].append({"name": "node-1", "address": "192.168.10.12", "roles": ["worker"]})
    problems = problems_of(d)
    assert len(problems) == 5, problems
    expected = ["colour: unknown field", "kubernetes.version: unsupported", "networking.service_cidr: overlaps",
                "nodes[0].address: not an IP address: '10.0.0.300'", "nodes[1].name: duplicate node name"]
    for e in expected:
        assert sum(p.startswith(e) for p in problems) == 1, (e, problems)


def test_structural_and_semantic_problems_come_together():
    d = aio(networking={"pod_cidr": "bogus", "kube_proxy_mode": "ipvs"})
    d["nodes"][0]["address"] = "nope"
    problems = problems_of(d)
    assert any(p.startswith("networking.kube_proxy_mode: Input should be") for p in problems)
    assert "networking.pod_cidr: not a CIDR: 'bogus'" in problems
    assert "nodes[0].address: not an IP address: 'nope'" in problems


def test_no_ssh_auth_source_is_fine():
    spec = load_spec(aio(ssh={"user": "admin", "sudo": "nopasswd"}))
    assert spec.ssh.private_key_file is None and spec.ssh.private_key_secret is None


def test_per_node_ssh_overrides_merge():
    d = aio(ssh={"user": "admin", "port": 2222, "private_key_file": "/k"})
    d["nodes"][0]["ssh"] = {"port": 22, "sudo": "nopasswd"}
    eff = load_spec(d).effective_ssh("node-1")
    assert (eff.user, eff.port, eff.sudo, eff.private_key_file) == ("admin", 22, "nopasswd", "/k")


def test_secrets_are_never_values_in_the_schema():
    text = json.dumps(spec_json_schema())
    props = set()

    def walk(o):
        if isinstance(o, dict):
            props.update((o.get("properties") or {}).keys())
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(spec_json_schema())
    secretish = {p for p in props if any(w in p for w in ("password", "key", "token"))}
    assert secretish and all(p.endswith(("_secret", "_file", "_keys", "_fingerprints")) for p in secretish), secretish
    assert '"additionalProperties": false' in text


def test_model_validate_without_context_applies_the_rules():
    # e.g. Prefect validating a flow parameter
    d = aio()
    d["nodes"][0]["address"] = "10.0.0.300"
    with pytest.raises(ValidationError) as exc:
        ClusterSpec.model_validate(d)
    assert "nodes[0].address: not an IP address" in str(exc.value)


@pytest.mark.parametrize("mode,data,expected", [
    ("ha", ha(cps=2), "nodes: ha needs at least 3 control-plane nodes"),
    ("ha", ha(cps=4), "nodes: ha needs an odd number of control-plane nodes"),
    ("ha", ha(endpoint={"type": "node"}), "control_plane_endpoint.type: ha needs kube_vip or load_balancer"),
    ("all_in_one", ha(), "nodes: all_in_one needs exactly one node, the spec has 5"),
    ("add_nodes", ha(), "nodes: add_nodes needs the names"),
    ("bogus", aio(), "mode: unknown mode 'bogus'"),
])
def test_mode_rules(mode, data, expected):
    problems = validate_for_mode(load_spec(data), mode)
    assert any(p.startswith(expected) for p in problems), problems


def test_add_nodes_rules():
    spec = load_spec(ha())
    assert validate_for_mode(spec, "add_nodes", ["worker-2"]) == []
    assert any("'ghost' (to add) is not a node" in p for p in validate_for_mode(spec, "add_nodes", ["ghost"]))
    assert any("'cp-1' is the first control plane" in p for p in validate_for_mode(spec, "add_nodes", ["cp-1"]))


def test_warnings_not_errors():
    spec = load_spec(aio(runtime={"containerd": {"version": "1.6.20", "source": "mirror"}},
                         mirror={"url": "http://127.0.0.1:8000/kai"},
                         kubelet={"fail_cgroup_v1": False}, ssh={"accept_new_host_keys": True}))
    w = spec_warnings(spec)
    assert any(x.startswith("runtime.containerd.version: containerd 1.6.20 is end of life") for x in w)
    assert any(x.startswith("kubelet.fail_cgroup_v1") for x in w)
    assert any(x.startswith("ssh.accept_new_host_keys") for x in w)
    assert spec_warnings(load_spec(aio())) == []


def test_effective_no_proxy_is_completed():
    spec = load_spec(ha(runtime={"proxy": {"https": "http://proxy.example:3128", "no_proxy": [".corp"]}}))
    np = spec.effective_no_proxy()
    for item in [".corp", "localhost", "127.0.0.1", "10.244.0.0/16", "10.96.0.0/12", "192.168.10.100",
                 ".cluster.local"] + [n.address for n in spec.nodes]:
        assert item in np
    assert len(np) == len(set(np))


def test_load_from_text_and_file(tmp_path):
    text = "name: demo\nnodes:\n- {name: node-1, address: 192.168.10.11, roles: [control-plane]}\n"
    assert load_spec(text).name == "demo"
    f = tmp_path / "c.yaml"
    f.write_text(text)
    assert load_spec(f).name == load_spec(str(f)).name == "demo"
    assert problems_of("name: [unclosed\n")[0].startswith("<yaml>: not valid YAML")
    assert problems_of("- a\n- b\n") == ["<spec>: the spec must be a YAML mapping (name:, nodes:, …)"]


def test_missing_required_fields():
    spec, problems = collect_problems({"nodes": []})
    assert spec is None
    assert "name: required field missing" in problems
    assert any(p.startswith("nodes: List should have at least 1 item") for p in problems)


def test_settings_from_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KAI_API_PORT", "9090")
    monkeypatch.setenv("KAI_API_TOKEN", "t0ps3cret")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    s = KaiSettings()
    assert s.api_port == 9090 and s.api_host == "127.0.0.1"
    assert s.api_token.get_secret_value() == "t0ps3cret" and "t0ps3cret" not in repr(s)
    assert s.prefect_api_url == "http://127.0.0.1:4200/api"
    assert str(s.state_path()).endswith(".kai")
