"""remove_nodes' node scripts, run for real in a sandbox against strict fake kubectl and crictl
(tests/scripts_harness.py). The etcd part follows the contract agreed for the test clusters' real
etcd: `crictl ps --name etcd --state running -q`, then `crictl exec <id> etcdctl … member list -w
json` / `member remove <hex id>`; once more against Debian's real etcd (the test hosts' binary: three
members on loopback, one killed and removed by its ID, 3 -> 2)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.scripts_harness import SCRIPTS_DIR, ScriptNode, can_sandbox
from tests.support.etcd import LoopbackEtcd

SCRIPTS = ["remove-reachable.sh", "remove-cordon.sh", "remove-drain.sh", "remove-kube-vip.sh",
           "remove-etcd-member.sh", "remove-delete-node.sh", "hosts-block.sh"]
needs_sandbox = pytest.mark.skipif(not can_sandbox(), reason="needs root and unshare")
ADMIN = "apiVersion: v1\nkind: Config\n"
ETCDCTL_FLAGS = ("etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt "
                 "--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt "
                 "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key")


@pytest.fixture
def node(tmp_path: Path) -> ScriptNode:
    n = ScriptNode(tmp_path / "node")
    n.etc("kubernetes/admin.conf", ADMIN)
    return n


@pytest.mark.parametrize("script", SCRIPTS)
def test_shellcheck_clean_and_the_kai_header(script: str) -> None:
    assert shutil.which("shellcheck"), "shellcheck is required (apt-get install shellcheck)"
    res = subprocess.run(["shellcheck", "-x", "-P", str(SCRIPTS_DIR), str(SCRIPTS_DIR / script)],
                         capture_output=True, text=True, cwd=SCRIPTS_DIR)
    assert res.returncode == 0 and res.stdout == "", res.stdout + res.stderr
    text = (SCRIPTS_DIR / script).read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
    assert '. "${0%/*}/lib.sh"' in text


@pytest.mark.parametrize("script,first_required", [
    ("remove-reachable.sh", "KAI_NODE_NAME"), ("remove-cordon.sh", "KAI_NODES"),
    ("remove-drain.sh", "KAI_NODE_NAME"), ("remove-kube-vip.sh", "KAI_VIP"),
    ("remove-etcd-member.sh", "KAI_NODE_NAME"), ("remove-delete-node.sh", "KAI_NODE_NAME"),
    ("hosts-block.sh", "KAI_FILES_DIR")])
def test_missing_input_is_named_before_anything(tmp_path: Path, script: str, first_required: str) -> None:
    res = subprocess.run(["bash", str(SCRIPTS_DIR / script)], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "KAI_STATE_DIR": str(tmp_path)})
    assert res.returncode != 0 and f"{first_required} is required" in res.stderr
    assert not list(tmp_path.iterdir())


def fake_kubectl(node: ScriptNode, *, drain: str = "", registered: str = "w1") -> None:
    """kubectl: `--kubeconfig /etc/kubernetes/admin.conf` always; get/cordon/drain/delete node."""
    node.fake("kubectl", f"""
echo "$*" >> {node.root}/kubectl.log
[[ $1 == --kubeconfig && $2 == /etc/kubernetes/admin.conf ]] || {{ echo "fake: no admin kubeconfig: $*" >&2; exit 64; }}
shift 2
registered=" $(cat {node.root}/registered 2>/dev/null || echo '{registered}') "
case "$1 $2" in
  "get node")
    if [[ $registered == *" $3 "* ]]; then echo "$3   Ready"; exit 0; fi
    echo "Error from server (NotFound): nodes \\"$3\\" not found" >&2; exit 1 ;;
  "cordon "*) echo "node/$2 cordoned" ;;
  "drain "*)
    [[ "$*" == "drain $2 --ignore-daemonsets --delete-emptydir-data --timeout="*s ]] || {{ echo "fake: $*" >&2; exit 64; }}
    {drain or 'echo "node/$2 drained"'} ;;
  "delete node")
    [[ $4 == --ignore-not-found ]] || exit 64
    echo "node \\"$3\\" deleted"; echo "{node.root}/gone" > /dev/null
    [[ -f {node.root}/comes-back ]] || echo "" > {node.root}/registered ;;
  *) echo "fake kubectl: unsupported: $*" >&2; exit 64 ;;
