"""The stand-ins the add-on steps meet (issue 13 §3, §4): the API stand-in's CustomResourceDefinitions
(validated, Established a moment after creation, custom objects only of Established CRDs, API
discovery), kubectl's discovery-based mapping of custom kinds and `kubectl wait` for CRDs, and
the helm stand-in's strictness. Runs against the in-process API stand-in of test_standins.py."""

from __future__ import annotations

import subprocess
import tarfile
import time

import pytest
import yaml

from tests.hosts import addon_files
from tests.test_standins import _kubectl, _wait, day2  # noqa: F401 (the module's API stand-in)

import standin_crds  # noqa: E402 (the stand-ins' own import name: test_standins put them on sys.path)

NS = "apiVersion: v1\nkind: Namespace\nmetadata: {name: monitoring}\n"
CRD = yaml.safe_dump(addon_files._crd("prometheuses", "Prometheus"))
PROM = "apiVersion: monitoring.coreos.com/v1\nkind: Prometheus\nmetadata: {name: k8s, namespace: monitoring}\nspec: {replicas: 1}\n"
OPERATOR = """apiVersion: apps/v1
kind: Deployment
metadata: {name: prometheus-operator, namespace: monitoring}
spec:
  replicas: 1
  selector: {matchLabels: {app: prometheus-operator}}
  template:
    metadata: {labels: {app: prometheus-operator}}
    spec: {containers: [{name: o, image: quay.io/prometheus-operator/prometheus-operator:v0.85.0}]}
"""


def _apply(day2, capsys, tmp_path, text: str, name: str = "f.yaml"):  # noqa: F811
    path = tmp_path / name
    path.write_text(text)
    return _kubectl(day2, capsys, "apply", "--server-side", "--force-conflicts", "-f", str(path))


def test_custom_objects_need_an_established_crd(day2, capsys, tmp_path, monkeypatch):  # noqa: F811
    admin = day2["admin"]
    assert _apply(day2, capsys, tmp_path, NS)[0] == 0
    rc, _, err = _apply(day2, capsys, tmp_path, PROM)
    assert rc == 1 and 'no matches for kind "Prometheus" in version "monitoring.coreos.com/v1"' in err
    assert "ensure CRDs are installed first" in err
    assert admin.get("/apis/monitoring.coreos.com/v1").status_code == 404

    monkeypatch.setattr(standin_crds, "ESTABLISH_DELAY_S", 3600.0)  # created, not yet Established
    rc, out, err = _apply(day2, capsys, tmp_path, CRD)
    assert rc == 0 and "customresourcedefinition/prometheuses.monitoring.coreos.com serverside-applied" in out, err
    crd = admin.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/prometheuses.monitoring.coreos.com").json()
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]} == {"NamesAccepted": "True",
                                                                            "Established": "False"}
    rc, _, err = _apply(day2, capsys, tmp_path, PROM)
    assert rc == 1 and "no matches for kind" in err
    # the API itself refuses it too, whatever path a client computes
    r = admin.patch("/apis/monitoring.coreos.com/v1/namespaces/monitoring/prometheuses/k8s",
                    params={"fieldManager": "t"}, headers={"Content-Type": "application/apply-patch+yaml"},
                    content=PROM)
    assert r.status_code == 404 and "no Established CustomResourceDefinition serves kind Prometheus" in r.text
    rc, _, err = _kubectl(day2, capsys, "wait", "--for", "condition=Established", "--all",
                          "CustomResourceDefinition", "--timeout=1s")
    assert rc == 1 and "timed out waiting for the condition on customresourcedefinitions/prometheuses" in err

    monkeypatch.setattr(standin_crds, "ESTABLISH_DELAY_S", 0.0)
    rc, out, err = _kubectl(day2, capsys, "wait", "--for", "condition=Established", "--all",
                            "CustomResourceDefinition", "--timeout=10s")
    assert rc == 0 and "customresourcedefinition.apiextensions.k8s.io/prometheuses.monitoring.coreos.com condition met" in out, err
    discovery = admin.get("/apis/monitoring.coreos.com/v1").json()
    assert [(r["name"], r["kind"], r["namespaced"]) for r in discovery["resources"]] == [
        ("prometheuses", "Prometheus", True)]
    rc, out, err = _apply(day2, capsys, tmp_path, PROM)
    assert rc == 0 and "prometheus/k8s serverside-applied" in out, err
    r = admin.patch("/apis/monitoring.coreos.com/v1/prometheuses/k8s",  # cluster path of a namespaced kind
                    params={"fieldManager": "t"}, headers={"Content-Type": "application/apply-patch+yaml"},
                    content=PROM.replace("namespace: monitoring", "namespace: monitoring"))
    assert r.status_code in (400, 404)

    # prometheus-operator reports the object Available once it runs (verify checks that)
    path = "/apis/monitoring.coreos.com/v1/namespaces/monitoring/prometheuses/k8s"
    cond = admin.get(path).json()["status"]["conditions"][0]
    assert (cond["type"], cond["status"]) == ("Available", "False")
    assert _apply(day2, capsys, tmp_path, OPERATOR)[0] == 0
    _wait(lambda: admin.get(path).json()["status"]["conditions"][0]["status"] == "True", what="Available")


