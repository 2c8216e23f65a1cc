"""The plan: mode -> ordered phases -> steps -> one job per host. Pure functions, no I/O.

Here: build_plan and its table of planners, the install modes' (all_in_one, ha, add_nodes) and the
small modes' (reset, preflight, health, etcd_backup) jobs and phases. What a plan is made of, and
what every planner builds it with: installers/plan_model.py. The day-2 modes plan in their own
modules, with their own job builders: upgrade in installers/plan_upgrade.py, remove_nodes in
installers/remove_plan.py.

Scripts, env names and files follow the table in docs/architecture.md §3. Jobs hold no command
line: the runner's command line is constant and every input travels as KAI_* env or a file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Mapping

from installers import addons, kubeadm, modes, render
from installers import versions as V
# the plan's shapes and helpers, also imported from here by callers (tasks/, deployments/, tests/)
from installers.plan_model import (DEFAULT_POLICIES, HostJob, Phase, Plan, Step,  # noqa: F401
                                   StepPolicy, host_job, job_hash, plan_step, policy_for,
                                   read_script)
from installers.spec import (ClusterSpec, KubeVipEndpoint, Node, SpecError, spec_warnings,
                             validate_for_mode)

TOKEN_TTL = "1h"   # short-lived join tokens, one per operation

SECRET_JOIN_TOKEN = "KAI_JOIN_TOKEN"
SECRET_CA_CERT_HASH = "KAI_CA_CERT_HASH"
SECRET_CERTIFICATE_KEY = "KAI_CERTIFICATE_KEY"


# --- jobs per kind -----------------------------------------------------------------------------

def facts_job(spec: ClusterSpec, node: Node) -> HostJob:
    return host_job("facts", node, {
        "KAI_MODULES": " ".join(V.REQUIRED_MODULES),
        "KAI_BINARIES": " ".join(V.REQUIRED_BINARIES + V.OPTIONAL_BINARIES),
        "KAI_PORTS": " ".join(str(p) for p in V.ports_for(node.roles, spec.networking.cni)),
    })


def os_prep_job(spec: ClusterSpec, node: Node) -> HostJob:
    return host_job("os_prep", node,
                    {"KAI_NODE_NAME": node.name, "KAI_MODULES": " ".join(V.REQUIRED_MODULES)},
                    render.os_prep_files(spec))


def runtime_job(spec: ClusterSpec, node: Node) -> HostJob:
    c = spec.runtime.containerd
    urls = V.download_urls(spec)
    # "mirror" is a release install whose URLs point at the mirror (contract: release|distro).
    source = "distro" if c.source == "distro" else "release"
    return host_job("runtime", node, {
        "KAI_CONTAINERD_SOURCE": source,
        "KAI_CONTAINERD_VERSION": c.version,
        "KAI_CONTAINERD_URL": urls.containerd,
        "KAI_RUNC_VERSION": c.runc_version,
        "KAI_RUNC_URL": urls.runc,
        "KAI_CNI_PLUGINS_VERSION": c.cni_plugins_version,
        "KAI_CNI_PLUGINS_URL": urls.cni_plugins,
        "KAI_DOWNLOAD_PROXY": render.download_proxy(spec),
    }, render.runtime_files(spec))


def kube_packages_job(spec: ClusterSpec, node: Node) -> HostJob:
    files = {}
    if (dropin := render.proxy_dropin(spec)) is not None:
        files["kubelet-proxy.conf"] = dropin
    return host_job("kube_packages", node, {
        "KAI_K8S_MINOR": spec.kubernetes.minor,
        "KAI_K8S_VERSION": spec.kubernetes.full_version,
        "KAI_K8S_REPO": V.download_urls(spec).k8s_repo,
        "KAI_DOWNLOAD_PROXY": render.download_proxy(spec),
    }, files)


def kube_vip_job(spec: ClusterSpec, node: Node, phase: str) -> HostJob:
    return host_job("kube_vip", node, {"KAI_KUBE_VIP_PHASE": phase},
                    {"kube-vip.yaml": render.kube_vip_manifest(spec, phase)})


def kubeadm_init_job(spec: ClusterSpec, node: Node, *, all_in_one: bool, upload_certs: bool) -> HostJob:
    return host_job("kubeadm_init", node,
                    {"KAI_NODE_NAME": node.name, "KAI_UPLOAD_CERTS": "1" if upload_certs else "0"},
                    {"kubeadm.yaml": kubeadm.render_init(spec, node, all_in_one=all_in_one)})


def join_credentials_job(spec: ClusterSpec, node: Node, *, need_cert_key: bool) -> HostJob:
    return host_job("join_credentials", node,
                    {"KAI_TOKEN_TTL": TOKEN_TTL, "KAI_NEED_CERT_KEY": "1" if need_cert_key else "0"})


def join_job(spec: ClusterSpec, node: Node) -> HostJob:
    secrets = (SECRET_JOIN_TOKEN, SECRET_CA_CERT_HASH)
    if node.is_control_plane:
        secrets += (SECRET_CERTIFICATE_KEY,)
    return host_job("join", node,
                    {"KAI_NODE_NAME": node.name,
                     "KAI_CONTROL_PLANE": "1" if node.is_control_plane else "0"},
                    {"kubeadm-join.yaml": kubeadm.render_join(spec, node)}, secrets)


def kubeconfig_job(spec: ClusterSpec, node: Node) -> HostJob:
    return host_job("kubeconfig", node)


def cni_job(spec: ClusterSpec, node: Node) -> HostJob:
    """A manifest CNI (calico, flannel) or a chart CNI (cilium: pinned helm renders the pinned
    chart); every file checked against its pins and published sums (installers/addons.py)."""
    cni = V.CNIS[spec.networking.cni]
    env = {
        "KAI_CNI": cni.name,
        "KAI_CNI_VERSION": cni.version,
        "KAI_POD_CIDR": spec.networking.pod_cidr,
        "KAI_DOWNLOAD_PROXY": render.download_proxy(spec),
    }
    files = {}
    chart = addons.cni_chart(spec)
    if chart is None:
        manifest = addons.cni_manifest(spec)
        env |= {"KAI_CNI_SOURCE": "manifest", "KAI_CNI_MANIFEST_URL": manifest.url,
                "KAI_CNI_MANIFEST_SHA256": manifest.sha256,
                "KAI_CNI_MANIFEST_SUMS_URL": manifest.sums_url}
    else:
        release, source = chart
        helm = addons.helm(spec)
        env |= {"KAI_CNI_SOURCE": "chart", "KAI_CNI_CHART": release.name,
                "KAI_CNI_CHART_URL": source.url, "KAI_CNI_CHART_SHA256": source.sha256,
                "KAI_CNI_CHART_INDEX_URL": source.sums_url,
                "KAI_HELM_URL": helm.url, "KAI_HELM_SUMS_URL": helm.sums_url,
                **addons.helm_pins(spec)}
        files["values.yaml"] = addons.cilium_values(spec)
    return host_job("cni", node, env, files)


def monitoring_job(spec: ClusterSpec, node: Node) -> HostJob:
    ms, kp = addons.metrics_server(spec), addons.kube_prometheus(spec)
    return host_job("monitoring", node, {
        "KAI_METRICS_SERVER_URL": ms.url, "KAI_METRICS_SERVER_SHA256": ms.sha256,
        "KAI_METRICS_SERVER_SUMS_URL": ms.sums_url,
        "KAI_METRICS_SERVER_INSECURE_TLS": "1" if spec.addons.metrics_server_kubelet_insecure_tls else "0",
        "KAI_KUBE_PROMETHEUS_URL": kp.url, "KAI_KUBE_PROMETHEUS_SHA256": kp.sha256,
        "KAI_KUBE_PROMETHEUS_SUMS_URL": kp.sums_url,
        "KAI_KUBE_PROMETHEUS_SKIP": addons.KUBE_PROMETHEUS_SKIPPED_PREFIX,
        "KAI_DOWNLOAD_PROXY": render.download_proxy(spec),
    })


def storage_job(spec: ClusterSpec, node: Node) -> HostJob:
    return host_job("storage", node,
                    {"KAI_LOCAL_PATH_URL": V.download_urls(spec).local_path,
                     "KAI_LOCAL_PATH_SHA256": V.LOCAL_PATH_SHA256 or ""},
                    {"storageclass.yaml": render.default_storage_class()})


def reset_job(spec: ClusterSpec, node: Node, *, remove_packages: bool = False,
              leave_etcd: bool = False) -> HostJob:
    """leave_etcd: a control plane leaving a cluster that stays removes its etcd member; when the
    whole cluster is reset the members go with it (see reset.sh)."""
    return host_job("reset", node, {"KAI_RESET_PACKAGES": "1" if remove_packages else "0",
                                    "KAI_RESET_ETCD_MEMBER": "1" if leave_etcd else "0"})


def node_versions_job(spec: ClusterSpec, node: Node) -> HostJob:
    return host_job("node_versions", node)


def etcd_backup_job(spec: ClusterSpec, node: Node) -> HostJob:
    return host_job("etcd_backup", node)


# --- steps and phases --------------------------------------------------------------------------

def _preflight_phase(spec: ClusterSpec, nodes: list[Node]) -> Phase:
    return Phase("preflight", "Gather facts and check the hosts",
                 (plan_step(spec, "facts", "facts", "Gather host facts",
                            [facts_job(spec, n) for n in nodes]),))


def _prepare_phase(spec: ClusterSpec, nodes: list[Node]) -> Phase:
    return Phase("prepare", "Prepare the hosts", (
        plan_step(spec, "os-prep", "os_prep", "Kernel modules, sysctl, swap off, /etc/hosts",
                  [os_prep_job(spec, n) for n in nodes]),
        plan_step(spec, "runtime", "runtime", "Install and configure containerd",
                  [runtime_job(spec, n) for n in nodes]),
        plan_step(spec, "kube-packages", "kube_packages", "Install kubelet, kubeadm, kubectl",
                  [kube_packages_job(spec, n) for n in nodes]),
    ))


def _control_plane_phase(spec: ClusterSpec, first: Node, *, all_in_one: bool,
                         upload_certs: bool) -> Phase:
    steps = []
    vip = isinstance(spec.control_plane_endpoint, KubeVipEndpoint)
    if vip:
        steps.append(plan_step(spec, "kube-vip-pre-init", "kube_vip",
                               "kube-vip static pod (super-admin.conf during init)",
                               [kube_vip_job(spec, first, "pre-init")]))
    steps.append(plan_step(spec, "kubeadm-init", "kubeadm_init", "kubeadm init on the first control plane",
                           [kubeadm_init_job(spec, first, all_in_one=all_in_one,
                                             upload_certs=upload_certs)]))
    if vip:
        steps.append(plan_step(spec, "kube-vip-post-init", "kube_vip", "kube-vip switches to admin.conf",
                               [kube_vip_job(spec, first, "post-init")]))
    return Phase("control-plane", "Initialise the control plane", tuple(steps))


def _join_phase(spec: ClusterSpec, first: Node, joining: list[Node]) -> Phase:
    cps = [n for n in joining if n.is_control_plane]
    workers = [n for n in joining if not n.is_control_plane]
    steps = [plan_step(spec, "join-credentials", "join_credentials",
                       "Fresh join token, CA hash" + (", certificate key" if cps else ""),
                       [join_credentials_job(spec, first, need_cert_key=bool(cps))])]
    if cps:
        # etcd grows one member at a time: joins run one after another.
        steps.append(plan_step(spec, "join-control-planes", "join", "Join control planes (one at a time)",
                               [join_job(spec, n) for n in cps], parallel=False))
        if isinstance(spec.control_plane_endpoint, KubeVipEndpoint):
            steps.append(plan_step(spec, "kube-vip-join", "kube_vip", "kube-vip on the joined control planes",
                                   [kube_vip_job(spec, n, "join") for n in cps]))
    if workers:
        steps.append(plan_step(spec, "join-workers", "join", "Join workers",
                               [join_job(spec, n) for n in workers]))
    return Phase("join", "Join nodes", tuple(steps))


def _kubeconfig_phase(spec: ClusterSpec, first: Node) -> Phase:
    return Phase("kubeconfig", "Fetch the admin kubeconfig",
                 (plan_step(spec, "kubeconfig", "kubeconfig", "Fetch admin.conf",
                            [kubeconfig_job(spec, first)]),))


def _addons_phase(spec: ClusterSpec, first: Node) -> Phase:
    steps = [plan_step(spec, "cni", "cni", f"Apply the {spec.networking.cni} CNI", [cni_job(spec, first)])]
    if spec.storage.local_path:
        steps.append(plan_step(spec, "storage", "storage", "local-path provisioner + default StorageClass",
                               [storage_job(spec, first)]))
    if spec.addons.monitoring:
        steps.append(plan_step(spec, "monitoring", "monitoring",
                               "metrics-server + kube-prometheus (CRDs established first)",
                               [monitoring_job(spec, first)]))
    return Phase("addons", "Cluster add-ons", tuple(steps))


def _verify_phase(spec: ClusterSpec, kind: str = "verify") -> Phase:
    """The controller-side look at the cluster; kind "health" (the health mode) has its own,
    shorter default deadline, overridable apart from an install's verify."""
    return Phase("verify", "Verify the cluster",
                 (plan_step(spec, "verify", kind,
                            "API reachable through the endpoint, nodes Ready, system pods running", []),))


