"""remove_nodes without a cluster: the plan per node, the refusals (spec and live), the flow
parameters, the CLI and the REST start. No Prefect server, no host."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from deployments import control
from deployments.api import create_app
from deployments.cli import main
from installers import modes, removal
from installers.plan import build_plan, run_plans
from installers.remove_plan import removal_order
from installers.spec import SpecError, load_spec
from tests.spec_factory import aio, ha

LB = {"type": "load_balancer", "address": "192.168.10.5"}


def shape(plan):
    return [(ph.name, [(s.name, [j.node for j in s.jobs]) for s in ph.steps]) for ph in plan.phases]


def test_a_worker_is_cordoned_drained_reset_and_deleted_from_the_first_control_plane():
    plan = build_plan(load_spec(ha()), "remove_nodes", nodes=["worker-1"])
    assert shape(plan) == [
        ("check", [("kubeconfig", ["cp-1"]), ("quorum-check", []), ("reachable", ["worker-1"])]),
        ("cordon", [("cordon", ["cp-1"])]),
        ("remove-worker-1", [("drain-worker-1", ["cp-1"]), ("reset-worker-1", ["worker-1"]),
                             ("delete-node-worker-1", ["cp-1"])]),
        ("hosts", [("hosts-block", ["cp-1", "cp-2", "cp-3", "worker-2"])]),
        ("verify", [("verify", [])]),
    ]
    assert plan.step("drain-worker-1").jobs[0].env == {"KAI_NODE_NAME": "worker-1",
                                                       "KAI_DRAIN_TIMEOUT_S": "300"}
    # a node leaving a cluster that stays takes its etcd member with it (a worker has none)
    assert plan.step("reset-worker-1").jobs[0].env == {"KAI_RESET_PACKAGES": "0",
                                                       "KAI_RESET_ETCD_MEMBER": "1"}
    block = plan.step("hosts-block").jobs[0].files["hosts"]
    assert "worker-2" in block and "worker-1" not in block and "192.168.10.21" not in block
    assert plan.nodes_touched() == {"cp-1", "cp-2", "cp-3", "worker-1", "worker-2"}
    assert any("delete these entries from the spec's nodes: worker-1 (192.168.10.21)" in w
               for w in plan.warnings)


def test_the_first_control_plane_leaves_the_vip_before_its_reset_and_the_next_one_anchors():
    plan = build_plan(load_spec(ha()), "remove_nodes", nodes=["cp-1", "worker-2"])
    assert removal_order(plan) == ["worker-2", "cp-1"]  # workers first
    cp1 = next(ph for ph in plan.phases if ph.name == "remove-cp-1")
    assert [(s.name, [j.node for j in s.jobs]) for s in cp1.steps] == [
        ("drain-cp-1", ["cp-2"]), ("kube-vip-leave-cp-1", ["cp-1"]), ("reset-cp-1", ["cp-1"]),
        ("delete-node-cp-1", ["cp-2"])]
    assert plan.step("kube-vip-leave-cp-1").jobs[0].env == {"KAI_VIP": "192.168.10.100",
                                                            "KAI_VIP_PORT": "6443"}
    assert plan.step("kubeconfig").jobs[0].node == "cp-2"
    assert plan.step("cordon").jobs[0].env == {"KAI_NODES": "cp-1 worker-2"}


def test_force_never_contacts_the_dead_nodes_and_removes_a_control_planes_etcd_member():
    plan = build_plan(load_spec(ha(endpoint=LB)), "remove_nodes", nodes=["cp-3", "worker-1"],
                      force=True)
    assert shape(plan) == [
        ("check", [("kubeconfig", ["cp-1"]), ("quorum-check", [])]),
        ("remove-worker-1", [("delete-node-worker-1", ["cp-1"])]),
        ("remove-cp-3", [("etcd-member-remove-cp-3", ["cp-1"]), ("delete-node-cp-3", ["cp-1"])]),
        ("hosts", [("hosts-block", ["cp-1", "cp-2", "worker-2"])]),
        ("verify", [("verify", [])]),
    ]
    assert not {"cp-3", "worker-1"} & plan.nodes_touched()
    text = "\n".join(plan.warnings)
    assert "will not be contacted" in text and "load balancer's backends" in text and "cp-3" in text


def test_run_plans_and_the_flow_parameters_carry_force():
    spec = load_spec(ha())
    params = modes.flow_parameters("remove_nodes", {}, ["worker-1"], None, force=True)
    assert params == {"spec": {}, "nodes": ["worker-1"], "force": True}
    assert "force" not in modes.flow_parameters("add_nodes", {}, ["worker-1"])
    [plan] = run_plans(spec, "remove_nodes", params)
    assert plan.get("reset-worker-1") is None and plan.get("delete-node-worker-1") is not None
    with pytest.raises(SpecError, match="force: only applies to remove_nodes"):
        build_plan(spec, "add_nodes", nodes=["worker-1"], force=True)


@pytest.mark.parametrize("spec,nodes,message", [
    (ha(), ["cp-1", "cp-2"], "would leave 1 of 3 etcd members"),
    (ha(cps=2), ["cp-2"], "would leave 1 of 2 etcd members"),
    (ha(cps=3), ["cp-1", "cp-2", "cp-3"], "would remove the last control plane"),
    (aio(), ["node-1"], "would remove the last control plane"),
    (ha(), ["worker-9"], "'worker-9' (to remove) is not a node of the spec"),
    (ha(), [], "remove_nodes needs the names of the nodes to remove"),
    (ha(), ["worker-1", "worker-1"], "named twice"),
])
def test_refused_before_anything_naming_the_node(spec, nodes, message):
    with pytest.raises(SpecError) as err:
        build_plan(load_spec(spec), "remove_nodes", nodes=nodes)
    assert any(message in p for p in err.value.problems), err.value.problems
    named = [n for n in nodes if n]
    assert all(any(n in p for p in err.value.problems) for n in named), err.value.problems


def test_the_node_endpoint_cannot_be_removed_but_a_worker_of_that_cluster_can():
    spec = aio(nodes=[{"name": "node-1", "address": "192.168.10.11", "roles": ["control-plane"]},
                      {"name": "node-2", "address": "192.168.10.12", "roles": ["control-plane"]},
                      {"name": "node-3", "address": "192.168.10.13", "roles": ["control-plane"]},
                      {"name": "w", "address": "192.168.10.14", "roles": ["worker"]}])
    with pytest.raises(SpecError, match="'node-1' is the control-plane endpoint"):
        build_plan(load_spec(spec), "remove_nodes", nodes=["node-1"])
    build_plan(load_spec(spec), "remove_nodes", nodes=["node-3", "w"])


def test_three_control_planes_lose_one_then_a_second_is_refused():
    """The issue's case, counted from the running cluster (the spec not edited in between)."""
    cps = ["cp-1", "cp-2", "cp-3"]
    assert removal.live_problems(cps, cps + ["w"], ["cp-1"]) == ([], [])
    problems, _ = removal.live_problems(["cp-2", "cp-3"], ["cp-2", "cp-3", "w"], ["cp-2"])
    assert len(problems) == 1 and "'cp-2'" in problems[0] and "quorum" in problems[0]
    # a rerun after the node was deleted: not counted twice, the rest of its removal goes on
    problems, notes = removal.live_problems(["cp-2", "cp-3"], ["cp-2", "cp-3"], ["cp-1"])
    assert problems == [] and "cp-1: not registered" in notes[0]
    assert [removal.quorum(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]


def test_kai_plan_shows_each_node_and_refuses_with_exit_2(capsys):
    from pathlib import Path
    example = str(Path(__file__).resolve().parent.parent / "examples" / "ha.yaml")
    assert main(["plan", example, "--mode", "remove", "--nodes", "worker-1", "--force"]) == 0
    out = capsys.readouterr().out
    assert "remove-worker-1 — Remove worker worker-1 (--force: not contacted)" in out
    assert "delete-node-worker-1 [delete_node] kubectl delete node worker-1" in out
    assert main(["plan", example, "--mode", "remove_nodes", "--nodes", "cp-1,cp-2"]) == 2
    assert "would leave 1 of 3 etcd members" in capsys.readouterr().err


def test_cli_remove_starts_remove_nodes_with_force(monkeypatch, tmp_path, capsys):
    import yaml
    from deployments import cli_runs

    started = {}
    monkeypatch.setattr(cli_runs, "_need_server", lambda: None)
    monkeypatch.setattr(control, "start", lambda mode, spec, **kw: started.update(mode=mode, **kw) or "r1")
    path = tmp_path / "ha.yaml"
    path.write_text(yaml.safe_dump(ha()))
    assert main(["remove", str(path), "--nodes", "worker-1, cp-3", "--force", "--detach"]) == 0
    assert started == {"mode": "remove_nodes", "nodes": ["worker-1", "cp-3"], "force": True}
    assert "started remove_nodes run r1" in capsys.readouterr().out


class Recorder:
    canonical_mode = staticmethod(control.canonical_mode)
    validate = staticmethod(control.validate)
    modes = staticmethod(control.modes)

    def __init__(self):
        self.started = []

    def start(self, mode, spec, **kw):
        control.validate(mode, spec, kw.get("nodes"), kw.get("rebuild_mode", "auto"),
                         force=kw.get("force", False))
        self.started.append((mode, kw))
        return "00000000-0000-0000-0000-000000000001"


def test_rest_start_passes_nodes_and_force_and_refuses_quorum_loss_with_422():
    recorder = Recorder()
    client = TestClient(create_app("t0ken", ctl=recorder))
    h = {"Authorization": "Bearer t0ken"}
    r = client.post("/api/v1/installation/remove_nodes/start", headers=h,
                    json={"spec": ha(), "nodes": ["worker-2"], "force": True})
    assert r.status_code == 202, r.text
    assert r.json()["mode"] == "remove_nodes"
    assert recorder.started[-1][1]["nodes"] == ["worker-2"] and recorder.started[-1][1]["force"] is True
    r = client.post("/api/v1/installation/remove-nodes/start", headers=h,
                    json={"spec": ha(cps=2), "nodes": ["cp-1"]})
    assert r.status_code == 422 and any("'cp-1'" in p and "quorum" in p for p in r.json()["problems"])
    r = client.post("/api/v1/installation/add_nodes/start", headers=h,
                    json={"spec": ha(), "nodes": ["worker-2"], "force": True})
    assert r.status_code == 422 and r.json()["problems"] == ["force: only applies to remove_nodes, not add_nodes"]