@pytest.mark.parametrize("change,message", [
    (lambda c: c["spec"].update(scope="Global"), 'spec.scope: Unsupported value: "Global"'),
    (lambda c: c["metadata"].update(name="proms.monitoring.coreos.com"), "metadata.name: Invalid value"),
    (lambda c: c["spec"]["versions"][0].update(storage=False), "exactly one version marked as storage"),
    (lambda c: c["spec"]["versions"][0].pop("schema"), "spec.versions[0].schema.openAPIV3Schema: Required"),
    (lambda c: c["spec"].update(group="monitoring"), "spec.group: Invalid value"),
])
def test_an_invalid_crd_is_refused_naming_the_field(day2, capsys, tmp_path, change, message):  # noqa: F811
    crd = addon_files._crd("widgets", "Widget", "kai.invalid.example")
    change(crd)
    rc, _, err = _apply(day2, capsys, tmp_path, yaml.safe_dump(crd))
    assert rc == 1 and message in err, err


def test_kubectl_wait_is_strict(day2, capsys):  # noqa: F811
    rc, _, err = _kubectl(day2, capsys, "wait", "--for", "condition=Established", "--all", "crd", "--forever")
    assert rc == 2 and "unrecognized arguments: --forever" in err
    rc, _, err = _kubectl(day2, capsys, "wait", "--for", "Established", "--all", "crd")
    assert rc == 2 and 'unrecognized condition: "Established"' in err
    rc, _, err = _kubectl(day2, capsys, "wait", "--for", "condition=Established", "--all", "pods")
    assert rc == 2


def _helm(tmp_path, *argv: str) -> subprocess.CompletedProcess:
    if not (tmp_path / "linux-amd64/helm").exists():
        (tmp_path / "h.tgz").write_bytes(addon_files.helm_archive())
        with tarfile.open(tmp_path / "h.tgz") as tar:
            tar.extractall(tmp_path, filter="data")
    return subprocess.run([str(tmp_path / "linux-amd64/helm"), *argv], capture_output=True, text=True,
                          timeout=60)


def test_helm_stand_in_renders_with_values_and_refuses_what_the_chart_does_not_know(tmp_path):
    (tmp_path / "cilium.tgz").write_bytes(addon_files.cilium_chart("1.18.4"))
    (tmp_path / "v.yaml").write_text("ipam: {mode: kubernetes}\noperator: {replicas: 1}\n")
    ok = _helm(tmp_path, "template", "cilium", str(tmp_path / "cilium.tgz"), "--namespace", "kube-system",
               "--values", str(tmp_path / "v.yaml"))
    assert ok.returncode == 0, ok.stderr
    docs = [d for d in yaml.safe_load_all(ok.stdout) if d]
    assert {d["kind"] for d in docs} >= {"DaemonSet", "Deployment", "ConfigMap"}
    assert next(d for d in docs if d["kind"] == "Deployment")["spec"]["replicas"] == 1
    assert next(d for d in docs if d["kind"] == "ConfigMap")["data"]["ipam"] == "kubernetes"
    for values, message in (("ipam: {mood: kubernetes}\n", "Additional property mood is not allowed"),
                            ("operator: {replicas: two}\n", "Expected: integer, given: str")):
        (tmp_path / "bad.yaml").write_text(values)
        bad = _helm(tmp_path, "template", "cilium", str(tmp_path / "cilium.tgz"), "--namespace", "kube-system",
                    "--values", str(tmp_path / "bad.yaml"))
        assert bad.returncode == 1 and message in bad.stderr, bad.stderr
    flag = _helm(tmp_path, "template", "cilium", str(tmp_path / "cilium.tgz"), "--namespace", "x", "--wait")
    assert flag.returncode == 2 and "unrecognized arguments: --wait" in flag.stderr
    assert _helm(tmp_path, "install", "cilium").returncode == 2
    no_ns = _helm(tmp_path, "template", "cilium", str(tmp_path / "cilium.tgz"))
    assert no_ns.returncode == 2 and "--namespace" in no_ns.stderr