# --- one planner per mode (installers/modes.py lists the modes; a test keeps the two equal) -----

def _preflight_plan(spec: ClusterSpec, nodes: list[Node]) -> list[Phase]:
    return [_preflight_phase(spec, spec.nodes)]


def _all_in_one_plan(spec: ClusterSpec, nodes: list[Node]) -> list[Phase]:
    first = spec.control_planes()[0]
    return [_preflight_phase(spec, [first]), _prepare_phase(spec, [first]),
            _control_plane_phase(spec, first, all_in_one=True, upload_certs=False),
            _kubeconfig_phase(spec, first), _addons_phase(spec, first), _verify_phase(spec)]


def _ha_plan(spec: ClusterSpec, nodes: list[Node]) -> list[Phase]:
    first = spec.control_planes()[0]
    others = [n for n in spec.nodes if n.name != first.name]
    # control planes first so etcd is whole before workers arrive
    others.sort(key=lambda n: not n.is_control_plane)
    phases = [_preflight_phase(spec, spec.nodes), _prepare_phase(spec, spec.nodes),
              _control_plane_phase(spec, first, all_in_one=False, upload_certs=True)]
    if others:
        phases.append(_join_phase(spec, first, others))
    return phases + [_kubeconfig_phase(spec, first), _addons_phase(spec, first), _verify_phase(spec)]


