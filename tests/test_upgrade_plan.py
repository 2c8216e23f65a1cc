"""The upgrade mode without hosts: its target rules (one minor, never down, errors naming the
field), its plan (API servers first, kubelets never ahead of an API server, workers in batches),
its rendered UpgradeConfiguration (checked by the kubeadm stand-in's strict v1beta4 schema), its
preflight judgement and its report. No Prefect server, no host."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from deployments import control
from deployments.cli import main
from installers import upgrade_checks
from installers.plan import build_plan, run_plans
from installers.plan_upgrade import node_groups, render_upgrade_config, target_version
from installers.spec import SpecError, load_spec
from installers.upgrade_checks import ClusterView, NodeState
from installers.upgrade_rules import resolve_target, worker_batches
from tests.hosts import version_skew
from tests.spec_factory import aio, ha

sys.path.insert(0, str(Path(__file__).parent / "hosts" / "standins"))
import standin_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def problems(data: dict, **options) -> list[str]:
    with pytest.raises(SpecError) as err:
        build_plan(load_spec(data), "upgrade", **options)
    return err.value.problems


# --- the target -------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec_version,to,expected", [
    ("1.35", "1.37", "to: 1.37.1 skips a minor: the spec's kubernetes.version 1.35 is 1.35.8"),
    ("1.36", "1.35", "to: 1.35.8 is older than 1.36.4"),
    ("1.36.4", "1.36.3", "to: 1.36.3 is older than 1.36.4"),
    ("1.36", "1.38", "to: unsupported Kubernetes minor '1.38'"),
    ("1.36", "one-point-37", "to: not a Kubernetes version"),
    ("1.36", None, "to: upgrade needs the Kubernetes version to move to"),
])
def test_a_bad_target_is_refused_naming_the_field(spec_version, to, expected):
    found = problems(ha(kubernetes={"version": spec_version}), to=to)
    assert any(p.startswith(expected) for p in found), found


def test_skipping_a_minor_names_the_next_step():
    found = problems(ha(kubernetes={"version": "1.35"}), to="1.37")
    assert "first --to 1.36, then --to 1.37" in found[0], found


@pytest.mark.parametrize("value", [0, -1, True, "2"])
def test_max_unavailable_must_be_a_positive_whole_number(value):
    found = problems(ha(), to="1.37", max_unavailable=value)
    assert [p for p in found if p.startswith("max_unavailable: ")], found


def test_a_patch_and_a_spec_already_at_the_target_are_accepted():
    assert target_version(build_plan(load_spec(ha()), "upgrade", to="1.36.5")) == "1.36.5"
    assert target_version(build_plan(load_spec(ha()), "upgrade", to="1.37")) == "1.37.1"
    # the user may set kubernetes.version to the target first: the nodes' versions decide at run time
    assert target_version(build_plan(load_spec(ha(kubernetes={"version": "1.37"})), "upgrade", to="1.37")) == "1.37.1"


def test_other_modes_take_no_target():
    with pytest.raises(SpecError) as err:
        build_plan(load_spec(ha()), "ha", to="1.37")
    assert err.value.problems == ["to: only the upgrade mode takes to, not ha"]


def test_the_wrapper_refuses_a_bad_target_before_anything_starts():
    with pytest.raises(SpecError) as err:
        control.validate("upgrade", ha(), to="1.38", max_unavailable=0)
    assert [p.split(":")[0] for p in err.value.problems] == ["to", "max_unavailable"], err.value.problems
    mode, _ = control.validate("upgrade", ha(), to="1.37", max_unavailable=2)
    assert mode == "upgrade"
    assert control.flow_parameters("upgrade", ha(), target="1.37", max_unavailable=2) == {
        "spec": ha(), "to": "1.37", "max_unavailable": 2}


def test_kai_plan_shows_order_and_batches_and_refuses_a_bad_target(capsys):
    spec = str(ROOT / "examples" / "ha.yaml")
    assert main(["plan", spec, "--mode", "upgrade", "--to", "1.38"]) == 2
    assert "to: unsupported Kubernetes minor '1.38'" in capsys.readouterr().err
    assert main(["plan", spec, "--mode", "upgrade", "--to", "1.37", "--max-unavailable", "2"]) == 0
    out = capsys.readouterr().out
    assert out.index("upgrade-apply") < out.index("upgrade-control-planes") < out.index("drain-") \
        < out.index("workers — Workers to v1.37.1 in ")
    assert "batch(es) of at most 2 (max_unavailable)" in out


# --- the plan -----------------------------------------------------------------------------------------

def test_worker_batches_follow_the_spec_order():
    assert worker_batches(["a", "b", "c"], 2) == [["a", "b"], ["c"]]
    assert worker_batches(["a", "b"], None) == [["a"], ["b"]]
    assert worker_batches([], 3) == []


def test_every_api_server_moves_before_any_kubelet_and_control_planes_before_workers():
    spec = load_spec(ha(workers=3))
    plan = build_plan(spec, "upgrade", to="1.37", max_unavailable=2)
    names = [s.name for s in plan.steps()]
    assert names[:4] == ["kubeconfig", "upgrade-facts", "upgrade-apply", "upgrade-control-planes"]
    assert plan.step("upgrade-control-planes").parallel is False  # one control plane at a time
    groups = [(d.name, u.name, c.name) for d, u, c in node_groups(plan)]
    assert groups == [("drain-cp-1", "kubelet-cp-1", "uncordon-cp-1"),
                      ("drain-cp-2", "kubelet-cp-2", "uncordon-cp-2"),
                      ("drain-cp-3", "kubelet-cp-3", "uncordon-cp-3"),
                      ("drain-workers-1", "upgrade-workers-1", "uncordon-workers-1"),
                      ("drain-workers-2", "upgrade-workers-2", "uncordon-workers-2")]
    assert [j.node for j in plan.step("upgrade-workers-1").jobs] == ["worker-1", "worker-2"]
    assert plan.step("drain-workers-1").jobs[0].env["KAI_DRAIN_NODES"] == "worker-1 worker-2"
    # drains and uncordons run on the first control plane (admin.conf)
    assert {j.node for d, _, c in node_groups(plan) for j in d.jobs + c.jobs} == {"cp-1"}
    assert names[-2:] == ["verify", "upgrade-report"]


def _simulate(plan, old: str, new: str) -> list[str]:
    """Replay the plan's node steps against version_skew's checker: which versions run after each."""
    running: dict[tuple[str, str], version_skew.Event] = {}

    def start(node: str, component: str, version: str, t: int) -> None:
        running[(node, component)] = version_skew.Event(t, node, node, component, version, "start")

    spec_nodes = {j.node for s in plan.steps() for j in s.jobs}
    cps = {j.node for s in plan.steps() if s.name in ("upgrade-apply", "upgrade-control-planes") for j in s.jobs}
    for i, node in enumerate(sorted(spec_nodes)):
        start(node, version_skew.KUBELET, old, 0)
        if node in cps:
            start(node, version_skew.APISERVER, old, 0)
    found = []
    for t, step in enumerate(plan.steps(), 1):
        for job in step.jobs:
            part = job.env.get("KAI_UPGRADE_PART")
            if part in ("apply", "node"):
                start(job.node, version_skew.APISERVER, new, t)
            elif part in ("kubelet", "worker"):
                start(job.node, version_skew.KUBELET, new, t)
            for message in version_skew.breaches(running.values()).values():
                found.append(f"after {step.name} on {job.node}: {message}")
    assert all(e.version == new for e in running.values()), running
    return found


@pytest.mark.parametrize("data,options", [
    (ha(), {"to": "1.37"}), (ha(cps=5, workers=4), {"to": "1.37", "max_unavailable": 3}),
    (aio(), {"to": "1.37"})])
def test_the_plan_never_breaks_the_version_skew_policy(data, options):
    plan = build_plan(load_spec(data), "upgrade", **options)
    assert _simulate(plan, "1.36.4", "1.37.1") == []


def test_run_plans_and_the_cancel_hook_see_the_upgrade_plan_from_the_flow_parameters():
    spec = load_spec(ha())
    [plan] = run_plans(spec, "upgrade", {"to": "1.37", "max_unavailable": 2})
    assert plan.mode == "upgrade" and plan.get("upgrade-workers-1") is not None
    assert plan.nodes_touched() == {n.name for n in spec.nodes}


def test_the_upgrade_configuration_passes_the_strict_v1beta4_schema():
    kinds = standin_config.load_config(render_upgrade_config("1.37.1"))
    cfg = kinds["UpgradeConfiguration"]
    assert cfg["apply"]["kubernetesVersion"] == "v1.37.1" and cfg["plan"]["kubernetesVersion"] == "v1.37.1"
    plan = build_plan(load_spec(ha()), "upgrade", to="1.37")
    job = plan.step("upgrade-apply").jobs[0]
    assert job.files["kubeadm-upgrade.yaml"] == render_upgrade_config("1.37.1")
    assert job.env["KAI_K8S_MINOR"] == "1.37" and job.env["KAI_UPGRADE_PART"] == "apply"


# --- the preflight's judgement and the report ---------------------------------------------------------

def _view(kubelets: dict[str, str], apis: dict[str, str], **node_over) -> ClusterView:
    view = ClusterView(apiservers=dict(apis))
    for name, v in kubelets.items():
        view.nodes[name] = NodeState(ready=True, unschedulable=False, kubelet_version=v)
    for name, state in node_over.items():
        view.nodes[name.replace("_", "-")] = state
    return view


def _facts(spec, **over) -> dict:
    base = {"pkg_family": "apt", "disk_free_mb": "9000", "kai_cordoned": ""}
    return {n.name: {**base, **over.get(n.name.replace("-", "_"), {})} for n in spec.nodes}


SPEC = load_spec(ha())
OLD = {n.name: "1.36.4" for n in SPEC.nodes}
APIS = {"cp-1": "1.36.4", "cp-2": "1.36.4", "cp-3": "1.36.4"}
T37 = resolve_target("1.37")[0]


def errors(findings) -> list[tuple[str, str]]:
    return [(f.node, f.check) for f in findings if f.severity == "error"]


def test_a_healthy_cluster_one_minor_below_passes():
    assert upgrade_checks.judge(SPEC, T37, _facts(SPEC), _view(OLD, APIS)) == []


def test_a_node_not_ready_an_unhealthy_api_server_and_low_disk_stop_the_upgrade():
    view = _view(OLD, {"cp-1": "1.36.4", "cp-2": "1.36.4"},
                 worker_2=NodeState(ready=False, unschedulable=False, kubelet_version="1.36.4"))
    view.apiserver_problems["cp-3"] = "ConnectError: connection refused"
    found = upgrade_checks.judge(SPEC, T37, _facts(SPEC, worker_1={"disk_free_mb": "100"}), view)
    assert errors(found) == [("cp-3", "apiserver"), ("worker-2", "node"), ("worker-1", "disk")], found


def test_skew_now_and_a_minor_skipped_by_the_running_cluster_are_refused():
    skewed = _view({**OLD, "worker-1": "1.37.1"}, APIS)
    assert ("worker-1", "skew") in errors(upgrade_checks.judge(SPEC, T37, _facts(SPEC), skewed))
    older = _view({n: "1.35.8" for n in OLD}, {k: "1.35.8" for k in APIS})
    found = upgrade_checks.judge(SPEC, T37, _facts(SPEC), older)
    assert ("cluster", "to") in errors(found) and "skips a minor" in found[0].message, found


def test_a_rerun_of_an_interrupted_upgrade_is_accepted_and_a_finished_one_has_nothing_to_do():
    halfway = _view({**OLD, "cp-1": "1.37.1"}, {k: "1.37.1" for k in APIS},
                    worker_1=NodeState(ready=True, unschedulable=True, kubelet_version="1.36.4"))
    facts = _facts(SPEC, cp_1={"kai_cordoned": "worker-1"})
    assert upgrade_checks.judge(SPEC, T37, facts, halfway) == []  # kai's own cordon: no warning
    api_halfway = _view(OLD, {**APIS, "cp-1": "1.37.1"})  # stopped between the control planes
    assert upgrade_checks.judge(SPEC, T37, _facts(SPEC), api_halfway) == []
    done = _view({n: "1.37.1" for n in OLD}, {k: "1.37.1" for k in APIS})
    found = upgrade_checks.judge(SPEC, T37, _facts(SPEC), done)
    assert errors(found) == [("cluster", "to")] and "nothing to upgrade" in found[0].message
    newer = upgrade_checks.judge(SPEC, resolve_target("1.36.5")[0], _facts(SPEC), done)
    assert "kai never goes down" in newer[0].message


def test_the_report_lists_versions_before_and_after_and_who_cordoned_what():
    view = _view({**OLD, "cp-1": "1.37.1"}, APIS,
                 worker_1=NodeState(True, True, "1.36.4"), worker_2=NodeState(True, True, "1.36.4"))
    rows = upgrade_checks.report_rows(SPEC, T37, OLD, view, {"worker-1"})
    by = {r["node"]: r for r in rows}
    assert (by["cp-1"]["kubelet before"], by["cp-1"]["kubelet now"], by["cp-1"]["at target"]) == ("1.36.4", "1.37.1", "yes")
    assert by["worker-1"]["cordoned"].startswith("YES: cordoned by this upgrade")
    assert by["worker-2"]["cordoned"].startswith("yes (cordoned before the upgrade")
    text = upgrade_checks.render_report("demo-ha", T37, rows, "cancelled")
    assert "Cordoned by this upgrade until their upgrade completes: worker-1**" in text and "| cp-1 | control-plane | 1.36.4 | 1.37.1 |" in text


# --- the control surface --------------------------------------------------------------------------------

class ValidatingRecorder:
    """The API's wrapper with the real validation; start records what it was given."""
    canonical_mode = staticmethod(control.canonical_mode)
    validate = staticmethod(control.validate)
    modes = staticmethod(control.modes)

    def __init__(self):
        self.started: list[dict] = []

    def start(self, mode, spec, **kw):
        control.validate(mode, spec, kw.get("nodes"), kw.get("rebuild_mode", "auto"), kw.get("to"),
                         kw.get("max_unavailable"))
        self.started.append({"mode": mode, **kw})
        return "00000000-0000-0000-0000-000000000002"

    def prefect_client(self):
        import contextlib
        return contextlib.nullcontext("prefect-client")

    def active_run_ids(self, client):
        return []


