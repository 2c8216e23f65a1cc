"""The certs mode without hosts: the kubeadm stand-in's check-expiration and renew on a real PKI in
a temporary directory, kai's judging of kubeadm's JSON, the plan and its options, and
certs-renew.sh in a sandbox against a fake kubelet (crictl) — its manifests always come back.
The booted end-to-end test: tests/test_health_deadline_e2e.py (the same one-node cluster)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import sys
from pathlib import Path

import pytest
import yaml

from installers import certs, modes
from installers.plan import build_plan
from installers.spec import SpecError, load_spec, validate_for_mode
from tests.scripts_harness import ScriptNode, can_sandbox
from tests.spec_factory import aio, ha

STANDINS = Path(__file__).parent / "hosts" / "standins"
sys.path.insert(0, str(STANDINS))

import standin_certs  # noqa: E402
import standin_pki as pki  # noqa: E402



# --- the kubeadm stand-in: a real PKI in tmp ------------------------------------------------------

@pytest.fixture
def kubeadm_pki(tmp_path, monkeypatch):
    """A control plane's PKI and kubeconfigs as kubeadm init writes them, leaf certificates of
    12 days (the test knob), CAs of ten years; no super-admin.conf (a joined control plane)."""
    k8s, cert_dir = tmp_path / "kubernetes", tmp_path / "kubernetes" / "pki"
    monkeypatch.setattr(standin_certs, "K8S", k8s)
    knob = tmp_path / "pki.json"
    knob.write_text(json.dumps({"leaf_days": 12}))
    monkeypatch.setattr(standin_certs, "KNOB", knob)
    cas = {}
    for name, cn in (("ca", "kubernetes"), ("front-proxy-ca", "front-proxy-ca"), ("etcd/ca", "etcd-ca")):
        key, cert = pki.new_ca(cn)
        pki.write_private(cert_dir / f"{name}.key", pki.key_pem(key))
        pki.write_private(cert_dir / f"{name}.crt", pki.cert_pem(cert), 0o644)
        cas[name] = (key, cert)
    days = standin_certs.leaf_days()
    leaves = {"apiserver": ("ca", "kube-apiserver", ["cp-1", "10.0.0.1"], True, False),
              "apiserver-kubelet-client": ("ca", "kube-apiserver-kubelet-client", [], False, True),
              "front-proxy-client": ("front-proxy-ca", "front-proxy-client", [], False, True),
              "etcd/server": ("etcd/ca", "cp-1", ["cp-1", "127.0.0.1"], True, True),
              "etcd/peer": ("etcd/ca", "cp-1", ["cp-1"], True, True),
              "etcd/healthcheck-client": ("etcd/ca", "kube-etcd-healthcheck-client", [], False, True),
              "apiserver-etcd-client": ("etcd/ca", "kube-apiserver-etcd-client", [], False, True)}
    for name, (ca, cn, sans, server, client) in leaves.items():
        key, cert = pki.issue(*cas[ca], cn, sans=sans, server=server, client=client, days=days)
        pki.write_private(cert_dir / f"{name}.key", pki.key_pem(key))
        pki.write_private(cert_dir / f"{name}.crt", pki.cert_pem(cert), 0o644)
    for file, cn in (("admin.conf", "kubernetes-admin"), ("controller-manager.conf", "system:kube-controller-manager"),
                     ("scheduler.conf", "system:kube-scheduler")):
        key, cert = pki.issue(*cas["ca"], cn, client=True, days=days)
        pki.write_private(k8s / file, pki.kubeconfig("https://10.0.0.1:6443", pki.cert_pem(cas["ca"][1]), cn,
                                                     pki.cert_pem(cert), pki.key_pem(key)).encode())
    return k8s, cert_dir, knob


def expiration(cert_dir: Path) -> list[certs.CertRow]:
    return certs.parse_expiration("cp-1", standin_certs.check_expiration("json", cert_dir))


def test_check_expiration_json_is_kubeadms_object_and_kai_reads_the_days(kubeadm_pki):
    _, cert_dir, _ = kubeadm_pki
    info = json.loads(standin_certs.check_expiration("json", cert_dir))
    assert (info["kind"], info["apiVersion"]) == ("CertificateExpirationInfo", "output.kubeadm.k8s.io/v1alpha3")
    names = [c["name"] for c in info["certificates"]]
    assert names == sorted(names) == [c.name for c in standin_certs.CERTS]
    assert [c["name"] for c in info["certificateAuthorities"]] == ["ca", "etcd-ca", "front-proxy-ca"]
    assert info["certificates"][-1] == {"name": "super-admin.conf", "expirationDate": None, "residualTime": 0,
                                        "externallyManaged": False, "missing": True}
    rows = {r.certificate: r for r in expiration(cert_dir)}
    assert rows["apiserver"].days_left == 11 and rows["apiserver"].ca == "ca"  # 12 days less a moment
    assert rows["etcd-peer"].ca == "etcd-ca" and rows["admin.conf"].days_left == 11
    assert rows["ca"].authority and rows["ca"].days_left >= 3649
    errors, warnings = certs.judge(list(rows.values()))
    assert errors == [] and "cp-1: apiserver expires in 11 days" in "\n".join(warnings)
    assert not any("super-admin.conf" in w for w in warnings)  # normal on a joined control plane
    text = standin_certs.check_expiration("text", cert_dir)
    assert text.splitlines()[3].split() == ["CERTIFICATE", "EXPIRES", "RESIDUAL", "TIME", "CERTIFICATE",
                                            "AUTHORITY", "EXTERNALLY", "MANAGED"]
    assert "\n!MISSING! super-admin.conf" in text and " 11d " in text and " 9y " in text


def test_renew_all_gives_a_year_new_keys_same_names_and_kubeconfigs(kubeadm_pki):
    k8s, cert_dir, knob = kubeadm_pki
    before = expiration(cert_dir)
    old_key = (cert_dir / "apiserver.key").read_bytes()
    old_admin = pki.read_kubeconfig((k8s / "admin.conf").read_text())
    knob.unlink()  # kubeadm's year again
    said: list[str] = []
    standin_certs.renew_all(said.append, cert_dir)
    assert "certificate for serving the Kubernetes API renewed" in said
    assert "MISSING! certificate embedded in the kubeconfig file for the super-admin" in said
    after = expiration(cert_dir)
    assert certs.not_renewed(before, after) == []
    days = {r.certificate: r.days_left for r in after}
    assert days["apiserver"] == days["etcd-server"] == days["admin.conf"] == 364
    assert days["ca"] == {r.certificate: r.days_left for r in before}["ca"]  # CAs are never renewed
    assert (cert_dir / "apiserver.key").read_bytes() != old_key
    served = pki.load_cert((cert_dir / "apiserver.crt").read_bytes())
    san = served.extensions.get_extension_for_class(pki.x509.SubjectAlternativeName).value
    assert [str(v) for v in san.get_values_for_type(pki.x509.DNSName)] == ["cp-1"]
    admin = pki.read_kubeconfig((k8s / "admin.conf").read_text())
    assert admin["server"] == old_admin["server"] and admin["cert"] != old_admin["cert"]
    assert pki.cert_subject(pki.load_cert(admin["cert"])) == ("kubernetes-admin", [])
    # a renewal that left a certificate behind is named
    assert certs.not_renewed(after, before) == [f"cp-1: {r.certificate} still expires on {r.expires[:10]} "
                                                "after the renewal" for r in before if r.renewable]


def test_an_expired_certificate_is_an_error_and_the_report_rows():
    rows = certs.parse_expiration("cp-2", json.dumps({
        "kind": "CertificateExpirationInfo", "apiVersion": "output.kubeadm.k8s.io/v1alpha3",
        "certificates": [{"name": "apiserver", "expirationDate": "2026-01-01T00:00:00Z", "residualTime": -5,
                          "externallyManaged": False, "caName": "ca", "missing": False},
                         {"name": "etcd-peer", "missing": True, "residualTime": 0}],
        "certificateAuthorities": []}))
    errors, warnings = certs.judge(rows)
    assert errors == ["cp-2: apiserver expired on 2026-01-01"] and warnings == ["cp-2: etcd-peer is missing"]
    report = certs.report_rows(rows)
    assert report[0] == {"node": "cp-2", "certificate": "apiserver", "kind": "certificate", "signed by": "ca",
                         "expires": "2026-01-01T00:00:00Z", "days left": -1, "state": "EXPIRED"}
    assert certs.by_node(rows) == {"cp-2": {"apiserver": -1, "etcd-peer": None}}
    with pytest.raises(ValueError, match="cp-2: .*printed no JSON"):
        certs.parse_expiration("cp-2", "CERTIFICATE  EXPIRES")
    with pytest.raises(ValueError, match="apiVersion"):
        certs.parse_expiration("cp-2", json.dumps({"kind": "CertificateExpirationInfo", "apiVersion": "v9"}))


# --- the plan and the renew option ----------------------------------------------------------------

def test_a_check_is_read_only_and_renew_goes_one_control_plane_at_a_time():
    spec = load_spec(ha())
    check = build_plan(spec, "certs")
    assert [s.name for s in check.steps()] == ["kubeconfig", "certs-check", "verify"]
    assert [j.node for j in check.step("certs-check").jobs] == ["cp-1", "cp-2", "cp-3"]
    assert check.step("verify").kind == "health"
    renew = build_plan(spec, "certs", renew=True)
    assert [s.name for s in renew.steps()] == ["kubeconfig", "certs-check", "certs-renew", "kubeconfig-renewed",
                                               "certs-check-renewed", "verify"]
    step = renew.step("certs-renew")
    assert not step.parallel and [j.node for j in step.jobs] == ["cp-1", "cp-2", "cp-3"]
    assert step.jobs[0].env == {"KAI_NODE_NAME": "cp-1", "KAI_POD_TIMEOUT_S": "120"}
    assert not modes.run_locks_hosts("certs", {"renew": False})  # schedulable: no host locks
    assert modes.run_locks_hosts("certs", {"renew": True}) and modes.run_locks_hosts("ha", {})
    assert not modes.run_locks_hosts("health", {})
    assert modes.flow_parameters("certs", {"name": "x"}) == {"spec": {"name": "x"}, "renew": False}
    assert modes.plan_options("certs", {"renew": True}) == {"renew": True}
    assert [j.node for j in build_plan(load_spec(aio()), "certs", renew=True).step("certs-renew").jobs] == ["node-1"]


def test_renew_is_refused_by_other_modes_naming_the_field():
    spec = load_spec(ha())
    assert validate_for_mode(spec, "health", None, {"renew": True}) == ["renew: only applies to certs, not health"]
    with pytest.raises(SpecError, match="renew: only applies to certs, not upgrade"):
        build_plan(spec, "upgrade", to="1.37", renew=True)
    build_plan(spec, "upgrade", to="1.37", renew=False)  # the CLI always passes it


# --- certs-renew.sh against a fake kubelet --------------------------------------------------------

needs_sandbox = pytest.mark.skipif(not can_sandbox(), reason="needs root and unshare (a private /etc)")
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
# crictl as a kubelet would answer it: a pod runs while its manifest is in place, and gets a new
# container id whenever it comes back after its manifest was gone
FAKE_CRICTL = r'''
state=$FAKE_DIR/pods; mkdir -p "$state"
if [[ $1 == ps ]]; then
  name=$3
  if [[ -f /etc/kubernetes/manifests/$name.yaml ]]; then
    if [[ ! -f $state/$name ]]; then n=$(cat "$state/n" 2>/dev/null || echo 0); echo $((n + 1)) >"$state/n"; echo "$name-$((n + 1))" >"$state/$name"; fi
    cat "$state/$name"
  else
    rm -f "$state/$name"
  fi
  exit 0
fi
[[ $1 == exec && $3 == etcdctl ]] || { echo "fake crictl: $*" >&2; exit 2; }
echo "https://127.0.0.1:2379 is healthy: successfully committed proposal"
'''


def renew_node(tmp_path: Path, *, api_ready: bool) -> ScriptNode:
    node = ScriptNode(tmp_path / "node")
    for name in COMPONENTS:
        args = "\n    - --advertise-address=127.0.0.1\n    - --secure-port=6443" if name == "kube-apiserver" else ""
        node.etc(f"kubernetes/manifests/{name}.yaml", f"spec:\n  containers:\n  - command:\n    - {name}{args}\n")
    node.etc("kubernetes/manifests/kube-vip.yaml", "kube-vip\n")
    node.etc("kubernetes/pki/ca.crt", "ca\n")
    node.etc("kubernetes/pki/apiserver.crt", "apiserver\n")
    node.fake("kubeadm", '[[ "$*" == "certs renew all" ]] || exit 2\necho "certificate for serving the Kubernetes API renewed"\n')
    node.fake("crictl", FAKE_CRICTL)
    node.fake("curl", "exit 0\n" if api_ready else "exit 7\n")
    node.fake("openssl", '[[ $1 == x509 ]] && echo "notAfter=Dec  2 00:00:00 2027 GMT"\nexit 0\n')
    return node


def run_renew(node: ScriptNode):
    return node.run("certs-renew.sh", {"KAI_NODE_NAME": "cp-1", "KAI_POD_TIMEOUT_S": "3",
                                       "FAKE_DIR": str(node.root)}, sandbox=True)


@needs_sandbox
def test_renew_restarts_etcd_then_the_api_server_and_puts_every_manifest_back(tmp_path):
    node = renew_node(tmp_path, api_ready=True)
    res = run_renew(node)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert out.index("kubeadm certs renew all") < out.index("moved out") < out.index("etcd restarted") \
        < out.index("kube-apiserver restarted and ready at https://127.0.0.1:6443")
    assert "serves the renewed certificate" in out
    for name in COMPONENTS + ("kube-vip",):  # all back (kube-vip never moved)
        assert node.etc_path(f"kubernetes/manifests/{name}.yaml").exists(), name
    assert not node.etc_path("kubernetes/tmp/kai-certs-restart").exists()


@needs_sandbox
def test_an_api_server_that_never_comes_back_fails_the_step_with_every_manifest_in_place(tmp_path):
    node = renew_node(tmp_path, api_ready=False)
    res = run_renew(node)
    assert res.returncode == 1
    assert "ERROR: kube-apiserver ready at https://127.0.0.1:6443/readyz: not within 3 s" in res.stderr, res.stderr
    for name in COMPONENTS:
        assert node.etc_path(f"kubernetes/manifests/{name}.yaml").exists(), name
    # a run killed with manifests in the stash: the next run puts them back first
    node.etc("kubernetes/tmp/kai-certs-restart/kube-scheduler.yaml", "spec: {}\n")
    node.etc_path("kubernetes/manifests/kube-scheduler.yaml").unlink()
    res = run_renew(node)
    assert "static pod kube-scheduler: manifest back" in res.stdout.split("running kubeadm certs renew all")[0]


def test_the_kubeconfig_the_stand_in_renews_keeps_its_user(kubeadm_pki):
    k8s, cert_dir, _ = kubeadm_pki
    standin_certs.renew_all(lambda _: None, cert_dir)
    kc = yaml.safe_load((k8s / "scheduler.conf").read_text())
    user = kc["users"][0]
    assert user["name"] == "system:kube-scheduler"
    cert = pki.load_cert(base64.b64decode(user["user"]["client-certificate-data"]))
    assert pki.cert_subject(cert)[0] == "system:kube-scheduler"
    assert (cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)).days == 11  # the knob: 12 days


# --- the task's judgement (no Prefect server: the node step and Prefect's calls recorded) -----------

def kubeadm_json(residual_s: int, expires: str) -> str:
    return json.dumps({"kind": "CertificateExpirationInfo", "apiVersion": "output.kubeadm.k8s.io/v1alpha3",
                       "certificates": [{"name": "apiserver", "expirationDate": expires, "residualTime": residual_s,
                                         "externallyManaged": False, "caName": "ca", "missing": False}],
                       "certificateAuthorities": []})


@pytest.fixture
def check_task(monkeypatch):
    """tasks.certs.certs_check's body with a fake run: each call's nodes answer `answer[0]`."""
    import logging
    from types import SimpleNamespace

    from tasks import certs as task

    answer: list[str] = []
    seen: dict = {"artifacts": [], "events": []}

    def fake_step(step, on_result=None):
        for job in step.jobs:
            on_result(job, SimpleNamespace(outputs={"expiration.json": answer[0].encode()}))

    def call(plan, step_name):
        run = SimpleNamespace(plan=plan, info=seen.setdefault("info", {}), spec=SimpleNamespace(name="demo"))
        monkeypatch.setattr(task, "current_run", lambda: run)
        return task.certs_check.__wrapped__(plan.step(step_name))

    monkeypatch.setattr(task, "run_node_step", fake_step)
    monkeypatch.setattr(task, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(task, "create_table_artifact", lambda rows, **kw: seen["artifacts"].append(rows))
    monkeypatch.setattr(task, "emit_certificate_expiring", lambda *a: seen["events"].append(a))
    return SimpleNamespace(call=call, answer=answer, seen=seen, problem=task.CertificatesProblem)


def test_an_expired_certificate_fails_a_check_but_not_a_renewal_that_fixes_it(check_task):
    expired = kubeadm_json(-3600, "2026-12-01T00:00:00Z")
    check_task.answer[:] = [expired]
    with pytest.raises(check_task.problem, match="node-1: apiserver expired on 2026-12-01"):
        check_task.call(build_plan(load_spec(aio()), "certs"), "certs-check")
    assert check_task.problem.retryable is False
    assert check_task.seen["events"] == [("demo", "node-1: apiserver", -1, "2026-12-01T00:00:00Z")]

    check_task.seen.clear(), check_task.seen.update(artifacts=[], events=[])
    plan = build_plan(load_spec(aio()), "certs", renew=True)
    check_task.call(plan, "certs-check")  # a renewal follows: no failure, no alert yet
    assert check_task.seen["events"] == []
    check_task.answer[:] = [expired]  # the renewal changed nothing
    with pytest.raises(check_task.problem, match="node-1: apiserver still expires on 2026-12-01 after the renewal"):
        check_task.call(plan, "certs-check-renewed")
    check_task.answer[:] = [kubeadm_json(364 * 86400 + 60, "2027-12-01T00:00:00Z")]
    rows = check_task.call(plan, "certs-check-renewed")
    assert rows[0]["days_left"] == 364
    assert check_task.seen["artifacts"][-1][0]["days left before"] == -1
    assert check_task.seen["info"]["certificates_by_node"] == {"node-1": {"apiserver": 364}}


@pytest.mark.parametrize("argv,sent,said", [
    (["certs", "{path}", "--detach"], {"mode": "certs"}, "started certs run r1 (check only)"),
    (["certs", "{path}", "--renew", "--detach"], {"mode": "certs", "renew": True},
     "started certs run r1 (renew)"),
    (["restore", "{path}", "--snapshot", "demo-ha-20261201T213000Z-rev9.db", "--yes", "--detach"],
     {"mode": "etcd_restore", "snapshot": "demo-ha-20261201T213000Z-rev9.db", "confirm": True},
     "started etcd_restore run r1 (demo-ha-20261201T213000Z-rev9.db)"),
])
def test_kai_certs_and_restore_go_through_the_clis_one_start_path(monkeypatch, tmp_path, capsys,
                                                                 argv, sent, said):
    """`kai certs` and `kai restore` start through cli_runs._start_and_follow: the spec checked,
    only the options given sent, the run named."""
    import yaml

    from deployments import control
    from deployments.cli import main
    from installers import settings
    from tests.spec_factory import ha

    started = {}

    def start(mode, spec, **kw):
        started.update(mode=mode, **{k: v for k, v in kw.items() if v is not None})
        return "r1"

    monkeypatch.setattr(settings, "resolve_settings", lambda **kw: None)  # a server "found"
    monkeypatch.setattr(control, "start", start)
    path = tmp_path / "ha.yaml"
    path.write_text(yaml.safe_dump(ha()))
    assert main([a.format(path=path) for a in argv]) == 0
    assert started == sent
    assert said in capsys.readouterr().out
