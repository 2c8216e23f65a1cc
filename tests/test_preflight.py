import pytest

from installers.preflight import Finding, errors, evaluate, parse_facts_env
from installers.spec import load_spec
from tests.spec_factory import aio, ha

GOOD = {
    "os_id": "debian", "os_version_id": "12", "os_pretty": "Debian GNU/Linux 12 (bookworm)",
    "arch": "x86_64", "cpus": "2", "mem_mb": "23976", "disk_free_mb": "51234",
    "swap_total_kb": "0", "cgroup_version": "2", "systemd_state": "running", "pkg_family": "apt",
    "module_overlay": "builtin", "module_br_netfilter": "loaded",
    "binary_ip": "/usr/sbin/ip", "binary_iptables": "/usr/sbin/iptables", "binary_mount": "/usr/bin/mount",
    "binary_nsenter": "/usr/bin/nsenter", "binary_sysctl": "/usr/sbin/sysctl",
    "binary_systemctl": "/usr/bin/systemctl", "binary_curl": "/usr/bin/curl", "binary_tar": "/usr/bin/tar",
    "binary_ebtables": "/usr/sbin/ebtables", "binary_ethtool": "/usr/sbin/ethtool",
    "binary_socat": "/usr/bin/socat", "binary_conntrack": "/usr/sbin/conntrack", "binary_tc": "/usr/sbin/tc",
    "ports_in_use": "", "hostname": "node-1", "macs": "aa:bb:cc:00:00:01",
    "product_uuid": "uuid-1", "time_epoch": "1790000000", "kube_manifests_empty": "1", "etcd_dir_empty": "1",
    "containerd_version": "none", "kubelet_version": "none", "kubeadm_done": "0",
}


def facts_for(spec, **per_node):
    out = {}
    for i, node in enumerate(spec.nodes):
        f = dict(GOOD, hostname=node.name, macs=f"aa:bb:cc:00:00:{i:02x}", product_uuid=f"uuid-{i}")
        f.update(per_node.get(node.name, {}))
        out[node.name] = f
    return out


def find(findings, check, node=None):
    return [f for f in findings if f.check == check and (node is None or f.node == node)]


def test_clean_hosts_have_no_findings():
    spec = load_spec(ha())
    assert evaluate(spec, "ha", facts_for(spec)) == []


@pytest.mark.parametrize("override,check,severity,text", [
    ({"os_id": "arch", "os_pretty": "Arch Linux"}, "os", "error", "unsupported OS 'Arch Linux'"),
    ({"pkg_family": "unknown"}, "os", "error", "no supported package manager"),
    ({"arch": "riscv64"}, "arch", "error", "unsupported architecture 'riscv64'"),
    ({"cpus": "1"}, "cpus", "error", "1 CPU(s); a control plane needs ≥ 2"),
    ({"mem_mb": "1500"}, "memory", "error", "1500 MB memory; a control plane needs ≥ 1700 MB"),
    ({"disk_free_mb": "1000"}, "disk", "error", "1000 MB free"),
    ({"disk_free_mb": "10000"}, "disk", "warning", "10000 MB free"),
    ({"swap_total_kb": "2097148"}, "swap", "warning", "os-prep turns it off"),
    ({"cgroup_version": "1"}, "cgroup", "error", "cgroup v1 host"),
    ({"systemd_state": "none"}, "systemd", "error", "systemd is not running"),
    ({"systemd_state": "degraded"}, "systemd", "warning", "degraded"),
    ({"module_overlay": "missing"}, "modules", "error", "kernel module overlay"),
    ({"binary_nsenter": "missing"}, "binaries", "error", "required binary nsenter"),
    ({"binary_socat": "missing"}, "binaries", "warning", "optional binary socat"),
    ({"ports_in_use": "22,6443,10250"}, "ports", "error", "ports already in use: 6443, 10250"),
    ({"cpus": "many"}, "facts", "error", "unreadable cpus fact"),
])
def test_single_host_rules(override, check, severity, text):
    spec = load_spec(aio())
    findings = evaluate(spec, "all_in_one", {"node-1": dict(GOOD, **override)})
    hits = find(findings, check, "node-1")
    assert hits and hits[0].severity == severity and text in hits[0].message, findings