def test_rest_start_takes_the_target_and_refuses_a_bad_one_naming_the_field():
    from fastapi.testclient import TestClient

    from deployments.api import create_app

    recorder = ValidatingRecorder()
    client = TestClient(create_app("t0ken", ctl=recorder))
    h = {"Authorization": "Bearer t0ken"}
    r = client.post("/api/v1/installation/upgrade/start", headers=h,
                    json={"spec": ha(), "to": "1.37", "max_unavailable": 2})
    assert r.status_code == 202, r.text
    assert (recorder.started[-1]["to"], recorder.started[-1]["max_unavailable"]) == ("1.37", 2)
    r = client.post("/api/v1/installation/upgrade/start", headers=h, json={"spec": ha(), "to": "1.35"})
    assert r.status_code == 422 and r.json()["problems"][0].startswith("to: 1.35.8 is older"), r.text
    r = client.post("/api/v1/installation/upgrade/start", headers=h, json={"spec": ha(), "max_unavailable": 0})
    assert r.status_code == 422 and "max_unavailable" in r.text, r.text


def test_kai_upgrade_needs_the_target(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["upgrade", str(ROOT / "examples" / "ha.yaml")])
    assert exc.value.code == 2 and "--to" in capsys.readouterr().err


def test_kai_upgrade_starts_the_upgrade_with_its_target(monkeypatch, tmp_path, capsys):
    """`kai upgrade` goes through the CLI's one start path: the spec checked, the target and the
    batch size sent, the run named; a refused target exits 2 with every problem on stderr."""
    import yaml
    from installers import settings

    started = {}

    def start(mode, spec, **kw):
        control.validate(mode, spec, kw.get("nodes"), to=kw.get("to"),
                         max_unavailable=kw.get("max_unavailable"))
        started.update(mode=mode, **kw)
        return "r1"

    monkeypatch.setattr(settings, "resolve_settings", lambda **kw: None)  # a server "found"
    monkeypatch.setattr(control, "start", start)
    path = tmp_path / "ha.yaml"
    path.write_text(yaml.safe_dump(ha()))
    assert main(["upgrade", str(path), "--to", "1.37", "--max-unavailable", "2", "--detach"]) == 0
    given = {name: value for name, value in started.items() if value is not None}  # None: the default
    assert given == {"mode": "upgrade", "to": "1.37", "max_unavailable": 2}
    assert "started upgrade run r1 (to 1.37)" in capsys.readouterr().out
    started.clear()
    assert main(["upgrade", str(path), "--to", "1.35", "--detach"]) == 2
    err = capsys.readouterr().err
    assert "to: 1.35" in err and f"kai: {path}: cannot upgrade to 1.35" in err and not started
