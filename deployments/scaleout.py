"""Scale-out: kai's modes run by Prefect workers (prefect.yaml) on a shared Prefect server.

Two things the embedded `kai serve` does not need and a worker fleet does:

1. **Who runs the modes.** `prefect --no-prompt deploy --all` puts a deployment per mode on the
   work pool `kai-pool`. A `kai serve` pointed at that server (PREFECT_API_URL) must then serve
   only its REST API: its own runner would re-register the same `<mode>/<mode>` deployments as
   runner deployments, and the workers would never see another run. `pool_serving_modes` tells.

2. **Runs of a dead worker machine.** `kai serve`'s reaper (deployments/reaper.py) knows the flow
   processes of its own machine only. A worker machine that dies leaves its runs RUNNING for good
   (their hosts are freed anyway: the host locks' lease runs out, and so do the node locks').
   Prefect's answer is flow-run heartbeats (prefect.yaml sets PREFECT_FLOWS_HEARTBEAT_FREQUENCY
   for the pool's runs) and an automation that marks a run Crashed when they stop
   (https://docs.prefect.io/v3/advanced/detect-zombie-flows). `ensure_crash_automation` creates
   it once per server; it needs the server's services (event triggers) on.

    python -m deployments.scaleout      # once per server, if no `kai serve` points at it
"""

from __future__ import annotations

import sys
from datetime import timedelta

HEARTBEAT_S = 30  # Prefect's minimum; prefect.yaml sets it for the pool's flow runs
# three heartbeats missed: a run on a busy machine is late, not dead
CRASH_AFTER_S = 3 * HEARTBEAT_S
AUTOMATION_NAME = "kai: mark runs whose heartbeats stopped Crashed"


def pool_serving_modes(client, modes: list[str]) -> str | None:
    """The work pool every mode's deployment `<mode>/<mode>` is on, or None (some mode is not
    deployed, or is served by a runner — `kai serve`'s own, of an earlier start)."""
    from prefect.exceptions import ObjectNotFound

    pools = set()
    for mode in modes:
        try:
            deployment = client.read_deployment_by_name(f"{mode}/{mode}")
        except ObjectNotFound:
            return None
        if not deployment.work_pool_name:
            return None
        pools.add(deployment.work_pool_name)
    return pools.pop() if len(pools) == 1 else None


def crash_automation():
    from prefect.automations import AutomationCore
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return AutomationCore(
        name=AUTOMATION_NAME,
        description="A kai run executed by a worker stopped sending heartbeats (its machine or "
                    "worker died): mark it Crashed, so that it stops showing as running.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed",
                    "prefect.flow-run.Failed", "prefect.flow-run.Cancelled",
                    "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=CRASH_AFTER_S),
        ),
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED,
            message=f"no heartbeat for {CRASH_AFTER_S} s: the flow-run process or its machine "
                    "died")],
    )


def ensure_crash_automation(client) -> bool:
    """Create the automation unless the server has one of that name; True if created."""
    if client.read_automations_by_name(AUTOMATION_NAME):
        return False
    client.create_automation(crash_automation())
    return True


def main() -> int:
    from prefect.client.orchestration import get_client

    from installers.settings import resolve_settings

    resolve_settings(need_prefect=True)
    with get_client(sync_client=True) as client:
        created = ensure_crash_automation(client)
    print(f"automation {AUTOMATION_NAME!r}: {'created' if created else 'already there'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
