"""Hostile specs (issue #10 §3): refused with one clear line per problem naming the field, never a
traceback, never a change of structure in a rendered file.

Addresses are documentation ones (192.0.2.0/24, fd00::/8 …): nothing here contacts any host; the
CLI tests that need a Prefect server point it at a closed loopback port.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import subprocess
import sys
import tomllib
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from installers import spec_loading
from installers.patterns import FINGERPRINT
from installers.plan import build_plan
from installers.spec import ClusterSpec, SpecError, load_spec
from tests.spec_factory import aio

REPO = Path(__file__).resolve().parent.parent


def problems_of(source) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load_spec(source)
    return exc.value.problems


def with_node(**fields) -> dict:
    d = aio()
    d["nodes"][0].update(fields)
    return d


def two_nodes(first: str, second: str) -> dict:
    d = aio()
    d["nodes"] = [{"name": "a", "address": first, "roles": ["control-plane"]},
                  {"name": "b", "address": second, "roles": ["worker"]}]
    return d


# --- one example per class of the issue, with the exact message the user reads -----------------

ZONE = "fe80::1%eth0\n203.0.113.9 evil.example"
CLASSES = [
    ("zone ID with a newline in a node address", with_node(address=ZONE),
     "nodes[0].address: contains a control character (U+000A): 'fe80::1%eth0\\n203.0.113.9 evil.example'"),
    ("zone ID in a node address", with_node(address="fe80::1%eth0"),
     "nodes[0].address: an IPv6 zone ID ('%…') is not allowed: 'fe80::1%eth0'"),
    ("zone ID in the VIP", aio(control_plane_endpoint={"type": "kube_vip", "address": "fd00::5%x",
                                                       "interface": "eth0"}),
     "control_plane_endpoint.address: an IPv6 zone ID ('%…') is not allowed: 'fd00::5%x'"),
    ("zone ID in a CIDR", aio(networking={"pod_cidr": "fd00:10::%eth0/64"}),
     "networking.pod_cidr: an IPv6 zone ID ('%…') is not allowed: 'fd00:10::%eth0/64'"),
    ("trailing newline through a `$` pattern", aio(networking={"dns_domain": "cluster.local\n"}),
     "networking.dns_domain: contains a control character (U+000A): 'cluster.local\\n'"),
    ("trailing newline in a mirror registry", aio(runtime={"containerd": {"registry_mirrors": {
        "docker.io\n": ["https://m.example"]}}}),
     "runtime.containerd.registry_mirrors['docker.io\\n'] (key): contains a control character (U+000A): "
     "'docker.io\\n'"),
    ("control character that used to reach the proxy drop-in",
     aio(runtime={"proxy": {"http": "http://p.example:3128", "no_proxy": ["a\x01b"]}}),
     "runtime.proxy.no_proxy[0]: contains a control character (U+0001): 'a\\x01b'"),
    ("one IPv6 address spelled two ways", two_nodes("FD00:0:0::11", "fd00::11"),
     "nodes[1].address: duplicate address fd00::11 (also nodes[0])"),
    ("unspecified address", with_node(address="::"),
     "nodes[0].address: :: is the unspecified address, not a host's"),
    ("multicast VIP", aio(control_plane_endpoint={"type": "kube_vip", "address": "224.0.0.18",
                                                  "interface": "eth0"}),
     "control_plane_endpoint.address: 224.0.0.18 is a multicast address, not a host's"),
    ("broadcast address", with_node(address="255.255.255.255"),
     "nodes[0].address: 255.255.255.255 is the broadcast address, not a host's"),
    ("loopback node", with_node(address="127.0.0.1"),
     "nodes[0].address: 127.0.0.1 is a loopback address; kai reaches every host over the network"),
    ("loopback, IPv4-mapped", with_node(address="::ffff:127.0.0.2"),
     "nodes[0].address: ::ffff:7f00:2 is a loopback address; kai reaches every host over the network"),
    ("non-ASCII digits in the Kubernetes version", aio(kubernetes={"version": "1.36.٤"}),
     "kubernetes.version: not a Kubernetes version (want MAJOR.MINOR or MAJOR.MINOR.PATCH): '1.36.٤'"),
    ("non-ASCII digits in a containerd version", aio(runtime={"containerd": {"version": "２.3.4"}}),
     "runtime.containerd.version: not a version (X.Y.Z): '２.3.4'"),
    ("label in a reserved namespace", with_node(labels={"node-role.kubernetes.io/worker": ""}),
     "nodes[0].labels: the kubelet refuses label 'node-role.kubernetes.io/worker': in kubernetes.io "
     "and k8s.io only kubelet.kubernetes.io, node.kubernetes.io prefixes and the well-known node "
     "labels are allowed (node-role.kubernetes.io/* must be set with kubectl after the join)"),
    ("two taints with one key and effect", with_node(taints=["gpu=a:NoSchedule", "gpu=b:NoSchedule"]),
     "nodes[0].taints[1]: a second taint with key 'gpu' and effect NoSchedule (also taints[0]); "
     "a key+effect pair must be unique"),
    ("a 1 MB value", aio(name="x" * 1_000_000),
     "name: String should have at most 1024 characters: "
     "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx… (1000000 characters)"),
    ("Secret block name of the key passphrase", aio(ssh={"private_key_passphrase_secret": "My Pass"}),
     "ssh.private_key_passphrase_secret: not a Prefect Secret block name (lowercase letters, digits, "
     "dashes): 'My Pass'"),
    ("key file that is a device", aio(ssh={"private_key_file": "/dev/zero"}),
     "ssh.private_key_file: not a regular file (a device or kernel file): '/dev/zero'"),
    ("known_hosts that is a device", aio(ssh={"known_hosts_file": "/dev/stdin"}),
     "ssh.known_hosts_file: not a regular file (a device or kernel file): '/dev/stdin'"),
    ("fingerprint with '=' padding (the runner refuses it)",
     aio(ssh={"host_key_fingerprints": {"node-1": ["SHA256:" + "A" * 43 + "="]}}),
     "ssh.host_key_fingerprints['node-1'][0]: not a SHA256 fingerprint ('SHA256:' + 43 base64 "
     "characters, no '=' padding): 'SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='"),
]


@pytest.mark.parametrize("data,expected", [c[1:] for c in CLASSES], ids=[c[0] for c in CLASSES])
def test_each_class_is_refused_with_one_clear_line(data, expected):
    problems = problems_of(data)
    assert problems == [expected]


def test_a_huge_value_makes_a_short_answer():
    d = aio(name="x" * 1_000_000)
    d["nodes"][0]["labels"] = {"a": "y" * 1_000_000}
    d["nodes"][0]["address"] = "z" * 1_000_000
    problems = problems_of(d)
    assert len(problems) == 3 and sum(map(len, problems)) < 1000, problems


def test_a_loopback_load_balancer_and_bastion_stay_allowed():
    """A local proxy on every node and an SSH tunnel's local end are real layouts."""
    d = aio(control_plane_endpoint={"type": "load_balancer", "address": "127.0.0.1"},
            ssh={"bastion": {"host": "127.0.0.1", "port": 2222}})
    assert load_spec(d).endpoint() == "127.0.0.1:6443"


