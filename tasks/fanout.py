"""Run one function over many hosts in parallel, bounded, and cancellable.

Why not ThreadPoolExecutor: its worker threads are joined at interpreter exit, so a flow process
that Prefect cancels (SIGTERM) would hang until every remote command finished. Here the threads
are daemons and the caller's `cancel` event is set when the waiting thread is interrupted, which
makes the SSH runner kill the remote process groups at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_PARALLELISM = 256  # one thread per host up to this; SSH work is I/O bound


def fan_out(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    limit: int = DEFAULT_PARALLELISM,
    cancel: threading.Event | None = None,
) -> list[R | BaseException]:
    """Call fn(item) for every item, at most `limit` at a time; results (or exceptions) in order."""
    results: list[R | BaseException | None] = [None] * len(items)
    slots = threading.BoundedSemaphore(max(1, limit))

    def worker(index: int, item: T) -> None:
        try:
            if cancel is not None and cancel.is_set():
                raise InterruptedError("cancelled before start")
            results[index] = fn(item)
        except Exception as exc:  # noqa: BLE001 - handed back to the caller per item
            results[index] = exc
        finally:
            slots.release()

    threads = []
    finished = False
    try:
        for index, item in enumerate(items):
            slots.acquire()
            thread = threading.Thread(target=worker, args=(index, item), daemon=True,
                                      name=f"kai-host-{index}")
            thread.start()
            threads.append(thread)
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)  # short joins keep the main thread responsive to signals
        finished = True
    finally:
        # Interrupted (Prefect's TerminationSignal on cancel, KeyboardInterrupt, …): tell the
        # workers' SSH jobs to kill their remote process groups; the interruption propagates.
        if not finished and cancel is not None:
            cancel.set()
    return results  # type: ignore[return-value]
