"""Status reads for many pollers at the cost of one Prefect read per run per second.

Fifty dashboards polling one install each second would otherwise be fifty reads of the flow run,
its task runs and artifacts per second against a Prefect server that is busy ingesting the run.
Each run's status is read at most once per `ttl`; while a fresh read is in flight the previous
answer (at most ttl + one read old) is served at once, so a slow server never makes pollers wait.
Only the first request for a run waits for a read. Errors are not cached.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class _Entry:
    value: dict
    at: float
    refreshing: bool = False


class StatusCache:
    def __init__(self, fetch: Callable[[str], dict], ttl: float = 1.0, final_ttl: float = 30.0,
                 max_runs: int = 512):
        self._fetch = fetch
        self._ttl, self._final_ttl, self._max = ttl, final_ttl, max_runs
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._first_reads: dict[str, threading.Lock] = {}

    def get(self, run_id: str) -> dict:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(run_id)
            if entry is not None:
                ttl = self._final_ttl if entry.value.get("final") else self._ttl
                if now - entry.at >= ttl and not entry.refreshing:
                    entry.refreshing = True
                    threading.Thread(target=self._refresh, args=(run_id,), daemon=True).start()
                return entry.value
            first = self._first_reads.setdefault(run_id, threading.Lock())
        with first:  # single flight: concurrent first requests share one read
            with self._lock:
                entry = self._entries.get(run_id)
            if entry is not None:
                return entry.value
            value = self._fetch(run_id)
            self._store(run_id, value)
            return value

    def _refresh(self, run_id: str) -> None:
        try:
            value: Any = self._fetch(run_id)
        except Exception:  # noqa: BLE001 - keep serving the last answer; the next poll retries
            with self._lock:
                if run_id in self._entries:
                    self._entries[run_id].refreshing = False
            return
        self._store(run_id, value)

    def _store(self, run_id: str, value: dict) -> None:
        with self._lock:
            self._entries[run_id] = _Entry(value, time.monotonic())
            self._entries.move_to_end(run_id)
            self._first_reads.pop(run_id, None)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
