import dataclasses

import pytest

from installers import step_kinds
from installers import versions as V
from installers.plan import (DEFAULT_POLICIES, HostJob, Plan, Step, StepPolicy, build_plan, job_hash)
from installers.spec import SpecError, load_spec
from tests.spec_factory import aio, ha

# docs/architecture.md §3: the env each node script reads.
CONTRACT_ENV = {
    "facts.sh": {"KAI_MODULES", "KAI_BINARIES", "KAI_PORTS"},
    "os-prep.sh": {"KAI_NODE_NAME", "KAI_MODULES"},
    "containerd.sh": {"KAI_CONTAINERD_SOURCE", "KAI_CONTAINERD_VERSION", "KAI_CONTAINERD_URL",
                      "KAI_RUNC_VERSION", "KAI_RUNC_URL", "KAI_CNI_PLUGINS_VERSION",
                      "KAI_CNI_PLUGINS_URL", "KAI_DOWNLOAD_PROXY"},
    "kube-packages.sh": {"KAI_K8S_MINOR", "KAI_K8S_VERSION", "KAI_K8S_REPO", "KAI_DOWNLOAD_PROXY"},
    "kube-vip.sh": {"KAI_KUBE_VIP_PHASE"},
    "kubeadm-init.sh": {"KAI_NODE_NAME", "KAI_UPLOAD_CERTS"},
    "join-credentials.sh": {"KAI_TOKEN_TTL", "KAI_NEED_CERT_KEY"},
    "kubeadm-join.sh": {"KAI_NODE_NAME", "KAI_CONTROL_PLANE"},
    "kubeconfig.sh": set(),
    # a manifest CNI (the default); a chart CNI's env: tests/test_addons.py
    "cni.sh": {"KAI_CNI", "KAI_CNI_VERSION", "KAI_CNI_SOURCE", "KAI_CNI_MANIFEST_URL",
               "KAI_CNI_MANIFEST_SHA256", "KAI_CNI_MANIFEST_SUMS_URL", "KAI_POD_CIDR",
               "KAI_DOWNLOAD_PROXY"},
    "monitoring.sh": {"KAI_METRICS_SERVER_URL", "KAI_METRICS_SERVER_SHA256",
                      "KAI_METRICS_SERVER_SUMS_URL", "KAI_METRICS_SERVER_INSECURE_TLS", "KAI_KUBE_PROMETHEUS_URL",
                      "KAI_KUBE_PROMETHEUS_SHA256", "KAI_KUBE_PROMETHEUS_SUMS_URL",
                      "KAI_KUBE_PROMETHEUS_SKIP", "KAI_DOWNLOAD_PROXY"},
    "storage.sh": {"KAI_LOCAL_PATH_URL", "KAI_LOCAL_PATH_SHA256"},
    "reset.sh": {"KAI_RESET_PACKAGES", "KAI_RESET_ETCD_MEMBER"},
}


def shape(plan: Plan):
    return [(ph.name, [(s.name, [j.node for j in s.jobs]) for s in ph.steps]) for ph in plan.phases]


def all_modes():
    yield build_plan(load_spec(aio()), "all_in_one")
    yield build_plan(load_spec(ha()), "ha")
    yield build_plan(load_spec(ha()), "add_nodes", nodes=["cp-3", "worker-2"])
    yield build_plan(load_spec(ha()), "reset")
    yield build_plan(load_spec(ha()), "preflight")


def test_all_in_one_shape():
    plan = build_plan(load_spec(aio()), "all_in_one")
    n = ["node-1"]
    assert shape(plan) == [
        ("preflight", [("facts", n)]),
        ("prepare", [("os-prep", n), ("runtime", n), ("kube-packages", n)]),
        ("control-plane", [("kubeadm-init", n)]),
        ("kubeconfig", [("kubeconfig", n)]),
        ("addons", [("cni", n), ("storage", n)]),
        ("verify", [("verify", [])]),
    ]
    assert plan.step("kubeadm-init").jobs[0].env["KAI_UPLOAD_CERTS"] == "0"


