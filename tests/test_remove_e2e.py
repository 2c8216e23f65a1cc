"""remove_nodes end to end: real Prefect (`kai serve`), real SSH, every node script on booted hosts,
the strict stand-ins. One HA cluster for the module (3 control planes behind kube-vip, 2 workers)
with a Deployment (2 replicas, emptyDir) and a PodDisruptionBudget (minAvailable 1), then in order:

  1. `kai remove` a worker (CLI): cordoned and drained (the budget honoured), reset, deleted; the
     remaining nodes' /etc/hosts blocks no longer list it; its done-markers and lock are gone;
  2. the control plane holding the VIP, started through the REST API, while a poller hits the
     endpoint every 0.2 s: the VIP moves to another control plane, the endpoint keeps answering
     (the longest gap is measured: kube-vip's ARP failover);
  3. a second control plane: refused before anything (2 → 1 would lose etcd quorum) — by the spec
     at the start, and by the running cluster when the spec still lists the removed one;
  4. `--force` on a powered-off worker: its Node deleted without drain, the node never contacted.

The etcd member of a reachable control plane goes with its `kubeadm reset`; the dead control
plane's member removal (`remove-etcd-member.sh`) is covered by tests/test_remove_scripts.py until
the test clusters run a real etcd (the stand-in's crictl knows only --version here).
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.e2e_server import kai_server  # noqa: F401  (session fixture)
from tests.hosts.mirror import serve_mirror_to
from tests.test_flows_e2e import RUNS, assert_completed, journal, logs, make_spec, start, wait

pytestmark = [pytest.mark.hosts, pytest.mark.e2e]

HOSTS_NEEDED = 5
MAX_ENDPOINT_GAP_S = 12.0  # kube-vip failover in the stand-in: the kubelets look every 5 s
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def hosts(clean_hosts):
    return serve_mirror_to(clean_hosts, HOSTS_NEEDED)


@pytest.fixture(scope="module")
def server(kai_server):  # noqa: F811
    with kai_server.prefect():
        yield kai_server


@pytest.fixture(scope="module")
def cluster(hosts, server):
    subnet = ipaddress.ip_network(f"{hosts.bridge.gateway}/{hosts.bridge.prefixlen}", strict=False)
    vip = str(subnet[250])
    members = list(hosts)[:HOSTS_NEEDED]
    roles = {h.name: (["control-plane"] if i < 3 else ["worker"]) for i, h in enumerate(members)}
    spec = make_spec(hosts, members, name="rm", roles=roles,
                     endpoint={"type": "kube_vip", "address": vip, "interface": "eth0"})
    t0 = time.monotonic()
    st = wait(start("ha", spec), timeout=1200)
    assert_completed(st)
    TIMES["install"] = time.monotonic() - t0
    cp1, w1 = members[0], members[3]
    state = {"spec": spec, "vip": vip, "cps": members[:3], "workers": members[3:],
             "kubeconfig": Path(server.state_dir, "clusters", "rm", "admin.conf")}
    # both web replicas on the worker removed first, so that its drain meets the budget: the
    # other nodes are cordoned while they are placed (a placement sticks once made)
    others = [h.name for h in members if h is not w1]
    for name in others:
        kubectl(cp1, f"cordon {name}")
    cp1.put_file("/root/web.yaml", WEB)
    kubectl(cp1, "apply --server-side --force-conflicts -f /root/web.yaml")
    deadline = time.monotonic() + 60
    while not (len(pods := web_pods(state)) == 2 and all(
            p["spec"]["nodeName"] == w1.name and p["status"]["conditions"][0]["status"] == "True"
            for p in pods)):
        assert time.monotonic() < deadline, f"web pods not Ready on {w1.name}: {pods}"
        time.sleep(1)
    for name in others:
        kubectl(cp1, f"uncordon {name}")
    yield state
    for h in members:  # a later module resets the hosts; a powered-off one must boot for that
        if h.leader_pid is None:
            hosts.power_on(h)
    print("\nremove_nodes wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in TIMES.items()))


WEB = """apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec: {replicas: 2, selector: {matchLabels: {app: web}}, template: {metadata: {labels: {app: web}},
  spec: {containers: [{name: c, image: x}], volumes: [{name: scratch, emptyDir: {}}]}}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web-pdb, namespace: default}