def test_the_spec_and_the_runner_check_pins_with_one_pattern():
    from installers.ssh import target

    assert target.FINGERPRINT is FINGERPRINT
    assert load_spec(aio(ssh={"host_key_fingerprints": {"node-1": ["SHA256:" + "A" * 43]}}))
    for bad in ("SHA256:" + "A" * 43 + "\n", "SHA256:" + "A" * 42 + "é"):
        assert problems_of(aio(ssh={"host_key_fingerprints": {"node-1": [bad]}}))


def test_a_taint_equal_to_kubeadm_s_own_is_not_doubled():
    from installers import kubeadm
    from tests.spec_factory import ha
    d = ha()
    d["nodes"][0]["taints"] = ["node-role.kubernetes.io/control-plane:NoSchedule"]
    spec = load_spec(d)
    taints = kubeadm.init_documents(spec, spec.nodes[0], all_in_one=False)[0]["nodeRegistration"]["taints"]
    assert taints == [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]


def test_hosts_lines_come_from_parsed_addresses():
    from installers import render
    d = two_nodes("FD00:0:0::11", "192.0.2.12")
    lines = render.hosts_block(load_spec(d)).splitlines()
    assert lines[1:3] == ["fd00::11\ta", "192.0.2.12\tb"]
    spec = load_spec(aio())
    forged = spec.model_copy(update={"nodes": [spec.nodes[0].model_copy(update={"address": "fe80::1%x"})]})
    with pytest.raises(ValueError, match="zone ID"):
        render.hosts_block(forged)


