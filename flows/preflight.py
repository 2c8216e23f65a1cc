"""preflight: check every host against the spec — read-only, changes nothing."""

from prefect import flow

from flows.common import kai_run
from installers.spec import ClusterSpec
from tasks.preflight import preflight as check_hosts


@flow(name="preflight")
def preflight(spec: ClusterSpec, lock_wait_s: float = 30) -> dict:
    """Gather facts on every host and judge them; fails listing every problem on every host."""
    with kai_run(spec, "preflight", lock_wait_s=lock_wait_s) as (run, plan):
        return check_hosts(plan.get("facts"))
