"""deployments/scaleout.py without a server: which pool runs the modes, the crash automation."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prefect.exceptions import ObjectNotFound

from deployments.scaleout import CRASH_AFTER_S, HEARTBEAT_S, crash_automation, pool_serving_modes


class FakeClient:
    def __init__(self, pools: dict[str, str | None]):
        self.pools = pools

    def read_deployment_by_name(self, name: str):
        flow, deployment = name.split("/")
        assert flow == deployment
        if flow not in self.pools:
            raise ObjectNotFound(http_exc=Exception(name))
        return SimpleNamespace(work_pool_name=self.pools[flow])


@pytest.mark.parametrize("pools, expected", [
    ({"ha": "kai-pool", "reset": "kai-pool"}, "kai-pool"),
    ({"ha": "kai-pool", "reset": None}, None),        # a runner serves one mode: kai serve's own
    ({"ha": "kai-pool"}, None),                       # a mode not deployed: kai serve deploys all
    ({"ha": "kai-pool", "reset": "other"}, None),     # two pools: not prefect.yaml's layout
    ({"ha": None, "reset": None}, None),              # an earlier kai serve's runner deployments
])
def test_kai_serve_leaves_the_modes_to_a_pool_only_when_every_mode_is_on_it(pools, expected):
    assert pool_serving_modes(FakeClient(pools), ["ha", "reset"]) == expected


def test_the_crash_automation_waits_three_heartbeats_and_marks_crashed():
    automation = crash_automation()
    trigger, (action,) = automation.trigger, automation.actions
    assert HEARTBEAT_S >= 30, "Prefect's minimum heartbeat"
    assert trigger.within.total_seconds() == CRASH_AFTER_S == 3 * HEARTBEAT_S
    assert trigger.posture == "Proactive" and trigger.after == {"prefect.flow-run.heartbeat"}
    assert {"prefect.flow-run.Completed", "prefect.flow-run.Crashed"} <= trigger.expect
    assert trigger.for_each == {"prefect.resource.id"}
    assert action.type == "change-flow-run-state" and action.state == "CRASHED"


def test_prefect_yaml_turns_heartbeats_on_for_the_pools_runs():
    from pathlib import Path

    import yaml

    doc = yaml.safe_load((Path(__file__).parent.parent / "prefect.yaml").read_text())
    for deployment in doc["deployments"]:
        env = deployment["work_pool"]["job_variables"]["env"]
        assert int(env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]) == HEARTBEAT_S, deployment["name"]