# --- loading: files, YAML, data ----------------------------------------------------------------

def test_files_that_cannot_be_specs_are_refused_before_reading(tmp_path):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    big = tmp_path / "big.yaml"
    big.write_text("name: x\n" + "#" * spec_loading.MAX_SPEC_BYTES + "\n")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"name: d\xe9mo\n")
    cases = {
        "/dev/zero": "<file>: '/dev/zero' is a character device, not a regular file",
        str(fifo): f"<file>: {str(fifo)!r} is a FIFO, not a regular file",
        str(tmp_path): f"<file>: {str(tmp_path)!r} is a directory, not a regular file",
        str(big): f"<file>: {str(big)!r} is too large ({big.stat().st_size} bytes; a spec has at most 1048576)",
        str(latin1): f"<file>: {str(latin1)!r} is not UTF-8 text (byte 0xe9 at offset 7)",
    }
    for path, expected in cases.items():
        assert problems_of(Path(path)) == [expected]


def test_yaml_that_safe_load_would_take_or_crash_on():
    deep = "name: " + "[" * 500 + "]" * 500 + "\n"
    assert problems_of(deep) == ["<yaml>: line 1: nested deeper than 32 levels"]
    dup = "name: a\nnodes:\n  - name: n1\n    address: 192.0.2.1\n    name: n2\n    roles: [worker]\nname: b\n"
    assert problems_of(dup) == [
        "nodes[0].name: duplicate key on line 5 (first on line 3); give each key once",
        "name: duplicate key on line 7 (first on line 1); give each key once"]
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi"))
    assert problems_of(laughs) == ["<spec>: too large (more than 100000 values, YAML aliases expanded)"]
    assert problems_of("a: &a [*a]\n") == ["<spec>: nested deeper than 32 levels"]
    bad = problems_of("name: [unclosed\n")
    assert len(bad) == 1 and bad[0].startswith("<yaml>: not valid YAML: line 2, column 1:"), bad
    assert problems_of("name: \x01\n")[0].startswith("<yaml>: not valid YAML: unacceptable character")


def test_deep_data_from_a_rest_body_is_refused_before_it_is_copied():
    d = aio()
    inner: Any = "x"
    for _ in range(5000):
        inner = [inner]
    d["nodes"][0]["labels"] = {"a": inner}
    assert problems_of(d) == ["<spec>: nested deeper than 32 levels"]


def test_lone_surrogates_from_json_are_refused():
    assert problems_of(aio(name="demo\ud800")) == [
        "name: Input should be a valid string, unable to parse raw data as a unicode string: 'demo\\ud800'"]


# --- the property: every free string field, hostile values --------------------------------------

def _bastion(host: str, by_file: bool) -> dict:
    if not by_file:
        return {"host": host, "private_key_secret": f"{host.replace('.', '-')}-key"}
    return {"host": host, "user": "jump", "private_key_file": "/nonexistent/kai/jump_key",
            "private_key_passphrase_secret": "jump-pass", "password_secret": "jump-pw",
            "known_hosts_file": "/nonexistent/kai/jump_known",
            "host_key_fingerprints": ["SHA256:" + "B" * 43]}


