"""The operator's defaults for old-style bodies (deployments/old_body_defaults.py): what the file may
hold, every problem at once naming the file, and the body winning over the file. The end-to-end
use (an old body installing with the site's mirror) is in tests/test_local_e2e.py."""

from __future__ import annotations

import pytest

from deployments import legacy, old_body_defaults as D
from installers.spec import SpecError, load_spec


def test_no_file_means_no_defaults(tmp_path):
    assert D.load(tmp_path) == {}
    D.path(tmp_path).write_text("")
    assert D.load(tmp_path) == {}


def test_every_refused_part_is_named_with_the_file(tmp_path):
    D.path(tmp_path).write_text("name: everyone\nnodes: []\nmirror: http://x\nkubelet:\n  fail_cgroup_v1: false\n")
    with pytest.raises(SpecError) as exc:
        D.load(tmp_path)
    problems = exc.value.problems
    assert len(problems) == 3, problems
    assert all(p.startswith(f"{D.path(tmp_path)}: ") for p in problems), problems
    assert any("name: not a default" in p for p in problems) and any("nodes: not a default" in p for p in problems)
    assert any("mirror: must be a mapping, not str" in p for p in problems), problems


@pytest.mark.parametrize("text,problem", [
    ("mirror: {url: a}\nmirror: {url: b}\n", "duplicate key"),
    ("- mirror\n", "must be a mapping of spec sections"),
])
def test_a_broken_file_is_refused_not_half_read(tmp_path, text, problem):
    D.path(tmp_path).write_text(text)
    with pytest.raises(SpecError) as exc:
        D.load(tmp_path)
    assert any(problem in p and str(D.path(tmp_path)) in p for p in exc.value.problems), exc.value.problems


def test_the_body_wins_and_the_file_fills_the_rest():
    body = {"cluster_name": "old", "k8s_version": "1.36", "host": "192.0.2.10", "cni_provider": "cilium"}
    mapped = legacy.to_spec("all_in_one", legacy.parse("all_in_one", body))
    site = {"mirror": {"url": "http://mirror.example:8080"},
            "kubelet": {"fail_cgroup_v1": False},
            "runtime": {"containerd": {"source": "mirror"}}}
    spec = D.fill(mapped.spec, site)
    assert spec["mirror"] == site["mirror"] and spec["kubelet"] == site["kubelet"]
    assert spec["networking"]["cni"] == "cilium" and spec["nodes"][0]["address"] == "192.0.2.10"
    loaded = load_spec(spec)           # the merged spec is a valid spec
    assert loaded.kubelet.fail_cgroup_v1 is False and str(loaded.mirror.url).startswith("http://mirror.example")
    # nested: a key the spec has wins inside a section the file also sets
    assert D.fill({"kubelet": {"a": 1}}, {"kubelet": {"a": 2, "b": 3}}) == {"kubelet": {"a": 1, "b": 3}}
