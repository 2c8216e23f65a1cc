"""The plan: mode -> ordered phases -> steps -> one job per host. Pure functions, no I/O
(except reading the static scripts for hashing when asked).

Scripts, env names and files follow the table in docs/architecture.md §3. Jobs hold no command
line: the runner's command line is constant and every input travels as KAI_* env or a file.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Mapping

from installers import addons, kubeadm, modes, render, scripts_store, step_kinds
from installers import versions as V
from installers.step_kinds import StepPolicy  # defined with the kinds' default policies
from installers.spec import (ClusterSpec, KubeVipEndpoint, Node, SpecError, spec_warnings,
                             validate_for_mode)

TOKEN_TTL = "1h"   # short-lived join tokens, one per operation

SECRET_JOIN_TOKEN = "KAI_JOIN_TOKEN"
SECRET_CA_CERT_HASH = "KAI_CA_CERT_HASH"
SECRET_CERTIFICATE_KEY = "KAI_CERTIFICATE_KEY"


@dataclass(frozen=True)
class HostJob:
    node: str
    address: str
    script: str
    env: Mapping[str, str]
    files: Mapping[str, str]
    secret_env: tuple[str, ...] = ()


@dataclass(frozen=True)
class Step:
    """One step of a plan: a kind (a row of installers/step_kinds.py — which task runs it, which
    node script it runs) applied to its hosts, one job each (none: controller-side)."""

    name: str
    kind: str
    title: str
    jobs: tuple[HostJob, ...]
    policy: StepPolicy
    parallel: bool = True

    def time_bound_s(self) -> float:
        """The longest this step can take before it fails (hosts one at a time add up)."""
        return self.policy.time_bound_s(1 if self.parallel else len(self.jobs))


@dataclass(frozen=True)
class Phase:
    name: str
    title: str
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Plan:
    mode: str
    cluster: str
    phases: tuple[Phase, ...]
    warnings: tuple[str, ...] = field(default=())

    def steps(self) -> list[Step]:
        return [s for ph in self.phases for s in ph.steps]

    def step(self, name: str) -> Step:
        if (found := self.get(name)) is None:
            raise KeyError(name)
        return found

    def get(self, name: str) -> Step | None:
        """The step, or None when this spec's plan has none of that name (a flow passes it to its
        task all the same: a task given None does nothing — tasks/step_task.py)."""
        for s in self.steps():
            if s.name == name:
                return s
        return None

    def nodes_touched(self) -> set[str]:
        return {j.node for s in self.steps() for j in s.jobs}


DEFAULT_POLICIES: dict[str, StepPolicy] = {k.name: k.policy for k in step_kinds.STEP_KINDS}


def policy_for(spec: ClusterSpec, kind: str) -> StepPolicy:
    base = DEFAULT_POLICIES[kind]
    override = spec.steps.get(kind)  # type: ignore[call-overload]
    if override is None:
        return base
    changes = override.model_dump(exclude_none=True)
    if "retry_delay_s" in changes and "max_retry_delay_s" not in changes:
        # an explicit first wait above the default cap is what the user asked for: the cap follows
        changes["max_retry_delay_s"] = max(base.max_retry_delay_s, changes["retry_delay_s"])
    return dataclasses.replace(base, **changes)


# --- hashing -----------------------------------------------------------------------------------

def read_script(name: str) -> str | None:
    """The node script as the runner will send it (installers.scripts_store), None if missing."""
    try:
        return scripts_store.script_text(name)
    except FileNotFoundError:
        return None


def job_hash(job: HostJob, script_text: str | None = None, lib_text: str | None = None) -> str:
    """sha256 of script + lib + non-secret env + files: the done-marker of a step on a host.
    Secrets are not part of it (they change every run and must not leave a trace)."""
    if script_text is None:
        script_text = read_script(job.script) or ""
    if lib_text is None:
        lib_text = read_script("lib.sh") or ""
    h = hashlib.sha256()

    def part(label: str, data: str) -> None:
        raw = data.encode("utf-8")
        h.update(f"{label}\0{len(raw)}\0".encode())
        h.update(raw)

    part("script", script_text)
    part("lib", lib_text)
    for key in sorted(job.env):
        part(f"env:{key}", job.env[key])
    for name in sorted(job.files):
        part(f"file:{name}", job.files[name])
    return h.hexdigest()


# --- jobs per kind -----------------------------------------------------------------------------

def _job(kind: str, node: Node, env: dict[str, str] | None = None,
         files: dict[str, str] | None = None, secret_env: tuple[str, ...] = ()) -> HostJob:
    """One host's job for a step of `kind`: its script is the kind's (installers/step_kinds.py)."""
    return HostJob(node=node.name, address=node.address, script=step_kinds.script_of(kind),
                   env=dict(env or {}), files=dict(files or {}), secret_env=secret_env)


def facts_job(spec: ClusterSpec, node: Node) -> HostJob:
    return _job("facts", node, {
        "KAI_MODULES": " ".join(V.REQUIRED_MODULES),
        "KAI_BINARIES": " ".join(V.REQUIRED_BINARIES + V.OPTIONAL_BINARIES),
        "KAI_PORTS": " ".join(str(p) for p in V.ports_for(node.roles, spec.networking.cni)),
    })


def os_prep_job(spec: ClusterSpec, node: Node) -> HostJob:
    return _job("os_prep", node,
                {"KAI_NODE_NAME": node.name, "KAI_MODULES": " ".join(V.REQUIRED_MODULES)},
                render.os_prep_files(spec))


def runtime_job(spec: ClusterSpec, node: Node) -> HostJob:
    c = spec.runtime.containerd
    urls = V.download_urls(spec)
    # "mirror" is a release install whose URLs point at the mirror (contract: release|distro).
    source = "distro" if c.source == "distro" else "release"
    return _job("runtime", node, {
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
    return _job("kube_packages", node, {
        "KAI_K8S_MINOR": spec.kubernetes.minor,
        "KAI_K8S_VERSION": spec.kubernetes.full_version,
        "KAI_K8S_REPO": V.download_urls(spec).k8s_repo,
        "KAI_DOWNLOAD_PROXY": render.download_proxy(spec),
    }, files)


def kube_vip_job(spec: ClusterSpec, node: Node, phase: str) -> HostJob:
    return _job("kube_vip", node, {"KAI_KUBE_VIP_PHASE": phase},
                {"kube-vip.yaml": render.kube_vip_manifest(spec, phase)})


def kubeadm_init_job(spec: ClusterSpec, node: Node, *, all_in_one: bool, upload_certs: bool) -> HostJob:
    return _job("kubeadm_init", node,
                {"KAI_NODE_NAME": node.name, "KAI_UPLOAD_CERTS": "1" if upload_certs else "0"},
                {"kubeadm.yaml": kubeadm.render_init(spec, node, all_in_one=all_in_one)})


def join_credentials_job(spec: ClusterSpec, node: Node, *, need_cert_key: bool) -> HostJob:
    return _job("join_credentials", node,
                {"KAI_TOKEN_TTL": TOKEN_TTL, "KAI_NEED_CERT_KEY": "1" if need_cert_key else "0"})


def join_job(spec: ClusterSpec, node: Node) -> HostJob:
    secrets = (SECRET_JOIN_TOKEN, SECRET_CA_CERT_HASH)
    if node.is_control_plane:
        secrets += (SECRET_CERTIFICATE_KEY,)
    return _job("join", node,
                {"KAI_NODE_NAME": node.name,
                 "KAI_CONTROL_PLANE": "1" if node.is_control_plane else "0"},
                {"kubeadm-join.yaml": kubeadm.render_join(spec, node)}, secrets)


def kubeconfig_job(spec: ClusterSpec, node: Node) -> HostJob:
    return _job("kubeconfig", node)


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
    return _job("cni", node, env, files)


def monitoring_job(spec: ClusterSpec, node: Node) -> HostJob:
    ms, kp = addons.metrics_server(spec), addons.kube_prometheus(spec)
    return _job("monitoring", node, {
        "KAI_METRICS_SERVER_URL": ms.url, "KAI_METRICS_SERVER_SHA256": ms.sha256,
        "KAI_METRICS_SERVER_SUMS_URL": ms.sums_url,
        "KAI_KUBE_PROMETHEUS_URL": kp.url, "KAI_KUBE_PROMETHEUS_SHA256": kp.sha256,
        "KAI_KUBE_PROMETHEUS_SUMS_URL": kp.sums_url,
        "KAI_KUBE_PROMETHEUS_SKIP": addons.KUBE_PROMETHEUS_SKIPPED_PREFIX,
        "KAI_DOWNLOAD_PROXY": render.download_proxy(spec),
    })


def storage_job(spec: ClusterSpec, node: Node) -> HostJob:
    return _job("storage", node,
                {"KAI_LOCAL_PATH_URL": V.download_urls(spec).local_path,
                 "KAI_LOCAL_PATH_SHA256": V.LOCAL_PATH_SHA256 or ""},
                {"storageclass.yaml": render.default_storage_class()})


def reset_job(spec: ClusterSpec, node: Node, *, remove_packages: bool = False,
              leave_etcd: bool = False) -> HostJob:
    """leave_etcd: a control plane leaving a cluster that stays removes its etcd member; when the
    whole cluster is reset the members go with it (see reset.sh)."""
    return _job("reset", node, {"KAI_RESET_PACKAGES": "1" if remove_packages else "0",
                                "KAI_RESET_ETCD_MEMBER": "1" if leave_etcd else "0"})


def etcd_backup_job(spec: ClusterSpec, node: Node) -> HostJob:
    return _job("etcd_backup", node)


# remove_nodes' jobs (the plan: installers/remove_plan.py). `anchor`: the control plane that runs
# the cluster-side work for the node being removed (installers/removal.py).

def reachable_job(spec: ClusterSpec, node: Node) -> HostJob:
    return _job("reachable", node, {"KAI_NODE_NAME": node.name})


def cordon_job(spec: ClusterSpec, anchor: Node, nodes: list[Node]) -> HostJob:
    return _job("cordon", anchor, {"KAI_NODES": " ".join(n.name for n in nodes)})


def remove_drain_job(spec: ClusterSpec, anchor: Node, node: Node) -> HostJob:
    # kubectl's own timeout ends before the step's: its error names the pod that blocks
    timeout = max(10, int(policy_for(spec, "remove_drain").timeout_s) - 30)
    return _job("remove_drain", anchor, {"KAI_NODE_NAME": node.name, "KAI_DRAIN_TIMEOUT_S": str(timeout)})


def kube_vip_leave_job(spec: ClusterSpec, node: Node) -> HostJob:
    return _job("kube_vip_leave", node, {"KAI_VIP": spec.endpoint_host(),
                                         "KAI_VIP_PORT": str(spec.endpoint_port())})


def etcd_member_remove_job(spec: ClusterSpec, anchor: Node, node: Node) -> HostJob:
    return _job("etcd_member_remove", anchor, {"KAI_NODE_NAME": node.name})


def delete_node_job(spec: ClusterSpec, anchor: Node, node: Node) -> HostJob:
    return _job("delete_node", anchor, {"KAI_NODE_NAME": node.name})


def hosts_block_job(spec: ClusterSpec, node: Node, listed: list[Node]) -> HostJob:
    """kai's /etc/hosts block listing only `listed` (the nodes that stay)."""
    return _job("hosts_block", node, files={
        "hosts": render.hosts_block(spec.model_copy(update={"nodes": listed}))})


