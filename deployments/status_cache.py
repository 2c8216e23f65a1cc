"""Status reads for many pollers at the cost of one Prefect read per run per second.

Fifty dashboards polling one install each second would otherwise be fifty reads of the flow run,
its task runs and artifacts per second against a Prefect server that is busy ingesting the run.
Each run's status is read at most once per `ttl` (`final_ttl` once the run is final); while a fresh
read is in flight the previous answer is served at once, so a slow server never makes pollers wait
— unless that answer is older than `max_age` (nobody asked for a while): then the request waits for
the read. Concurrent requests share one read (single flight). Errors are not cached.

`keep_warm` reads active runs before anyone asks: every second it asks Prefect which runs are not
final (one query) and reads those whose answer is missing or stale, so that a dashboard's first
poll of a running install is answered from the cache too.

The cache lives on the API's event loop: a lookup never blocks and never needs a thread (the
API runs the reads themselves in a worker thread).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("kai.api")


@dataclass
class _Entry:
    value: dict
    answer: Any  # render(value): what get() returns
    at: float  # when it was read
    asked: float  # when a poller last got it


class StatusCache:
    def __init__(self, fetch: Callable[[str], Awaitable[dict]], ttl: float = 1.0,
                 final_ttl: float = 30.0, max_age: float = 10.0, max_runs: int = 512,
                 render: Callable[[dict], Any] = lambda value: value):
        """`render` turns a read into the answer, once per read (the API encodes the JSON body
        there, so that serving it costs no CPU per request)."""
        self._fetch, self._render = fetch, render
        self._ttl, self._final_ttl, self._max_age, self._max = ttl, final_ttl, max_age, max_runs
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._reads: dict[str, asyncio.Task] = {}

    async def get(self, run_id: str) -> Any:
        now = time.monotonic()
        entry = self._entries.get(run_id)
        if entry is not None:
            age, final = now - entry.at, bool(entry.value.get("final"))
            if age >= (self._final_ttl if final else self._ttl):
                self.read(run_id)  # stale: refresh in the background …
            if final or age < self._max_age:  # … and answer with what is known
                entry.asked = now
                return entry.answer
        # first request, or an answer too old to serve: wait for the (shared) read; a request
        # that goes away must not cancel the read the others wait for
        answer = await asyncio.shield(self.read(run_id))
        if (entry := self._entries.get(run_id)) is not None:
            entry.asked = now
        return answer

    def read(self, run_id: str) -> asyncio.Task:
        """Start a read of the run's status, or join the one in flight."""
        loop = asyncio.get_running_loop()
        task = self._reads.get(run_id)
        if task is None or task.get_loop() is not loop:  # (a test client runs a loop per request)
            task = self._reads[run_id] = loop.create_task(self._read(run_id))
            task.add_done_callback(self._read_done)
        return task

    async def _read(self, run_id: str) -> Any:
        try:
            value = await self._fetch(run_id)
            answer = self._render(value)
        finally:
            if self._reads.get(run_id) is asyncio.current_task():
                del self._reads[run_id]
        previous = self._entries.get(run_id)
        self._entries[run_id] = _Entry(value, answer, time.monotonic(),
                                       previous.asked if previous else 0.0)
        self._entries.move_to_end(run_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return answer

    @staticmethod
    def _read_done(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            # the waiting requests (if any) answer with it; a background refresh only logs it
            # and keeps serving the last answer until the next try
            log.debug("status read failed: %r", task.exception())

    async def keep_warm(self, active_runs: Callable[[], Awaitable[list[str]]],
                        every: float = 1.0, idle: float = 30.0) -> None:
        """Forever: every `every` s list the active runs and read those whose answer is missing
        or older than ttl — while they are new (active for less than `idle` s) or were polled in
        the last `idle` s. Runs that became final are no longer listed: their last answer ages
        out like any other."""
        since: dict[str, float] = {}  # active run -> when first seen active
        while True:
            try:
                active = await active_runs()
            except Exception as exc:  # noqa: BLE001 - the server is busy or down: try next tick
                log.debug("listing active runs failed: %r", exc)
            else:
                now = time.monotonic()
                since = {run_id: since.get(run_id, now) for run_id in active}
                for run_id, first_seen in since.items():
                    entry = self._entries.get(run_id)
                    wanted = max(first_seen, entry.asked if entry else 0.0)
                    if now - wanted < idle and (entry is None or now - entry.at >= self._ttl):
                        self.read(run_id)
            await asyncio.sleep(every)
