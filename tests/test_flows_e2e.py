"""Every install mode end to end: real Prefect (`kai serve`: server, runner, deployments), real SSH
with verified host keys, every node script on booted systemd hosts, the local mirror, and the strict
kubeadm/kubelet/kubectl/API-server stand-ins. Faults are injected the way they happen for real:
a flaky command, a dropped SSH session, a stopped sshd, a cancel, a SIGKILLed flow process.

The module runs in order on 6 booted hosts (KAI_TEST_HOSTS=6):
  h0 all-in-one (transient failure → retried) → rerun (everything skipped) → reset
  h0 `kai install` from the CLI → rebuild (reset + install) → health → reset
  h0..h4 ha (3 control planes behind kube-vip + 2 workers; a dropped SSH session mid-step) → add h5
     → etcd_backup twice → ConfigMap A, backup, ConfigMap B, etcd_restore (refused unconfirmed;
     then confirmed: A back, B gone, 3 members)
  reset all; unreachable host → preflight fails, nothing changed
  h1 install: a second run is refused naming the holder; cancel mid-step; rerun completes
  h2 install: SIGKILL the flow process mid-run; rerun resumes, skipping what was done
  h3 install with cilium (its chart) and monitoring: verify checks the stack; every file's sha256
     is in the report
  finally: no secret in any log line or artifact of any run.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.support import old_api
from tests.support.e2e_server import kai_server  # noqa: F401  (session fixture)
from tests.support.etcd import etcd_healthy, etcd_members, etcdctl
from tests.hosts.booted import spec_fragment
from tests.hosts.mirror import serve_mirror_to

pytestmark = [pytest.mark.hosts, pytest.mark.e2e]

HOSTS_NEEDED = 6
FAULTS = "/etc/kai-standin/faults.json"
# every run started through start() — for the secrets sweep at the end — with the Prefect API it
# went to: other modules (test_faults_e2e) start runs on servers of their own with these helpers
RUNS: list[tuple[str, str]] = []


def _prefect_api_url() -> str:
    from prefect.settings import PREFECT_API_URL
    return str(PREFECT_API_URL.value())


# --- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hosts(clean_hosts):
    return serve_mirror_to(clean_hosts, HOSTS_NEEDED)


@pytest.fixture(scope="module")
def server(kai_server):  # noqa: F811
    with kai_server.prefect():
        yield kai_server


def make_spec(hosts, members, *, name, roles=None, endpoint=None, **extra) -> dict:
    v = hosts.mirror_versions
    spec = {
        "name": name,
        "kubernetes": {"version": "1.36"},
        "mirror": {"url": hosts.mirror_url},
        "runtime": {"containerd": {"source": "mirror", "version": v["containerd"],
                                   "runc_version": v["runc"], "cni_plugins_version": v["cni-plugins"]}},
        "networking": {"cni": "flannel"},
        # the test hosts run cgroup v1 (this machine's kernel) and share the machine's product_uuid
        "kubelet": {"fail_cgroup_v1": False},
        "preflight": {"ignore": ["product_uuid_unique"]},
        **spec_fragment(members, roles),
        **extra,
    }
    if endpoint:
        spec["control_plane_endpoint"] = endpoint
    return spec


def start(mode, spec, **kw) -> str:
    from deployments import control
    run_id = control.start(mode, spec, **kw)
    RUNS.append((run_id, _prefect_api_url()))
    return run_id


def wait(run_id, *, timeout=600, until=None) -> dict:
    from deployments import control
    deadline = time.monotonic() + timeout
    while True:
        st = control.status(run_id)
        if st["final"] or (until and until(st)):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} not done in {timeout} s: {json.dumps(st, indent=1)[-3000:]}")
        time.sleep(1)


def logs(run_id, settle_s: float = 3.0) -> list[str]:
    """All log lines of a finished run, once they stopped arriving (they ship in ~2 s batches)."""
    from deployments import control
    seen, stable_since = -1, time.monotonic()
    while True:
        lines = [entry["message"] for entry in control.logs(run_id, limit=100000)]
        if len(lines) != seen:
            seen, stable_since = len(lines), time.monotonic()
        elif time.monotonic() - stable_since >= settle_s:
            return lines
        time.sleep(0.5)


def assert_completed(st):
    assert st["state"] == "COMPLETED", (
        f"{st['mode']} ended {st['state']}: {json.dumps(st['failure'], indent=1)}\n"
        + "\n".join(f"  {s['name']}: {s['state']} {s['message'] or ''}" for s in st["steps"]))


def journal(host) -> list[dict]:
    out = host.exec("cat /var/log/kai-standins.jsonl 2>/dev/null || true").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def calls(host, tool, sub) -> list[dict]:
    return [r for r in journal(host) if r["tool"] == tool and r["argv"][1:2] == [sub]]


def set_fault(host, faults: dict) -> None:
    host.exec(f"mkdir -p {Path(FAULTS).parent}")
    host.put_file(FAULTS, json.dumps(faults))


def clear_fault(host) -> None:
    host.exec(f"rm -f {FAULTS}")


def unit_invocation(host, unit) -> str:
    return host.exec(f"systemctl show -p InvocationID --value {unit}").stdout.strip()


def wait_step_running(run_id, step, timeout=300) -> dict:
    return wait(run_id, timeout=timeout,
                until=lambda st: any(s["name"] == step and s["state"] == "RUNNING" for s in st["steps"]))


def kai_processes(host) -> str:
    """Processes of kai steps still alive on the host (kai-exec bootstraps, steps, kubeadm)."""
    out = host.exec("grep -lzs '^KAI_WORK=' /proc/[0-9]*/environ || true; pgrep -af '[k]ubeadm|[k]ai-exec' || true",
                    check=False).stdout
    return out.strip()


def install_stuck_in_kubeadm_init(hosts, host, name, sleep_s: float = 120) -> tuple[dict, str]:
    """Start an all-in-one install on `host` whose kubeadm init hangs (fault: sleep `sleep_s`);
    return (spec, run id) once the kubeadm-init step is running."""
    spec = make_spec(hosts, [host], name=name)
    set_fault(host, {"kubeadm init": {"sleep": sleep_s}})
    run_id = start("all_in_one", spec)
    wait_step_running(run_id, "kubeadm-init")
    return spec, run_id


def assert_no_kai_processes(host, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while kai_processes(host) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not kai_processes(host), f"left on {host.name}: {kai_processes(host)}"


# --- tests ----------------------------------------------------------------------------------------

def test_all_in_one_with_a_transient_failure_then_rerun_then_reset(hosts, server):
    h0 = hosts[0]
    spec = make_spec(hosts, [h0], name="aio",
                     steps={"kubeadm_init": {"retries": 2, "retry_delay_s": 1}})
    set_fault(h0, {"kubeadm init": {"fail": 2}})  # fails twice like a flaky real command, then works
    t0 = time.monotonic()
    st = wait(start("all_in_one", spec))
    first_s = time.monotonic() - t0
    assert_completed(st)
    init = next(s for s in st["steps"] if s["name"] == "kubeadm-init")
    assert init["attempts"] == 3, init
    assert [c["exit_code"] for c in calls(h0, "kubeadm", "init")] == [1, 1, 0]
    info = st["cluster_info"]
    assert info and [n["name"] for n in info["nodes"]] == [h0.name], info
    # verify's data, not a rendering of it: what the old API's cluster_info is built from
    assert info["nodes"][0]["created"] and info["nodes"][0]["address"] == h0.address, info
    assert (info["cni"], info["pod_cidr"]) == ("flannel", "10.244.0.0/16"), info
    kubeconfig = Path(server.state_dir, "clusters", "aio", "admin.conf")
    assert kubeconfig.exists() and (kubeconfig.stat().st_mode & 0o777) == 0o600
    # verify really talked to the API through TLS with the admin client certificate
    from installers.cluster_check import check_cluster
    report = check_cluster(kubeconfig, [h0.name], expect_storage_class="local-path")
    assert report.healthy, report.problems

    # a rerun of a finished install changes nothing: every node step is skipped by its marker
    t1 = time.monotonic()
    st = wait(start("all_in_one", spec))
    rerun_s = time.monotonic() - t1
    assert_completed(st)
    assert len(calls(h0, "kubeadm", "init")) == 3, "kubeadm init must not run again"
    text = "\n".join(logs(st["id"]))
    for step in ("os-prep", "runtime", "kube-packages", "kubeadm-init"):
        assert f"[{h0.name}] {step}: already done" in text, f"{step}: not skipped in the rerun"
    print(f"\nall_in_one: {first_s:.0f} s (init attempts 3); rerun {rerun_s:.0f} s")

    # A version bump on the running cluster is refused by preflight before anything changes: an
    # install would put the new kubelet beside the old API server (an upgrade is the way).
    snapshot = "kubelet --version; dpkg-query -W kubelet kubeadm; cat /var/lib/kai/done/* | sha256sum"
    before = h0.exec(snapshot).stdout
    st = wait(start("all_in_one", dict(spec, kubernetes={"version": "1.37"})))
    assert st["state"] == "FAILED" and st["failure"]["step"] == "facts", st["failure"]
    message = st["failure"]["message"]
    assert h0.name in message and "v1.36" in message and "an upgrade" in message and "back to 1.36" in message, message
    assert "`kai upgrade SPEC --to 1.37`" in message, message
    assert [s["name"] for s in st["steps"] if s["state"] not in ("PENDING", "SKIPPED", None)] == ["facts"], \
        st["steps"]
    assert h0.exec(snapshot).stdout == before, "the refused run changed a package or a done-marker"

    st = wait(start("reset", spec))
    assert_completed(st)
    assert h0.exec("test -e /etc/kubernetes/admin.conf", check=False).returncode != 0
    assert h0.exec("ls /var/lib/kai/done 2>/dev/null | wc -l").stdout.strip() == "0"
    clear_fault(h0)


def test_cli_install_then_rebuild_then_health(hosts, server, tmp_path):
    """`kai install` in a terminal: live progress, ends with the kubeconfig path; then the
    scheduled-rebuild flow (reset + install) and the read-only health flow."""
    import subprocess
    import sys

    import yaml

    h0 = hosts[0]
    spec = make_spec(hosts, [h0], name="cli")
    path = tmp_path / "all-in-one.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(KAI_STATE_DIR=str(server.state_dir), COLUMNS="120")
    t0 = time.monotonic()
    out = subprocess.run([str(Path(sys.executable).parent / "kai"), "install", str(path), "--mode",
                          "all_in_one"], env=env, capture_output=True, text=True, timeout=900,
                         stdin=subprocess.DEVNULL)
    cli_s = time.monotonic() - t0
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    kubeconfig = str(Path(server.state_dir, "clusters", "cli", "admin.conf"))
    assert kubeconfig in out.stdout, out.stdout[-2000:]
    assert f"[{h0.name}]" in out.stdout, "the live display shows host-prefixed log lines"
    assert "kubeadm-init" in out.stdout

    calls_before = len(calls(h0, "kubeadm", "init"))
    st = wait(start("rebuild", spec))
    assert_completed(st)
    assert len(calls(h0, "kubeadm", "reset")) >= 1
    assert len(calls(h0, "kubeadm", "init")) == calls_before + 1, "rebuild initialises afresh"

    st = wait(start("health", spec))
    assert_completed(st)
    assert [n["name"] for n in st["cluster_info"]["nodes"]] == [h0.name]
    assert len(calls(h0, "kubeadm", "init")) == calls_before + 1, "health changes nothing"

    st = wait(start("reset", spec))
    assert_completed(st)
    print(f"\nkai install (CLI): {cli_s:.0f} s; rebuild and health completed")


def ha_spec(hosts):
    subnet = ipaddress.ip_network(f"{hosts.bridge.gateway}/{hosts.bridge.prefixlen}", strict=False)
    vip = str(subnet[250])
    roles = {h.name: (["control-plane"] if i < 3 else ["worker"]) for i, h in enumerate(hosts[:6])}
    return make_spec(hosts, list(hosts)[:6], name="ha", roles=roles,
                     endpoint={"type": "kube_vip", "address": vip, "interface": "eth0"})


def test_ha_survives_a_dropped_ssh_session_then_add_a_worker(hosts, server):
    spec = ha_spec(hosts)
    members = list(hosts)[:5]
    install = dict(spec, nodes=spec["nodes"][:5])
    cp1 = hosts[0]
    set_fault(cp1, {"kubeadm init": {"sleep": 8}})  # a window to drop the session in
    t0 = time.monotonic()
    run_id = start("ha", install)
    wait_step_running(run_id, "kubeadm-init")
    time.sleep(3)
    # kill the sshd session process serving kai (not the listener): the link drops mid-step
    cp1.exec("pkill -KILL -f 'sshd: root@notty' || pkill -KILL -f 'sshd: root'", check=False)
    st = wait(run_id, timeout=900)
    ha_s = time.monotonic() - t0
    assert_completed(st)
    init = next(s for s in st["steps"] if s["name"] == "kubeadm-init")
    assert init["attempts"] >= 2, init
    assert sorted(n["name"] for n in st["cluster_info"]["nodes"]) == sorted(h.name for h in members)
    # the stacked etcd is real: a member per control plane, each joined with kubeadm, all healthy
    assert etcd_members(cp1) == sorted(h.name for h in list(hosts)[:3])
    assert etcd_healthy(cp1)
    clear_fault(cp1)

    before = {h.name: (unit_invocation(h, "containerd"), unit_invocation(h, "kubelet")) for h in members}
    t1 = time.monotonic()
    st = wait(start("add_nodes", spec, nodes=[hosts[5].name]), timeout=600)
    add_s = time.monotonic() - t1
    assert_completed(st)
    assert hosts[5].name in [n["name"] for n in st["cluster_info"]["nodes"]]
    after = {h.name: (unit_invocation(h, "containerd"), unit_invocation(h, "kubelet")) for h in members}
    assert before == after, "adding a worker restarted containerd or kubelet on an existing node"
    for h in members[1:]:
        assert not calls(h, "kubeadm", "token"), "only the first control plane makes join credentials"
    print(f"\nha (3 cp + 2 w, one dropped session): {ha_s:.0f} s; add 1 worker: {add_s:.0f} s")


def test_etcd_backup_of_the_ha_cluster_keeps_the_newest(hosts, server, tmp_path):
    """Two etcd_backup runs on the cluster the previous test built, keep 1: one checked 0600
    snapshot named with cluster, time and revision, that etcd itself reads back."""
    backups = tmp_path / "backups"
    spec = dict(ha_spec(hosts), etcd_backup={"directory": str(backups), "keep": 1})
    took, names = [], []
    for _ in range(2):
        t0 = time.monotonic()
        st = wait(start("etcd_backup", spec), timeout=300)
        took.append(time.monotonic() - t0)
        assert_completed(st)
        names += [p.name for p in backups.iterdir()]
    [snap] = list(backups.iterdir())
    assert snap.name == names[-1] and names[0] != names[-1]  # the older one was pruned
    m = re.fullmatch(r"ha-\d{8}T\d{6}Z-rev(\d+)\.db", snap.name)
    assert m and int(m[1]) > 1, snap.name
    assert snap.stat().st_mode & 0o777 == 0o600
    cp1 = hosts[0]
    assert cp1.exec("ls -A /var/lib/etcd").stdout.split() == ["member"]  # the node's copy is gone
    cp1.put_file("/var/lib/etcd/check.db", snap.read_bytes(), 0o600)
    status = json.loads(etcdctl(cp1, "snapshot status /var/lib/etcd/check.db -w json").stdout)
    cp1.exec("rm -f /var/lib/etcd/check.db")
    assert status["revision"] >= int(m[1]) and status["totalKey"] > 10, status
    print(f"\netcd_backup (3 members): {took[0]:.1f} s, {took[1]:.1f} s per run; snapshot "
          f"{snap.stat().st_size} bytes, revision {status['revision']}, {status['totalKey']} keys")


def test_etcd_restore_of_the_ha_cluster_brings_back_the_snapshot(hosts, server, tmp_path, capsys):
    """On the 3-member HA cluster: ConfigMap A, an etcd_backup, ConfigMap B. A restore without
    confirmation is refused touching nothing (no run starts; a run started without it fails before
    any host is contacted); `kai plan` lists its steps; the confirmed restore brings A back and
    not B, every member in one cluster with a new token, a healthy cluster, the old data kept
    aside on every control plane."""
    from prefect.client.orchestration import get_client

    from deployments.cli import main
    from installers import modes
    from installers.cluster_check import KubeconfigCredentials
    from installers.spec import SpecError

    backups = tmp_path / "backups"
    spec = dict(ha_spec(hosts), etcd_backup={"directory": str(backups), "keep": 2})
    cps = list(hosts)[:3]
    creds = KubeconfigCredentials(Path(server.state_dir, "clusters", "ha", "admin.conf"))

    def configmap(name: str, create: bool = False) -> int:
        with creds.client(10) as api:
            if create:
                r = api.post("/api/v1/namespaces/default/configmaps", json={
                    "apiVersion": "v1", "kind": "ConfigMap", "data": {"made": name},
                    "metadata": {"name": name, "namespace": "default"}})
                assert r.status_code == 201, r.text
            return api.get(f"/api/v1/namespaces/default/configmaps/{name}").status_code

    def untouched() -> dict:
        return {h.name: (unit_invocation(h, "kai-standin-etcd"), unit_invocation(h, "kai-standin-apiserver"),
                         h.exec("ls /etc/kubernetes/manifests /var/lib/etcd /var/lib/kai/done", check=False).stdout)
                for h in cps}

    assert configmap("kai-restore-a", create=True) == 200
    t0 = time.monotonic()
    st = wait(start("etcd_backup", spec), timeout=300)
    backup_s = time.monotonic() - t0
    assert_completed(st)
    [snap] = list(backups.iterdir())
    assert configmap("kai-restore-b", create=True) == 200

    def restores(h) -> list[list[str]]:  # `crictl exec <id> etcdutl snapshot restore …` calls
        return [r["argv"] for r in calls(h, "crictl", "exec") if r["argv"][3:6] == ["etcdutl", "snapshot", "restore"]]

    before, restored_before = untouched(), {h.name: len(restores(h)) for h in cps}
    with pytest.raises(SpecError, match="confirm: etcd_restore replaces the data"):
        start("etcd_restore", spec, snapshot=snap.name)
    params = modes.flow_parameters("etcd_restore", spec, snapshot=snap.name, confirm=False)
    with get_client(sync_client=True) as client:  # as the Prefect UI would start it
        deployment = client.read_deployment_by_name("etcd_restore/etcd_restore")
        run_id = str(client.create_flow_run_from_deployment(
            deployment.id, parameters=params, tags=["kai", "mode:etcd_restore", "cluster:ha"]).id)
    RUNS.append((run_id, _prefect_api_url()))
    st = wait(run_id, timeout=300)
    assert st["state"] == "FAILED" and "refused, nothing was touched: confirm" in json.dumps(st["failure"])
    assert untouched() == before and {h.name: len(restores(h)) for h in cps} == restored_before

    spec_file = tmp_path / "ha.yaml"
    spec_file.write_text(json.dumps(spec))
    assert main(["plan", str(spec_file), "--mode", "etcd_restore", "--snapshot", snap.name]) == 0
    out = capsys.readouterr().out
    for step in ("restore-snapshot", "etcd-restore-stage", "etcd-restore-stop", "etcd-restore-swap",
                 "etcd-restore-start", "etcd-restore-verify"):
        assert step in out, out

    t1 = time.monotonic()
    st = wait(start("etcd_restore", spec, snapshot=snap.name, confirm=True), timeout=900)
    restore_s = time.monotonic() - t1
    assert_completed(st)
    assert configmap("kai-restore-a") == 200 and configmap("kai-restore-b") == 404
    assert etcd_members(cps[0]) == sorted(h.name for h in cps) and etcd_healthy(cps[0])
    assert sorted(n["name"] for n in st["cluster_info"]["nodes"]) == sorted(h.name for h in list(hosts)[:6])
    tokens = set()
    for h in cps:
        kept = h.exec("ls -A /var/lib/etcd").stdout.split()
        assert len(kept) == 2 and kept[-1] == "member" and re.fullmatch(r"kai-before-restore-\d{8}T\d{6}Z", kept[0]), kept
        assert h.exec("test -d /var/lib/etcd/%s/member && test -f /etc/kubernetes/manifests/etcd.yaml "
                      "&& test -f /etc/kubernetes/manifests/kube-apiserver.yaml "
                      "&& test ! -e /etc/kubernetes/kai-restore-held" % kept[0], check=False).returncode == 0
        assert len(restores(h)) == restored_before[h.name] + 1
        restore = restores(h)[-1]
        assert f"--name={h.name}" in restore
        tokens |= {a.split("=", 1)[1] for a in restore if a.startswith("--initial-cluster-token=")}
    assert len(tokens) == 1 and tokens.pop().startswith("kai-ha-")
    print(f"\netcd_restore (3 members): backup {backup_s:.1f} s, restore {restore_s:.1f} s, "
          f"snapshot {snap.stat().st_size} bytes")


def test_reset_everything_then_an_unreachable_host_stops_preflight(hosts, server):
    spec = ha_spec(hosts)
    st = wait(start("reset", spec))
    assert_completed(st)
    for h in list(hosts)[:6]:
        assert h.exec("test -e /etc/kubernetes/kubelet.conf", check=False).returncode != 0, h.name

    down = hosts[3]
    down.exec("systemctl stop ssh.socket ssh.service", check=False)
    try:
        st = wait(start("ha", dict(spec, nodes=spec["nodes"][:5])))
    finally:
        down.exec("systemctl start ssh.service")
    assert st["state"] == "FAILED"
    assert st["failure"]["step"] == "facts" and st["failure"]["hosts"] == [down.name], st["failure"]
    assert down.name in st["failure"]["message"] and down.address in st["failure"]["message"]
    for h in list(hosts)[:5]:  # preflight is read-only: nothing was changed anywhere
        assert h.exec("ls /var/lib/kai/done 2>/dev/null | wc -l").stdout.strip() == "0", h.name


def test_busy_host_refused_then_cancel_mid_step_then_complete(hosts, server):
    h1 = hosts[1]
    spec, run_a = install_stuck_in_kubeadm_init(hosts, h1, "cancel-me")
    assert calls(h1, "kubeadm", "init") == [] and "kubeadm" in kai_processes(h1)

    st_b = wait(start("preflight", spec, lock_wait_s=2), timeout=120)  # same host, while A holds it
    assert st_b["state"] == "FAILED"
    from deployments import control
    name_a = control.status(run_a)["name"]
    assert h1.address in st_b["failure"]["message"] and name_a in st_b["failure"]["message"], st_b["failure"]

    t0 = time.monotonic()
    control.cancel(run_a)
    st = wait(run_a, timeout=60)
    cancel_s = time.monotonic() - t0
    assert st["state"] == "CANCELLED", st["state"]
    assert cancel_s <= 15, f"cancel took {cancel_s:.1f} s"
    assert_no_kai_processes(h1, within_s=10)

    clear_fault(h1)
    # the next install goes through kai's REST API over HTTP, as an existing client would drive it
    with server.client() as api:
        resp = api.post("/api/v1/installation/all_in_one/start", json={"spec": spec, "lock_wait_s": 120})
        assert resp.status_code == 202, resp.text
        run_id = resp.json()["installation_id"]
        RUNS.append((run_id, server.prefect_api_url))
        percents, step_numbers, deadline = [], [], time.monotonic() + 600
        while time.monotonic() < deadline:
            body = api.get(f"/api/v1/installation/{run_id}/status").json()
            percents.append(body["progress"]["progress_percentage"])
            step_numbers.append(body["progress"]["current_step"])
            if body["completed"]:
                break
            time.sleep(1)
    assert body["success_status"] is True and body["progress"]["status"] == "completed", body["progress"]
    assert len(set(percents)) >= 3 and percents == sorted(percents), f"progress went {percents}"
    info = body["cluster_info"]
    assert info["kubeconfig_path"].endswith("clusters/cancel-me/admin.conf")
    assert [n["name"] for n in info["nodes"]] == [h1.name]
    steps = {r["step_name"]: r for r in body["progress"]["step_results"]}
    assert steps["kubeadm-init"]["success"] and steps["kubeadm-init"]["host"] == h1.name, steps
    # the old contract's completed status (docs/old-api.md), cluster_info from verify's facts
    old_api.assert_conforms(body, old_api.STATUS_COMPLETED, "a completed install's status")
    assert step_numbers == sorted(step_numbers) and step_numbers[-1] >= 1, step_numbers
    [node] = info["nodes"]
    assert (node["status"], node["internal_ip"]) == ("Ready", h1.address), node
    assert "control-plane" in node["roles"].split(","), node
    assert (info["cni_provider"], info["mode"], info["installation_id"]) == ("flannel", "all_in_one", run_id)
    print(f"\ncancelled in {cancel_s:.1f} s; the next run (REST API) completed")


def test_sigkill_of_the_flow_process_then_rerun_resumes(hosts, server):
    h2 = hosts[2]
    spec, run_id = install_stuck_in_kubeadm_init(hosts, h2, "killed")
    pid = flow_run_pid(run_id)
    os.kill(pid, signal.SIGKILL)
    st = wait(run_id, timeout=120)
    assert st["state"] in ("CRASHED", "FAILED"), st["state"]
    assert_no_kai_processes(h2, within_s=15)  # the dropped link made kai-exec kill the step

    clear_fault(h2)
    st = wait(start("all_in_one", spec, lock_wait_s=120))  # waits for the dead run's lease to lapse
    assert_completed(st)
    text = "\n".join(logs(st["id"]))
    for step in ("os-prep", "runtime", "kube-packages"):
        assert f"[{h2.name}] {step}: already done" in text, f"{step} was not skipped on resume"
    assert [c["exit_code"] for c in calls(h2, "kubeadm", "init")] == [0]


def test_all_in_one_with_cilium_and_monitoring_reports_every_file(hosts, server):
    """Issue 13 §3-4: cilium from its chart (rendered by a verified helm), metrics-server and the
    kube-prometheus stack (CRDs Established before their objects), checked by verify; every file
    applied is in the run's report with the sha256 the mirror serves."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from uuid import UUID

    from installers import versions as V
    from installers.cluster_check import KubeconfigCredentials
    from tests.hosts.mirror import build_mirror, sha256_file

    h3 = hosts[3]
    spec = make_spec(hosts, [h3], name="observed", networking={"cni": "cilium"},
                     addons={"monitoring": True})
    t0 = time.monotonic()
    st = wait(start("all_in_one", spec))
    install_s = time.monotonic() - t0
    assert_completed(st)
    workloads = st["cluster_info"]["workloads"]
    assert len(workloads) == 7 and set(workloads.values()) == {"ready"}, workloads
    assert [c["exit_code"] for c in calls(h3, "helm", "template")] == [0]
    waits = [r for r in journal(h3) if r["tool"] == "kubectl" and "wait" in r["argv"]]
    assert [c["exit_code"] for c in waits] == [0], waits

    root, chart, hv = build_mirror(), V.CNI_CHARTS["cilium"], V.HELM_VERSION
    served = {f"helm-v{hv}-linux-amd64.tar.gz": root / f"helm/v{hv}/helm-v{hv}-linux-amd64.tar.gz",
              chart.file: root / "charts/cilium" / chart.file,
              "components.yaml": root / f"manifests/metrics-server/v{V.METRICS_SERVER_VERSION}/components.yaml",
              V.KUBE_PROMETHEUS_FILE: root / f"manifests/kube-prometheus/v{V.KUBE_PROMETHEUS_VERSION}"
                                             f"/{V.KUBE_PROMETHEUS_FILE}"}
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(st["id"])])))
    # each add-on step publishes the run's whole list so far under one key: the newest is complete
    artifacts = {a.key: a.data for a in sorted(found, key=lambda a: a.created)}
    rows = json.loads(artifacts["applied-files"]) if isinstance(artifacts["applied-files"], str) \
        else artifacts["applied-files"]
    by_file = {r["file"]: r for r in rows}
    assert set(by_file) == set(served) | {f"cilium-{chart.version}-rendered.yaml"}, by_file
    for name, path in served.items():
        assert by_file[name]["sha256"] == sha256_file(path), name
        assert by_file[name]["verified_by"] != "unverified", by_file[name]
        assert by_file[name]["sha256"] in artifacts["cluster-info"], f"{name} missing from the report"

    # metrics.k8s.io is metrics-server's: kube-prometheus's adapter was left out
    creds = KubeconfigCredentials(Path(server.state_dir, "clusters", "observed", "admin.conf"))
    with creds.client(10) as api:
        svc = api.get("/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io").json()["spec"]["service"]
        assert (svc["namespace"], svc["name"]) == ("kube-system", "metrics-server"), svc
        assert api.get("/apis/apps/v1/namespaces/monitoring/deployments/prometheus-adapter").status_code == 404
    print(f"\nall_in_one with cilium + monitoring: {install_s:.0f} s")


def flow_run_pid(run_id: str) -> int:
    """The flow-run process the runner started for this run (it has the run id in its env)."""
    needle = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in environ.read_bytes().split(b"\0"):
                return int(environ.parent.name)
        except OSError:
            continue
    raise AssertionError(f"no process for flow run {run_id}")


def test_no_secret_in_any_log_or_artifact(hosts, server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from uuid import UUID

    ours = [run_id for run_id, api in RUNS if api == server.prefect_api_url]
    assert ours, "the runs above must have happened"
    key_lines = [line for line in Path(hosts[0].key_file).read_text().splitlines()
                 if line and not line.startswith("-----")]
    token_re = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")
    texts = []
    for run_id in ours:
        texts += logs(run_id)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(r) for r in ours])))
    texts += [json.dumps(a.data) if not isinstance(a.data, str) else a.data for a in artifacts]
    texts.append(server.log_text())
    blob = "\n".join(texts)
    assert len(texts) > 100
    assert not token_re.findall(blob), "a bootstrap token reached a log or artifact"
    assert not [line for line in key_lines if line in blob], "the SSH private key reached a log"
    assert "client-key-data" not in blob
    assert "BEGIN" not in blob or "PRIVATE KEY" not in blob
