"""The cancel/crash cleanup (flows/hooks.py) goes only to the hosts the run touched: its plan's.

No host is contacted: the fleet is a recorder (the spec's documentation addresses never see a
packet). The SSH targets are the real ones, built from specs that name no Secret block.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from flows import hooks
from installers.spec import load_spec
from tasks.node_lock import NodeLock
from tests.spec_factory import aio, ha

EVERY = ["cp-1", "cp-2", "cp-3", "worker-1", "worker-2"]


class RecordingFleet:
    def __init__(self, targets):
        self.targets = targets
        self.jobs: list[tuple[str, str]] = []
        self.closed = False
        fleets.append(self)

    def get(self, node):
        fleet = self

        class Conn:
            def run_job(self, job):
                fleet.jobs.append((node, job.step))
                return SimpleNamespace(tail=[f"{job.step} ok"])
        return Conn()

    def close(self):
        self.closed = True


fleets: list[RecordingFleet] = []


@pytest.fixture(autouse=True)
def recording(monkeypatch):
    fleets.clear()
    monkeypatch.setattr(hooks, "Fleet", RecordingFleet)
    monkeypatch.setattr(hooks, "the_runs_node_lock",
                        lambda flow_run: NodeLock(run_id=str(flow_run.id), run_name=flow_run.name,
                                                  controller="kai-test", lease_s=60))


def cleanup(flow_name: str | None, spec: dict, tags=(), via_flow=True, **params) -> RecordingFleet:
    flow_run = SimpleNamespace(id="00000000-0000-0000-0000-00000000000a", name="brave-test",
                               parameters={"spec": load_spec(spec).model_dump(mode="json"), **params},
                               tags=list(tags))
    flow = SimpleNamespace(name=flow_name) if via_flow else None
    hooks.kill_remote_steps(flow, flow_run, SimpleNamespace(name="Cancelled"))
    [fleet] = fleets
    assert fleet.closed
    return fleet


def cleaned(fleet: RecordingFleet) -> dict[str, list[str]]:
    by_node: dict[str, list[str]] = {}
    for node, step in fleet.jobs:
        by_node.setdefault(node, []).append(step)
    return by_node


def test_add_nodes_cleans_only_the_new_nodes_and_the_first_control_plane():
    fleet = cleanup("add_nodes", ha(), nodes=["worker-2"])
    assert sorted(fleet.targets) == ["cp-1", "worker-2"]
    assert cleaned(fleet) == {"cp-1": ["kill-steps", "node-lock-release"],
                              "worker-2": ["kill-steps", "node-lock-release"]}


def test_an_install_cleans_every_node_it_planned():
    assert sorted(cleaned(cleanup("ha", ha()))) == EVERY
    fleets.clear()
    assert sorted(cleaned(cleanup("reset", ha()))) == EVERY
    fleets.clear()
    assert sorted(cleaned(cleanup("all_in_one", aio()))) == ["node-1"]


def test_the_reaper_without_a_flow_reads_the_mode_tag():
    fleet = cleanup(None, ha(), tags=("kai", "mode:add_nodes", "cluster:demo-ha"), via_flow=False,
                    nodes=["cp-3", "worker-1"])
    assert sorted(cleaned(fleet)) == ["cp-1", "cp-3", "worker-1"]
    fleets.clear()
    fleet = cleanup(None, ha(), tags=("kai", "mode:rebuild"), via_flow=False, mode="auto")
    assert sorted(cleaned(fleet)) == EVERY


def test_a_run_whose_hosts_cannot_be_told_cleans_every_node(caplog):
    fleet = cleanup(None, ha(), tags=("kai",), via_flow=False)  # no mode known
    assert sorted(cleaned(fleet)) == EVERY
    assert "cannot tell which hosts" in caplog.text
