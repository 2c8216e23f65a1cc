"""A polling step's looks at the cluster (verify, health, remove_nodes' verify): look until a
report is healthy or the deadline, and say which checks failed with their last real errors.
One look: installers/cluster_check.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from installers.cluster_check import CHECKS, NOT_CHECKED, ClusterReport

POLL_S = 3.0  # pause between two looks of a polling step (verify, health)


@dataclass
class PollOutcome:
    report: ClusterReport   # the last look
    looks: int
    elapsed_s: float
    failing: dict[str, list[str]]  # check -> its last real errors, for the checks failing at the end

    @property
    def healthy(self) -> bool:
        return self.report.healthy


def poll_until_healthy(
    look: Callable[[float], ClusterReport],
    deadline_s: float,
    *,
    poll_s: float = 3.0,
    stop: threading.Event | None = None,
    on_wait: Callable[[ClusterReport], None] | None = None,
) -> PollOutcome:
    """Call look(deadline) every poll_s until a report is healthy, `stop` is set or no further
    look fits before deadline_s (so it ends between deadline_s - poll_s and deadline_s, plus the
    last look, whose requests are themselves cut to end by the deadline).

    A check cut off by the deadline in the last look keeps the error of the look before, so the
    outcome names every failing check with its last real error, not just the last exception."""
    stop = stop or threading.Event()
    started = time.monotonic()
    deadline = started + deadline_s
    last_errors: dict[str, list[str]] = {}
    looks = 0
    while True:
        report = look(deadline)
        looks += 1
        for check in CHECKS:
            if check in report.failed_checks:
                last_errors[check] = report.failed_checks[check]
            elif check not in report.unchecked:
                last_errors.pop(check, None)  # passed this time
        remaining = deadline - time.monotonic()
        # A look that would start after the deadline could check nothing: stop before it.
        if report.healthy or stop.is_set() or remaining < poll_s:
            break
        if on_wait is not None:
            on_wait(report)
        stop.wait(poll_s)  # a cancel cuts the pause short
    failing = {check: last_errors.get(check, [NOT_CHECKED]) for check in CHECKS
               if check in report.failed_checks or check in report.unchecked}
    return PollOutcome(report, looks, time.monotonic() - started, failing)


def unhealthy_message(cluster: str, outcome: PollOutcome, deadline_s: float) -> str:
    """Every failing check with its last error, one per line."""
    lines = [f"cluster {cluster} is not healthy after {outcome.elapsed_s:.0f} s (deadline "
             f"{deadline_s:g} s, {outcome.looks} look(s)); failing checks: {', '.join(outcome.failing)}"]
    for check, errors in outcome.failing.items():
        lines += [f"  {check}: {error}" for error in errors]
    return "\n".join(lines)
