"""upgrade-drain.sh and upgrade-uncordon.sh on this machine, in a sandbox (/etc overlaid), against a
strict fake kubectl that keeps node state in files: a drain blocked by a PodDisruptionBudget fails
naming the pod; a node cordoned before the upgrade stays cordoned; the others are uncordoned only
once Ready at the target. No host, no Prefect."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scripts_harness import ScriptNode
from tests.test_scripts import needs_sandbox

ADMIN = "--kubeconfig /etc/kubernetes/admin.conf"


@pytest.fixture
def node(tmp_path: Path) -> ScriptNode:
    n = ScriptNode(tmp_path / "node")
    n.etc("kubernetes/admin.conf", "admin\n")
    return n


def fake_kubectl(node: ScriptNode, nodes: dict[str, dict]) -> Path:
    """Node state in <root>/nodes/<name>/{cordoned,version,blocker}; every call logged."""
    state = node.root / "nodes"
    for name, s in nodes.items():
        d = state / name
        d.mkdir(parents=True)
        (d / "version").write_text(s.get("version", "v1.36.4"))
        if s.get("cordoned"):
            (d / "cordoned").touch()
        if s.get("blocker"):
            (d / "blocker").write_text(s["blocker"])
    node.fake("kubectl", f"""
echo "$*" >> {node.root}/calls
[[ "$1 $2" == "{ADMIN}" ]] || {{ echo "fake kubectl: no --kubeconfig admin.conf" >&2; exit 64; }}
shift 2
d={state}/${{2:-none}}
case "$1" in
  get)
    [[ $# -eq 3 && $2 == nodes ]] || {{ echo "fake kubectl: get $*" >&2; exit 64; }}
    d={state}/$3
    [[ -d $d ]] || {{ echo "Error from server (NotFound): nodes \\"$3\\" not found" >&2; exit 1; }}
    status=Ready; [[ -f $d/cordoned ]] && status=Ready,SchedulingDisabled
    printf 'NAME   STATUS   ROLES   AGE   VERSION\\n%s   %s   <none>   5m   %s\\n' "$3" "$status" "$(<$d/version)"
    ;;
  drain)
    [[ "$3 $4" == "--ignore-daemonsets --delete-emptydir-data" && $5 == --timeout=*s ]] || {{ echo "fake kubectl: drain $*" >&2; exit 64; }}
    touch "$d/cordoned"; echo "node/$2 cordoned"
    if [[ -f $d/blocker ]]; then
      b=$(<"$d/blocker")
      echo "evicting pod default/$b"
      echo "error when evicting pods/\\"$b\\" -n \\"default\\" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget." >&2
      echo "error: unable to drain node \\"$2\\" due to error: error when evicting pods/\\"$b\\" -n \\"default\\": global timeout reached: 30s, continuing command..." >&2
      exit 1
    fi
    echo "node/$2 drained"
    ;;
  uncordon) rm -f "$d/cordoned"; echo "node/$2 uncordoned" ;;
  *) echo "fake kubectl: unsupported: $*" >&2; exit 64 ;;
esac
""")
    return state


@needs_sandbox
def test_a_drain_blocked_by_a_disruption_budget_names_the_pod(node: ScriptNode) -> None:
    state = fake_kubectl(node, {"w-1": {}, "w-2": {"blocker": "web-7d9f-abcde"}})
    res = node.run("upgrade-drain.sh", {"KAI_DRAIN_NODES": "w-1 w-2", "KAI_DRAIN_TIMEOUT_S": "30",
                                        "KAI_K8S_VERSION": "1.37.1"}, sandbox=True)
    assert res.returncode != 0
    assert ("w-2: pod default/web-7d9f-abcde could not be evicted within 30s (a PodDisruptionBudget "
            "allows no disruption") in res.stderr, res.stderr
    assert "w-1: node/w-1 drained" in res.stdout
    # both stay cordoned, recorded as kai's own cordon (the rerun's uncordon will lift them)
    assert (state / "w-1" / "cordoned").exists() and (state / "w-2" / "cordoned").exists()
    assert (node.state / "upgrade" / "cordoned" / "w-2").read_text() == "kai\n"
    assert not (node.state / "done" / "upgrade-drain").exists()


@needs_sandbox
def test_a_node_cordoned_before_the_upgrade_stays_cordoned(node: ScriptNode) -> None:
    state = fake_kubectl(node, {"w-1": {}, "w-2": {"cordoned": True}})
    drain = node.run("upgrade-drain.sh", {"KAI_DRAIN_NODES": "w-1 w-2", "KAI_DRAIN_TIMEOUT_S": "30",
                                          "KAI_K8S_VERSION": "1.37.1"}, sandbox=True)
    assert drain.returncode == 0, drain.stdout + drain.stderr
    assert "w-2 was cordoned before the upgrade" in drain.stdout
    records = node.state / "upgrade" / "cordoned"
    assert (records / "w-1").read_text() == "kai\n" and (records / "w-2").read_text() == "before\n"

    env = {"KAI_UNCORDON_NODES": "w-1 w-2", "KAI_K8S_VERSION": "1.37.1", "KAI_READY_TIMEOUT_S": "3"}
    early = node.run("upgrade-uncordon.sh", env, sandbox=True)  # kubelets still at 1.36.4
    assert early.returncode != 0 and "not Ready at v1.37.1 after 3s, left cordoned: w-1" in early.stderr
    assert (state / "w-1" / "cordoned").exists()

    for n in ("w-1", "w-2"):
        (state / n / "version").write_text("v1.37.1")
    done = node.run("upgrade-uncordon.sh", env, sandbox=True, step_hash="hash-2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (state / "w-1" / "cordoned").exists() and (state / "w-2" / "cordoned").exists()
    assert (node.out / "left_cordoned").read_text() == "w-2\n"
    assert "w-2 stays cordoned: it was cordoned before the upgrade" in done.stdout
    assert not list(records.iterdir())
