"""What every mode does around its steps: validate, plan, lock the hosts, connect, clean up.

`kai_run(spec, mode)` is the frame of each flow:
1. the spec is validated for the mode — every problem at once — before any host is contacted;
2. the plan is built (the same plan `kai plan` prints);
3. each host the plan touches is locked with a strict Prefect global concurrency limit
   (`kai-host-<address>`, created on demand, held for the whole run): a second run aimed at a busy
   host waits `lock_wait_s` and is then refused with a message naming the host and the run holding it;
4. each host is also locked on the node itself (tasks/node_lock.py: a lock file naming the run
   and the controller, under a lease this run renews), so that two kai installations — two
   Prefect servers — never work on one host at once; released when the run ends;
5. the run is registered in the state dir with its process and lease (flows/run_registry.py), so
   that `kai serve` can mark it crashed and free its hosts if the process dies unnoticed;
6. one SSH connection per host is opened lazily and closed at the end.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import ConcurrencyLeaseHolder, StateType
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectAlreadyExists, PrefectHTTPStatusError

from installers import modes, redact
from installers.plan import Plan, build_plan
from installers.settings import KaiSettings
from installers.spec import ClusterSpec, SpecError, load_spec, validate_for_mode
from installers.ssh import Fleet
from flows import run_registry
from tasks.context import RunContext, activate
from tasks.fanout import fan_out
from tasks.node_lock import LeaseRenewer, NodeLock, controller_id, run_lock_job
from tasks.targets import ssh_targets

LOCK_PREFIX = "kai-host-"
LOCK_LEASE_S = 60  # Prefect's minimum; a SIGKILLed holder frees its hosts after this long
LIMIT_CREATORS = 8  # concurrent requests when a run meets hosts with no lock yet


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
    options: dict[str, Any] | None = None,
) -> Iterator[tuple[RunContext, Plan]]:
    """The frame of a flow run (module doc). Whether it locks its hosts is the mode's
    (installers/modes.py: read-only health does not). `options`: what the mode takes besides
    the spec and nodes (upgrade: to, max_unavailable; remove_nodes: force; certs: renew)."""
    logger = get_run_logger()
    redact.install()
    spec = load_spec(spec if isinstance(spec, dict) else spec.model_dump(mode="json"))
    problems = validate_for_mode(spec, mode, nodes, options)
    if problems:
        raise SpecError(problems)
    lock = modes.run_locks_hosts(mode, options)  # certs: only a renewal locks
    plan = build_plan(spec, mode, nodes=nodes, **(options or {}))
    for warning in plan.warnings:
        logger.warning("plan: %s", warning)
    touched = sorted({job.node for phase in plan.phases for step in phase.steps for job in step.jobs})
    by_name = {n.name: n for n in spec.nodes}
    addresses = [by_name[name].address for name in touched]
    targets = ssh_targets(spec, [by_name[name] for name in touched])
    settings = KaiSettings()
    logger.info("%s on %d host(s): %s", mode, len(touched), ", ".join(touched))

    state_dir = settings.state_path()
    with host_locks(addresses, lock_wait_s) if lock else nullcontext() as lease_id:
        fleet = Fleet(targets)
        node_lock = this_runs_node_lock(state_dir, settings.node_lock_lease_s) if lock else None
        run = RunContext(spec=spec, plan=plan, fleet=fleet, state_dir=Path(settings.state_dir),
                         node_lock=node_lock)
        renewer = (LeaseRenewer(fleet, node_lock, run.locked_nodes, run.locked_guard).start()
                   if node_lock else None)
        registered = _register(state_dir, node_lock, lease_id, touched)
        try:
            with activate(run):
                yield run, plan
        finally:
            try:
                if renewer is not None:
                    renewer.stop()
                    release_node_locks(run)
            finally:
                fleet.close()
                if registered:
                    run_registry.unregister(state_dir, node_lock.run_id)


def this_runs_node_lock(state_dir: Path, lease_s: int) -> NodeLock:
    ctx = FlowRunContext.get()
    if ctx is not None and ctx.flow_run is not None:
        run_id, run_name = str(ctx.flow_run.id), ctx.flow_run.name
    else:  # an in-process call outside a flow run (tests): still one run, one lock
        run_id, run_name = str(uuid.uuid4()), "(no flow run)"
    return NodeLock(run_id=run_id, run_name=run_name, controller=controller_id(state_dir),
                    lease_s=lease_s)


def release_node_locks(run: RunContext) -> None:
    """Give back the node locks this run took (a failed release just lets the lease run out)."""
    with run.locked_guard:
        nodes = set(run.locked_nodes)
    if not nodes or run.node_lock is None:
        return
    problems = run_lock_job(run.fleet, nodes, run.node_lock, "release")
    for node, problem in sorted(problems.items()):
        get_run_logger().warning("[%s] could not release the node lock (its lease of %d s runs "
                                 "out instead): %s", node, run.node_lock.lease_s, problem)


def _register(state_dir: Path, node_lock: NodeLock | None, lease_id: UUID | None,
              nodes: list[str]) -> bool:
    """Register a runner-started run for kai serve's reaper (flows/run_registry.py)."""
    if node_lock is None or not run_registry.started_by_a_runner(node_lock.run_id):
        return False
    run_registry.register(state_dir, run_registry.RunEntry(
        run_id=node_lock.run_id, pid=os.getpid(), lease_id=str(lease_id) if lease_id else None,
        nodes=tuple(nodes)))
    return True


