"""The plan: mode -> ordered phases -> steps -> one job per host. Pure functions, no I/O
(except reading the static scripts for hashing when asked).

Scripts, env names and files follow the table in docs/architecture.md §3. Jobs hold no command
line: the runner's command line is constant and every input travels as KAI_* env or a file.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Mapping

from installers import kubeadm, render, scripts_store
from installers.backoff import capped_exponential
from installers import versions as V
from installers.spec import (ClusterSpec, KubeVipEndpoint, Node, SpecError, spec_warnings,
                             validate_for_mode)

TOKEN_TTL = "1h"   # short-lived join tokens, one per operation

SECRET_JOIN_TOKEN = "KAI_JOIN_TOKEN"
SECRET_CA_CERT_HASH = "KAI_CA_CERT_HASH"
SECRET_CERTIFICATE_KEY = "KAI_CERTIFICATE_KEY"


DEFAULT_MAX_RETRY_DELAY_S = 60.0


@dataclass(frozen=True)
class StepPolicy:
    """How long a step may take before it fails. Every step ends in bounded time: a retrying step
    after (retries + 1) attempts of at most timeout_s with capped waits between them, a polling
    step (deadline_s set: verify, health) when its deadline passes."""

    retries: int            # extra attempts after the first
    retry_delay_s: float    # first backoff; doubles each retry…
    timeout_s: float        # per attempt, per host (a polling step: per look at the cluster)
    max_retry_delay_s: float = DEFAULT_MAX_RETRY_DELAY_S  # …up to this wait
    deadline_s: float | None = None  # polling steps: look until healthy or this long, no retries

    @property
    def polling(self) -> bool:
        return self.deadline_s is not None

    def retry_delays(self) -> list[float]:
        """The waits before each retry (installers.backoff: capped exponential)."""
        return capped_exponential(self.retry_delay_s, self.retries, self.max_retry_delay_s)

    def time_bound_s(self, hosts_in_sequence: int = 1) -> float:
        """The longest the step can take before it fails. A polling step's last look may start
        just before the deadline and is itself bounded by timeout_s."""
        if self.deadline_s is not None:
            return self.deadline_s + self.timeout_s
        attempts = self.retries + 1
        return attempts * self.timeout_s * max(1, hosts_in_sequence) + sum(self.retry_delays())


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
        for s in self.steps():
            if s.name == name:
                return s
        raise KeyError(name)

    def nodes_touched(self) -> set[str]:
        return {j.node for s in self.steps() for j in s.jobs}


DEFAULT_POLICIES: dict[str, StepPolicy] = {
    "facts": StepPolicy(1, 5, 30),
    "os_prep": StepPolicy(2, 5, 120),
    "runtime": StepPolicy(3, 10, 600),
    "kube_packages": StepPolicy(3, 10, 600),
    "kube_vip": StepPolicy(2, 5, 120),
    "kubeadm_init": StepPolicy(1, 30, 900),
    "join_credentials": StepPolicy(2, 5, 120),
    "join": StepPolicy(2, 30, 900),
    "kubeconfig": StepPolicy(2, 5, 60),
    "cni": StepPolicy(3, 10, 600),
    "storage": StepPolicy(3, 10, 300),
    # Polling steps: no retries, a deadline. An install's verify waits for nodes to turn Ready
    # after the CNI is up; a scheduled health run must report a broken cluster quickly.
    "verify": StepPolicy(0, 0, 10, deadline_s=600),
    "health": StepPolicy(0, 0, 10, deadline_s=120),
    "reset": StepPolicy(1, 10, 600),
}


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

def _job(node: Node, script: str, env: dict[str, str] | None = None,
         files: dict[str, str] | None = None, secret_env: tuple[str, ...] = ()) -> HostJob:
    return HostJob(node=node.name, address=node.address, script=script, env=dict(env or {}),
                   files=dict(files or {}), secret_env=secret_env)


def facts_job(spec: ClusterSpec, node: Node) -> HostJob:
    return _job(node, "facts.sh", {
        "KAI_MODULES": " ".join(V.REQUIRED_MODULES),
        "KAI_BINARIES": " ".join(V.REQUIRED_BINARIES + V.OPTIONAL_BINARIES),
        "KAI_PORTS": " ".join(str(p) for p in V.ports_for(node.roles, spec.networking.cni)),
    })


def os_prep_job(spec: ClusterSpec, node: Node) -> HostJob:
    return _job(node, "os-prep.sh",
                {"KAI_NODE_NAME": node.name, "KAI_MODULES": " ".join(V.REQUIRED_MODULES)},
                render.os_prep_files(spec))


def runtime_job(spec: ClusterSpec, node: Node) -> HostJob:
    c = spec.runtime.containerd
    urls = V.download_urls(spec)
    # "mirror" is a release install whose URLs point at the mirror (contract: release|distro).
    source = "distro" if c.source == "distro" else "release"
    return _job(node, "containerd.sh", {
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
    return _job(node, "kube-packages.sh", {
        "KAI_K8S_MINOR": spec.kubernetes.minor,
        "KAI_K8S_VERSION": spec.kubernetes.full_version,
        "KAI_K8S_REPO": V.download_urls(spec).k8s_repo,
        "KAI_DOWNLOAD_PROXY": render.download_proxy(spec),
    }, files)


def kube_vip_job(spec: ClusterSpec, node: Node, phase: str) -> HostJob:
    return _job(node, "kube-vip.sh", {"KAI_KUBE_VIP_PHASE": phase},
                {"kube-vip.yaml": render.kube_vip_manifest(spec, phase)})


def kubeadm_init_job(spec: ClusterSpec, node: Node, *, all_in_one: bool, upload_certs: bool) -> HostJob:
    return _job(node, "kubeadm-init.sh",
                {"KAI_NODE_NAME": node.name, "KAI_UPLOAD_CERTS": "1" if upload_certs else "0"},
                {"kubeadm.yaml": kubeadm.render_init(spec, node, all_in_one=all_in_one)})


def join_credentials_job(spec: ClusterSpec, node: Node, *, need_cert_key: bool) -> HostJob:
    return _job(node, "join-credentials.sh",
                {"KAI_TOKEN_TTL": TOKEN_TTL, "KAI_NEED_CERT_KEY": "1" if need_cert_key else "0"})


def join_job(spec: ClusterSpec, node: Node) -> HostJob:
    secrets = (SECRET_JOIN_TOKEN, SECRET_CA_CERT_HASH)
    if node.is_control_plane:
        secrets += (SECRET_CERTIFICATE_KEY,)
    return _job(node, "kubeadm-join.sh",
                {"KAI_NODE_NAME": node.name,
                 "KAI_CONTROL_PLANE": "1" if node.is_control_plane else "0"},
                {"kubeadm-join.yaml": kubeadm.render_join(spec, node)}, secrets)


def kubeconfig_job(spec: ClusterSpec, node: Node) -> HostJob:
    return _job(node, "kubeconfig.sh")


def cni_job(spec: ClusterSpec, node: Node) -> HostJob:
    cni = V.CNIS[spec.networking.cni]
    return _job(node, "cni.sh", {
        "KAI_CNI": cni.name,
        "KAI_CNI_VERSION": cni.version,
        "KAI_CNI_MANIFEST_URL": V.download_urls(spec).cni_manifest,
        "KAI_CNI_MANIFEST_SHA256": cni.sha256 or "",
        "KAI_POD_CIDR": spec.networking.pod_cidr,
        "KAI_DOWNLOAD_PROXY": render.download_proxy(spec),
    })


def storage_job(spec: ClusterSpec, node: Node) -> HostJob:
    return _job(node, "storage.sh",
                {"KAI_LOCAL_PATH_URL": V.download_urls(spec).local_path,
                 "KAI_LOCAL_PATH_SHA256": V.LOCAL_PATH_SHA256 or ""},
                {"storageclass.yaml": render.default_storage_class()})


def reset_job(spec: ClusterSpec, node: Node, *, remove_packages: bool = False) -> HostJob:
    return _job(node, "reset.sh", {"KAI_RESET_PACKAGES": "1" if remove_packages else "0"})


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
    return Phase("addons", "Cluster add-ons", tuple(steps))


def _verify_phase(spec: ClusterSpec, kind: str = "verify") -> Phase:
    """The controller-side look at the cluster; kind "health" (the health mode) has its own,
    shorter default deadline, overridable apart from an install's verify."""
    return Phase("verify", "Verify the cluster",
                 (_step(spec, "verify", kind,
                        "API reachable through the endpoint, nodes Ready, system pods running", []),))


