"""The tests' one way to wait for a condition: poll it, with a deadline that names what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(what: str | Callable[[], str], check: Callable[[], T], timeout_s: float,
               every_s: float = 0.5) -> T:
    """check() every `every_s` until it returns something truthy, and return that; once more
    after `timeout_s`, then AssertionError '<what>: not within <timeout_s> s'. `what` may be a
    function, called only then (to say what the state was at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"{said}: not within {timeout_s:g} s")
        time.sleep(every_s)