esac
""")


PDB_TIMEOUT = r'''
echo "evicting pod default/web-7d4f9"
echo 'error when evicting pods/"web-7d4f9" -n "default" (will retry after 5s): Cannot evict pod as it would violate the pod'"'"'s disruption budget.' >&2
echo 'error: unable to drain node "w1" due to error: error when evicting pods/"web-7d4f9" -n "default": global timeout reached: 20s, continuing command...' >&2
echo 'There are pending nodes to be drained:' >&2
echo ' w1' >&2
echo 'error when evicting pods/"web-7d4f9" -n "default": global timeout reached: 20s' >&2
exit 1'''


@needs_sandbox
def test_drain_timeout_names_the_pod_its_budget_blocks(node: ScriptNode) -> None:
    fake_kubectl(node, drain=PDB_TIMEOUT)
    res = node.run("remove-drain.sh", {"KAI_NODE_NAME": "w1", "KAI_DRAIN_TIMEOUT_S": "20"}, sandbox=True)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last == ("ERROR: drain of w1 failed (timeout 20s): blocked by pod(s) default/web-7d4f9: "
                    "Cannot evict pod as it would violate the pod's disruption budget."), res.stderr
    assert "--timeout=20s" in (node.root / "kubectl.log").read_text()


@needs_sandbox
def test_drain_refused_for_a_bare_pod_says_why(node: ScriptNode) -> None:
    fake_kubectl(node, drain=r'''
echo 'error: unable to drain node "w1" due to error: cannot delete Pods that declare no controller (use --force to override): default/bare, continuing command...' >&2
exit 1''')
    res = node.run("remove-drain.sh", {"KAI_NODE_NAME": "w1", "KAI_DRAIN_TIMEOUT_S": "20"}, sandbox=True)
    assert res.returncode == 1
    assert "cannot delete Pods that declare no controller (use --force to override): default/bare" \
        in res.stderr.strip().splitlines()[-1], res.stderr


@needs_sandbox
def test_drain_and_cordon_skip_a_node_already_deleted(node: ScriptNode) -> None:
    fake_kubectl(node, registered="w2")
    res = node.run("remove-drain.sh", {"KAI_NODE_NAME": "w1", "KAI_DRAIN_TIMEOUT_S": "20"}, sandbox=True)
    assert res.returncode == 0 and "w1: not registered (already deleted): nothing to drain" in res.stdout
    res = node.run("remove-cordon.sh", {"KAI_NODES": "w1 w2"}, sandbox=True)
    assert res.returncode == 0, res.stderr
    assert "w1: not registered" in res.stdout and "node/w2 cordoned" in res.stdout
    assert "drain" not in (node.root / "kubectl.log").read_text()


@needs_sandbox
def test_drain_needs_the_admin_kubeconfig(tmp_path: Path) -> None:
    bare = ScriptNode(tmp_path / "bare")
    fake_kubectl(bare)
    res = bare.run("remove-drain.sh", {"KAI_NODE_NAME": "w1", "KAI_DRAIN_TIMEOUT_S": "20"}, sandbox=True)
    assert res.returncode != 0 and "/etc/kubernetes/admin.conf is missing" in res.stderr


@needs_sandbox
def test_delete_node_fails_when_the_node_comes_back(node: ScriptNode) -> None:
    fake_kubectl(node)
    res = node.run("remove-delete-node.sh", {"KAI_NODE_NAME": "w1"}, sandbox=True)
    assert res.returncode == 0 and "node w1 is no longer registered" in res.stdout, res.stderr
    again = node.run("remove-delete-node.sh", {"KAI_NODE_NAME": "w1"}, sandbox=True)
    assert again.returncode == 0, again.stderr  # resumable: a Node already gone is fine
    (node.root / "registered").write_text("w1")
    (node.root / "comes-back").touch()  # a kubelet still running registers it again
    res = node.run("remove-delete-node.sh", {"KAI_NODE_NAME": "w1"}, sandbox=True)
    assert res.returncode == 1 and "still registered after kubectl delete node" in res.stderr


# --- etcd member removal (the contract with the test clusters' real etcd) ------------------------

BIG_ID = 17280955837393011917  # above 2**63: bash's printf %x would get it wrong
BIG_HEX = format(BIG_ID, "x")


def fake_crictl(node: ScriptNode, members: list[tuple[int, str]], running: bool = True) -> None:
    (node.root / "members.json").write_text(json.dumps(
        {"header": {"cluster_id": 14841639068965178418, "member_id": 10276657743932975437,
                    "raft_term": 3},
         "members": [{"ID": i, "name": n, "peerURLs": [f"https://10.0.0.{k}:2380"],
                      "clientURLs": [f"https://10.0.0.{k}:2379"]}
                     for k, (i, n) in enumerate(members, 1)]}))
    node.fake("crictl", f"""