def test_all_in_one_without_storage():
    plan = build_plan(load_spec(aio(storage={"local_path": False})), "all_in_one")
    assert [s.name for s in plan.phases[4].steps] == ["cni"]


def test_ha_shape_with_kube_vip():
    plan = build_plan(load_spec(ha()), "ha")
    every = ["cp-1", "cp-2", "cp-3", "worker-1", "worker-2"]
    assert shape(plan) == [
        ("preflight", [("facts", every)]),
        ("prepare", [("os-prep", every), ("runtime", every), ("kube-packages", every)]),
        ("control-plane", [("kube-vip-pre-init", ["cp-1"]), ("kubeadm-init", ["cp-1"]),
                           ("kube-vip-post-init", ["cp-1"])]),
        ("join", [("join-credentials", ["cp-1"]), ("join-control-planes", ["cp-2", "cp-3"]),
                  ("kube-vip-join", ["cp-2", "cp-3"]), ("join-workers", ["worker-1", "worker-2"])]),
        ("kubeconfig", [("kubeconfig", ["cp-1"])]),
        ("addons", [("cni", ["cp-1"]), ("storage", ["cp-1"])]),
        ("verify", [("verify", [])]),
    ]
    assert plan.step("join-control-planes").parallel is False
    assert plan.step("join-workers").parallel is True
    assert plan.step("kubeadm-init").jobs[0].env["KAI_UPLOAD_CERTS"] == "1"
    assert plan.step("join-credentials").jobs[0].env["KAI_NEED_CERT_KEY"] == "1"
    phases = [j.env["KAI_KUBE_VIP_PHASE"] for s in plan.steps() if s.kind == "kube_vip" for j in s.jobs]
    assert phases == ["pre-init", "post-init", "join", "join"]


def test_ha_with_load_balancer_has_no_kube_vip():
    plan = build_plan(load_spec(ha(endpoint={"type": "load_balancer", "address": "192.168.10.5"})), "ha")
    assert not [s for s in plan.steps() if s.kind == "kube_vip"]


def test_add_nodes_touches_only_new_nodes_and_the_first_control_plane():
    spec = load_spec(ha())
    plan = build_plan(spec, "add_nodes", nodes=["worker-2"])
    assert plan.nodes_touched() == {"worker-2", "cp-1"}
    cp1_steps = [s.name for s in plan.steps() for j in s.jobs if j.node == "cp-1"]
    # on the first control plane only read-only work: fresh join credentials, the kubeconfig
    assert cp1_steps == ["join-credentials", "kubeconfig"]
    assert [ph.name for ph in plan.phases] == ["preflight", "prepare", "join", "kubeconfig", "verify"]
    assert plan.step("join-credentials").jobs[0].env["KAI_NEED_CERT_KEY"] == "0"
    kinds = {s.kind for s in plan.steps()}
    assert not kinds & {"kubeadm_init", "cni", "storage", "reset"}
    for untouched in ("cp-2", "cp-3", "worker-1"):
        assert untouched not in plan.nodes_touched()


def test_add_nodes_with_a_control_plane_needs_the_certificate_key():
    plan = build_plan(load_spec(ha()), "add_nodes", nodes=["worker-1", "cp-3"])
    assert plan.nodes_touched() == {"cp-1", "cp-3", "worker-1"}
    assert plan.step("join-credentials").jobs[0].env["KAI_NEED_CERT_KEY"] == "1"
    assert [j.node for j in plan.step("join-control-planes").jobs] == ["cp-3"]
    assert [j.node for j in plan.step("kube-vip-join").jobs] == ["cp-3"]
    assert [j.node for j in plan.step("join-workers").jobs] == ["worker-1"]


def test_reset_workers_first():
    plan = build_plan(load_spec(ha()), "reset")
    assert shape(plan) == [("reset", [("reset-workers", ["worker-1", "worker-2"]),
                                      ("reset-control-planes", ["cp-1", "cp-2", "cp-3"])])]
    # the whole cluster goes: no control plane removes its etcd member while its peers stop
    assert {j.env["KAI_RESET_ETCD_MEMBER"] for s in plan.phases[0].steps for j in s.jobs} == {"0"}