def test_control_plane_minimums_do_not_apply_to_workers():
    spec = load_spec(ha())
    findings = evaluate(spec, "ha", facts_for(spec, **{"worker-1": {"cpus": "1", "mem_mb": "1800"},
                                                       "cp-1": {"cpus": "1"}}))
    assert [f.node for f in find(findings, "cpus")] == ["cp-1"]
    assert not find(findings, "memory")


def test_cgroup_v1_allowed_by_spec_is_a_warning():
    spec = load_spec(aio(kubelet={"fail_cgroup_v1": False}))
    findings = evaluate(spec, "all_in_one", {"node-1": dict(GOOD, cgroup_version="1")})
    assert [(f.check, f.severity) for f in findings] == [("cgroup", "warning")]


def test_worker_ports_ignore_control_plane_ports():
    spec = load_spec(ha())
    findings = evaluate(spec, "ha", facts_for(spec, **{"worker-1": {"ports_in_use": "6443"},
                                                       "worker-2": {"ports_in_use": "10250"}}))
    assert [f.node for f in find(findings, "ports")] == ["worker-2"]


def test_cross_host_uniqueness_and_clock_skew():
    spec = load_spec(ha())
    facts = facts_for(spec, **{"cp-2": {"hostname": "cp-1", "product_uuid": "uuid-0",
                                        "macs": "aa:bb:cc:00:00:00,aa:bb:cc:99:99:99"},
                               "worker-2": {"time_epoch": "1790000045"}})
    findings = evaluate(spec, "ha", facts)
    assert {f.node for f in find(findings, "hostname_unique")} == {"cp-1", "cp-2"}
    assert {f.node for f in find(findings, "product_uuid_unique")} == {"cp-1", "cp-2"}
    assert {f.node for f in find(findings, "mac_unique")} == {"cp-1", "cp-2"}
    assert "hostname cp-1 is also on cp-2" in find(findings, "hostname_unique", "cp-1")[0].message
    skew = find(findings, "clock_skew")
    assert [f.node for f in skew] == ["worker-2"] and "+45 s" in skew[0].message


def test_unreadable_product_uuid_is_not_a_duplicate():
    spec = load_spec(ha())
    facts = facts_for(spec, **{n.name: {"product_uuid": "unreadable"} for n in spec.nodes})
    assert not find(evaluate(spec, "ha", facts), "product_uuid_unique")


def test_already_in_cluster_names_the_node_and_the_way_out():
    spec = load_spec(ha())
    findings = evaluate(spec, "ha", facts_for(spec, **{"cp-2": {"kubeadm_done": "1", "ports_in_use": "6443"},
                                                       "worker-1": {"kube_manifests_empty": "0"}}))
    hits = find(findings, "already_in_cluster")
    assert {f.node for f in hits} == {"cp-2", "worker-1"}
    msg = find(findings, "already_in_cluster", "cp-2")[0].message
    assert "node cp-2 is already part of a cluster" in msg and "kai reset" in msg and "add_nodes" in msg
    assert not find(findings, "ports", "cp-2")   # a member's busy ports are expected


def test_ignore_turns_errors_into_warnings():
    spec = load_spec(aio(preflight={"ignore": ["cpus", "cgroup"]}))
    findings = evaluate(spec, "all_in_one", {"node-1": dict(GOOD, cpus="1", cgroup_version="1", arch="mips")})
    assert errors(findings) == [f for f in findings if f.check == "arch"]
    assert {f.check: f.severity for f in findings} == {"cpus": "warning", "cgroup": "warning", "arch": "error"}
    assert all("ignored" in f.message for f in findings if f.check in ("cpus", "cgroup"))


def test_reset_mode_has_no_checks_and_missing_facts_are_errors():
    spec = load_spec(ha())
    assert evaluate(spec, "reset", {"cp-1": {}}) == []
    findings = evaluate(spec, "ha", {"cp-1": {}, "stranger": dict(GOOD)})
    assert {(f.node, f.check) for f in findings} == {("cp-1", "facts"), ("stranger", "facts")}


