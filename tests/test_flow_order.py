"""Every flow runs exactly its plan: each planned step once, in the plan's order, by the task the
step-kind table names — and nothing else. No Prefect server, no host.

A flow's body runs as a plain function: calling a Prefect flow runs its `.fn` (so rebuild's
subflows run theirs too), `kai_run` only builds the plan, and `tasks.step_task.run_task` — where a
plan step becomes a Prefect task run — records the call instead. The real task wrappers stay in
place, so a step the plan lacks (`plan.get` → None) must never reach the recorder.
"""

from __future__ import annotations

import contextlib
import sys
from types import SimpleNamespace

import pytest
from prefect import Flow

import flows
from installers import modes, step_kinds
from installers.plan import build_plan, run_plans
from installers.spec import load_spec
from tasks import step_task
from tests.spec_factory import aio, ha

LB = {"type": "load_balancer", "address": "192.168.10.5"}
NO_STORAGE = {"local_path": False}

# (mode, spec, flow parameters besides the spec)
CASES = [
    ("all_in_one", aio(), {}),
    ("all_in_one", aio(storage=NO_STORAGE), {}),
    ("ha", ha(), {}),                                   # kube-vip, 3 control planes + 2 workers
    ("ha", ha(endpoint=LB), {}),                        # load balancer: no kube-vip steps
    ("ha", ha(workers=0, storage=NO_STORAGE), {}),      # no join-workers, no storage
    ("ha", ha(cps=5, workers=1, endpoint=LB, storage=NO_STORAGE), {}),
    ("add_nodes", ha(), {"nodes": ["worker-2"]}),       # workers only
    ("add_nodes", ha(), {"nodes": ["cp-3", "worker-1"]}),  # a control plane: kube-vip-join
    ("add_nodes", ha(endpoint=LB), {"nodes": ["cp-2", "cp-3"]}),  # control planes only, no VIP
    ("reset", aio(), {}),
    ("reset", ha(), {}),
    ("rebuild", aio(), {"mode": "auto"}),
    ("rebuild", ha(), {"mode": "auto"}),
    ("rebuild", ha(endpoint=LB, storage=NO_STORAGE), {"mode": "ha"}),
    ("remove_nodes", ha(), {"nodes": ["worker-1"]}),                 # drain, reset, delete
    ("remove_nodes", ha(), {"nodes": ["cp-1", "worker-2"]}),         # a VIP control plane too
    ("remove_nodes", ha(endpoint=LB), {"nodes": ["cp-3"], "force": True}),  # dead: etcd, delete
    ("preflight", ha(), {}),
    ("health", ha(), {}),
    ("upgrade", ha(), {"to": "1.37"}),                  # 3 control planes, 2 workers one at a time
    ("upgrade", ha(workers=3), {"to": "1.37", "max_unavailable": 2}),
    ("upgrade", aio(), {"to": "1.36.5"}),               # a patch; one node, no workers
    ("etcd_backup", ha(), {}),
    ("etcd_backup", aio(), {}),
    ("certs", ha(), {}),                                # a check: read-only
    ("certs", ha(), {"renew": True}),                   # renew one control plane at a time, check again
    ("certs", aio(), {"renew": True}),
    ("etcd_restore", ha(), {"snapshot": "demo-ha-20261201T213000Z-rev9.db", "confirm": True}),
    ("etcd_restore", aio(), {"snapshot": "demo-20261201T213000Z-rev9.db", "confirm": True}),
]


def case_id(case) -> str:
    mode, spec, params = case
    return f"{mode}-{len(spec['nodes'])}n-{spec.get('control_plane_endpoint', {}).get('type', 'node')}" \
           f"-{'nostorage' if spec.get('storage') else 'storage'}-{'+'.join(params.get('nodes', []))}" \
           f"{params.get('to', '')}{params.get('max_unavailable', '')}" \
           f"{'-force' if params.get('force') else ''}{'-renew' if params.get('renew') else ''}"


@pytest.fixture
def recorded(monkeypatch) -> list[tuple[str, str, str]]:
    calls: list[tuple[str, str, str]] = []

    def record(prefect_task, step, *args, **kwargs):
        calls.append((step.name, step.kind, f"{prefect_task.fn.__module__}:{prefect_task.name}"))
        return {}

    @contextlib.contextmanager
    def plan_only(spec, mode, *, nodes=None, lock_wait_s=30, options=None):
        plan = build_plan(spec, mode, nodes=nodes, **(options or {}))
        yield SimpleNamespace(spec=spec, plan=plan), plan

    monkeypatch.setattr(step_task, "run_task", record)
    monkeypatch.setattr(Flow, "__call__", lambda self, *args, **kwargs: self.fn(*args, **kwargs))
    for flow in flows.MODES.values():
        module = sys.modules[flow.fn.__module__]
        if hasattr(module, "kai_run"):
            monkeypatch.setattr(module, "kai_run", plan_only)
    return calls


def test_every_mode_has_cases():
    assert {mode for mode, _, _ in CASES} == set(modes.names())


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_flow_runs_its_plan_in_order(recorded, case):
    mode, data, params = case
    spec = load_spec(data)
    expected = [(s.name, s.kind) for plan in run_plans(spec, mode, params) for s in plan.steps()]
    flows.MODES[mode](spec, **params)
    assert [(name, kind) for name, kind, _ in recorded] == expected
    for name, kind, task in recorded:  # the task the step-kind table names for the step's kind
        table = step_kinds.get(kind)
        assert task == f"{table.task_module}:{table.task_function}", (name, kind, task)


def test_a_step_the_plan_lacks_runs_no_task(monkeypatch):
    from tasks.node_tasks import storage

    monkeypatch.setattr(step_task, "run_task",
                        lambda *a, **k: pytest.fail("a Prefect task run for a step the plan lacks"))
    plan = build_plan(load_spec(aio(storage=NO_STORAGE)), "all_in_one")
    assert plan.get("storage") is None
    assert storage(plan.get("storage")) is None
    with pytest.raises(KeyError):
        plan.step("storage")  # the strict lookup stays strict