echo "$*" >> {node.root}/crictl.log
if [[ "$*" == "ps --name etcd --state running -q" ]]; then
  {'echo 3f2a9c0d1e' if running else ':'}; exit 0
fi
[[ $1 == exec && $2 == 3f2a9c0d1e ]] || {{ echo "fake crictl: unsupported: $*" >&2; exit 64; }}
shift 2
flags="{ETCDCTL_FLAGS}"
[[ "$*" == "$flags "* ]] || {{ echo "fake etcdctl: wrong flags: $*" >&2; exit 64; }}
all="$*"
rest=${{all#"$flags "}}
case $rest in
  "member list -w json") cat {node.root}/members.json ;;
  "member remove "*)
    python3 - {node.root}/members.json "${{rest#member remove }}" <<'PY'
import json, sys
path, hex_id = sys.argv[1], sys.argv[2]
data = json.load(open(path))
left = [m for m in data["members"] if format(m["ID"], "x") != hex_id]
if len(left) == len(data["members"]):
    sys.exit(f"Error: etcdserver: member not found")
data["members"] = left
json.dump(data, open(path, "w"))
print(f"Member {{hex_id}} removed from cluster {{data['header']['cluster_id']:x}}")
PY
    ;;
  *) echo "fake etcdctl: unsupported: $rest" >&2; exit 64 ;;
esac
""")


def test_etcd_member_of_a_dead_control_plane_is_removed_by_its_hex_id(node: ScriptNode) -> None:
    fake_crictl(node, [(10276657743932975437, "cp1"), (BIG_ID, "cp3"), (5, "cp2")])
    res = node.run("remove-etcd-member.sh", {"KAI_NODE_NAME": "cp3"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"removing etcd member cp3 ({BIG_HEX})" in res.stdout
    assert f"member remove {BIG_HEX}" in (node.root / "crictl.log").read_text()
    left = [m["name"] for m in json.loads((node.root / "members.json").read_text())["members"]]
    assert left == ["cp1", "cp2"]
    again = node.run("remove-etcd-member.sh", {"KAI_NODE_NAME": "cp3"})
    assert again.returncode == 0 and "no member named cp3 (already removed)" in again.stdout


def test_etcd_member_removal_needs_a_running_etcd(node: ScriptNode) -> None:
    fake_crictl(node, [(1, "cp1")], running=False)
    res = node.run("remove-etcd-member.sh", {"KAI_NODE_NAME": "cp3"})
    assert res.returncode != 0 and "no running etcd container on this control plane" in res.stderr


@pytest.mark.parametrize("dec", [0, 1, 15, 16, 255, 2**63 - 1, 2**63, BIG_ID, 2**64 - 1])
def test_member_ids_in_hex(tmp_path: Path, dec: int) -> None:
    text = (SCRIPTS_DIR / "remove-etcd-member.sh").read_text()
    function = text[text.index("kai_dec_to_hex() {"):text.index("\n}\n", text.index("kai_dec_to_hex() {")) + 3]
    res = subprocess.run(["bash", "-c", f"set -euo pipefail\nkai_die() {{ echo \"$*\" >&2; exit 1; }}\n"
                                        f"{function}\nkai_dec_to_hex {dec}"],
                         capture_output=True, text=True)
    assert res.stdout.strip() == format(dec, "x"), res.stderr



# --- the same script against a real etcd: Debian's (the test hosts'), three members on loopback ----

def crictl_into(node: ScriptNode, etcd: LoopbackEtcd, member: str) -> None:
    """crictl as on `member`'s control plane: `ps` finds its etcd container; `exec` runs the real
    etcdctl with exactly the script's flags, as inside that container: there 127.0.0.1:2379 is
    this member's client port and /etc/kubernetes/pki/etcd the PKI mounted from the node."""
    node.fake("crictl", f"""
if [[ "$*" == "ps --name etcd --state running -q" ]]; then
  echo 5e1f0c0ffee; exit 0
fi
[[ $1 == exec && $2 == 5e1f0c0ffee ]] || {{ echo "fake crictl: unsupported: $*" >&2; exit 64; }}
shift 2
flags="{ETCDCTL_FLAGS}"
[[ "$*" == "$flags "* ]] || {{ echo "fake crictl: etcdctl with other flags: $*" >&2; exit 64; }}
all="$*"
rest=${{all#"$flags "}}
# $rest unquoted: etcdctl's own words (member list -w json, member remove ID)
exec {etcd.etcdctl_bin} --endpoints=https://127.0.0.1:{etcd.ports[member][0]} --cacert={etcd.pki}/ca.crt \\
  --cert={etcd.pki}/healthcheck-client.crt --key={etcd.pki}/healthcheck-client.key $rest
""")


