"""health's node_versions step (tasks/versions.py) with a fake run: what a node's binaries say
reaches run.info for verify; a node that cannot be reached is a warning, a changed host key fails."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from installers.plan import build_plan
from installers.spec import load_spec
from tasks import versions as task
from tasks.node_step import HostOutcome, StepFailed
from tests.spec_factory import ha

VERSIONS_ENV = b"kubeadm_version=v1.36.4\nkubelet_version=v1.36.4\n"


@pytest.fixture
def step_of(monkeypatch):
    """Run the task's body on the health plan's node-versions step; `down` maps a node to the
    failure run_node_step reports for it (the others answer VERSIONS_ENV)."""
    run = SimpleNamespace(info={})
    monkeypatch.setattr(task, "current_run", lambda: run)
    monkeypatch.setattr(task, "get_run_logger", lambda: logging.getLogger("test"))
    step = build_plan(load_spec(ha()), "health").step("node-versions")

    def call(down: dict[str, HostOutcome]):
        def fake_step(step, on_result=None):
            for job in step.jobs:
                if job.node not in down:
                    on_result(job, SimpleNamespace(outputs={"versions.env": VERSIONS_ENV}))
            if down:
                raise StepFailed(step, list(down.values()), len(step.jobs))

        monkeypatch.setattr(task, "run_node_step", fake_step)
        return task.node_versions.__wrapped__(step)

    return SimpleNamespace(call=call, run=run, nodes=[j.node for j in step.jobs])


def test_every_nodes_versions_reach_the_run(step_of):
    got = step_of.call({})
    assert sorted(got) == sorted(step_of.nodes) and len(got) > 1
    assert got[step_of.nodes[0]] == {"kubeadm_version": "v1.36.4", "kubelet_version": "v1.36.4"}
    assert step_of.run.info["installed_versions"] is got and step_of.run.info["versions_unread"] == {}


def test_an_unreachable_node_is_a_warning_the_others_are_read(step_of):
    down = step_of.nodes[-1]
    got = step_of.call({down: HostOutcome(down, "10.0.0.9", False, 30.0, 1, error="timed out after 30 s")})
    assert down not in got and len(got) == len(step_of.nodes) - 1
    assert step_of.run.info["versions_unread"] == {down: "timed out after 30 s"}


def test_a_changed_host_key_fails_the_step(step_of):
    down = step_of.nodes[0]
    with pytest.raises(StepFailed, match="host key"):
        step_of.call({down: HostOutcome(down, "10.0.0.1", False, 0.1, 1, error="host key mismatch",
                                        retryable=False)})