# --- steps and phases --------------------------------------------------------------------------

def _step(spec: ClusterSpec, name: str, kind: str, title: str, jobs: list[HostJob],
          parallel: bool = True) -> Step:
    return Step(name=name, kind=kind, title=title, jobs=tuple(jobs),
                policy=policy_for(spec, kind), parallel=parallel)


def _preflight_phase(spec: ClusterSpec, nodes: list[Node]) -> Phase:
    return Phase("preflight", "Gather facts and check the hosts",
                 (_step(spec, "facts", "facts", "Gather host facts",
                        [facts_job(spec, n) for n in nodes]),))


def _prepare_phase(spec: ClusterSpec, nodes: list[Node]) -> Phase:
    return Phase("prepare", "Prepare the hosts", (
        _step(spec, "os-prep", "os_prep", "Kernel modules, sysctl, swap off, /etc/hosts",
              [os_prep_job(spec, n) for n in nodes]),
        _step(spec, "runtime", "runtime", "Install and configure containerd",
              [runtime_job(spec, n) for n in nodes]),
        _step(spec, "kube-packages", "kube_packages", "Install kubelet, kubeadm, kubectl",
              [kube_packages_job(spec, n) for n in nodes]),
    ))


def _control_plane_phase(spec: ClusterSpec, first: Node, *, all_in_one: bool,
                         upload_certs: bool) -> Phase:
    steps = []
    vip = isinstance(spec.control_plane_endpoint, KubeVipEndpoint)
    if vip:
        steps.append(_step(spec, "kube-vip-pre-init", "kube_vip",
                           "kube-vip static pod (super-admin.conf during init)",
                           [kube_vip_job(spec, first, "pre-init")]))
    steps.append(_step(spec, "kubeadm-init", "kubeadm_init", "kubeadm init on the first control plane",
                       [kubeadm_init_job(spec, first, all_in_one=all_in_one,
                                         upload_certs=upload_certs)]))
    if vip:
        steps.append(_step(spec, "kube-vip-post-init", "kube_vip", "kube-vip switches to admin.conf",
                           [kube_vip_job(spec, first, "post-init")]))
    return Phase("control-plane", "Initialise the control plane", tuple(steps))