def rich_spec(endpoint: dict, bastion_by_file: bool) -> dict:
    """A spec where every free string field of the model holds a value (see the coverage test)."""
    nodes = [{"name": f"cp-{i}", "address": f"192.0.2.{10 + i}", "roles": ["control-plane"],
              "labels": {"zone": "a"}, "taints": ["dedicated=infra:NoSchedule"]} for i in (1, 2, 3)]
    nodes.append({"name": "worker-1", "address": "192.0.2.21", "roles": ["worker"],
                  "labels": {"example.com/tier": "web"}, "taints": [],
                  "ssh": {"user": "deploy", "private_key_file": "/nonexistent/kai/id_ed25519",
                          "private_key_passphrase_secret": "worker-key-pass",
                          "password_secret": "worker-pw", "sudo_password_secret": "worker-sudo",
                          "known_hosts_file": "/nonexistent/kai/known_hosts",
                          "bastion": _bastion("bastion.example", True)}})
    nodes.append({"name": "worker-2", "address": "192.0.2.22", "roles": ["worker"],
                  "ssh": {"private_key_secret": "worker2-key", "sudo": "password",
                          "bastion": _bastion("bastion2.example", False)}})
    return {
        "name": "demo-ha",
        "kubernetes": {"version": "1.36", "packages": {"repo_url": "https://pkgs.example/k8s"}},
        "control_plane_endpoint": endpoint,
        "networking": {"pod_cidr": "10.244.0.0/16", "service_cidr": "10.96.0.0/12",
                       "dns_domain": "cluster.local"},
        "runtime": {"containerd": {"version": "2.3.4", "runc_version": "1.4.0",
                                   "cni_plugins_version": "1.8.0",
                                   "sandbox_image": "registry.example/pause:3.10",
                                   "registry_mirrors": {"docker.io": ["https://m1.example/v2"],
                                                        "quay.io": ["https://m2.example"]}},
                    "proxy": {"http": "http://proxy.example:3128", "https": "http://proxy.example:3129",
                              "no_proxy": ["internal.example"]}},
        "mirror": {"url": "http://mirror.example/kai"},
        "nodes": nodes,
        "ssh": {"user": "admin",
                **({"private_key_secret": "cluster-key"} if bastion_by_file
                   else {"private_key_file": "/nonexistent/kai/cluster_key"}),
                "private_key_passphrase_secret": "cluster-key-pass", "password_secret": "cluster-pw",
                "sudo": "nopasswd", "sudo_password_secret": "cluster-sudo",
                "known_hosts_file": "/nonexistent/kai/cluster_known",
                "host_key_fingerprints": {"cp-1": ["SHA256:" + "A" * 43]},
                "bastion": _bastion("192.0.2.200", bastion_by_file)},
        "preflight": {"ignore": ["swap"]},
        "etcd_backup": {"directory": "/nonexistent/kai/etcd-backups", "keep": 3},
        "addons": {"monitoring": True, "checksums": {"components.yaml": "ab" * 32}},
    }


BASES = {
    "kube_vip": rich_spec({"type": "kube_vip", "address": "192.0.2.100", "interface": "eth0"}, True),
    "load_balancer": rich_spec({"type": "load_balancer", "address": "lb.example", "port": 6443}, False),
}


def _string_paths(ann: Any, prefix: tuple) -> set[tuple]:
    """Generic paths of the free strings under a type: '[]' a list item, '{}' a mapping value,
    '{key}' a mapping key."""
    origin, args = get_origin(ann), get_args(ann)
    if ann is str:
        return {prefix}
    if origin is Annotated:
        return _string_paths(args[0], prefix)
    if origin in (Union, types.UnionType):
        return set().union(*(_string_paths(a, prefix) for a in args))
    if origin is list:
        return _string_paths(args[0], prefix + ("[]",))
    if origin is dict:
        return _string_paths(args[0], prefix + ("{key}",)) | _string_paths(args[1], prefix + ("{}",))
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return set().union(set(), *(_string_paths(f.annotation, prefix + (name,))
                                    for name, f in ann.model_fields.items()))
    assert origin is Literal or ann in (int, float, bool, type(None)), ann  # nothing free in these
    return set()


FREE_STRINGS = _string_paths(ClusterSpec, ())