def _add_nodes_plan(spec: ClusterSpec, nodes: list[Node]) -> list[Phase]:
    """Only the named new nodes and the first control plane (read-only work there) are touched."""
    first = spec.control_planes()[0]
    new = sorted(nodes, key=lambda n: not n.is_control_plane)
    return [_preflight_phase(spec, new), _prepare_phase(spec, new),
            _join_phase(spec, first, new), _kubeconfig_phase(spec, first), _verify_phase(spec)]


def _health_plan(spec: ClusterSpec, nodes: list[Node]) -> list[Phase]:
    """Read-only: a fresh admin kubeconfig, each node's installed kubeadm and kubelet (for the
    drift report), then look through the API."""
    first = spec.control_planes()[0]
    versions = Phase("versions", "Read each node's installed Kubernetes versions", (
        plan_step(spec, "node-versions", "node_versions", "kubeadm and kubelet versions on every node",
                  [node_versions_job(spec, n) for n in spec.nodes]),))
    return [_kubeconfig_phase(spec, first), versions, _verify_phase(spec, kind="health")]


def _reset_plan(spec: ClusterSpec, nodes: list[Node]) -> list[Phase]:
    workers = spec.workers()
    steps = []
    if workers:
        steps.append(plan_step(spec, "reset-workers", "reset", "kubeadm reset on the workers",
                               [reset_job(spec, n) for n in workers]))
    steps.append(plan_step(spec, "reset-control-planes", "reset", "kubeadm reset on the control planes",
                           [reset_job(spec, n) for n in spec.control_planes()]))
    return [Phase("reset", "Reset the nodes (workers first)", tuple(steps))]