def _join_phase(spec: ClusterSpec, first: Node, joining: list[Node]) -> Phase:
    cps = [n for n in joining if n.is_control_plane]
    workers = [n for n in joining if not n.is_control_plane]
    steps = [_step(spec, "join-credentials", "join_credentials",
                   "Fresh join token, CA hash" + (", certificate key" if cps else ""),
                   [join_credentials_job(spec, first, need_cert_key=bool(cps))])]
    if cps:
        # etcd grows one member at a time: joins run one after another.
        steps.append(_step(spec, "join-control-planes", "join", "Join control planes (one at a time)",
                           [join_job(spec, n) for n in cps], parallel=False))
        if isinstance(spec.control_plane_endpoint, KubeVipEndpoint):
            steps.append(_step(spec, "kube-vip-join", "kube_vip", "kube-vip on the joined control planes",
                               [kube_vip_job(spec, n, "join") for n in cps]))
    if workers:
        steps.append(_step(spec, "join-workers", "join", "Join workers",
                           [join_job(spec, n) for n in workers]))
    return Phase("join", "Join nodes", tuple(steps))


def _kubeconfig_phase(spec: ClusterSpec, first: Node) -> Phase:
    return Phase("kubeconfig", "Fetch the admin kubeconfig",
                 (_step(spec, "kubeconfig", "kubeconfig", "Fetch admin.conf",
                        [kubeconfig_job(spec, first)]),))


