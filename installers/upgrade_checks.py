"""The upgrade's look at the running cluster: what the API says (nodes, each API server's version),
judged with the nodes' facts (upgrade-facts.sh) before anything changes; and the report of each
node's version before/after.

`observe` talks to the API over httpx with the admin kubeconfig's client certificate (the CA
pinned: installers/kube_api.py), like installers/cluster_check.py: through the endpoint for the
nodes, and to each control plane's own API server for its version (behind a VIP one answer would
hide the others).
`judge` and `report_rows` are pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from installers.kube_api import KubeconfigCredentials, describe_error, is_ready
from installers.kubeadm import API_PORT
from installers.preflight import Finding
from installers.upgrade_rules import Target, step_problems, version_tuple

if TYPE_CHECKING:
    from installers.spec import ClusterSpec

# kubelet, kubeadm and kubectl packages plus apt's lists and the old packages' cache (the real
# debs are ~20-50 MB each): refuse well before apt would run out of space halfway
MIN_UPGRADE_DISK_MB = 500
MAX_APISERVER_MINOR_SKEW = 1


@dataclass
class NodeState:
    ready: bool
    unschedulable: bool
    kubelet_version: str     # "1.36.4" (the running kubelet's, from its Node status)


@dataclass
class ClusterView:
    endpoint_problem: str = ""                  # /readyz through the endpoint, when it failed
    nodes: dict[str, NodeState] = field(default_factory=dict)
    apiservers: dict[str, str] = field(default_factory=dict)        # control plane -> version
    apiserver_problems: dict[str, str] = field(default_factory=dict)  # control plane -> why unknown


def observe(kubeconfig: Path, spec: ClusterSpec, timeout: float = 10) -> ClusterView:
    creds = KubeconfigCredentials(kubeconfig)
    view = ClusterView()
    with creds.client(timeout) as api:
        try:
            ready = api.get("/readyz")
            if ready.status_code != 200:
                view.endpoint_problem = f"/readyz answered {ready.status_code}: {ready.text[:200]}"
            items = api.get("/api/v1/nodes").raise_for_status().json().get("items", [])
        except httpx.HTTPError as exc:
            view.endpoint_problem = f"API {creds.server} unreachable: {describe_error(exc)}"
            items = []
    for item in items:
        status = item.get("status") or {}
        view.nodes[item["metadata"]["name"]] = NodeState(
            ready=is_ready(status.get("conditions", [])),
            unschedulable=bool((item.get("spec") or {}).get("unschedulable")),
            kubelet_version=(status.get("nodeInfo") or {}).get("kubeletVersion", "").removeprefix("v"))
    for cp in spec.control_planes():
        host = f"[{cp.address}]" if ":" in cp.address else cp.address
        try:
            with httpx.Client(base_url=f"https://{host}:{API_PORT}", verify=creds.context,
                              timeout=timeout) as own:
                if (r := own.get("/readyz")).status_code != 200:
                    view.apiserver_problems[cp.name] = f"/readyz answered {r.status_code}: {r.text[:200]}"
                    continue
                view.apiservers[cp.name] = own.get("/version").json()["gitVersion"].removeprefix("v")
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            view.apiserver_problems[cp.name] = describe_error(exc)
    return view


def cluster_version(view: ClusterView) -> str | None:
    """The oldest API server's version: what the cluster runs until every one is upgraded."""
    return min(view.apiservers.values(), key=version_tuple) if view.apiservers else None