def _etcd_backup_plan(spec: ClusterSpec, nodes: list[Node]) -> list[Phase]:
    """One snapshot, from the first control plane whose etcd cluster is healthy (in spec order)."""
    return [Phase("etcd-backup", "Snapshot etcd to the controller",
                  (plan_step(spec, "etcd-backup", "etcd_backup",
                             "etcd snapshot on a healthy control plane (the first that answers)",
                             [etcd_backup_job(spec, n) for n in spec.control_planes()], parallel=False),))]


def _upgrade_plan(spec: ClusterSpec, nodes: list[Node], **options: Any) -> list[Phase]:
    # its own module, built on this one; it takes the mode's options too (build_plan's keywords)
    from installers.plan_upgrade import upgrade_plan
    return upgrade_plan(spec, nodes, **options)


def _remove_nodes_plan(spec: ClusterSpec, nodes: list[Node], force: bool = False) -> list[Phase]:
    from installers.remove_plan import remove_nodes_phases  # its own module, built on this one
    return remove_nodes_phases(spec, nodes, force=force)


def _remove_nodes_notes(spec: ClusterSpec, nodes: list[Node], force: bool) -> list[str]:
    from installers.remove_plan import plan_notes
    return plan_notes(spec, nodes, force=force)


# The certs and etcd_restore planners (installers/certs_plan.py, installers/restore_plan.py, with
# their job builders; they import this module back lazily). certs takes the renew option,
# etcd_restore the snapshot's name: build_plan keywords.
from installers.certs_plan import certs_plan  # noqa: E402
from installers.restore_plan import etcd_restore_phases  # noqa: E402