def _addons_phase(spec: ClusterSpec, first: Node) -> Phase:
    steps = [_step(spec, "cni", "cni", f"Apply the {spec.networking.cni} CNI", [cni_job(spec, first)])]
    if spec.storage.local_path:
        steps.append(_step(spec, "storage", "storage", "local-path provisioner + default StorageClass",
                           [storage_job(spec, first)]))
    if spec.addons.monitoring:
        steps.append(_step(spec, "monitoring", "monitoring",
                           "metrics-server + kube-prometheus (CRDs established first)",
                           [monitoring_job(spec, first)]))
    return Phase("addons", "Cluster add-ons", tuple(steps))


def _verify_phase(spec: ClusterSpec, kind: str = "verify") -> Phase:
    """The controller-side look at the cluster; kind "health" (the health mode) has its own,
    shorter default deadline, overridable apart from an install's verify."""
    return Phase("verify", "Verify the cluster",
                 (_step(spec, "verify", kind,
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
    """Read-only: a fresh admin kubeconfig, then look through the API."""
    first = spec.control_planes()[0]
    return [_kubeconfig_phase(spec, first), _verify_phase(spec, kind="health")]


def _reset_plan(spec: ClusterSpec, nodes: list[Node]) -> list[Phase]:
    workers = spec.workers()
    steps = []
    if workers:
        steps.append(_step(spec, "reset-workers", "reset", "kubeadm reset on the workers",
                           [reset_job(spec, n) for n in workers]))
    steps.append(_step(spec, "reset-control-planes", "reset", "kubeadm reset on the control planes",
                       [reset_job(spec, n) for n in spec.control_planes()]))
    return [Phase("reset", "Reset the nodes (workers first)", tuple(steps))]


def _etcd_backup_plan(spec: ClusterSpec, nodes: list[Node]) -> list[Phase]:
    """One snapshot, from the first control plane whose etcd cluster is healthy (in spec order)."""
    return [Phase("etcd-backup", "Snapshot etcd to the controller",
                  (_step(spec, "etcd-backup", "etcd_backup",
                         "etcd snapshot on a healthy control plane (the first that answers)",
                         [etcd_backup_job(spec, n) for n in spec.control_planes()], parallel=False),))]


# The upgrade mode's planner and job builders (installers/plan_upgrade.py; it imports this module
# back lazily). Its planner takes the mode's options too: build_plan's keywords.
from installers.plan_upgrade import (drain_job, uncordon_job, upgrade_facts_job,  # noqa: E402,F401
                                     upgrade_node_job, upgrade_plan)

def _remove_nodes_plan(spec: ClusterSpec, nodes: list[Node], force: bool = False) -> list[Phase]:
    from installers.remove_plan import remove_nodes_phases  # its own module, built on this one
    return remove_nodes_phases(spec, nodes, force=force)


def _remove_nodes_notes(spec: ClusterSpec, nodes: list[Node], force: bool) -> list[str]:
    from installers.remove_plan import plan_notes
    return plan_notes(spec, nodes, force=force)


# The etcd_restore mode's planner and job builders (installers/restore_plan.py, built on this
# module lazily); its planner takes the snapshot's name: a build_plan keyword.
from installers.restore_plan import (etcd_restore_phases, etcd_restore_stage_job,  # noqa: E402,F401
                                     etcd_restore_start_job, etcd_restore_stop_job,
                                     etcd_restore_swap_job, etcd_restore_verify_job)


def _etcd_restore_plan(spec: ClusterSpec, nodes: list[Node], snapshot: str) -> list[Phase]:
    return etcd_restore_phases(spec, nodes, snapshot)


PLANNERS: dict[str, Callable[..., list[Phase]]] = {
    "all_in_one": _all_in_one_plan,
    "ha": _ha_plan,
    "add_nodes": _add_nodes_plan,
    "reset": _reset_plan,
    "preflight": _preflight_plan,
    "health": _health_plan,
    "upgrade": upgrade_plan,
    "etcd_backup": _etcd_backup_plan,
    "remove_nodes": _remove_nodes_plan,
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
    max_unavailable for upgrade, force for remove_nodes, snapshot for etcd_restore)."""
    problems = validate_for_mode(spec, mode, nodes, options)
    if problems:
        raise SpecError(problems)
    force = bool(options.get(modes.FORCE_PARAM))
    given = {k: v for k, v in options.items() if v is not None and k != modes.FORCE_PARAM}
    if modes.get(mode).takes_force:
        given[modes.FORCE_PARAM] = force
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
