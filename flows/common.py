"""What every mode does around its steps: validate, plan, lock the hosts, connect, clean up.

`kai_run(spec, mode)` is the frame of each flow:
1. the spec is validated for the mode — every problem at once — before any host is contacted;
2. the plan is built (the same plan `kai plan` prints);
3. each host the plan touches is locked with a strict Prefect global concurrency limit
   (`kai-host-<address>`, created on demand, held for the whole run): a second run aimed at a busy
   host waits `lock_wait_s` and is then refused with a message naming the host and the run holding it;
4. one SSH connection per host is opened lazily and closed at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import StateType
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectAlreadyExists

from installers import redact
from installers.plan import Plan, build_plan
from installers.settings import KaiSettings
from installers.spec import ClusterSpec, SpecError, load_spec, validate_for_mode
from installers.ssh import Fleet
from tasks.context import RunContext, activate
from tasks.targets import ssh_targets

LOCK_PREFIX = "kai-host-"
LOCK_LEASE_S = 60  # Prefect's minimum; a SIGKILLed holder frees its hosts after this long


class HostsBusy(Exception):
    pass


def lock_name(address: str) -> str:
    return LOCK_PREFIX + address


@contextmanager
def kai_run(
    spec: ClusterSpec | dict[str, Any],
    mode: str,
    *,
    nodes: list[str] | None = None,
    lock_wait_s: float = 30,
    lock: bool = True,
) -> Iterator[tuple[RunContext, Plan]]:
    logger = get_run_logger()
    redact.install()
    spec = load_spec(spec if isinstance(spec, dict) else spec.model_dump(mode="json"))
    problems = validate_for_mode(spec, mode, nodes)
    if problems:
        raise SpecError(problems)
    plan = build_plan(spec, mode, nodes=nodes)
    for warning in plan.warnings:
        logger.warning("plan: %s", warning)
    touched = sorted({job.node for phase in plan.phases for step in phase.steps for job in step.jobs})
    by_name = {n.name: n for n in spec.nodes}
    addresses = [by_name[name].address for name in touched]
    targets = ssh_targets(spec, [by_name[name] for name in touched])
    settings = KaiSettings()
    logger.info("%s on %d host(s): %s", mode, len(touched), ", ".join(touched))

    with host_locks(addresses, lock_wait_s) if lock else nullcontext():
        fleet = Fleet(targets)
        run = RunContext(spec=spec, plan=plan, fleet=fleet, state_dir=Path(settings.state_dir))
        try:
            with activate(run):
                yield run, plan
        finally:
            fleet.close()


@contextmanager
def host_locks(addresses: list[str], wait_s: float) -> Iterator[None]:
    names = [lock_name(a) for a in addresses]
    _tag_own_run(names)
    _ensure_limits(names)
    acquired = False
    try:
        with concurrency(names, occupy=1, strict=True, timeout_seconds=wait_s,
                         lease_duration=LOCK_LEASE_S):
            acquired = True
            yield
    except TimeoutError:
        if acquired:  # a timeout inside the run itself, not waiting for the hosts
            raise
        raise HostsBusy(_who_holds(names)) from None


def _ensure_limits(names: list[str]) -> None:
    """Create the per-host limits that do not exist yet (limit 1: one run per host)."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    with get_client(sync_client=True) as client:
        existing = {limit.name for limit in _all_limits(client)}
        for name in names:
            if name not in existing:
                try:
                    client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=name, limit=1))
                except ObjectAlreadyExists:
                    pass  # another run created it meanwhile


def _all_limits(client) -> list:
    limits, offset = [], 0
    while True:
        page = client.read_global_concurrency_limits(limit=200, offset=offset)
        limits += page
        if len(page) < 200:
            return limits
        offset += 200


def _tag_own_run(lock_names: list[str]) -> None:
    """Tag this flow run with its hosts, so a refused run can say which run holds a host."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    tags = sorted(set(ctx.flow_run.tags) | set(lock_names))
    with get_client(sync_client=True) as client:
        client.update_flow_run(ctx.flow_run.id, tags=tags)


def _who_holds(lock_names: list[str]) -> str:
    ctx = FlowRunContext.get()
    own = ctx.flow_run.id if ctx and ctx.flow_run else None
    busy = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(any_=lock_names),
            state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.RUNNING, StateType.PENDING, StateType.CANCELLING])),
        ))
        for other in runs:
            if other.id == own:
                continue
            for name in sorted(set(other.tags) & set(lock_names)):
                busy.append(f"host {name[len(LOCK_PREFIX):]} is held by flow run "
                            f"'{other.name}' ({other.id})")
    if not busy:
        return "hosts are busy with another kai run: " + ", ".join(n[len(LOCK_PREFIX):] for n in lock_names)
    return "refused: " + "; ".join(busy)