@pytest.mark.hosts
def test_a_dead_members_removal_by_its_id_against_a_real_etcd(tmp_path: Path) -> None:
    """remove_nodes --force on a dead control plane, 3 -> 2: its member goes by its hex ID (etcd's
    random 64-bit IDs, half of them above 2**63), the two left keep quorum; a rerun finds it gone.
    Then 2 -> 1 (what kai refuses before it starts): etcd itself cannot do it with one member dead."""
    from tests.hosts.fixtures import require
    from tests.hosts.rootfs import ensure_rootfs
    from tests.support.wait import wait_until

    require(booted=True)  # Debian's etcd comes with the test hosts' rootfs (debootstrap)
    rootfs, _ = ensure_rootfs()
    etcd = LoopbackEtcd(rootfs / "usr" / "bin", tmp_path / "etcd", 3)
    try:
        wait_until(lambda: "the loopback etcd did not become healthy:\n" + etcd.logs(),
                   lambda: etcd.healthy(["m1", "m2", "m3"]), 60)
        ids = etcd.members("m1")
        assert sorted(ids) == ["m1", "m2", "m3"], ids
        etcd.kill("m3")
        # The kill may take the leader: until the two left have elected one (1-3 s), `member
        # remove` times out (measured: "context deadline exceeded" after etcdctl's 5 s). kai's
        # step retries (step_kinds: etcd_member_remove, 2 more attempts after 10 s and 20 s); a --force
        # run reaches this step after its checks, well after the election.
        wait_until("m1 and m2 have no leader after m3's death", lambda: etcd.healthy(["m1", "m2"]), 30)
        node = ScriptNode(tmp_path / "node")
        crictl_into(node, etcd, "m1")
        res = node.run("remove-etcd-member.sh", {"KAI_NODE_NAME": "m3"})
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"removing etcd member m3 ({format(ids['m3'], 'x')})" in res.stdout, res.stdout
        assert "etcd member m3 removed" in res.stdout
        assert etcd.members("m2") == {"m1": ids["m1"], "m2": ids["m2"]}
        assert etcd.healthy(["m1", "m2"]), "the two members left lost quorum"
        again = node.run("remove-etcd-member.sh", {"KAI_NODE_NAME": "m3"})
        assert again.returncode == 0 and "etcd has no member named m3 (already removed)" in again.stdout, \
            again.stdout + again.stderr

        etcd.kill("m2")
        res = node.run("remove-etcd-member.sh", {"KAI_NODE_NAME": "m2"}, timeout=120)
        assert res.returncode != 0 and "ERROR: " in res.stderr, res.stdout + res.stderr
        assert "etcd member m2 removed" not in res.stdout
    finally:
        etcd.stop()


