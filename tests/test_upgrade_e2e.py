"""The upgrade mode end to end (issue #11 §2): real Prefect (`kai serve`), real SSH, every node
script on booted systemd hosts, the local mirror's per-minor package repositories, and the strict
kubeadm/kubelet/kubectl/API-server stand-ins.

One module-scoped cluster (one install): an HA cluster — 3 control planes behind kube-vip and the
remaining hosts (up to 2) as workers — at the default minor, with a Deployment and a
PodDisruptionBudget. The upgrade to the next minor is cancelled while the workers are being
upgraded; its report names the worker it left cordoned; the rerun resumes (finished steps
skipped) and completes. The stand-ins' version journals show at no moment a kubelet newer than an
API server; every node ends at the target, uncordoned.
"""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path

import pytest

from installers import versions as V
from installers.cluster_check import KubeconfigCredentials
from tests.hosts import version_skew
from tests.hosts.mirror import serve_mirror_to
from tests.support.e2e_server import kai_server  # noqa: F401  (session fixture)
from tests.support.wait import wait_until
from tests.test_flows_e2e import (assert_completed, clear_fault, kai_processes, logs, make_spec,
                                  set_fault, start, wait, wait_step_running)

pytestmark = [pytest.mark.hosts, pytest.mark.e2e]

CONTROL_PLANES = 3
MAX_WORKERS = 2
HOSTS_NEEDED = CONTROL_PLANES + 1   # 5 hosts give 2 workers (the cluster); 4 give one
CURRENT = V.DEFAULT_KUBERNETES_MINOR
NEXT = f"1.{int(CURRENT.split('.')[1]) + 1}"
TARGET = V.KUBERNETES_MINORS[NEXT].default_patch

