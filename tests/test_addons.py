"""Add-ons (issue 13 §3, §4): cilium without a mirror, every applied file verified and reported,
addons.monitoring. Unit tests of the spec, pins and plan; the node scripts against the test
mirror's files on loopback (cni.sh's chart path with the helm stand-in, monitoring.sh's order);
checksum mismatches refused naming the file, the expected and the actual digest."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml

from deployments import legacy
from installers import addons
from installers import versions as V
from installers.plan import build_plan
from installers.spec import load_spec
from tasks.addons import parse_applied_files
from tests.hosts import addon_files
from tests.scripts_harness import ScriptNode
from tests.spec_factory import aio
from tests.test_scripts import http_files, kubectl_fake, needs_sandbox, node  # noqa: F401 (fixtures)

CHART = V.CNI_CHARTS["cilium"]
HELM_TGZ = f"helm-v{V.HELM_VERSION}-linux-amd64.tar.gz"


# --- spec, pins, plan ----------------------------------------------------------------------------

def test_cilium_validates_without_a_mirror_and_installs_from_the_projects_chart():
    plan = build_plan(load_spec(aio(networking={"cni": "cilium"})), "all_in_one")
    job = plan.step("cni").jobs[0]
    assert job.env["KAI_CNI_SOURCE"] == "chart"
    assert job.env["KAI_CNI_CHART_URL"] == f"https://helm.cilium.io/cilium-{CHART.version}.tgz"
    assert job.env["KAI_CNI_CHART_INDEX_URL"] == "https://helm.cilium.io/index.yaml"
    assert job.env["KAI_HELM_URL"] == f"https://get.helm.sh/helm-v{V.HELM_VERSION}-linux-{{arch}}.tar.gz"
    assert job.env["KAI_HELM_SUMS_URL"] == job.env["KAI_HELM_URL"] + ".sha256sum"
    assert "KAI_CNI_MANIFEST_URL" not in job.env
    assert "mode: kubernetes" in job.files["values.yaml"] and "replicas: 1" in job.files["values.yaml"]


def test_a_spec_pin_wins_over_the_table_and_reaches_the_script():
    digest = "ab" * 32
    spec = load_spec(aio(networking={"cni": "cilium"}, addons={"checksums": {CHART.file: digest}}))
    assert build_plan(spec, "all_in_one").step("cni").jobs[0].env["KAI_CNI_CHART_SHA256"] == digest
    assert addons.pin(spec, "other.yaml", "cd" * 32) == "cd" * 32
    assert addons.pin(spec, "other.yaml", None) == ""


def test_mirror_serves_every_addon_file_with_its_sums():
    m = "http://127.0.0.1:9/kai"
    spec = load_spec(aio(mirror={"url": m}, addons={"monitoring": True}))
    plan = build_plan(spec, "all_in_one")
    cni = plan.step("cni").jobs[0].env  # calico: a manifest, with the mirror's .sha256 beside it
    assert cni["KAI_CNI_MANIFEST_SUMS_URL"] == cni["KAI_CNI_MANIFEST_URL"] + ".sha256"
    mon = plan.step("monitoring").jobs[0].env
    assert mon["KAI_METRICS_SERVER_URL"] == f"{m}/manifests/metrics-server/v{V.METRICS_SERVER_VERSION}/components.yaml"
    assert mon["KAI_KUBE_PROMETHEUS_SUMS_URL"] == mon["KAI_KUBE_PROMETHEUS_URL"] + ".sha256"
    assert mon["KAI_KUBE_PROMETHEUS_SKIP"] == "prometheusAdapter-"
    up = build_plan(load_spec(aio(addons={"monitoring": True})), "all_in_one").step("monitoring").jobs[0].env
    assert up["KAI_KUBE_PROMETHEUS_URL"] == V.KUBE_PROMETHEUS_UPSTREAM and up["KAI_KUBE_PROMETHEUS_SUMS_URL"] == ""


def test_monitoring_is_a_step_after_the_cni_only_when_asked():
    assert build_plan(load_spec(aio()), "all_in_one").get("monitoring") is None
    plan = build_plan(load_spec(aio(addons={"monitoring": True})), "all_in_one")
    names = [s.name for s in plan.steps()]
    assert names.index("cni") < names.index("monitoring") < names.index("verify")


def test_old_body_enable_monitoring_maps_to_addons_monitoring():
    assert legacy.monitoring_addons(True) == {"monitoring": True}
    assert legacy.monitoring_addons(False) == {"monitoring": False}
    req = legacy.parse("all_in_one", {"cluster_name": "old", "host": "10.1.2.3", "enable_monitoring": True,
                                      "cni_provider": "cilium"})
    mapped = legacy.to_spec("all_in_one", req)
    assert mapped.spec["addons"] == {"monitoring": True} and not mapped.warnings
    assert load_spec(mapped.spec).addons.monitoring  # cilium, no mirror: valid


def test_report_lines_are_parsed_and_a_malformed_one_is_an_error():
    rows = parse_applied_files("cni", "n1", f"{'a' * 64} cilium.tgz pin+index.yaml https://x/cilium.tgz\n")
    assert rows == [{"step": "cni", "node": "n1", "file": "cilium.tgz", "sha256": "a" * 64,
                     "verified_by": "pin+index.yaml", "source": "https://x/cilium.tgz"}]
    with pytest.raises(ValueError, match="malformed files.sha256"):
        parse_applied_files("cni", "n1", "garbage\n")


# --- the node scripts on the mirror's files --------------------------------------------------------

def _addon_mirror(root: Path) -> None:
    for name, (version, file) in {"flannel": (V.CNIS["flannel"].version, "kube-flannel.yml")}.items():
        d = root / "manifests" / name / f"v{version}"
        d.mkdir(parents=True)
        (d / file).write_text("kind: ConfigMap\n")
    addon_files.build_addon_files(root, {"flannel": (V.CNIS["flannel"].version, "kube-flannel.yml")})


def _cilium_env(base: str, **over: str) -> dict[str, str]:
    repo = f"{base}/charts/cilium"
    helm = f"{base}/helm/v{V.HELM_VERSION}/helm-v{V.HELM_VERSION}-linux-{{arch}}.tar.gz"
    env = {"KAI_CNI": "cilium", "KAI_CNI_VERSION": CHART.version, "KAI_CNI_SOURCE": "chart",
           "KAI_CNI_CHART": "cilium", "KAI_CNI_CHART_URL": f"{repo}/{CHART.file}",
           "KAI_CNI_CHART_SHA256": "", "KAI_CNI_CHART_INDEX_URL": f"{repo}/index.yaml",
           "KAI_HELM_URL": helm, "KAI_HELM_SUMS_URL": helm + ".sha256sum",
           "KAI_HELM_SHA256_amd64": "", "KAI_HELM_SHA256_arm64": "", "KAI_POD_CIDR": "10.244.0.0/16"}
    return env | over


def _report(node: ScriptNode) -> list[list[str]]:
    return [line.split(" ", 3) for line in (node.out / "files.sha256").read_text().splitlines()]


@needs_sandbox
def test_cni_renders_the_verified_chart_with_the_verified_helm(node, http_files):  # noqa: F811
    root, base = http_files
    _addon_mirror(root)
    node.etc("kubernetes/admin.conf", "admin\n")
    node.file("values.yaml", "ipam:\n  mode: kubernetes\nkubeProxyReplacement: false\noperator:\n  replicas: 1\n")
    kubectl_fake(node)
    res = node.run("cni.sh", _cilium_env(base), sandbox=True)
    assert res.returncode == 0, res.stdout + res.stderr
    applied = (node.root / "applied" / "0-cni-cilium.yaml").read_text()
    assert "ipam: kubernetes" in applied and "replicas: 1" in applied and "{{" not in applied
    chart_sha = hashlib.sha256((root / "charts/cilium" / CHART.file).read_bytes()).hexdigest()
    helm_sha = hashlib.sha256((root / f"helm/v{V.HELM_VERSION}" / HELM_TGZ).read_bytes()).hexdigest()
    report = {r[1]: r for r in _report(node)}
    assert report[HELM_TGZ][:3] == [helm_sha, HELM_TGZ, f"{HELM_TGZ}.sha256sum"]
    assert report[CHART.file][:3] == [chart_sha, CHART.file, "index.yaml"]
    rendered = f"cilium-{CHART.version}-rendered.yaml"
    assert report[rendered][0] == hashlib.sha256(applied.encode()).hexdigest()


@needs_sandbox
@pytest.mark.parametrize("tamper", ["chart", "pin", "helm"])
def test_cni_refuses_a_file_whose_sha256_does_not_match(node, http_files, tamper):  # noqa: F811
    root, base = http_files
    _addon_mirror(root)
    node.etc("kubernetes/admin.conf", "admin\n")
    node.file("values.yaml", "ipam:\n  mode: kubernetes\n")
    kubectl_fake(node)
    env = _cilium_env(base)
    chart = root / "charts/cilium" / CHART.file
    if tamper == "chart":  # the archive changed after the index published its digest
        published = hashlib.sha256(chart.read_bytes()).hexdigest()
        chart.write_bytes(chart.read_bytes() + b"\0")
        file, expected, actual = CHART.file, published, hashlib.sha256(chart.read_bytes()).hexdigest()
    elif tamper == "pin":  # the repository agrees with itself, the reviewed pin does not
        env["KAI_CNI_CHART_SHA256"] = expected = "0" * 64
        file, actual = CHART.file, hashlib.sha256(chart.read_bytes()).hexdigest()
    else:
        helm = root / f"helm/v{V.HELM_VERSION}" / HELM_TGZ
        published = hashlib.sha256(helm.read_bytes()).hexdigest()
        helm.write_bytes(helm.read_bytes()[:-1] + b"x")
        file, expected, actual = HELM_TGZ, published, hashlib.sha256(helm.read_bytes()).hexdigest()
    res = node.run("cni.sh", env, sandbox=True)
    assert res.returncode != 0
    assert f"sha256 mismatch for {file}" in res.stderr and f"expected {expected}, got {actual}" in res.stderr, res.stderr
    assert not (node.root / "applied").exists()  # nothing was applied


def _kubectl_with_wait(node: ScriptNode) -> None:
    """kubectl_fake's apply, plus `wait --for condition=Established --all CustomResourceDefinition`
    recorded as a step of its own (the order is what the test checks)."""
    kubectl_fake(node)
    fake = node.fakes / "kubectl"
    body = fake.read_text().replace('echo "fake kubectl: unsupported', f'''if [[ "$*" == "--kubeconfig /etc/kubernetes/admin.conf wait --for condition=Established --all CustomResourceDefinition --timeout=180s" ]]; then
  mkdir -p {node.root}/applied
  n=$(ls {node.root}/applied | wc -l)
  touch "{node.root}/applied/$n-WAIT"; exit 0
fi
echo "fake kubectl: unsupported''')
    fake.write_text(body)


@needs_sandbox
def test_monitoring_applies_crds_waits_then_the_stack_without_the_adapter(node, http_files):  # noqa: F811
    root, base = http_files
    _addon_mirror(root)
    node.etc("kubernetes/admin.conf", "admin\n")
    _kubectl_with_wait(node)
    ms = f"{base}/manifests/metrics-server/v{V.METRICS_SERVER_VERSION}/components.yaml"
    kp = f"{base}/manifests/kube-prometheus/v{V.KUBE_PROMETHEUS_VERSION}/{V.KUBE_PROMETHEUS_FILE}"
    env = {"KAI_METRICS_SERVER_URL": ms, "KAI_METRICS_SERVER_SHA256": "",
           "KAI_METRICS_SERVER_SUMS_URL": ms + ".sha256", "KAI_KUBE_PROMETHEUS_URL": kp,
           "KAI_KUBE_PROMETHEUS_SHA256": "", "KAI_KUBE_PROMETHEUS_SUMS_URL": kp + ".sha256",
           "KAI_KUBE_PROMETHEUS_SKIP": "prometheusAdapter-", "KAI_METRICS_SERVER_INSECURE_TLS": "1"}
    res = node.run("monitoring.sh", env, sandbox=True)
    assert res.returncode == 0, res.stdout + res.stderr
    steps = sorted((node.root / "applied").iterdir(), key=lambda p: int(p.name.split("-", 1)[0]))
    # the flag joins the container's args, at their indentation, and the YAML still parses
    deployment = next(d for d in yaml.safe_load_all(steps[0].read_text()) if d and d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["--cert-dir=/tmp", "--kubelet-insecure-tls"] and len(args) == 6, args
    assert [p.name.split("-", 1)[1] for p in steps] == [
        "metrics-server.yaml", "kube-prometheus-setup.yaml", "WAIT", "kube-prometheus-stack.yaml"]
    setup, stack = steps[1].read_text(), steps[3].read_text()
    assert "kind: CustomResourceDefinition" in setup and "\nkind: Prometheus\n" not in setup
    assert "\nkind: Prometheus\n" in stack and "kind: CustomResourceDefinition" not in stack
    assert "prometheus-adapter" not in stack and "grafana" in stack
    report = {r[1]: r for r in _report(node)}
    assert report["components.yaml"][2] == "components.yaml.sha256"
    assert report[V.KUBE_PROMETHEUS_FILE][2] == f"{V.KUBE_PROMETHEUS_FILE}.sha256"

    # 0: the manifest is applied as released
    node.state.joinpath("done").exists() and shutil.rmtree(node.state / "done")
    shutil.rmtree(node.root / "applied")
    assert node.run("monitoring.sh", {**env, "KAI_METRICS_SERVER_INSECURE_TLS": "0"}, sandbox=True).returncode == 0
    first = sorted((node.root / "applied").iterdir(), key=lambda p: int(p.name.split("-", 1)[0]))[0]
    assert "--kubelet-insecure-tls" not in first.read_text() and "--cert-dir=/tmp" in first.read_text()

    (root / "manifests/metrics-server" / f"v{V.METRICS_SERVER_VERSION}" / "components.yaml").write_text("tampered\n")
    node.state.joinpath("done").exists() and shutil.rmtree(node.state / "done")
    bad = node.run("monitoring.sh", env, sandbox=True)
    assert bad.returncode != 0 and "sha256 mismatch for components.yaml (published in components.yaml.sha256)" in bad.stderr


def test_helm_index_digest_ignores_nested_list_items(tmp_path):
    from tests.scripts_harness import lib_call
    releases = {"1.2.3": b"one", "1.2.2": b"two"}
    (tmp_path / "index.yaml").write_text(addon_files.chart_index("cilium", releases))
    for version, data in releases.items():
        res = lib_call(tmp_path, f'kai_helm_index_digest "{tmp_path}/index.yaml" cilium-{version}.tgz')
        assert res.stdout.strip() == hashlib.sha256(data).hexdigest(), res.stderr
    res = lib_call(tmp_path, f'kai_helm_index_digest "{tmp_path}/index.yaml" cilium-9.9.9.tgz')
    assert res.returncode != 0 and "index.yaml lists no chart archive cilium-9.9.9.tgz" in res.stderr


def test_the_helm_archive_holds_a_strict_stand_in(tmp_path):
    (tmp_path / "h.tgz").write_bytes(addon_files.helm_archive())
    with tarfile.open(tmp_path / "h.tgz") as tar:
        assert tar.getnames() == ["linux-amd64/helm", "linux-amd64/LICENSE"]


def test_workload_readiness_per_kind():
    from installers.cluster_check import workload_problem
    assert workload_problem("Deployment", {"spec": {"replicas": 2}, "status": {"availableReplicas": 2}}) is None
    assert workload_problem("Deployment", {"spec": {"replicas": 2}, "status": {"availableReplicas": 1}}) == \
        "1 of 2 replica(s) available"
    assert workload_problem("DaemonSet", {"status": {"desiredNumberScheduled": 0}}) == "scheduled on no node"
    assert workload_problem("DaemonSet", {"status": {"desiredNumberScheduled": 3, "numberReady": 3}}) is None
    assert workload_problem("Prometheus", {"status": {}}) == "not Available (no Available condition yet)"
    assert workload_problem("Alertmanager", {"status": {"conditions": [
        {"type": "Available", "status": "False", "message": "0 of 3 replicas"}]}}) == "not Available (0 of 3 replicas)"


def test_the_cluster_report_lists_every_applied_file():
    from pathlib import Path as P

    from installers.cluster_check import ClusterReport
    from tasks.verify import render_report
    rows = parse_applied_files("cni", "n1", f"{'b' * 64} {CHART.file} index.yaml https://helm.cilium.io/x\n")
    text = render_report("c", ClusterReport(server="https://x", workloads={"Deployment kube-system/metrics-server": "ready"}),
                         P("/k"), rows)
    assert f"| {CHART.file} | `{'b' * 64}` | index.yaml | cni |" in text
    assert "| Deployment kube-system/metrics-server | ready |" in text