def judge(spec: ClusterSpec, target: Target, facts: Mapping[str, Mapping[str, str]],
          view: ClusterView) -> list[Finding]:
    """Every finding before the upgrade: errors stop it before any node changes."""
    out: list[Finding] = []
    kai_cordoned = {n for f in facts.values() for n in (f.get("kai_cordoned") or "").split(",") if n}

    def add(node: str, check: str, severity: str, message: str) -> None:
        out.append(Finding(node, check, severity, message))  # type: ignore[arg-type]

    if view.endpoint_problem:
        add("cluster", "api", "error", f"the API through {spec.endpoint()} is not healthy: "
                                       f"{view.endpoint_problem}")
    for cp, problem in sorted(view.apiserver_problems.items()):
        add(cp, "apiserver", "error", f"the API server on {cp} is not healthy: {problem}")
    for node in spec.nodes:
        state = view.nodes.get(node.name)
        if state is None:
            if not view.endpoint_problem:
                add(node.name, "node", "error", f"node {node.name} is not registered in the cluster")
            continue
        if not state.ready:
            add(node.name, "node", "error", f"node {node.name} is not Ready: the upgrade drains "
                                            f"nodes one batch at a time and needs every other one serving")
        if state.unschedulable and node.name not in kai_cordoned:
            add(node.name, "cordoned", "warning",
                f"node {node.name} is cordoned: unless an earlier upgrade run of kai cordoned it, it "
                f"stays cordoned after its upgrade")
    current = cluster_version(view)
    if view.apiservers:
        versions = sorted(view.apiservers.values(), key=version_tuple)
        lo, hi = versions[0], versions[-1]
        if version_tuple(hi)[1] - version_tuple(lo)[1] > MAX_APISERVER_MINOR_SKEW:
            add("cluster", "skew", "error", f"API servers run {lo} and {hi}: more than one minor apart")
        for name, state in sorted(view.nodes.items()):
            if state.kubelet_version and version_tuple(state.kubelet_version)[:2] > version_tuple(lo)[:2]:
                add(name, "skew", "error", f"kubelet v{state.kubelet_version} on {name} is newer than "
                                           f"the API server v{lo}: the version-skew policy is broken now")
    if current is not None:
        # a rerun of an interrupted upgrade: some API servers are at the target already
        newest = max([current, *view.apiservers.values(),
                      *(s.kubelet_version for s in view.nodes.values() if s.kubelet_version)],
                     key=version_tuple)
        if version_tuple(newest) > version_tuple(target.version):
            add("cluster", "to", "error", f"to: {target.version} is older than v{newest}, which "
                                          f"runs in the cluster: kai never goes down")
        elif version_tuple(current) != version_tuple(target.version):
            for problem in step_problems(current, target, "the oldest API server"):
                add("cluster", "to", "error", problem)
        elif newest == target.version and not kai_cordoned and all(
                s.kubelet_version == target.version for s in view.nodes.values()):
            add("cluster", "to", "error", f"to: every API server and kubelet already runs "
                                          f"v{target.version}: nothing to upgrade")
    for name, f in sorted(facts.items()):
        if f.get("pkg_family") != "apt":
            add(name, "packages", "error", f"kai upgrade supports apt-based nodes only so far "
                                           f"({name} has {f.get('pkg_family') or 'unknown'})")
        free = f.get("disk_free_mb", "")
        if free.isdigit() and int(free) < MIN_UPGRADE_DISK_MB:
            add(name, "disk", "error", f"{free} MB free for packages under /var/cache/apt, "
                                       f"the upgrade needs {MIN_UPGRADE_DISK_MB} MB")
    return out


def before_versions(view: ClusterView) -> dict[str, str]:
    return {name: s.kubelet_version for name, s in view.nodes.items()}


def report_rows(spec: ClusterSpec, target: Target, before: Mapping[str, str], view: ClusterView,
                cordoned_by_kai: set[str]) -> list[dict]:
    """A row per node: kubelet before/after, API server (control planes), cordoned or not — and if
    it is, whose cordon it is."""
    rows = []
    for node in spec.nodes:
        state = view.nodes.get(node.name)
        after = state.kubelet_version if state else "unknown"
        if state is None:
            cordon = "unknown (API unreachable)"
        elif not state.unschedulable:
            cordon = ("draining: about to be cordoned by this upgrade" if node.name in cordoned_by_kai
                      else "no")
        elif node.name in cordoned_by_kai:
            cordon = "YES: cordoned by this upgrade, not yet uncordoned (rerun the upgrade to finish)"
        else:
            cordon = "yes (cordoned before the upgrade: left so)"
        rows.append({
            "node": node.name,
            "role": "control-plane" if node.is_control_plane else "worker",
            "kubelet before": before.get(node.name, "unknown"),
            "kubelet now": after,
            "api server now": view.apiservers.get(node.name, "") if node.is_control_plane else "",
            "at target": "yes" if after == target.version else "no",
            "cordoned": cordon,
        })
    return rows


def render_report(cluster: str, target: Target, rows: list[dict], note: str) -> str:
    left = [r["node"] for r in rows if r["cordoned"].startswith(("YES", "draining"))]
    lines = [f"# upgrade of {cluster} to v{target.version}", "", f"_{note}_", ""]
    if left:
        lines += [f"**Cordoned by this upgrade until their upgrade completes: {', '.join(left)}** "
                  f"(if this run stopped here, rerun the upgrade: it finishes them and uncordons "
                  f"them)", ""]
    header = list(rows[0]) if rows else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
    return "\n".join(lines) + "\n"
