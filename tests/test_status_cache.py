import threading
import time

import pytest

from deployments.status_cache import StatusCache


class SlowServer:
    def __init__(self, delay=0.2):
        self.delay, self.reads, self.n = delay, 0, 0

    def status(self, run_id):
        if run_id == "unknown":
            raise LookupError(run_id)
        self.reads += 1
        time.sleep(self.delay)
        self.n += 1
        return {"id": run_id, "version": self.n, "final": False}


def test_fifty_pollers_share_one_read_and_never_wait_once_cached():
    server = SlowServer(delay=0.3)
    cache = StatusCache(server.status, ttl=0.5)
    latencies, first = [], []

    def poller():
        for _ in range(15):
            t0 = time.monotonic()
            first.append(cache.get("run")["version"])
            latencies.append(time.monotonic() - t0)
            time.sleep(0.1)

    threads = [threading.Thread(target=poller) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(latencies) == 750
    # ~1.8 s of polling at ttl 0.5 with 0.3 s reads: a handful of reads, not 750
    assert server.reads <= 5, server.reads
    # only the very first requests waited for a read; later answers came from the cache at once
    slow = [x for x in latencies if x > 0.05]
    assert len(slow) <= 50, len(slow)  # one wait per poller at most: the very first request
    assert max(first) >= 2, "the cache was refreshed while polled"


def test_errors_are_not_cached_and_final_runs_are_kept_longer():
    server = SlowServer(delay=0)
    fetch = {"fn": server.status}
    cache = StatusCache(lambda run_id: fetch["fn"](run_id), ttl=0.01, final_ttl=60)
    for _ in range(2):
        with pytest.raises(LookupError):
            cache.get("unknown")
    fetch["fn"] = lambda run_id: {"id": run_id, "final": True}
    assert cache.get("done")["final"]
    fetch["fn"] = lambda run_id: pytest.fail("a final run was read again")
    time.sleep(0.05)
    assert cache.get("done")["final"]
