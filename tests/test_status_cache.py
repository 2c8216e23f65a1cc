import asyncio
import time

import pytest

from deployments.status_cache import StatusCache


class SlowServer:
    def __init__(self, delay=0.2, final=False):
        self.delay, self.final, self.reads, self.n = delay, final, 0, 0
        self.fail: Exception | None = None

    async def status(self, run_id):
        if run_id == "unknown":
            raise LookupError(run_id)
        self.reads += 1
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        self.n += 1
        return {"id": run_id, "version": self.n, "final": self.final}


async def timed(cache, run_id):
    t0 = time.monotonic()
    value = await cache.get(run_id)
    return value, time.monotonic() - t0


def test_fifty_pollers_share_one_read_and_never_wait_once_cached():
    server = SlowServer(delay=0.3)
    cache = StatusCache(server.status, ttl=0.5)
    latencies, versions = [], []

    async def poller():
        for _ in range(15):
            value, took = await timed(cache, "run")
            versions.append(value["version"])
            latencies.append(took)
            await asyncio.sleep(0.1)

    async def main():
        await asyncio.gather(*(poller() for _ in range(50)))

    asyncio.run(main())
    assert len(latencies) == 750
    # ~1.8 s of polling at ttl 0.5 with 0.3 s reads: a handful of reads, not 750
    assert server.reads <= 5, server.reads
    # only the very first requests waited for a read; later answers came from the cache at once
    slow = [x for x in latencies if x > 0.05]
    assert len(slow) <= 50, len(slow)  # one wait per poller at most: the very first request
    assert max(versions) >= 2, "the cache was refreshed while polled"


def test_errors_are_not_cached_and_final_runs_are_kept_longer():
    reads = []

    async def read(run_id):
        reads.append(run_id)
        if run_id == "unknown":
            raise LookupError(run_id)
        return {"id": run_id, "final": run_id == "done"}

    async def main():
        cache = StatusCache(read, ttl=0.01, final_ttl=60)
        for _ in range(2):
            with pytest.raises(LookupError):
                await cache.get("unknown")
        assert reads == ["unknown", "unknown"]  # the error was not cached
        assert (await cache.get("done"))["final"]
        assert not (await cache.get("running"))["final"]
        await asyncio.sleep(0.05)
        assert (await cache.get("done"))["final"]
        await cache.get("running")
        await asyncio.sleep(0.01)  # refreshes, had they been started, have run now

    asyncio.run(main())
    assert reads.count("done") == 1  # final: kept for final_ttl
    assert reads.count("running") == 2  # not final: refreshed after ttl


def test_a_failed_refresh_keeps_the_last_answer_and_is_retried():
    server = SlowServer(delay=0)

    async def main():
        cache = StatusCache(server.status, ttl=0.01)
        assert (await cache.get("run"))["version"] == 1
        server.fail = ConnectionError("server busy")
        await asyncio.sleep(0.02)
        assert (await cache.get("run"))["version"] == 1  # stale: served, refresh started …
        await asyncio.sleep(0.01)
        assert server.reads == 2  # … and failed
        server.fail = None
        assert (await cache.get("run"))["version"] == 1  # the last good answer; refresh again
        await asyncio.sleep(0.01)
        assert server.reads == 3
        assert (await cache.get("run"))["version"] == 2

    asyncio.run(main())


def test_an_answer_older_than_max_age_is_not_served():
    """Nobody asked for a while: the request waits for a fresh read instead of getting an
    answer that may be minutes old."""
    server = SlowServer(delay=0.05)

    async def main():
        cache = StatusCache(server.status, ttl=0.01, max_age=0.2)
        assert (await cache.get("run"))["version"] == 1
        await asyncio.sleep(0.05)
        value, took = await timed(cache, "run")
        assert value["version"] == 1 and took < 0.03  # stale but young: served at once
        await asyncio.sleep(0.3)
        value, took = await timed(cache, "run")
        assert value["version"] >= 2 and took >= 0.04  # too old: waited for the read

    asyncio.run(main())


