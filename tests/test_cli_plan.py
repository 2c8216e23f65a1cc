import json
from pathlib import Path

import pytest
import yaml

from deployments.cli import main
from installers.samples import sample_spec
from installers.spec import load_spec, validate_for_mode

ROOT = Path(__file__).resolve().parent.parent
HA = str(ROOT / "examples" / "ha.yaml")
AIO = str(ROOT / "examples" / "all-in-one.yaml")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_ha_lists_every_host(capsys):
    code, out, err = run(capsys, "plan", HA)
    assert code == 0 and err == ""
    spec = load_spec(HA)
    for node in spec.nodes:
        assert f"{node.name} ({node.address})" in out
    for phase in ("preflight", "prepare", "control-plane", "join", "kubeconfig", "addons", "verify"):
        assert f". {phase} — " in out
    assert "one host at a time" in out and "retries=3" in out


def test_plan_scripts_shows_inputs_and_masks_secrets(capsys):
    code, out, _ = run(capsys, "plan", HA, "--scripts")
    assert code == 0
    assert "env KAI_JOIN_TOKEN=<secret, supplied at run time>" in out
    assert "__KAI_JOIN_TOKEN__" in out            # placeholder in the rendered join file
    assert "env KAI_K8S_VERSION='1.36.4'" in out
    assert "file kubeadm.yaml:" in out and "| kind: ClusterConfiguration" in out


def test_plan_json_and_add_nodes(capsys):
    code, out, _ = run(capsys, "plan", HA, "--mode", "add_nodes", "--nodes", "worker-2", "--json")
    assert code == 0
    plan = json.loads(out)
    touched = {j["node"] for ph in plan["phases"] for s in ph["steps"] for j in s["jobs"]}
    assert touched == {"cp-1", "worker-2"}


def test_plan_default_mode_follows_node_count(capsys):
    _, out, _ = run(capsys, "plan", AIO)
    assert out.startswith("kai plan: mode all_in_one, cluster demo")
    _, out, _ = run(capsys, "plan", HA)
    assert out.startswith("kai plan: mode ha, cluster demo-ha")


def test_broken_spec_exits_2_listing_every_problem(capsys, tmp_path):
    bad = yaml.safe_load(Path(HA).read_text())
    bad["kubernetes"]["version"] = "1.20"
    bad["networking"]["podcidr"] = "10.0.0.0/8"
    bad["nodes"][1]["address"] = "10.0.0.300"
    bad["nodes"][2]["name"] = "cp-1"
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(bad))
    code, out, err = run(capsys, "plan", str(f))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 4, lines
    assert "nodes[1].address: not an IP address: '10.0.0.300'" in lines
    assert any(line.startswith("networking.podcidr: unknown field") for line in lines)
    assert any(line.startswith("kubernetes.version:") for line in lines)
    assert any(line.startswith("nodes[2].name: duplicate node name 'cp-1'") for line in lines)


def test_spec_that_does_not_suit_the_mode_exits_2(capsys):
    code, _, err = run(capsys, "plan", AIO, "--mode", "ha")
    assert code == 2
    assert "nodes: ha needs at least 3 control-plane nodes (etcd quorum), the spec has 1" in err
    assert "control_plane_endpoint.type: ha needs kube_vip or load_balancer, not node" in err


def test_missing_file_exits_2(capsys, tmp_path):
    code, _, err = run(capsys, "plan", str(tmp_path / "nope.yaml"))
    assert code == 2 and err.startswith("<file>: cannot read") and "No such file" in err


def test_schema_is_json_schema(capsys):
    code, out, _ = run(capsys, "schema")
    schema = json.loads(out)
    assert code == 0 and schema["title"] == "ClusterSpec"
    assert {"name", "nodes", "networking", "ssh"} <= set(schema["properties"])


@pytest.mark.parametrize("mode,example", [("all_in_one", AIO), ("ha", HA)])
def test_init_writes_the_example_and_it_is_valid(capsys, tmp_path, mode, example):
    out = tmp_path / "c.yaml"
    code, _, _ = run(capsys, "init", "--mode", mode, "-o", str(out))
    assert code == 0
    assert out.read_text() == Path(example).read_text() == sample_spec(mode)
    assert validate_for_mode(load_spec(out), mode) == []
    code, _, err = run(capsys, "init", "--mode", mode, "-o", str(out))
    assert code == 2 and "exists" in err


def test_plan_contacts_nothing(capsys, monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"network use during plan: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    code, out, _ = run(capsys, "plan", HA, "--scripts")
    assert code == 0 and "cp-3" in out