def _sites(data: Any, generic: tuple = (), concrete: tuple = ()) -> list[tuple[tuple, tuple]]:
    """(generic path, concrete path) of every free string in data; a key's concrete path ends
    with ('{key}', key)."""
    out = []
    if isinstance(data, dict):
        for key, value in data.items():
            if generic + ("{key}",) in FREE_STRINGS:
                out.append((generic + ("{key}",), concrete + ("{key}", key)))
                out += _sites(value, generic + ("{}",), concrete + (key,))
            else:
                out += _sites(value, generic + (key,), concrete + (key,))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            out += _sites(item, generic + ("[]",), concrete + (i,))
    elif isinstance(data, str) and generic in FREE_STRINGS:
        out.append((generic, concrete))
    return out


SITES = [(base, concrete) for base, data in BASES.items() for _, concrete in _sites(data)]


def test_the_rich_specs_cover_every_free_string_field():
    covered = {generic for data in BASES.values() for generic, _ in _sites(data)}
    assert covered == FREE_STRINGS, FREE_STRINGS - covered
    for data in BASES.values():
        load_spec(data)  # and they are valid


def _get(data: dict, concrete: tuple) -> str:
    *parents, last = concrete
    if len(parents) and parents[-1] == "{key}":
        return last
    for part in parents:
        data = data[part]
    return data[last]


def _get_parent(data: dict, path: tuple) -> Any:
    for part in path:
        data = data[part]
    return data


def _set(data: dict, concrete: tuple, value: str) -> dict:
    data = copy.deepcopy(data)
    if len(concrete) >= 2 and concrete[-2] == "{key}":
        parent = data
        for part in concrete[:-2]:
            parent = parent[part]
        old = concrete[-1]
        parent[value] = parent.pop(old)
        return data
    parent = data
    for part in concrete[:-1]:
        parent = parent[part]
    parent[concrete[-1]] = value
    return data


MODES = ("ha", "add_nodes", "reset")
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
TOP_FIELDS = {"<spec>", "<yaml>", "<file>", *ClusterSpec.model_fields}


def _rendered(spec: ClusterSpec, modes: tuple[str, ...] = MODES) -> dict[tuple, str]:
    out = {}
    for mode in modes:
        nodes = [n.name for n in spec.workers()] if mode == "add_nodes" else None
        for step in build_plan(spec, mode, nodes=nodes).steps():
            for i, job in enumerate(step.jobs):
                for k, v in job.env.items():
                    assert not CONTROL.search(v), (step.name, k, v)
                for name, text in job.files.items():
                    out[(mode, step.name, i, name)] = text
    return out


def _systemd_unit(text: str) -> list:
    """Strict reading of a unit file: sections, Key=Value, Environment="K=V" quoting undone."""
    out, section = [], None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if re.fullmatch(r"\[[A-Za-z]+\]", line):
            section = line
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z]+", key) and section, line
        if key == "Environment":
            assert len(value) >= 2 and value[0] == value[-1] == '"', line
            body, chars, i = value[1:-1], [], 0
            while i < len(body):
                if body[i] == "\\":
                    assert body[i + 1] in '\\"', line
                    chars.append(body[i + 1]); i += 2
                elif body[i] == "%":
                    assert body[i + 1] == "%", line
                    chars.append("%"); i += 2
                else:
                    assert body[i] != '"', line
                    chars.append(body[i]); i += 1
            name = "".join(chars).partition("=")[0]
            assert re.fullmatch(r"[A-Z_]+", name), line
            out.append((section, key, name))
        else:
            out.append((section, key))
    return out


def _hosts(text: str) -> list:
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            assert line.startswith(("# BEGIN kai managed block (cluster ", "# END kai managed block")), line
            out.append("marker")
            continue
        address, name = line.split("\t")
        assert "%" not in address and str(ipaddress.ip_address(address)) == address, line
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name), line
        out.append("entry")
    return out