WEB = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: x}], volumes: [{name: scratch, emptyDir: {}}]}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web-pdb, namespace: default}
spec: {minAvailable: 1, selector: {matchLabels: {app: web}}}
"""


@pytest.fixture(scope="module")
def hosts(clean_hosts):
    return serve_mirror_to(clean_hosts, HOSTS_NEEDED)


@pytest.fixture(scope="module")
def server(kai_server):  # noqa: F811
    with kai_server.prefect():
        yield kai_server


@pytest.fixture(scope="module")
def cluster(hosts, server):
    """The HA cluster at the current minor with the web Deployment and its PDB (one install)."""
    members = list(hosts)[:CONTROL_PLANES + MAX_WORKERS]
    subnet = ipaddress.ip_network(f"{hosts.bridge.gateway}/{hosts.bridge.prefixlen}", strict=False)
    roles = {h.name: (["control-plane"] if i < CONTROL_PLANES else ["worker"])
             for i, h in enumerate(members)}
    spec = make_spec(hosts, members, name="upg", roles=roles, kubernetes={"version": CURRENT},
                     endpoint={"type": "kube_vip", "address": str(subnet[251]), "interface": "eth0"})
    t0 = time.monotonic()
    st = wait(start("ha", spec), timeout=1200)
    assert_completed(st)
    cp1 = members[0]
    cp1.put_file("/root/web.yaml", WEB)
    r = cp1.exec("kubectl --kubeconfig /etc/kubernetes/admin.conf apply --server-side "
                 "--force-conflicts -f /root/web.yaml", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"\ninstall: ha with {CONTROL_PLANES} control planes + {len(members) - CONTROL_PLANES} "
          f"worker(s) at {CURRENT}: {time.monotonic() - t0:.0f} s")
    return spec, members, Path(server.state_dir, "clusters", "upg", "admin.conf")


def nodes(kubeconfig: Path) -> dict[str, dict]:
    """name -> (kubelet version, unschedulable, Ready) through the API, as an admin."""
    creds = KubeconfigCredentials(kubeconfig)
    with creds.client(10) as api:
        items = api.get("/api/v1/nodes").raise_for_status().json()["items"]
    return {n["metadata"]["name"]: {
        "version": n["status"]["nodeInfo"]["kubeletVersion"],
        "cordoned": bool((n.get("spec") or {}).get("unschedulable")),
        "ready": any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])}
        for n in items}


def web_pods(kubeconfig: Path) -> list[dict]:
    creds = KubeconfigCredentials(kubeconfig)
    with creds.client(10) as api:
        pods = api.get("/api/v1/namespaces/default/pods").raise_for_status().json()["items"]
    return [p for p in pods if (p["metadata"].get("labels") or {}).get("app") == "web"]


def report_rows(run_id: str) -> list[dict]:
    """The run's latest `upgrade-nodes` table artifact (the report's data)."""
    from deployments.run_status import _latest_artifacts, _table_rows, prefect_client, run_uuid
    with prefect_client() as client:
        artifacts = _latest_artifacts(client, run_uuid(run_id))
    assert "upgrade-nodes" in artifacts and "upgrade-report" in artifacts, sorted(artifacts)
    return _table_rows(artifacts["upgrade-nodes"])


def test_upgrade_cancelled_mid_workers_then_the_rerun_resumes_and_completes(hosts, cluster):
    spec, members, kubeconfig = cluster
    cps, workers = members[:CONTROL_PLANES], members[CONTROL_PLANES:]
    w1 = workers[0]
    assert {n: s["version"] for n, s in nodes(kubeconfig).items()} == \
        {h.name: f"v{V.KUBERNETES_MINORS[CURRENT].default_patch}" for h in members}

    # a second minor at once is refused before anything starts, naming the field
    from deployments import control
    from installers.spec import SpecError
    with pytest.raises(SpecError) as err:
        control.start("upgrade", spec, to=f"1.{int(NEXT.split('.')[1]) + 1}")
    assert err.value.problems[0].startswith("to: "), err.value.problems

    # the first worker's `kubeadm upgrade node` hangs: a window to cancel in
    set_fault(w1, {"kubeadm upgrade": {"sleep": 600}})
    t0 = time.monotonic()
    run_id = start("upgrade", spec, to=NEXT, lock_wait_s=120)
    wait_step_running(run_id, "upgrade-workers-1", timeout=1500)
    wait_until(f"kubeadm upgrade running on {w1.name}", lambda: "kubeadm" in kai_processes(w1), 300)
    first_s = time.monotonic() - t0
    control.cancel(run_id)
    st = wait(run_id, timeout=120)
    assert st["state"] == "CANCELLED", st["state"]
    wait_until(f"no kai step left on {w1.name}", lambda: not kai_processes(w1), 30)

    # the run's report names the worker it left cordoned; the API agrees
    rows = {r["node"]: r for r in report_rows(run_id)}
    assert rows[w1.name]["cordoned"].startswith("YES: cordoned by this upgrade"), rows[w1.name]
    assert all(rows[h.name]["kubelet now"] == TARGET for h in cps), rows
    state = nodes(kubeconfig)
    assert state[w1.name]["cordoned"] and not any(state[h.name]["cordoned"] for h in cps), state

    clear_fault(w1)
    t1 = time.monotonic()
    rerun = wait(start("upgrade", spec, to=NEXT, lock_wait_s=120), timeout=1500)
    rerun_s = time.monotonic() - t1
    assert_completed(rerun)
    text = "\n".join(logs(rerun["id"]))
    for host, step in [(cps[0], "upgrade-apply"), (cps[1], "upgrade-control-planes"),
                       (cps[0], f"drain-{cps[0].name}"), (cps[2], f"kubelet-{cps[2].name}"),
                       (cps[0], "drain-workers-1")]:
        assert f"[{host.name}] {step}: already done" in text, \
            f"{step} on {host.name} was not skipped: " + "\n".join(l for l in text.splitlines() if step in l)
    assert f"[{w1.name}] running kubeadm upgrade node" in text, "the rerun did not finish the worker"

    # every node at the target, uncordoned, Ready; the web Deployment still has its pods
    state = nodes(kubeconfig)
    assert state == {h.name: {"version": f"v{TARGET}", "cordoned": False, "ready": True} for h in members}, state
    rows = report_rows(rerun["id"])
    assert {r["node"]: (r["kubelet now"], r["cordoned"]) for r in rows} == \
        {h.name: (TARGET, "no") for h in members}, rows
    assert len(web_pods(kubeconfig)) == 2

    # the skew policy held at every moment the journals recorded, install included
    events = version_skew.read_journals(members)
    started = {(e.node, e.component, e.version) for e in events if e.event == "start"}
    assert {(h.name, version_skew.KUBELET, TARGET) for h in members} <= started
    assert {(h.name, version_skew.APISERVER, TARGET) for h in cps} <= started
    violations = version_skew.skew_violations(events)
    assert violations == [], json.dumps(violations, indent=1)
    for h in members:  # kai held the packages again after the upgrade
        held = h.exec("apt-mark showhold").stdout.split()
        assert {"kubeadm", "kubelet", "kubectl"} <= set(held), (h.name, held)
    print(f"\nupgrade {CURRENT} -> {TARGET} on {len(members)} nodes: cancelled {first_s:.0f} s in "
          f"(workers batch 1), rerun completed in {rerun_s:.0f} s; skew check over "
          f"{len(events)} journal events: no violation")
