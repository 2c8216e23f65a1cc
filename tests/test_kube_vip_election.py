"""The kube-vip stand-in's leader election (standin_etcd.LeaderLock) against a real etcd: Debian's,
three members on loopback, each "control plane" talking to its own member as the kubelet stand-in
does. At most one control plane may hold the VIP at any moment: two holders answer ARP for the
same address and clients' connections go to either (a CI run saw the VIP on two control planes
after its holder was removed, each having pinged it and found it free in the same second)."""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.etcd import LoopbackEtcd
from tests.support.ports import free_port
from tests.support.wait import wait_until

sys.path.insert(0, str(Path(__file__).parent / "hosts" / "standins"))

import standin_etcd as etcd  # noqa: E402

pytestmark = pytest.mark.hosts  # Debian's etcd comes with the test hosts' rootfs


class ShortLock(etcd.LeaderLock):
    TTL_S = 6            # etcd's shortest here: 1.5 election timeouts (2.5 s) → 4 s
    RENEW_DEADLINE_S = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from tests.hosts.fixtures import require
    from tests.hosts.rootfs import ensure_rootfs

    require(booted=True)
    rootfs, _ = ensure_rootfs()
    members = LoopbackEtcd(rootfs / "usr" / "bin", tmp_path_factory.mktemp("etcd"), 3)
    try:
        wait_until(lambda: "the loopback etcd did not become healthy:\n" + members.logs(),
                   lambda: members.healthy(["m1", "m2", "m3"]), 60)
        yield members
    finally:
        members.stop()


def gateway(cluster: LoopbackEtcd, member: str, port: int | None = None) -> etcd.Gateway:
    pki = cluster.pki
    return etcd.Gateway(f"https://127.0.0.1:{port or cluster.ports[member][0]}", f"{pki}/ca.crt",
                        f"{pki}/healthcheck-client.crt", f"{pki}/healthcheck-client.key", timeout=2)


@pytest.fixture
def locks(cluster):
    """Three control planes, cp1..cp3, each asking through its own member; released afterwards."""
    made = {f"cp{i}": ShortLock(gateway(cluster, f"m{i}"), f"cp{i}") for i in (1, 2, 3)}
    yield made
    for lock in made.values():
        lock.release()


def all_at_once(locks: dict[str, etcd.LeaderLock]) -> set[str]:
    """Every control plane asks in the same instant -> the ones that lead."""
    start, leading = threading.Barrier(len(locks)), set()

    def ask(name: str) -> None:
        start.wait()
        if locks[name].lead():
            leading.add(name)

    threads = [threading.Thread(target=ask, args=(n,)) for n in locks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return leading


def holder(cluster: LoopbackEtcd) -> str | None:
    out = gateway(cluster, "m1").call("/v3/kv/range", {"key": base64.b64encode(etcd.LeaderLock.KEY.encode()).decode()})
    kvs = out.get("kvs") or []
    return json.loads(base64.b64decode(kvs[0]["value"]))["holderIdentity"] if kvs else None


def test_control_planes_racing_for_the_vip_get_one_leader_and_it_stays(cluster, locks):
    for _ in range(10):
        leading = all_at_once(locks)
        assert len(leading) == 1, f"leaders in one round: {sorted(leading)}"
        (leader,) = leading
        assert holder(cluster) == leader
        assert all_at_once(locks) == {leader}, "the leadership moved without a release"
        locks[leader].release()  # kube-vip's pod goes: the next round elects again
        assert holder(cluster) is None


def test_a_leader_that_stops_renewing_loses_the_lead_once_its_lease_expires(cluster, locks):
    assert locks["cp1"].lead()
    t0 = time.monotonic()
    # cp1's host dies (no more renewals): cp2 asks every 0.5 s until it leads
    wait_until("cp2 never took the lead", lambda: locks["cp2"].lead(), 30)
    took = time.monotonic() - t0
    assert ShortLock.TTL_S - 1 <= took <= ShortLock.TTL_S + 3, took
    assert not locks["cp1"].lead(), "the old leader still leads after its lease expired"
    assert not locks["cp3"].lead() and holder(cluster) == "cp2"


def test_etcd_out_of_reach_keeps_a_leader_only_until_its_renew_deadline(cluster, locks):
    renewed = time.monotonic()
    assert locks["cp1"].lead()
    locks["cp1"].gw = gateway(cluster, "m1", port=free_port())  # its etcd member is gone
    assert locks["cp1"].lead(), "a leader stepped down at the first failed renewal"
    wait_until("cp1 kept leading without renewals", lambda: not locks["cp1"].lead(), 30)
    stepped_down = time.monotonic() - renewed
    wait_until("cp2 never took the lead", lambda: locks["cp2"].lead(), 30)
    taken = time.monotonic() - renewed
    assert holder(cluster) == "cp2"
    assert ShortLock.RENEW_DEADLINE_S <= stepped_down <= ShortLock.RENEW_DEADLINE_S + 2, stepped_down
    assert taken >= ShortLock.TTL_S - 0.5, f"cp2 took the lead {taken:.1f} s after cp1's last renewal"
    assert stepped_down < taken, "two leaders: cp1 still led when cp2 took the lead"
