"""Faults of issue #10 §4, end to end on booted hosts, each against its own real `kai serve`:

- the Prefect server SIGSTOPped for 20 s mid-install: survived, nothing restarted;
- the Prefect server SIGTERMed mid-install: kai serve restarts it and keeps serving; the run ends
  (completed, or crashed and resumed by a rerun); its host locks are freed within their leases;
- a host powered off mid-step: the step fails within its timeout naming the host; once the host
  is back a rerun completes and the other hosts' finished steps are skipped;
- two kai installations (two `kai serve`s, two Prefect servers) aimed at one host: the second is
  refused naming the first's run and controller; when the first controller dies its node lock is
  taken over after the lease; the first, started again, marks its dead run crashed, frees its
  Prefect host lock, and a rerun completes.

Both controllers run with a short node-lock lease (KAI_NODE_LOCK_LEASE_S) to keep the wall time
modest. Prefect's own lease has a 60 s minimum; kai's reaper frees it explicitly instead.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from deployments.supervisor import descendants
from tests.support.e2e_server import KaiServer, start_kai_serve
from tests.hosts.mirror import serve_mirror_to
from tests.support.locks import host_lock_slots, node_lock
from tests.support.wait import wait_until
from tests.test_flows_e2e import (assert_completed, calls, clear_fault, install_stuck_in_kubeadm_init,
                                  kai_processes, logs, make_spec, set_fault, start, wait,
                                  wait_step_running)

pytestmark = [pytest.mark.hosts, pytest.mark.e2e]

NODE_LEASE_S = 8
HOSTS_NEEDED = 3


# --- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def no_ephemeral_prefect():
    """A Prefect call outside a controller's context must fail, not start a Prefect server in this
    process (whose telemetry would try the network)."""
    from prefect.settings import PREFECT_SERVER_ALLOW_EPHEMERAL_MODE, temporary_settings
    with temporary_settings(updates={PREFECT_SERVER_ALLOW_EPHEMERAL_MODE: False}):
        yield


@pytest.fixture(scope="module")
def hosts(clean_hosts):
    return serve_mirror_to(clean_hosts, HOSTS_NEEDED)


def start_controller(state_dir: Path) -> KaiServer:
    return start_kai_serve(state_dir, env_extra={"KAI_NODE_LOCK_LEASE_S": str(NODE_LEASE_S)})


@pytest.fixture(scope="module")
def controllers():
    """Two kai installations: own state dirs (controller ids), own Prefect servers."""
    dirs = [Path(tempfile.mkdtemp(prefix=f"kai-faults-{n}-")) for n in "ab"]
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(start_controller, d) for d in dirs]
        started = [f.result() for f in futures]
    made = {"a": started[0], "b": started[1]}
    yield made
    left = []
    for server in made.values():
        left += server.stop()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    assert not left, f"kai serve left processes behind: {left}"


def prefect_server_pid(server: KaiServer) -> int:
    for pid in descendants(server.proc.pid):
        with contextlib.suppress(OSError):
            if b"server\0start" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    raise AssertionError("kai serve runs no Prefect server")


# --- the Prefect server dies or stalls ------------------------------------------------------------

def test_prefect_server_stopped_for_20_s_mid_install_is_survived(hosts, controllers):
    a, h0 = controllers["a"], hosts[0]
    with a.prefect():
        _, run_id = install_stuck_in_kubeadm_init(hosts, h0, "stalled", sleep_s=25)
        server_pid = prefect_server_pid(a)
        os.kill(server_pid, signal.SIGSTOP)
        try:
            time.sleep(20)
        finally:
            os.kill(server_pid, signal.SIGCONT)
        st = wait(run_id, timeout=300)
        clear_fault(h0)
    assert_completed(st)
    assert prefect_server_pid(a) == server_pid, "a stalled server must be waited for, not replaced"
    assert "restarting it" not in a.log_path.read_text()
    print("\nPrefect server SIGSTOPped 20 s mid-step: the run completed, nothing restarted")


def test_prefect_server_killed_mid_install_kai_serve_keeps_serving(hosts, controllers):
    """The issue's sequence: server killed mid-step, then the run cancelled (it stayed CANCELLING
    for good before: Prefect's runner stops watching for cancels while its server is away)."""
    from deployments import control
    from deployments.supervisor import alive

    a, h1 = controllers["a"], hosts[1]
    with a.prefect():
        spec, run_id = install_stuck_in_kubeadm_init(hosts, h1, "server-killed", sleep_s=240)
        old_pid = prefect_server_pid(a)
        t0 = time.monotonic()
        os.kill(old_pid, signal.SIGTERM)
        wait_until("the old Prefect server gone", lambda: not alive(old_pid), 60)
        dead_s = time.monotonic() - t0

        def prefect_back() -> bool:
            with contextlib.suppress(httpx.HTTPError, AssertionError):
                return (prefect_server_pid(a) != old_pid
                        and httpx.get(a.prefect_api_url + "/health", timeout=5).status_code == 200)
            return False

        wait_until("a new Prefect server answering", prefect_back, 180)
        back_s = time.monotonic() - t0
        assert a.proc.poll() is None, "kai serve must keep serving"
        assert "the Prefect server exited with code" in a.log_path.read_text()
        with a.client() as api:  # kai's REST API reads the run from the new server
            assert api.get(f"/api/v1/installation/{run_id}/status").status_code == 200
        assert control.status(run_id)["state"] == "RUNNING", "the install survived the restart"

        t1 = time.monotonic()
        control.cancel(run_id)
        # the runner no longer watches for cancels: kai serve's reaper stops the run (it may show
        # CRASHED for a moment — a SIGTERMed flow process says so — before it is made CANCELLED)
        st = wait_until("the run CANCELLED",
                        lambda: (s := control.status(run_id))["state"] == "CANCELLED" and s, 120)
        cancel_s = time.monotonic() - t1
        address = h1.address
        wait_until("the Prefect host lock released", lambda: host_lock_slots(address) == 0, 30)
        free_s = time.monotonic() - t1
        wait_until(f"no kai step left on {h1.name}", lambda: not kai_processes(h1), 30)
        wait_until("the node lock released or lapsed", lambda: not node_lock(h1)
                   or int(node_lock(h1)["expires"]) <= time.time(), NODE_LEASE_S + 5)

        clear_fault(h1)
        rerun = wait(start("all_in_one", spec), timeout=300)
        text = "\n".join(logs(rerun["id"]))
    assert_completed(rerun)
    for step in ("os-prep", "runtime", "kube-packages"):
        assert f"[{h1.name}] {step}: already done" in text, f"{step} was not skipped by the rerun"
    print(f"\nPrefect server SIGTERMed mid-step: it exited after {dead_s:.1f} s, a new one answered "
          f"after {back_s:.1f} s, the install still RUNNING; cancelled after the restart: "
          f"{st['state']} in {cancel_s:.1f} s, host lock free {free_s:.1f} s after the cancel; "
          "the rerun resumed and completed")