def _etcd_restore_plan(spec: ClusterSpec, nodes: list[Node], snapshot: str) -> list[Phase]:
    return etcd_restore_phases(spec, nodes, snapshot)


PLANNERS: dict[str, Callable[..., list[Phase]]] = {
    "all_in_one": _all_in_one_plan,
    "ha": _ha_plan,
    "add_nodes": _add_nodes_plan,
    "reset": _reset_plan,
    "preflight": _preflight_plan,
    "health": _health_plan,
    "upgrade": _upgrade_plan,
    "etcd_backup": _etcd_backup_plan,
    "remove_nodes": _remove_nodes_plan,
    "certs": certs_plan,
    "etcd_restore": _etcd_restore_plan,
}
PLAN_WARNINGS = {"add_nodes": ["add_nodes: existing nodes' /etc/hosts blocks are not updated "
                               "(nothing else is touched)"],
                 "etcd_restore": ["etcd_restore: the cluster's etcd data is replaced by the snapshot's "
                                  "(everything written since is lost) and the API servers are down "
                                  "meanwhile; a run needs confirm (kai restore --yes)"]}


# Notes that depend on the spec and the nodes (shown as the plan's warnings).
PLAN_NOTES: dict[str, Callable[[ClusterSpec, list[Node], bool], list[str]]] = {
    "remove_nodes": _remove_nodes_notes,
}


def build_plan(spec: ClusterSpec, mode: str, nodes: list[str] | None = None, **options: Any) -> Plan:
    """The plan of a mode; raises SpecError when the spec does not suit the mode. `options`: what
    the mode's flow was given besides the spec and nodes (installers/modes.py plan_options: to and
    max_unavailable for upgrade, force for remove_nodes, renew for certs, snapshot for
    etcd_restore)."""
    problems = validate_for_mode(spec, mode, nodes, options)
    if problems:
        raise SpecError(problems)
    force = bool(options.get(modes.FORCE_PARAM))
    flags = (modes.FORCE_PARAM, modes.RENEW_PARAM)  # booleans: given only to the modes taking them
    given = {k: v for k, v in options.items() if v is not None and k not in flags}
    if modes.get(mode).takes_force:
        given[modes.FORCE_PARAM] = force
    if modes.get(mode).takes_renew:
        given[modes.RENEW_PARAM] = bool(options.get(modes.RENEW_PARAM))
    named = [spec.node(n) for n in nodes or []]
    phases = PLANNERS[mode](spec, named, **given)
    warnings = list(spec_warnings(spec)) + PLAN_WARNINGS.get(mode, [])
    if (notes := PLAN_NOTES.get(mode)) is not None:
        warnings += notes(spec, named, force)
    return Plan(mode=mode, cluster=spec.name, phases=tuple(phases), warnings=tuple(warnings))


def run_plans(spec: ClusterSpec, mode: str, params: Mapping[str, Any] | None = None) -> list[Plan]:
    """The plans a run of `mode` goes through, in order, given its flow parameters: one plan, or
    for a composed mode (rebuild) reset's, then the install's (installers/modes.py)."""
    params = params or {}
    return [build_plan(spec, part, nodes=modes.nodes_param(part, params),
                       **modes.plan_options(part, params))
            for part in modes.plan_sequence(mode, spec, params.get(modes.INSTALL_PARAM, modes.AUTO))]


def plan_to_dict(plan: Plan) -> dict:
    return dataclasses.asdict(plan)
