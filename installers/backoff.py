"""The one retry schedule of the product: capped exponential backoff.

Every retrying thing in kai waits `first, 2×first, 4×first, …` between attempts, each wait at most
`max_s`. Without the cap a doubling schedule grows without bound (20 retries from 10 s add up to
~121 days); with it the waits of `retries` attempts add up to at most `retries × max_s`.
"""

from __future__ import annotations


def capped_exponential(first_s: float, retries: int, max_s: float) -> list[float]:
    """The waits before retry 1, 2, … `retries`: first_s doubling each time, capped at max_s."""
    if first_s < 0 or max_s < 0 or retries < 0:
        raise ValueError(f"backoff needs non-negative values, got first_s={first_s} "
                         f"retries={retries} max_s={max_s}")
    delays: list[float] = []
    delay = float(first_s)
    for _ in range(retries):
        delays.append(min(delay, max_s))
        delay = min(delay * 2, max_s)  # stays at the cap: no float overflow however many retries
    return delays