def test_preflight_is_facts_only():
    plan = build_plan(load_spec(ha()), "preflight")
    assert [s.kind for s in plan.steps()] == ["facts"]
    assert len(plan.step("facts").jobs) == 5


def test_bad_mode_or_spec_for_mode_raises():
    with pytest.raises(SpecError) as exc:
        build_plan(load_spec(ha(cps=2)), "ha")
    assert any("ha needs at least 3 control-plane nodes" in p for p in exc.value.problems)
    with pytest.raises(SpecError):
        build_plan(load_spec(aio()), "upgrade")


@pytest.mark.parametrize("plan", list(all_modes()), ids=lambda p: p.mode)
def test_env_names_follow_the_script_contract(plan):
    for step in plan.steps():
        for job in step.jobs:
            assert job.script == step_kinds.get(step.kind).script
            assert set(job.env) == CONTRACT_ENV[job.script], (step.name, set(job.env))
            assert all(isinstance(v, str) for v in job.env.values())
            assert all(k.startswith("KAI_") for k in job.env)


def test_no_command_line_anywhere_in_a_plan():
    for cls in (HostJob, Step, Plan):
        names = {f.name for f in dataclasses.fields(cls)}
        assert not {n for n in names if "command" in n or n in ("cmd", "argv", "args")}, names
    assert {f.name for f in dataclasses.fields(HostJob)} == {"node", "address", "script", "env", "files",
                                                             "secret_env"}


def test_default_and_overridden_policies():
    plan = build_plan(load_spec(aio()), "all_in_one")
    assert plan.step("facts").policy == StepPolicy(1, 5, 30)
    assert plan.step("runtime").policy == DEFAULT_POLICIES["runtime"]
    assert plan.step("runtime").policy.retries == 3 and plan.step("runtime").policy.timeout_s == 600
    assert plan.step("kubeadm-init").policy.timeout_s == 900
    assert plan.step("verify").policy.retries == 0 and plan.step("verify").policy.deadline_s == 600
    plan = build_plan(load_spec(aio(steps={"runtime": {"retries": 7}, "verify": {"timeout_s": 5}})), "all_in_one")
    assert plan.step("runtime").policy == StepPolicy(7, 10, 600)
    assert plan.step("verify").policy.timeout_s == 5


def test_join_jobs_carry_secret_names_not_secrets():
    plan = build_plan(load_spec(ha()), "ha")
    cp = plan.step("join-control-planes").jobs[0]
    w = plan.step("join-workers").jobs[0]
    assert cp.secret_env == ("KAI_JOIN_TOKEN", "KAI_CA_CERT_HASH", "KAI_CERTIFICATE_KEY")
    assert w.secret_env == ("KAI_JOIN_TOKEN", "KAI_CA_CERT_HASH")
    assert "__KAI_CERTIFICATE_KEY__" in cp.files["kubeadm-join.yaml"]
    assert "__KAI_CERTIFICATE_KEY__" not in w.files["kubeadm-join.yaml"]
    for job in (cp, w):
        assert not set(job.secret_env) & set(job.env)


def test_ports_per_role_and_cni():
    plan = build_plan(load_spec(ha(networking={"cni": "flannel"})), "ha")
    facts = {j.node: set(j.env["KAI_PORTS"].split()) for j in plan.step("facts").jobs}
    assert {"6443", "2379", "2380", "10257", "10259", "8472"} <= facts["cp-1"]
    assert "6443" not in facts["worker-1"] and {"10250", "10256", "8472"} <= facts["worker-1"]
    assert "179" not in facts["worker-1"]


