"""`@step_task`: a Prefect task whose retries, backoff and name come from the plan step it runs.

Retry policy lives in the plan (defaults per step kind in installers/step_kinds.py, overridable in
the spec's `steps:` block), so a flow just calls `runtime(plan.get("runtime"))` and Prefect records
one task run per step, with `run_count` showing the attempts.

The plan decides which steps a spec needs (kube-vip steps only with a kube-vip endpoint, storage
only when enabled, …): a flow calls every task of its mode in order and `plan.get` gives None for a
step this plan does not have. Such a call does nothing — no task run, no log line, no artifact —
so a flow reads straight down without repeating the plan's conditions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import task
from prefect.cache_policies import NONE

from installers.plan import Step
from tasks.node_step import retry_unless_permanent

P = ParamSpec("P")
R = TypeVar("R")


# Prefect refuses more than 50 retry delays and repeats the last one for later retries; a capped
# schedule has long reached its cap by then, so cutting the list there changes no wait.
PREFECT_MAX_RETRY_DELAYS = 50


def backoff(step: Step) -> list[float]:
    """The step's waits between attempts, one per retry: delay, 2×delay, 4×delay … each at most
    the policy's max_retry_delay_s (installers.backoff, the product's one retry schedule)."""
    return step.policy.retry_delays()[:PREFECT_MAX_RETRY_DELAYS]


def run_task(prefect_task, step: Step, *args: Any, **kwargs: Any) -> Any:
    """One Prefect task run for one plan step (tests/test_flow_order.py records calls here)."""
    return prefect_task.with_options(
        retries=step.policy.retries,
        retry_delay_seconds=backoff(step) or 0,
        task_run_name=step.name,
    )(step, *args, **kwargs)


def step_task(fn: Callable[P, R]) -> Callable[P, R | None]:
    prefect_task = task(
        fn,
        name=fn.__name__,
        cache_policy=NONE,  # steps change machines: never serve a cached result
        persist_result=False,  # results may hold join secrets; summaries go to artifacts
        retry_condition_fn=retry_unless_permanent,
        log_prints=False,
    )

    @functools.wraps(fn)
    def call(step: Step | None, *args, **kwargs):
        if step is None:  # not in this plan (plan.get): nothing runs, nothing is recorded
            return None
        return run_task(prefect_task, step, *args, **kwargs)

    call.task = prefect_task  # type: ignore[attr-defined]
    return call
