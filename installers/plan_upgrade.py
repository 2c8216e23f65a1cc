"""The upgrade mode's plan: one minor (or a patch) up, never breaking the version-skew policy.

Order (https://kubernetes.io/releases/version-skew-policy/: no kubelet may be newer than any
kube-apiserver, API servers within one minor of each other):

1. preflight — fetch the admin kubeconfig; facts on every node; the API's view (every node Ready,
   each control plane's API server healthy and its version, skew, disk) judged at once.
2. control planes — the first: package repository moved to the target minor, kubeadm package,
   `kubeadm upgrade plan`, `kubeadm upgrade apply` (kai's v1beta4 UpgradeConfiguration); then the
   others one at a time with `kubeadm upgrade node`. Only API servers change here: every kubelet
   is still at the old version, which is always allowed.
3. control-plane kubelets — each control plane in turn: drained, kubelet and kubectl packages,
   kubelet restarted, uncordoned once Ready at the target. kubeadm's guide upgrades the first
   control plane's kubelet right after `upgrade apply`; in an HA cluster that kubelet would be
   newer than the other control planes' API servers for a while, which the skew policy forbids.
4. workers — in batches of `max_unavailable`: drained (PodDisruptionBudgets honoured, the error
   names the pod that blocks), kubeadm package, `kubeadm upgrade node`, kubelet and kubectl,
   restart, uncordoned once Ready at the target.
5. verify — the install's verify, then the report (each node's version before/after, nodes left
   cordoned).

Drain and uncordon run kubectl on the first control plane (admin.conf). Every node-side part keeps
its own progress per target version (upgrade-node.sh), so a rerun after a failure or a cancel
continues where it stopped even when the batches changed.
"""

from __future__ import annotations

from installers import render, upgrade_rules
from installers import versions as V
from installers.plan import kubeconfig_job  # build_plan imports this module when it plans an upgrade
from installers.plan_model import HostJob, Phase, Step, host_job, plan_step, policy_for
from installers.spec import ClusterSpec, Node, SpecError

# kubectl drain's --timeout is the drain step's timeout less this margin: kubectl ends first and
# names the pod that blocked it, instead of the step being killed without a word.
DRAIN_MARGIN_S = 30
MIN_DRAIN_TIMEOUT_S = 30
UPGRADE_CONFIG_FILE = "kubeadm-upgrade.yaml"
UPGRADE_MANIFESTS_TIMEOUT = "5m0s"


# --- rendered files ------------------------------------------------------------------------------

def render_upgrade_config(version: str) -> str:
    """kubeadm's v1beta4 UpgradeConfiguration (cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go) for
    `kubeadm upgrade plan|apply|node --config`: the target in apply and plan, certificates renewed
    and etcd upgraded as kubeadm's defaults do (said explicitly, so the file shows the choice)."""
    import yaml

    doc = {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "UpgradeConfiguration",
        "apply": {"kubernetesVersion": f"v{version}", "certificateRenewal": True,
                  "etcdUpgrade": True},
        "node": {"certificateRenewal": True, "etcdUpgrade": True},
        "plan": {"kubernetesVersion": f"v{version}"},
        "timeouts": {"upgradeManifests": UPGRADE_MANIFESTS_TIMEOUT},
    }
    return yaml.safe_dump(doc, sort_keys=False)


# --- jobs ------------------------------------------------------------------------------------------

def upgrade_facts_job(spec: ClusterSpec, node: Node, target: upgrade_rules.Target) -> HostJob:
    return host_job("upgrade_facts", node, {"KAI_K8S_VERSION": target.version})


def upgrade_node_job(spec: ClusterSpec, node: Node, target: upgrade_rules.Target, part: str) -> HostJob:
    """upgrade-node.sh's `part`: apply (first control plane), node (other control planes),
    kubelet (a drained control plane), worker (a drained worker)."""
    return host_job("upgrade_node", node, {
        "KAI_UPGRADE_PART": part,
        "KAI_NODE_NAME": node.name,
        "KAI_K8S_MINOR": target.minor,
        "KAI_K8S_VERSION": target.version,
        "KAI_K8S_REPO": V.download_urls(spec).k8s_repo,
        "KAI_DOWNLOAD_PROXY": render.download_proxy(spec),
    }, {UPGRADE_CONFIG_FILE: render_upgrade_config(target.version)})


def drain_job(spec: ClusterSpec, host: Node, nodes: list[Node], target: upgrade_rules.Target,
              timeout_s: float) -> HostJob:
    """kubectl drain of `nodes`, run on `host` (the first control plane: admin.conf)."""
    drain_s = max(MIN_DRAIN_TIMEOUT_S, int(timeout_s) - DRAIN_MARGIN_S)
    return host_job("drain", host, {
        "KAI_DRAIN_NODES": " ".join(n.name for n in nodes),
        "KAI_DRAIN_TIMEOUT_S": str(drain_s),
        "KAI_K8S_VERSION": target.version,  # a drain per target: the next upgrade drains again
    })