# --- a host dies --------------------------------------------------------------------------------

def ha3_spec(hosts) -> dict:
    subnet = ipaddress.ip_network(f"{hosts.bridge.gateway}/{hosts.bridge.prefixlen}", strict=False)
    members = list(hosts)[:3]
    return make_spec(hosts, members, name="ha-power", roles={h.name: ["control-plane"] for h in members},
                     endpoint={"type": "kube_vip", "address": str(subnet[250]), "interface": "eth0"},
                     steps={"join": {"timeout_s": 90, "retries": 0}})


def test_a_host_powered_off_mid_step_fails_the_step_then_a_rerun_completes(hosts, controllers):
    a = controllers["a"]
    hosts.reset()  # the clusters above are another cluster to these hosts' preflight
    h0, h1, h2 = list(hosts)[:3]
    spec = ha3_spec(hosts)
    with a.prefect():
        set_fault(h2, {"kubeadm join": {"sleep": 300}})
        run_id = start("ha", spec)
        wait_step_running(run_id, "join-control-planes", timeout=600)
        wait_until(f"kubeadm join running on {h2.name}", lambda: "kubeadm" in kai_processes(h2), 120)
        t0 = time.monotonic()
        hosts.power_off(h2)
        try:
            st = wait(run_id, timeout=300)
            fail_s = time.monotonic() - t0
        finally:  # whatever happened, the session's other tests need this host back
            boot_s = hosts.power_on(h2)
        assert st["state"] == "FAILED", st["state"]
        failure = st["failure"]
        assert failure["step"] == "join-control-planes" and failure["hosts"] == [h2.name], failure
        assert h2.name in failure["message"] and "timed out after 90 s" in failure["message"], failure
        assert fail_s < 90 + 30, f"the step took {fail_s:.0f} s to fail after the power-off"

        clear_fault(h2)
        t1 = time.monotonic()
        rerun = wait(start("ha", spec, lock_wait_s=90), timeout=600)
        rerun_s = time.monotonic() - t1
        text = "\n".join(logs(rerun["id"]))
    assert_completed(rerun)
    for host, step in ((h0, "runtime"), (h1, "runtime"), (h0, "kubeadm-init"),
                       (h1, "join-control-planes"), (h2, "runtime")):
        assert f"[{host.name}] {step}: already done" in text, f"{host.name} {step}: not skipped"
    assert [c["exit_code"] for c in calls(h2, "kubeadm", "join")] == [0], "h2 joins once, in the rerun"
    print(f"\n{h2.name} powered off mid-join: step failed after {fail_s:.1f} s (timeout 90 s); "
          f"host back in {boot_s:.1f} s; rerun completed in {rerun_s:.0f} s")


