"""The local machine as a node, end to end: real Prefect (the session's `kai serve`), the local
transport (installers/ssh/local.py), every node script, on a booted host acting as "the local
machine" — the session's KAI_LOCAL_AGENT_COMMAND enters its namespaces (tests/support/
local_machine.py); nothing runs on the machine running the tests, and the host's sshd is stopped
for the whole module, so nothing can go over SSH either.

One booted host, in order:
  the old all-in-one body without a host (cilium, monitoring), through the REST start path, with
  the operator's old-body defaults (mirror, kubelet) underneath: mapped onto a local node at the
  host's own address (asked of the host), installed there, then reset through kai;
  a spec with `connection: local`: install with kubeadm init hanging → cancel mid-step (the
  step's process group killed on the host) → rerun completes (done steps skipped), verify's data.
"""

from __future__ import annotations

import time
import uuid

import pytest
import yaml

from deployments import old_body_defaults
from tests.hosts.mirror import serve_mirror_to
from tests.support.e2e_server import kai_server, wait_final  # noqa: F401  (session fixture)
from tests.support.local_machine import acting_as_local_machine
from tests.support.wait import wait_until
from tests.test_flows_e2e import (assert_completed, assert_no_kai_processes, calls, clear_fault,
                                  kai_processes, logs, make_spec, set_fault, start, wait,
                                  wait_step_running)

pytestmark = [pytest.mark.hosts, pytest.mark.e2e]

HOSTS_NEEDED = 1
P = "/api/v1/installation"


def agents_and_steps(host) -> str:
    """kai-exec agents and step processes alive on the host (kai_processes also counts
    kubeadm's stand-in API server, which a finished install leaves running, as it should)."""
    return host.exec("grep -lzs '^KAI_WORK=' /proc/[0-9]*/environ || true; "
                     "pgrep -af '[k]ai-exec' || true", check=False).stdout.strip()


@pytest.fixture(scope="module")
def hosts(clean_hosts):
    return serve_mirror_to(clean_hosts, HOSTS_NEEDED)


@pytest.fixture(scope="module")
def server(kai_server):  # noqa: F811
    with kai_server.prefect():
        yield kai_server


@pytest.fixture(scope="module")
def local_machine(hosts, server):
    h = hosts[0]
    h.exec("systemctl stop ssh.service")
    try:
        with acting_as_local_machine(server.state_dir, h):
            yield h
    finally:
        h.exec("systemctl start ssh.service", check=False)