def uncordon_job(spec: ClusterSpec, host: Node, nodes: list[Node], target: upgrade_rules.Target,
                 timeout_s: float) -> HostJob:
    """Wait until `nodes` are Ready at the target, then uncordon them (those kai cordoned)."""
    return host_job("uncordon", host, {
        "KAI_UNCORDON_NODES": " ".join(n.name for n in nodes),
        "KAI_K8S_VERSION": target.version,
        "KAI_READY_TIMEOUT_S": str(max(30, int(timeout_s) - DRAIN_MARGIN_S)),
    })


# --- phases ----------------------------------------------------------------------------------------

def _node_group(spec: ClusterSpec, first: Node, name: str, title: str, nodes: list[Node],
                target: upgrade_rules.Target, part: str) -> list[Step]:
    """drain → upgrade → uncordon of some nodes: three steps, one after another."""
    names = ", ".join(n.name for n in nodes)
    drain_policy, uncordon_policy = policy_for(spec, "drain"), policy_for(spec, "uncordon")
    return [
        plan_step(spec, f"drain-{name}", "drain", f"Drain {names} (PodDisruptionBudgets honoured)",
                  [drain_job(spec, first, nodes, target, drain_policy.timeout_s)]),
        plan_step(spec, f"{'kubelet' if part == 'kubelet' else 'upgrade'}-{name}", "upgrade_node",
                  f"{title}: {names}", [upgrade_node_job(spec, n, target, part) for n in nodes]),
        plan_step(spec, f"uncordon-{name}", "uncordon",
                  f"{names} Ready at v{target.version}, then uncordoned",
                  [uncordon_job(spec, first, nodes, target, uncordon_policy.timeout_s)]),
    ]


def upgrade_plan(spec: ClusterSpec, nodes: list[Node], *, to: str | None = None,
                 max_unavailable: int | None = None) -> list[Phase]:
    """The upgrade's phases (module doc). build_plan has validated the options already."""
    target, problems = upgrade_rules.resolve_target(to)
    if target is None:  # build_plan validates first; a direct call gets the same message
        raise SpecError(problems)
    cps, workers = spec.control_planes(), spec.workers()
    first, others = cps[0], cps[1:]
    v = target.version
    phases = [Phase("preflight", "Look at the cluster and every node before changing anything", (
        plan_step(spec, "kubeconfig", "kubeconfig", "Fetch admin.conf", [kubeconfig_job(spec, first)]),
        plan_step(spec, "upgrade-facts", "upgrade_facts",
                  "Node facts + the API's view: nodes Ready, API servers healthy, skew, disk",
                  [upgrade_facts_job(spec, n, target) for n in spec.nodes]),
    ))]
    steps = [plan_step(spec, "upgrade-apply", "upgrade_node",
                       f"kubeadm package, `kubeadm upgrade plan` and `upgrade apply` v{v}",
                       [upgrade_node_job(spec, first, target, "apply")])]
    if others:
        steps.append(plan_step(spec, "upgrade-control-planes", "upgrade_node",
                               "kubeadm package and `kubeadm upgrade node` (one at a time)",
                               [upgrade_node_job(spec, n, target, "node") for n in others],
                               parallel=False))
    phases.append(Phase("control-planes", f"API servers to v{v}, one control plane at a time",
                        tuple(steps)))
    kubelets: list[Step] = []
    for cp in cps:
        kubelets += _node_group(spec, first, cp.name, "kubelet and kubectl packages, kubelet restarted",
                                [cp], target, "kubelet")
    phases.append(Phase("control-plane-kubelets",
                        f"Control-plane kubelets to v{v}, one node at a time", tuple(kubelets)))
    batches = upgrade_rules.worker_batches([w.name for w in workers], max_unavailable)
    if batches:
        by_name = {w.name: w for w in workers}
        steps = []
        for i, batch in enumerate(batches, 1):
            steps += _node_group(spec, first, f"workers-{i}",
                                 "kubeadm package, `kubeadm upgrade node`, kubelet and kubectl",
                                 [by_name[n] for n in batch], target, "worker")
        size = max_unavailable or upgrade_rules.DEFAULT_MAX_UNAVAILABLE
        phases.append(Phase("workers", f"Workers to v{v} in {len(batches)} batch(es) of at most "
                                       f"{size} (max_unavailable)", tuple(steps)))
    phases.append(Phase("verify", "Verify the cluster and report each node's version", (
        plan_step(spec, "verify", "verify",
                  "API reachable through the endpoint, nodes Ready, system pods running", []),
        plan_step(spec, "upgrade-report", "upgrade_report",
                  "Each node's version before/after; nodes left cordoned", []),
    )))
    return phases


def node_groups(plan) -> list[tuple[Step, Step, Step]]:
    """The plan's (drain, upgrade, uncordon) step triples in order: what flows/upgrade.py loops over."""
    steps = [s for phase in plan.phases if phase.name in ("control-plane-kubelets", "workers")
             for s in phase.steps]
    return [tuple(steps[i:i + 3]) for i in range(0, len(steps), 3)]  # type: ignore[misc]


def target_version(plan) -> str:
    """The version the plan moves to (its facts jobs carry it)."""
    return plan.step("upgrade-facts").jobs[0].env["KAI_K8S_VERSION"]