def _mirrors_list(text: str) -> list:
    lines = text.splitlines()
    for line in lines:
        registry, name = line.split("\t")
        assert re.fullmatch(r"mirror-[0-9]+\.toml", name) and registry and " " not in registry, line
    return ["entry"] * len(lines)


def _shape(value: Any) -> Any:
    """The structure of parsed data: keys (URL keys are data), list lengths, scalar types."""
    if isinstance(value, dict):
        return {("<url>" if "://" in k else k): _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


def structure(name: str, text: str) -> Any:
    """Parse a rendered file with its own format's parser; the structure of what it holds."""
    if name.endswith(".yaml"):
        return _shape(list(yaml.safe_load_all(text)))
    if name.endswith(".toml"):
        return _shape(tomllib.loads(text))
    if name in ("proxy.conf", "kubelet-proxy.conf"):
        return _systemd_unit(text)
    if name == "hosts":
        return _hosts(text)
    if name == "mirrors.list":
        return _mirrors_list(text)
    if name == "sysctl.conf":  # its lines depend on the pod CIDR's IP version
        assert all(re.fullmatch(r"#.*|[a-z0-9_.-]+ = [0-9]+", line) for line in text.splitlines())
        return "sysctl"
    if name == "modules.conf":
        return [line for line in text.splitlines()]
    raise AssertionError(f"no parser for rendered file {name!r}: add one")


BENIGN_TEXT = {base: _rendered(load_spec(data)) for base, data in BASES.items()}
BENIGN = {base: {key: structure(key[-1], text) for key, text in texts.items()}
          for base, texts in BENIGN_TEXT.items()}


def _reaches_files(base: str, concrete: tuple) -> bool:
    """Whether the site's value shows in a rendered file or env value of the benign spec."""
    value = _get(BASES[base], concrete)
    spec = load_spec(BASES[base])
    envs = [v for mode in MODES for step in build_plan(
        spec, mode, nodes=[n.name for n in spec.workers()] if mode == "add_nodes" else None).steps()
        for job in step.jobs for v in job.env.values()]
    return any(value in text for text in [*BENIGN_TEXT[base].values(), *envs])

HOSTILE_PIECES = ["\n", "\r\n", "\t", "\x00", "\x1b[31m", "\x7f", "\x85", "\u2028", "\ud800", '"', "'",
                  "\\", "%", "%n", "%%", "$(reboot)", "`id`", ";", "#", "[", "]", "{", "}", "=", ":",
                  ",", " ", "/", "..", "*", "&a", "!!python/object", "---", "- ", ": ", "é", "日本",
                  "١", "٤", "²", "\u202e", "\ufeff", "fe80::1%eth0", "%25", "x" * 2000, "true", "null",
                  "0x1", "1e3", "\\n", "__KAI_JOIN_TOKEN__", "]\n[host.\"evil\"]", "\n127.0.0.1 evil"]
hostile_text = st.lists(st.one_of(st.sampled_from(HOSTILE_PIECES), st.text(min_size=1, max_size=4)),
                        min_size=1, max_size=4).map("".join)


@st.composite
def hostile_case(draw):
    base, concrete = draw(st.sampled_from(SITES))
    benign = _get(BASES[base], concrete)
    value = draw(st.sampled_from(_variants(benign, draw(hostile_text))))
    if concrete[-2:-1] == ("{key}",):  # a new key must not overwrite a sibling
        siblings = _get_parent(BASES[base], concrete[:-2])
        assume(value not in siblings)
    return base, concrete, value


def _top(concrete: tuple) -> str:
    return str(concrete[0])


def _top_of(problem: str) -> str:
    """The top-level field a problem names: 'nodes' of 'nodes[3].ssh.user: …'."""
    return re.split(r"[.\[: ]", problem, maxsplit=1)[0]


def _variants(benign: str, piece: str) -> list[str]:
    middle = len(benign) // 2
    return [piece, benign + piece, piece + benign, benign[:middle] + piece + benign[middle:]]


@pytest.mark.parametrize("base,concrete", SITES, ids=[f"{b}:{c}" for b, c in SITES])
def test_every_hostile_piece_in_every_free_field_is_refused_or_stays_data(base, concrete):
    """Exhaustive over the pieces (deterministic); the hypothesis test below combines them."""
    benign = _get(BASES[base], concrete)
    siblings = _get_parent(BASES[base], concrete[:-2]) if concrete[-2:-1] == ("{key}",) else {}
    # rendering every accepted value is what costs (~0.1 s); a value that reaches no file is
    # only loaded here (the hypothesis test renders everything it accepts)
    modes = ("ha",) if _reaches_files(base, concrete) else ()
    for piece in HOSTILE_PIECES:
        for value in _variants(benign, piece)[::3]:  # the piece alone, and inside the value
            if value not in siblings:
                check_refused_or_data(base, concrete, value, modes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=hostile_case())
def test_hostile_strings_in_every_free_field_are_refused_or_stay_data(case):
    check_refused_or_data(*case)


def check_refused_or_data(base: str, concrete: tuple, value: str, modes: tuple = MODES) -> None:
    data = _set(BASES[base], concrete, value)
    try:
        spec = load_spec(data)
    except SpecError as exc:  # refused: one bounded line per problem, each naming a field
        assert exc.problems
        for problem in exc.problems:
            assert _top_of(problem) in TOP_FIELDS and ": " in problem and problem.isprintable(), problem
            assert len(problem) <= spec_loading.MAX_PROBLEM_CHARS + 1, problem
        tops = {_top(concrete)} | ({"ssh"} if concrete[0] == "nodes" else set())
        assert any(_top_of(p) in tops for p in exc.problems), (concrete, exc.problems)
        return
    # accepted: every rendered file parses with its own format's parser into the same structure
    rendered = _rendered(spec, modes)
    assert set(rendered) == {key for key in BENIGN[base] if key[0] in modes}, concrete
    for key, text in rendered.items():
        if text != BENIGN_TEXT[base][key]:  # (an unchanged file has the benign structure)
            assert structure(key[-1], text) == BENIGN[base][key], (concrete, value, key, text)


# --- the CLI: every subcommand, broken input, no traceback --------------------------------------

def _kai(args: list[str], env_extra: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KAI_"))}
    env.update({"KAI_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(REPO),
                "PREFECT_HOME": str(tmp_path / "prefect-home")}, **env_extra)
    return subprocess.run([sys.executable, "-m", "deployments.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def broken_specs(tmp_path):
    files = {
        "zone.yaml": yaml.safe_dump(with_node(address=ZONE)),
        "deep.yaml": "name: " + "[" * 500 + "]" * 500 + "\n",
        "dup.yaml": "name: a\nname: b\n",
        "binary.yaml": b"name: \xff\xfe\n",
        "control.yaml": yaml.safe_dump(aio(runtime={"proxy": {"http": "http://p:1\x07"}})),
        "not-yaml.yaml": "name: [\n",
        "list.yaml": "- a\n- b\n",
    }
    for name, text in files.items():
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return [str(tmp_path / n) for n in files] + ["/dev/zero", str(tmp_path / "missing.yaml"), str(tmp_path)]


def _assert_clean_failure(result: subprocess.CompletedProcess, args: list[str]) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, (args, output)
    assert "Traceback" not in output, (args, output)
    assert result.stderr.strip(), args
    for line in result.stderr.splitlines():
        assert len(line) <= 600 and line.isprintable(), (args, line)


def test_spec_subcommands_refuse_broken_specs_without_a_traceback(tmp_path, broken_specs):
    """`plan` gets every broken spec; the other spec subcommands take turns (each run is a process)."""
    others = [["hosts", "check", "{}"], ["install", "{}"], ["install", "{}", "--mode", "ha"],
              ["reset", "{}", "--detach"], ["kubeconfig", "{}"]]
    for i, spec_path in enumerate(broken_specs):
        for command in (["plan", "{}", "--scripts"], others[i % len(others)]):
            args = [spec_path if a == "{}" else a for a in command]
            result = _kai(args, {}, tmp_path)
            _assert_clean_failure(result, args)
            assert result.returncode == 2, (args, result.stderr)


def test_other_subcommands_fail_cleanly_on_broken_input(tmp_path):
    from tests.support.ports import closed_port

    dead_server = {"PREFECT_API_URL": f"http://127.0.0.1:{closed_port()}/api"}
    cases = [
        (["schema", "-o", str(tmp_path / "missing-dir" / "schema.json")], {}),
        (["init", "-o", str(tmp_path / "missing-dir" / "cluster.yaml")], {}),
        (["init", "-o", str(tmp_path)], {}),
        (["plan", "/dev/zero", "--mode", "sideways"], {}),
        (["status", "no-such-run"], {}),
        (["logs", "no-such-run"], {}),
        (["cancel", "no-such-run"], {}),
        (["status", "not-a-uuid\n"], dead_server),
        (["logs", "00000000-0000-0000-0000-000000000000", "--limit", "5"], dead_server),
        (["cancel", "00000000-0000-0000-0000-000000000000"], dead_server),
        (["install", str(REPO / "examples" / "all-in-one.yaml"), "--detach"], dead_server),
        (["serve"], {"KAI_API_PORT": "not-a-port"}),
        (["plan"], {}),                     # argparse: missing argument
        (["no-such-command"], {}),
    ]
    for args, env in cases:
        _assert_clean_failure(_kai(args, env, tmp_path), args)


# --- the REST API: hostile bodies are 422 (old bodies 400) with one line per problem, never a 500 ------------------

def test_rest_bodies_with_hostile_specs_are_422_listing_each_problem():
    from fastapi.testclient import TestClient

    from deployments.api import create_app
    from tests.test_control import FakeControl

    class Validating(FakeControl):
        def start(self, mode, spec, **kw):
            control.validate(mode, spec, kw.get("nodes"))  # what the real start does first
            return super().start(mode, spec, **kw)

    from deployments import control
    client = TestClient(create_app("t0ken", ctl=Validating()), raise_server_exceptions=False)
    h = {"Authorization": "Bearer t0ken"}
    deep: Any = "x"
    for _ in range(200):
        deep = {"a": deep}
    bodies = [
        ({"spec": with_node(address=ZONE)}, "nodes[0].address: contains a control character"),
        ({"spec": aio(name="n" * 2_000_000)}, "name: String should have at most 1024 characters"),
        ({"spec": dict(aio(), extra=deep)}, "spec: <spec>: nested deeper than 32 levels"),
        ({"spec": aio(nodes=[{"name": "a\n", "address": "::", "roles": ["worker"],
                              "labels": {"kubernetes.io/evil": "\x00"}}])}, "nodes[0].name:"),
        ({"cluster_name": "old\n", "host": "fe80::1%eth0", "ssh_config": {"key_path": "/dev/zero"}},
         "cluster_name (name): contains a control character"),
        ({"cluster_name": "old", "masters": ["fd00::1", "FD00:0::1", "fd00::2"],
          "load_balancer": "[fe80::1%x]:6443"}, "masters[1] (nodes[1].address): duplicate address"),
    ]
    for body, expected in bodies:
        mode = "ha_secure" if "masters" in body else "all_in_one"
        r = client.post(f"/api/v1/installation/{mode}/start", headers=h, json=body)
        code = 422 if "spec" in body else 400  # an invalid old body: the old contract's 400
        assert r.status_code == code, (r.status_code, r.text[:500])
        assert len(r.json()["error"]) <= 10 * 620, len(r.json()["error"])
        problems = r.json()["problems"]
        assert any(p.startswith(expected) for p in problems), (expected, problems)
        assert all(p.isprintable() and len(p) <= 600 for p in problems), problems


def test_every_string_of_the_model_is_bounded():
    """A new `str` field must be `Text` (bounded, no control characters): the schema shows it."""
    from installers.spec import spec_json_schema

    unbounded = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "string" and "enum" not in node and "const" not in node \
                    and node.get("maxLength") != spec_loading.MAX_STRING_LENGTH:
                unbounded.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")

    walk(spec_json_schema(), "#")
    assert not unbounded, unbounded