def test_the_old_body_without_a_host_installs_on_the_local_machine_with_cilium_and_monitoring(
        local_machine, hosts, server):
    """Issue 13's old-client test, through the REST start path: the documented all-in-one body —
    no host, the old default CNI cilium, monitoring on — installs on the local machine. The
    operator's old-body defaults (deployments/old_body_defaults.py) supply what an old body has no
    field for: this site's mirror and containerd source, and the kubelet setting these cgroup-v1
    test hosts need. Then `reset` through kai (the local transport again) leaves a blank node."""
    h = local_machine
    site = {k: v for k, v in make_spec(hosts, [h], name="unused").items()
            if k in ("mirror", "runtime", "kubelet", "preflight")}
    defaults_file = old_body_defaults.path(server.state_dir)
    defaults_file.write_text(yaml.safe_dump(site))
    body = {"cluster_name": "old-local", "k8s_version": "1.36", "cni_provider": "cilium",
            "enable_monitoring": True}
    t0 = time.monotonic()
    try:
        with server.client() as c:
            # a problem in the operator's file is the old 400, and says where it was set
            defaults_file.write_text(yaml.safe_dump({**site, "kubelet": {"max_pods": 0}}))
            r = c.post(f"{P}/all_in_one/start", json=body)
            assert r.status_code == 400 and f"(set in {defaults_file})" in r.text, r.text
            defaults_file.write_text(yaml.safe_dump(site))
            r = c.post(f"{P}/all_in_one/start", json=body)
            assert r.status_code == 202, r.text
            run_id = r.json()["installation_id"]
            final = wait_final(c, run_id, 900)
    finally:
        defaults_file.unlink(missing_ok=True)
    install_s = time.monotonic() - t0
    # the node is the local machine, at the address the host itself reported; the body's own
    # fields won, the site's defaults filled the rest
    from prefect.client.orchestration import get_client
    with get_client(sync_client=True) as client:
        spec = client.read_flow_run(uuid.UUID(run_id)).parameters["spec"]
    assert spec["nodes"][0]["connection"] == "local", spec["nodes"]
    assert spec["nodes"][0]["address"] == h.address, spec["nodes"]
    assert (spec["networking"]["cni"], spec["addons"]["monitoring"]) == ("cilium", True), spec
    assert spec["mirror"]["url"] == site["mirror"]["url"] and spec["kubelet"]["fail_cgroup_v1"] is False, spec

    progress = final["progress"]
    assert (progress["status"], final["success_status"]) == ("completed", True), progress
    info = final["cluster_info"]
    assert (info["cni_provider"], [n["internal_ip"] for n in info["nodes"]]) == ("cilium", [h.address]), info
    assert info["etcd"] == "ok", info     # the API stand-in's /readyz/etcd reads the node's real etcd
    assert len(info["workloads"]) == 7 and set(info["workloads"].values()) == {"ready"}, info["workloads"]
    assert [c["exit_code"] for c in calls(h, "helm", "template")] == [0], "cilium's chart rendered on the host"
    facts = [r for r in progress["step_results"] if r["step_name"] == "facts"]
    assert [(r["host"], r["success"]) for r in facts] == [("master-1", True)], facts

    t1 = time.monotonic()
    assert_completed(wait(start("reset", spec), timeout=300))
    assert not h.exec("ls /etc/kubernetes/manifests", check=False).stdout.strip(), "reset left manifests"
    assert_no_kai_processes(h, within_s=20)
    print(f"\nold body without a host (cilium + monitoring): installed on the local machine in "
          f"{install_s:.0f} s; reset in {time.monotonic() - t1:.0f} s")


def test_a_local_node_installs_after_a_cancel_mid_step(local_machine, hosts, server):
    h = local_machine
    spec = make_spec(hosts, [h], name="local-aio")
    del spec["ssh"]  # no SSH settings at all: nothing to connect to, no host key to verify
    spec["nodes"][0]["connection"] = "local"

    # kubeadm init hangs: cancel mid-step; the step's processes on the host are killed
    set_fault(h, {"kubeadm init": {"sleep": 300}})
    t0 = time.monotonic()
    run_id = start("all_in_one", spec)
    wait_step_running(run_id, "kubeadm-init")
    wait_until("kubeadm init running on the host", lambda: "kubeadm" in kai_processes(h), 120, 0.5)
    from deployments import control
    control.cancel(run_id)
    st = wait(run_id, timeout=180)
    assert st["state"] == "CANCELLED", st["state"]
    assert_no_kai_processes(h, within_s=20)
    cancel_s = time.monotonic() - t0
    lines = "\n".join(logs(run_id))
    assert f"[{h.name}]" in lines, "the steps' output streamed to Prefect with the host's name"
    clear_fault(h)

    # the rerun completes: the steps done before the cancel are skipped by their markers
    t1 = time.monotonic()
    st = wait(start("all_in_one", spec), timeout=900)
    install_s = time.monotonic() - t1
    assert_completed(st)
    text = "\n".join(logs(st["id"]))
    for step in ("os-prep", "runtime", "kube-packages"):
        assert f"[{h.name}] {step}: already done" in text, f"{step}: not skipped in the rerun"
    assert [c["exit_code"] for c in calls(h, "kubeadm", "init")][-1] == 0
    info = st["cluster_info"]
    assert [n["name"] for n in info["nodes"]] == [h.name], info
    assert info["nodes"][0]["address"] == h.address, info
    # the run's agents ended with it (the cluster's own processes run on, of course)
    wait_until(lambda: f"agents or steps left on {h.name}: {agents_and_steps(h)}",
               lambda: not agents_and_steps(h), 20, 0.5)
    print(f"\nlocal node: to kubeadm-init + cancel {cancel_s:.0f} s; rerun to completion "
          f"{install_s:.0f} s")
