"""Child process: C concurrent clients polling a flow run's status until a stop file appears.

    python -m benchmarks.status_load KAI_API_URL FLOW_RUN_ID CLIENTS INTERVAL_S STOP_FILE RESULT.json

One status call = kai's REST API `GET /api/v1/installation/{id}/status` (bearer token from env
KAI_API_TOKEN), what a dashboard polls. Each client has its own connection and polls every
INTERVAL_S seconds, at a random offset within the interval, at least once; every call counts,
the first too.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

import httpx


async def client_loop(api: str, flow_run_id: str, interval: float, stop: Path,
                      latencies: list[float], errors: list[str], ready: asyncio.Barrier) -> None:
    headers = {"Authorization": f"Bearer {os.environ['KAI_API_TOKEN']}"}
    async with httpx.AsyncClient(base_url=api, timeout=30, headers=headers) as http:
        # Making a client costs ~30 ms of CPU: with 50 of them, the random offsets below would
        # have run out before the last client existed, and most clients would poll in lockstep
        # (and time each other's CPU). All clients exist first; then each waits its offset.
        await ready.wait()
        await asyncio.sleep(random.uniform(0, interval))
        # at least one call per client: a short run (the smoke test's) may return before a
        # client's first poll on a loaded machine, which would leave no figure at all
        first = True
        while first or not stop.exists():
            first = False
            t0 = time.perf_counter()
            try:
                r = await http.get(f"/api/v1/installation/{flow_run_id}/status")
                r.raise_for_status()
                if r.json().get("installation_id", flow_run_id) is None:
                    raise httpx.HTTPError("status without installation_id")
                latencies.append(time.perf_counter() - t0)
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - t0)))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def amain(api, flow_run_id, clients, interval, stop, result_path) -> None:
    latencies: list[float] = []
    errors: list[str] = []
    ready = asyncio.Barrier(clients)
    await asyncio.gather(*(client_loop(api, flow_run_id, interval, stop, latencies, errors, ready)
                           for _ in range(clients)))
    Path(result_path).write_text(json.dumps({
        "clients": clients, "interval_s": interval, "calls": len(latencies),
        "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies, default=float("nan")) * 1000, "errors": errors[:20],
        "error_count": len(errors)}, indent=2))


if __name__ == "__main__":
    api, frid, clients, interval, stop, out = sys.argv[1:]
    asyncio.run(amain(api, frid, int(clients), float(interval), Path(stop), out))