spec: {minAvailable: 1, selector: {matchLabels: {app: web}}}
"""


def kubectl(host, args: str, check: bool = True):
    r = host.exec(f"kubectl --kubeconfig /etc/kubernetes/admin.conf {args}", check=False, timeout=120)
    assert not check or r.returncode == 0, f"kubectl {args}: {r.stdout}{r.stderr}"
    return r


def api(cluster) -> httpx.Client:
    from installers.cluster_check import KubeconfigCredentials
    return KubeconfigCredentials(cluster["kubeconfig"]).client(10)


def registered(cluster) -> set[str]:
    with api(cluster) as client:
        return {n["metadata"]["name"] for n in client.get("/api/v1/nodes").json()["items"]}


def web_pods(cluster) -> list[dict]:
    with api(cluster) as client:
        pods = client.get("/api/v1/namespaces/default/pods").json()["items"]
    return [p for p in pods if (p["metadata"].get("labels") or {}).get("app") == "web"]


def kai_block(host) -> str:
    text = host.exec("cat /etc/hosts").stdout
    match = re.search(r"# BEGIN kai managed block.*?# END kai managed block", text, re.S)
    assert match, f"{host.name}: no kai block in /etc/hosts:\n{text}"
    return match.group(0)


def kubectl_calls(host, word: str, node: str) -> list[dict]:
    return [r for r in journal(host) if r["tool"] == "kubectl" and word in r["argv"] and node in r["argv"]]


def vip_holder(cluster) -> str | None:
    for h in cluster["cps"]:
        if h.leader_pid is not None and f" {cluster['vip']}/" in h.exec("ip -o addr show", check=False).stdout:
            return h.name
    return None


def without(spec: dict, *names: str) -> dict:
    """The spec as the user edits it after a removal."""
    return dict(spec, nodes=[n for n in spec["nodes"] if n["name"] not in names])


def step_hosts(st: dict) -> dict[str, list[str]]:
    return {s["name"]: [h["host"] for h in s["hosts"]] for s in st["steps"]}


# --- tests, in order --------------------------------------------------------------------------------

def test_remove_a_worker_from_the_cli(cluster, server, tmp_path):
    import os

    import yaml

    cp1, cp2, cp3 = cluster["cps"]
    w1, w2 = cluster["workers"]
    assert {p["spec"]["nodeName"] for p in web_pods(cluster)} == {w1.name}
    path = tmp_path / "rm.yaml"
    path.write_text(yaml.safe_dump(cluster["spec"]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(KAI_STATE_DIR=str(server.state_dir), COLUMNS="160")
    t0 = time.monotonic()
    out = subprocess.run([str(Path(sys.executable).parent / "kai"), "remove", str(path), "--nodes", w1.name],
                         env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    TIMES["remove worker"] = time.monotonic() - t0
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-3000:]
    assert "remove_nodes completed" in out.stdout, out.stdout[-2000:]
    assert f"delete these entries from the spec's nodes: {w1.name} ({w1.address})" in out.stdout
    assert registered(cluster) == {cp1.name, cp2.name, cp3.name, w2.name}
    # drained through the API (the budget honoured: at least one web pod stayed up throughout),
    # from the first control plane, before its reset and delete
    assert kubectl_calls(cp1, "drain", w1.name) and kubectl_calls(cp1, "cordon", w1.name)
    assert w1.name not in {p["spec"]["nodeName"] for p in web_pods(cluster)}
    # the second eviction waited for the first pod's replacement to be Ready (minAvailable 1)
    assert "Cannot evict pod as it would violate the pod's disruption budget" in out.stdout
    assert f"[{cp1.name}] node/{w1.name} drained" in out.stdout
    # reset on the node: kubeadm's files, kai's done-markers and lock gone
    assert w1.exec("test -e /etc/kubernetes/kubelet.conf", check=False).returncode != 0
    assert w1.exec("ls /var/lib/kai/done 2>/dev/null | wc -l").stdout.strip() == "0"
    assert w1.exec("test -e /var/lib/kai/lock", check=False).returncode != 0
    for h in (cp1, cp2, cp3, w2):
        block = kai_block(h)
        assert w1.name not in block and w2.name in block and cp1.name in block, (h.name, block)
    assert w1.name in kai_block(w1), "the removed node itself is not touched by the hosts step"


def test_remove_the_control_plane_holding_the_vip_through_rest_while_the_endpoint_answers(cluster, server):
    from installers.cluster_check import KubeconfigCredentials

    spec = without(cluster["spec"], cluster["workers"][0].name)
    holder = vip_holder(cluster)
    cp = next(h for h in cluster["cps"] if h.name == holder)
    others = [h for h in cluster["cps"] if h is not cp]
    creds = KubeconfigCredentials(cluster["kubeconfig"])
    answers: list[tuple[float, bool]] = []
    stop = threading.Event()

    def poll() -> None:  # a client of the endpoint: /readyz through the VIP, the CA verified
        with httpx.Client(base_url=creds.server, verify=creds.context, timeout=1.0) as client:
            while not stop.is_set():
                t = time.monotonic()
                try:
                    ok = client.get("/readyz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                answers.append((t, ok))
                stop.wait(max(0.0, 0.2 - (time.monotonic() - t)))

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    t0 = time.monotonic()
    try:
        with server.client() as rest:
            resp = rest.post("/api/v1/installation/remove_nodes/start",
                             json={"spec": spec, "nodes": [cp.name]})
            assert resp.status_code == 202, resp.text
            run_id = resp.json()["installation_id"]
            RUNS.append((run_id, server.prefect_api_url))
        st = wait(run_id, timeout=900)
        TIMES["remove control plane"] = time.monotonic() - t0
        time.sleep(2)
    finally:
        stop.set()
        poller.join(5)
    assert_completed(st)
    gaps, start_fail = [], None
    for t, ok in answers:
        if not ok and start_fail is None:
            start_fail = t
        elif ok and start_fail is not None:
            gaps.append(t - start_fail)
            start_fail = None
    assert start_fail is None, "the endpoint did not answer at the end"
    longest = max(gaps, default=0.0)
    TIMES["longest endpoint gap"] = longest
    print(f"\nendpoint polled {len(answers)} times during the removal of {cp.name} (VIP holder): "
          f"{len(gaps)} gap(s), longest {longest:.1f} s")
    assert len(answers) > 50 and longest <= MAX_ENDPOINT_GAP_S, gaps
    assert len(gaps) <= 1, f"the endpoint went away more than once: {gaps}"
    assert registered(cluster) == {h.name for h in others} | {cluster["workers"][1].name}
    assert vip_holder(cluster) in {h.name for h in others}
    hosts = step_hosts(st)
    assert hosts[f"kube-vip-leave-{cp.name}"] == [cp.name] and hosts[f"reset-{cp.name}"] == [cp.name]
    assert hosts[f"delete-node-{cp.name}"] == [others[0].name]  # the anchor: first one left
    assert cp.exec("test -e /etc/kubernetes/manifests/kube-apiserver.yaml", check=False).returncode != 0
    for h in others:
        assert cp.name not in kai_block(h)
    text = "\n".join(logs(st["id"]))
    assert f"[{cp.name}] this node holds the VIP" in text
    cluster["spec"] = without(spec, cp.name)  # the user edits the spec, as the report says


def test_removing_a_second_control_plane_is_refused(cluster, server):
    from deployments import control
    from installers.spec import SpecError

    spec = cluster["spec"]
    cps = [n["name"] for n in spec["nodes"] if "control-plane" in n["roles"]]
    assert len(cps) == 2
    # the spec, edited after the first removal: refused at the start, no run created
    with pytest.raises(SpecError) as err:
        control.start("remove_nodes", spec, nodes=[cps[1]])
    assert any(f"'{cps[1]}'" in p and "quorum" in p for p in err.value.problems), err.value.problems
    with server.client() as rest:
        resp = rest.post("/api/v1/installation/remove_nodes/start", json={"spec": spec, "nodes": [cps[0]]})
    assert resp.status_code == 422 and any("quorum" in p for p in resp.json()["problems"]), resp.text

    # a spec still listing the removed control plane (last, so the check runs on one that is
    # there): the running cluster refuses it in quorum-check, before anything changes
    gone = next(h for h in cluster["cps"] if h.name not in cps)
    stale = dict(spec, nodes=spec["nodes"] + [{"name": gone.name, "address": gone.address,
                                              "roles": ["control-plane"]}])
    st = wait(start("remove_nodes", stale, nodes=[cps[0]]), timeout=300)
    assert st["state"] == "FAILED" and st["failure"]["step"] == "quorum-check", st["failure"]
    assert f"'{cps[0]}'" in st["failure"]["message"] and "quorum" in st["failure"]["message"]
    assert [s["name"] for s in st["steps"] if s["state"] not in ("PENDING", "SKIPPED", None)] == \
        ["kubeconfig", "quorum-check"], st["steps"]
    assert set(cps) <= registered(cluster)
    anchor = next(h for h in cluster["cps"] if h.name == cps[1])
    assert "SchedulingDisabled" not in kubectl(anchor, f"get nodes {cps[0]}").stdout


def test_force_removes_a_powered_off_worker_without_contacting_it(cluster, server, hosts):
    spec = cluster["spec"]
    w2 = cluster["workers"][1]
    cps = [h for h in cluster["cps"] if h.name in {n["name"] for n in spec["nodes"]}]
    hosts.power_off(w2)
    t0 = time.monotonic()
    st = wait(start("remove_nodes", spec, nodes=[w2.name], force=True), timeout=600)
    TIMES["force-remove dead worker"] = time.monotonic() - t0
    assert_completed(st)
    assert registered(cluster) == {h.name for h in cps}
    touched = {h for names in step_hosts(st).values() for h in names}
    assert w2.name not in touched and [s["name"] for s in st["steps"] if "drain" in s["name"]] == []
    for h in cps:
        assert w2.name not in kai_block(h)
    assert {p["spec"]["nodeName"] for p in web_pods(cluster)} <= {h.name for h in cps}