# --- hosts block, kube-vip ----------------------------------------------------------------------

@needs_sandbox
def test_hosts_block_drops_the_removed_node_and_keeps_the_rest(node: ScriptNode) -> None:
    node.etc("hosts", "127.0.0.1 localhost\n# BEGIN kai managed block (cluster c)\n10.0.0.1\tcp1\n"
                      "10.0.0.4\tw1\n# END kai managed block\n10.9.9.9 other\n")
    node.file("hosts", "# BEGIN kai managed block (cluster c)\n10.0.0.1\tcp1\n# END kai managed block\n")
    res = node.run("hosts-block.sh", sandbox=True)
    assert res.returncode == 0 and "kai block rewritten" in res.stdout, res.stderr
    assert node.etc_path("hosts").read_text() == (
        "127.0.0.1 localhost\n10.9.9.9 other\n# BEGIN kai managed block (cluster c)\n10.0.0.1\tcp1\n"
        "# END kai managed block\n")
    again = node.run("hosts-block.sh", sandbox=True)
    assert again.returncode == 0 and "up to date" in again.stdout


@needs_sandbox
def test_kube_vip_leave_waits_until_the_vip_has_left_this_node(node: ScriptNode) -> None:
    """The VIP is on this node among many addresses (ip's output is long: a reader that stops at
    the match must not miss it); the kubelet releases it a moment after the manifest goes."""
    node.etc("kubernetes/manifests/kube-vip.yaml", "kind: Pod\n")
    node.etc("kubernetes/pki/ca.crt", "CA\n")
    node.fake("curl", f"echo \"$*\" >> {node.root}/curl.log; printf 200")
    setup = ("PATH=$PATH:/usr/sbin:/sbin\nip link set lo up\nip addr add 10.9.0.250/32 dev lo\n"
             "for i in $(seq 1 2000); do echo addr add 10.8.$((i / 250)).$((i % 250 + 1))/32 dev lo; done"
             " | ip -batch -\n"
             "( sleep 2; ip addr del 10.9.0.250/32 dev lo; date +%s.%N > " + str(node.root / "released") + " ) &")
    res = node.run("remove-kube-vip.sh", {"KAI_VIP": "10.9.0.250", "KAI_VIP_PORT": "6443"},
                   sandbox=True, netns=True, setup=setup)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "this node holds the VIP 10.9.0.250" in res.stdout
    assert (node.root / "released").exists(), "the script went on before the VIP left"
    assert len((node.root / "curl.log").read_text().splitlines()) == 1


@needs_sandbox
def test_kube_vip_leave_waits_for_the_vip_to_answer_elsewhere(node: ScriptNode) -> None:
    """The VIP is on no interface here (a sandbox with its own network); curl is a fake that
    answers 200 on its third call: the script removes the manifest and waits for it."""
    node.etc("kubernetes/manifests/kube-vip.yaml", "kind: Pod\n")
    node.etc("kubernetes/pki/ca.crt", "CA\n")
    node.fake("curl", f"""
echo "$*" >> {node.root}/curl.log
[[ " $* " == *" --cacert /etc/kubernetes/pki/ca.crt "* && " $* " == *" https://10.9.0.250:6443/readyz "* ]] || exit 64
n=$(wc -l < {node.root}/curl.log)
if ((n >= 3)); then printf 200; else printf 000; exit 7; fi
""")
    res = node.run("remove-kube-vip.sh", {"KAI_VIP": "10.9.0.250", "KAI_VIP_PORT": "6443"},
                   sandbox=True, netns=True, setup="PATH=$PATH:/usr/sbin:/sbin")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "kube-vip static pod removed" in res.stdout and "answers from another control plane" in res.stdout
    assert len((node.root / "curl.log").read_text().splitlines()) == 3
    assert not node.etc_path("kubernetes/manifests/kube-vip.yaml").exists()