def test_upstream_and_mirror_urls():
    up = build_plan(load_spec(aio()), "all_in_one")
    env = up.step("runtime").jobs[0].env
    assert env["KAI_CONTAINERD_URL"] == (f"{V.CONTAINERD_UPSTREAM}/v2.3.4/containerd-2.3.4-linux-{{arch}}.tar.gz")
    assert up.step("kube-packages").jobs[0].env["KAI_K8S_REPO"] == "https://pkgs.k8s.io"
    m = "http://127.0.0.1:8000/kai"
    spec = load_spec(aio(mirror={"url": m + "/"}, networking={"cni": "cilium"},
                         runtime={"containerd": {"source": "mirror", "version": "1.6.20",
                                                 "runc_version": "1.1.5", "cni_plugins_version": "1.1.1"}}))
    plan = build_plan(spec, "all_in_one")
    env = plan.step("runtime").jobs[0].env
    assert env["KAI_CONTAINERD_SOURCE"] == "release"
    assert env["KAI_CONTAINERD_URL"] == f"{m}/containerd/v1.6.20/containerd-1.6.20-linux-{{arch}}.tar.gz"
    assert env["KAI_RUNC_URL"] == f"{m}/runc/v1.1.5/runc.{{arch}}"
    assert env["KAI_CNI_PLUGINS_URL"] == f"{m}/cni-plugins/v1.1.1/cni-plugins-linux-{{arch}}-v1.1.1.tgz"
    assert plan.step("kube-packages").jobs[0].env["KAI_K8S_REPO"] == f"{m}/pkgs.k8s.io"
    chart = V.CNI_CHARTS["cilium"]
    cni_env = plan.step("cni").jobs[0].env
    assert cni_env["KAI_CNI_CHART_URL"] == f"{m}/charts/cilium/cilium-{chart.version}.tgz"
    assert cni_env["KAI_CNI_CHART_INDEX_URL"] == f"{m}/charts/cilium/index.yaml"
    assert cni_env["KAI_HELM_URL"] == (
        f"{m}/helm/v{V.HELM_VERSION}/helm-v{V.HELM_VERSION}-linux-{{arch}}.tar.gz")
    assert plan.step("storage").jobs[0].env["KAI_LOCAL_PATH_URL"] == (
        f"{m}/manifests/local-path-provisioner/v{V.LOCAL_PATH_VERSION}/local-path-storage.yaml")
    assert any("1.6.20 is end of life" in w for w in plan.warnings)


def test_job_hash_covers_inputs_but_not_secrets():
    job = build_plan(load_spec(ha()), "ha").step("join-workers").jobs[0]
    h = job_hash(job, "script", "lib")
    assert h == job_hash(job, "script", "lib") and len(h) == 64
    assert h != job_hash(job, "script2", "lib")
    assert h != job_hash(job, "script", "lib2")
    assert h != job_hash(dataclasses.replace(job, env={**job.env, "KAI_NODE_NAME": "x"}), "script", "lib")
    assert h != job_hash(dataclasses.replace(job, files={"kubeadm-join.yaml": "x"}), "script", "lib")
    assert h == job_hash(dataclasses.replace(job, secret_env=()), "script", "lib")
    # ambiguity: moving bytes between script and lib must change the hash
    assert job_hash(job, "ab", "c") != job_hash(job, "a", "bc")


def test_build_plan_is_pure_and_repeatable():
    spec = load_spec(ha())
    assert build_plan(spec, "ha") == build_plan(spec, "ha")


def test_health_is_read_only_kubeconfig_then_versions_then_verify():
    spec = load_spec(ha())
    plan = build_plan(spec, "health")
    # health: verify's task, its own deadline
    assert [s.kind for s in plan.steps()] == ["kubeconfig", "node_versions", "health"]
    assert [s.name for s in plan.steps()] == ["kubeconfig", "node-versions", "verify"]
    assert [j.node for j in plan.step("kubeconfig").jobs] == ["cp-1"]
    versions = plan.step("node-versions")
    assert [j.node for j in versions.jobs] == [n.name for n in spec.nodes] and versions.parallel
    assert {j.script for j in versions.jobs} == {"node-versions.sh"} and versions.policy.retries == 0