def test_parse_facts_env_and_str():
    facts = parse_facts_env("os_id=debian\nos_pretty=Debian GNU/Linux 12 (bookworm)\nmacs=a,b\nnoise\n")
    assert facts == {"os_id": "debian", "os_pretty": "Debian GNU/Linux 12 (bookworm)", "macs": "a,b"}
    assert str(Finding("n1", "swap", "warning", "m")) == "n1: warning: [swap] m"



def test_member_of_this_cluster_is_a_rerun_not_an_error():
    spec = load_spec(aio())
    node = spec.nodes[0]
    mine = {"kubeadm_done": "1", "kube_manifests_empty": "0", "kubelet_server": f"https://{spec.endpoint()}"}
    found = find(evaluate(spec, "all_in_one", facts_for(spec, **{node.name: mine})), "already_in_cluster")
    assert [f.severity for f in found] == ["warning"]
    other = dict(mine, kubelet_server="https://10.9.9.9:6443")  # another cluster's API server
    found = find(evaluate(spec, "all_in_one", facts_for(spec, **{node.name: other})), "already_in_cluster")
    assert [f.severity for f in found] == ["error"] and "kai reset" in found[0].message


def _member(spec, node, kubelet_version):
    return {"kubeadm_done": "1", "kube_manifests_empty": "0", "kubelet_version": kubelet_version,
            "kubelet_server": f"https://{spec.endpoint()}"}


@pytest.mark.parametrize("mode", ["all_in_one", "preflight"])
def test_a_changed_version_on_a_member_is_refused_naming_kai_upgrade(mode):
    spec = load_spec(aio(kubernetes={"version": "1.37"}))
    node = spec.nodes[0]
    found = find(evaluate(spec, mode, facts_for(spec, **{node.name: _member(spec, node, "v1.36.4")})),
                 "version_change")
    assert [f.severity for f in found] == ["error"], found
    msg = found[0].message
    assert f"node {node.name}" in msg and "v1.36.4" in msg and "v1.37.1" in msg
    assert "set kubernetes.version back to 1.36.4" in msg and "rebuild the cluster at 1.37" in msg
    assert "`kai upgrade SPEC --to 1.37`" in msg


def test_a_two_minor_jump_names_the_next_minor_as_the_upgrade_step():
    spec = load_spec(aio(kubernetes={"version": "1.37"}))
    node = spec.nodes[0]
    msg = find(evaluate(spec, "all_in_one", facts_for(spec, **{node.name: _member(spec, node, "v1.35.8")})),
               "version_change")[0].message
    assert "`kai upgrade SPEC --to 1.36`" in msg, msg


def test_a_patch_change_is_refused_too_and_the_same_version_is_a_plain_rerun():
    spec = load_spec(ha(kubernetes={"version": "1.36.4"}))
    facts = facts_for(spec, **{n.name: _member(spec, n, "v1.36.3") for n in spec.nodes})
    assert {f.node for f in find(evaluate(spec, "ha", facts), "version_change")} == {n.name for n in spec.nodes}
    same = facts_for(spec, **{n.name: _member(spec, n, "v1.36.4") for n in spec.nodes})
    assert not find(evaluate(spec, "ha", same), "version_change")
    # a node with packages but not yet in the cluster (an install stopped before init) may change
    fresh = facts_for(spec, **{n.name: {"kubelet_version": "v1.36.3"} for n in spec.nodes})
    assert not find(evaluate(spec, "ha", fresh), "version_change")
    # reset and rebuild throw the cluster away: the version is theirs to change
    assert not find(evaluate(spec, "reset", facts), "version_change")


def test_the_version_change_cannot_be_ignored():
    spec = load_spec(aio(kubernetes={"version": "1.37"}, preflight={"ignore": ["version_change"]}))
    node = spec.nodes[0]
    found = find(evaluate(spec, "all_in_one", facts_for(spec, **{node.name: _member(spec, node, "v1.36.4")})),
                 "version_change")
    assert [f.severity for f in found] == ["error"]
