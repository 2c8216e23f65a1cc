"""`@step_task`: a Prefect task whose retries, backoff and name come from the plan step it runs.

Retry policy lives in the plan (defaults per step kind, overridable in the spec's `steps:` block),
so a flow just calls `runtime(plan.step("runtime"))` and Prefect records one task run per step,
with `run_count` showing the attempts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

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


def step_task(fn: Callable[P, R]) -> Callable[P, R]:
    prefect_task = task(
        fn,
        name=fn.__name__,
        cache_policy=NONE,  # steps change machines: never serve a cached result
        persist_result=False,  # results may hold join secrets; summaries go to artifacts
        retry_condition_fn=retry_unless_permanent,
        log_prints=False,
    )

    @functools.wraps(fn)
    def call(step: Step, *args, **kwargs):
        return prefect_task.with_options(
            retries=step.policy.retries,
            retry_delay_seconds=backoff(step) or 0,
            task_run_name=step.name,
        )(step, *args, **kwargs)

    call.task = prefect_task  # type: ignore[attr-defined]
    return call
