"""Per-host locks against a real Prefect server: one run per host, refused (not hung) when busy,
released at the end, and never silently skipped when a limit is missing."""

import threading
import time

import pytest

from flows.common import HostsBusy, host_locks, lock_name
from tests.support.e2e_server import kai_server  # noqa: F401  (session fixture)

pytestmark = pytest.mark.e2e


def test_second_holder_waits_then_is_refused_and_gets_the_hosts_once_free(kai_server):  # noqa: F811
    with kai_server.prefect():
        a, b = f"10.99.{time.time_ns() % 250}.1", f"10.99.{time.time_ns() % 250}.2"
        with host_locks([a, b], wait_s=5):
            t0 = time.monotonic()
            with pytest.raises(HostsBusy) as exc:
                with host_locks([b], wait_s=1.5):
                    pass
            waited = time.monotonic() - t0
            assert 1.5 <= waited < 5, waited
            assert b in str(exc.value)
            with host_locks([f"{a}0"], wait_s=1):  # another host is free meanwhile
                pass

        got = threading.Event()

        def later():
            with kai_server.prefect(), host_locks([b], wait_s=10):
                got.set()

        with host_locks([b], wait_s=1):
            t = threading.Thread(target=later)
            t.start()
            time.sleep(1.5)
            assert not got.is_set(), "the second holder got a busy host"
        t.join(10)
        assert got.is_set(), "the host was not handed over after release"

        from prefect.client.orchestration import get_client
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(lock_name(b))
        assert limit.limit == 1 and limit.active_slots == 0


def test_unseen_hosts_get_their_locks_created_all_of_them(kai_server):  # noqa: F811
    from prefect.client.orchestration import get_client

    with kai_server.prefect():
        base = f"10.98.{time.time_ns() % 250}"
        hosts = [f"{base}.{i}" for i in range(1, 31)]  # more than LIMIT_CREATORS
        with host_locks(hosts[:5], wait_s=5):  # some exist already, the rest are new
            pass
        with host_locks(hosts, wait_s=5):
            with get_client(sync_client=True) as client:
                held = [client.read_global_concurrency_limit_by_name(lock_name(h)).active_slots
                        for h in hosts]
            assert held == [1] * len(hosts), held  # a new host is locked like any other
            with pytest.raises(HostsBusy):
                with host_locks([hosts[-1]], wait_s=0.5):
                    pass