# --- two controllers, one host --------------------------------------------------------------------

def kill_controller(server: KaiServer) -> None:
    """The controller's machine dies: kai serve and everything below it, at once."""
    tree = [server.proc.pid] + descendants(server.proc.pid)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.proc.wait(10)


def test_two_controllers_one_host_refused_then_stale_lock_taken_over(hosts, controllers):
    a, b = controllers["a"], controllers["b"]
    h = hosts[0]
    hosts.reset([h])
    spec = make_spec(hosts, [h], name="shared")
    with a.prefect():
        set_fault(h, {"kubeadm init": {"sleep": 300}})
        run_a = start("all_in_one", spec)
        wait_step_running(run_a, "kubeadm-init")
        from deployments import control
        name_a = control.status(run_a)["name"]
    ctl_a = (a.state_dir / "controller-id").read_text().strip()
    assert node_lock(h)["run"] == run_a and node_lock(h)["controller"] == ctl_a

    with b.prefect():
        t0 = time.monotonic()
        refused = wait(start("all_in_one", spec), timeout=180)
        refused_s = time.monotonic() - t0
    assert refused["state"] == "FAILED", refused["state"]
    message = refused["failure"]["message"]
    assert refused["failure"]["step"] == "facts", refused["failure"]
    assert f"is locked by kai run '{name_a}' ({run_a}) of controller {ctl_a}" in message, message
    assert h.name in message and "refused" in message
    assert not calls(h, "kubeadm", "init"), "the refused run must not have touched the host"

    kill_controller(a)  # its lease on the node is no longer renewed
    t_kill = time.monotonic()
    assert_no_step_left = lambda: "kubeadm" not in kai_processes(h)  # noqa: E731
    wait_until("the dead controller's step killed on the node", assert_no_step_left, 30)
    clear_fault(h)
    expires = int(node_lock(h)["expires"])
    assert expires - time.time() <= NODE_LEASE_S + 1
    wait_until("the dead controller's lease to run out", lambda: time.time() > expires, NODE_LEASE_S + 5)
    with b.prefect():
        took = wait(start("all_in_one", spec), timeout=300)
        takeover_s = time.monotonic() - t_kill
        assert_completed(took)
        text = "\n".join(logs(took["id"]))
    assert f"node lock: taking over the stale lock of run '{name_a}' ({run_a}) of controller {ctl_a}" in text
    assert not node_lock(h), "B released the node lock at the end of its run"

    # the first controller comes back (same state dir): its dead run is crashed, its hosts freed
    # its serve.json still names the dead instance's ports: start_kai_serve must wait for the new one
    (a.state_dir / "serve.json").unlink()
    t1 = time.monotonic()
    again = start_controller(a.state_dir)
    controllers["a"] = again
    with again.prefect():
        from deployments import control
        st = wait_until("the dead run marked final", lambda: (s := control.status(run_a))["final"] and s,
                        60)
        crashed_s = time.monotonic() - t1
        assert st["state"] == "CRASHED", st["state"]
        assert "the flow-run process (pid" in st["failure"]["message"], st["failure"]
        wait_until("A's Prefect host lock freed", lambda: host_lock_slots(h.address) == 0, 30)
        freed_s = time.monotonic() - t1
        rerun = wait(start("all_in_one", spec), timeout=300)
    assert_completed(rerun)
    refusal = next(line for line in message.splitlines() if "ERROR:" in line)
    print(f"\nsecond controller refused in {refused_s:.1f} s: {refusal.strip()!r}; "
          f"stale node lock taken over {takeover_s:.1f} s after the first controller died "
          f"(lease {NODE_LEASE_S} s); the restarted first kai serve (ready in "
          f"{again.timings['ready_s']:.0f} s) marked the dead run CRASHED {crashed_s:.1f} s after "
          f"starting, its host lock free after {freed_s:.1f} s; its rerun completed")