@contextmanager
def host_locks(addresses: list[str], wait_s: float) -> Iterator[UUID]:
    """Hold one slot of every host's limit (limit 1) for the whole run, under one renewed lease.

    Prefect's `concurrency()` context manager does the same but emits an event per limit listing
    every other limit as a related resource: O(N²) work, 13 % of a 200-host run's CPU. The lease
    API underneath is one call to take all slots, one to release them, one per renewal.
    """
    names = [lock_name(a) for a in addresses]
    _tag_own_run(names)
    lease_id = _acquire(names, wait_s)
    stop = threading.Event()
    # copy the context: Prefect's settings (API URL) may live in a context variable
    renewer = threading.Thread(target=contextvars.copy_context().run,
                               args=(_renew_until, lease_id, stop), daemon=True, name="kai-host-lease")
    renewer.start()
    try:
        yield lease_id
    finally:
        stop.set()
        with get_client(sync_client=True) as client:
            client.release_concurrency_slots_with_lease(lease_id)


def _acquire(names: list[str], wait_s: float) -> UUID:
    ctx = FlowRunContext.get()
    holder = (ConcurrencyLeaseHolder(type="flow_run", id=ctx.flow_run.id)
              if ctx is not None and ctx.flow_run is not None else None)
    deadline = time.monotonic() + wait_s
    created_missing = False
    with get_client(sync_client=True) as client:
        while True:
            try:
                body = client.increment_concurrency_slots_with_lease(
                    names, slots=1, mode="concurrency", lease_duration=LOCK_LEASE_S,
                    holder=holder).json()
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != 423:  # 423 Locked: a host is busy
                    raise
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise HostsBusy(_who_holds(names)) from None
                retry_after = float(exc.response.headers.get("Retry-After") or 1)
                time.sleep(max(0.2, min(retry_after, 2.0, remaining)))
                continue
            lease_id = UUID(body["lease_id"])
            missing = set(names) - {limit["name"] for limit in body["limits"]}
            if not missing:
                return lease_id
            # The server skips limits that do not exist: hosts kai has not seen before. A
            # missing limit must never mean "no lock at all": create them, then take all again.
            client.release_concurrency_slots_with_lease(lease_id)
            if created_missing:
                raise RuntimeError(f"host locks missing on the Prefect server: {sorted(missing)}")
            _create_limits(sorted(missing))
            created_missing = True


def _renew_until(lease_id: UUID, stop: threading.Event) -> None:
    log = logging.getLogger("kai.locks")
    while not stop.wait(LOCK_LEASE_S / 3):
        try:
            with get_client(sync_client=True) as client:
                client.renew_concurrency_lease(lease_id, lease_duration=LOCK_LEASE_S)
        except Exception as exc:  # noqa: BLE001 - keep trying; the lease outlives a few misses
            log.warning("could not renew the host locks' lease: %s", exc)


def _create_limits(names: list[str]) -> None:
    """Create per-host limits (limit 1: one run per host), a few requests at a time: a first
    install on 200 hosts makes 200 of them."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    def create(chunk: list[str]) -> None:
        with get_client(sync_client=True) as client:
            for name in chunk:
                try:
                    client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=name, limit=1))
                except ObjectAlreadyExists:
                    pass  # another run created it meanwhile

    chunks = [names[i::LIMIT_CREATORS] for i in range(min(LIMIT_CREATORS, len(names)))]
    ctx = contextvars.copy_context()  # Prefect's settings (API URL) may live in the context
    results = fan_out(lambda chunk: ctx.copy().run(create, chunk), chunks, limit=LIMIT_CREATORS)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise failed[0]


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