def test_a_poller_that_goes_away_does_not_cancel_the_shared_read():
    server = SlowServer(delay=0.1)

    async def main():
        cache = StatusCache(server.status)
        impatient = asyncio.ensure_future(cache.get("run"))
        patient = asyncio.ensure_future(cache.get("run"))
        await asyncio.sleep(0.02)
        impatient.cancel()
        assert (await patient)["version"] == 1
        assert server.reads == 1

    asyncio.run(main())


def test_render_runs_once_per_read():
    server = SlowServer(delay=0)
    rendered = []

    def render(value):
        rendered.append(value["version"])
        return f"body {value['version']}".encode()

    async def main():
        cache = StatusCache(server.status, ttl=60, render=render)
        assert [await cache.get("run") for _ in range(20)] == [b"body 1"] * 20

    asyncio.run(main())
    assert rendered == [1]


def run_tracker(cache, active, seconds, every=0.05, idle=0.3, poll=None):
    """Run keep_warm for `seconds` (polling `poll` every 0.05 s meanwhile, if given)."""
    async def main():
        tracker = asyncio.ensure_future(cache.keep_warm(active, every=every, idle=idle))
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if poll:
                await cache.get(poll)
            await asyncio.sleep(0.05)
        tracker.cancel()

    asyncio.run(main())


def test_the_tracker_reads_an_active_run_before_anyone_polls():
    server = SlowServer(delay=0.05)
    cache = StatusCache(server.status, ttl=0.1)
    listed = []

    async def active():
        listed.append(1)
        return ["running"]

    async def main():
        tracker = asyncio.ensure_future(cache.keep_warm(active, every=0.05, idle=5))
        await asyncio.sleep(0.2)
        reads = server.reads
        assert reads >= 1  # warmed before the first poll …
        value, took = await timed(cache, "running")
        assert took < 0.02 and value["id"] == "running"  # … so the first poll is a cache hit
        await asyncio.sleep(0.4)
        assert server.reads >= reads + 2  # and kept fresh while active (ttl 0.1)
        tracker.cancel()

    asyncio.run(main())
    assert len(listed) >= 5  # one listing per tick


def test_the_tracker_stops_reading_runs_nobody_polls_and_runs_no_longer_active():
    server = SlowServer(delay=0)
    cache = StatusCache(server.status, ttl=0.05)

    async def active():
        return ["abandoned"]

    run_tracker(cache, active, seconds=1.0, idle=0.3)
    # refreshed while new (0.3 s at ttl 0.05: a handful of reads), then left alone
    assert 2 <= server.reads <= 8, server.reads

    server.reads = 0
    run_tracker(cache, active, seconds=1.0, idle=0.3, poll="abandoned")
    assert server.reads >= 6, server.reads  # polled: kept warm (and refreshed by the polls)

    server.reads = 0
    state = {"active": ["finished"]}

    async def until_final():
        return state["active"]

    async def main():
        tracker = asyncio.ensure_future(cache.keep_warm(until_final, every=0.05, idle=5))
        await asyncio.sleep(0.3)
        state["active"] = []  # the run became final
        await asyncio.sleep(0.1)
        reads = server.reads
        await asyncio.sleep(0.4)
        tracker.cancel()
        return reads

    reads = asyncio.run(main())
    assert reads >= 2 and server.reads == reads


def test_the_tracker_survives_listing_errors():
    server = SlowServer(delay=0)
    cache = StatusCache(server.status, ttl=0.05)
    calls = {"n": 0}

    async def flaky():
        calls["n"] += 1
        if calls["n"] <= 3:
            raise ConnectionError("server starting")
        return ["run"]

    run_tracker(cache, flaky, seconds=0.5)
    assert calls["n"] > 4 and server.reads >= 1