def build_plan(spec: ClusterSpec, mode: str, nodes: list[str] | None = None) -> Plan:
    """The plan of a mode; raises SpecError when the spec does not suit the mode."""
    problems = validate_for_mode(spec, mode, nodes)
    if problems:
        raise SpecError(problems)
    warnings = list(spec_warnings(spec))
    cps = spec.control_planes()
    first = cps[0]
    phases: list[Phase]
    if mode == "preflight":
        phases = [_preflight_phase(spec, spec.nodes)]
    elif mode == "all_in_one":
        phases = [_preflight_phase(spec, [first]), _prepare_phase(spec, [first]),
                  _control_plane_phase(spec, first, all_in_one=True, upload_certs=False),
                  _kubeconfig_phase(spec, first), _addons_phase(spec, first), _verify_phase(spec)]
    elif mode == "ha":
        others = [n for n in spec.nodes if n.name != first.name]
        # control planes first so etcd is whole before workers arrive
        others.sort(key=lambda n: not n.is_control_plane)
        phases = [_preflight_phase(spec, spec.nodes), _prepare_phase(spec, spec.nodes),
                  _control_plane_phase(spec, first, all_in_one=False, upload_certs=True)]
        if others:
            phases.append(_join_phase(spec, first, others))
        phases += [_kubeconfig_phase(spec, first), _addons_phase(spec, first), _verify_phase(spec)]
    elif mode == "add_nodes":
        new = [spec.node(n) for n in nodes or []]
        new.sort(key=lambda n: not n.is_control_plane)
        phases = [_preflight_phase(spec, new), _prepare_phase(spec, new),
                  _join_phase(spec, first, new), _kubeconfig_phase(spec, first), _verify_phase(spec)]
        warnings.append("add_nodes: existing nodes' /etc/hosts blocks are not updated "
                        "(nothing else is touched)")
    elif mode == "health":  # read-only: a fresh admin kubeconfig, then look through the API
        phases = [_kubeconfig_phase(spec, first), _verify_phase(spec, kind="health")]
    elif mode == "reset":
        workers = spec.workers()
        steps = []
        if workers:
            steps.append(_step(spec, "reset-workers", "reset", "kubeadm reset on the workers",
                               [reset_job(spec, n) for n in workers]))
        steps.append(_step(spec, "reset-control-planes", "reset", "kubeadm reset on the control planes",
                           [reset_job(spec, n) for n in cps]))
        phases = [Phase("reset", "Reset the nodes (workers first)", tuple(steps))]
    else:  # validate_for_mode already refused unknown modes
        raise SpecError([f"mode: unknown mode {mode!r}"])
    return Plan(mode=mode, cluster=spec.name, phases=tuple(phases), warnings=tuple(warnings))


def plan_to_dict(plan: Plan) -> dict:
    return dataclasses.asdict(plan)
