"""The modes kai runs: one table, read by everything that names a mode.

A mode is a Prefect flow in `flows/<name>.py` (function `<name>`), served as the deployment
`<name>/<name>`. From this table come: the spec's mode check and the plan (installers/spec.py,
installers/plan.py), flows.MODES and `kai serve`'s deployments, `GET /modes`, the names the REST
path `POST /{mode}/start` accepts (aliases included), the CLI's choices and help, and the default
mode. prefect.yaml is read by Prefect, so it stays YAML: tests/test_modes.py keeps its deployments
equal to this table.

Adding a mode (upgrade, remove_nodes, etcd_backup, …): a row here, its flow file, and its plan
builder in installers/plan.py (`PLANNERS`); tests/test_modes.py and tests/test_flow_order.py name
whatever is still missing (prefect.yaml entry, flow-order cases).

Prefect-free and model-free (a spec is only read, never imported): the API and the CLI read it
without importing any flow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from installers.spec_loading import SpecError

if TYPE_CHECKING:
    from installers.spec import ClusterSpec

# In a mode's `runs`: the install mode the run chose (flow parameter `mode`; auto: default_mode).
INSTALL = "<install>"
AUTO = "auto"
# The flow parameters some modes take, by name (control.start sends them, flows declare them).
NODES_PARAM = "nodes"            # takes_nodes: the names of the nodes to work on
INSTALL_PARAM = "mode"           # a mode whose `runs` holds INSTALL: which install mode (or auto)
LOCK_WAIT_PARAM = "lock_wait_s"  # locks_hosts: how long to wait for busy hosts
TARGET_PARAM = "to"              # takes_target: the Kubernetes version to move to ("1.37", "1.37.1")
MAX_UNAVAILABLE_PARAM = "max_unavailable"  # takes_target: workers drained at once (default 1)
FORCE_PARAM = "force"            # takes_force: remove dead nodes without their own steps
RENEW_PARAM = "renew"            # takes_renew: renew the certificates (certs), not only look
SNAPSHOT_PARAM = "snapshot"      # takes_snapshot: the stored etcd snapshot's file name
CONFIRM_PARAM = "confirm"        # takes_snapshot: the caller's explicit yes (the run replaces data)


@dataclass(frozen=True)
class Mode:
    name: str
    description: str
    aliases: tuple[str, ...] = ()   # also accepted (REST path, CLI): the old service's names, dashes
    new_cluster: bool = False       # builds a whole cluster on blank hosts: what rebuild and
                                    # `kai init` choose from
    installs: bool = False          # puts Kubernetes on hosts (`kai hosts check --mode` choices)
    takes_nodes: bool = False       # its flow takes NODES_PARAM
    takes_target: bool = False      # its flow takes TARGET_PARAM and MAX_UNAVAILABLE_PARAM
    takes_force: bool = False       # its flow takes FORCE_PARAM (and its plan depends on it)
    takes_renew: bool = False       # its flow takes RENEW_PARAM (and its plan depends on it)
    takes_snapshot: bool = False    # its flow takes SNAPSHOT_PARAM (its plan's input) and
                                    # CONFIRM_PARAM: a run is refused unless confirm is true
    locks_hosts: bool = True        # takes the host locks (read-only health does not)
    locks_only_with: str | None = None  # …and then only when this flag option is set (certs:
                                        # renew; its check alone is read-only and schedulable)
    runs: tuple[str, ...] = ()      # no plan of its own: these modes' plans, one after another
    # What `GET /modes` tells a person choosing a mode (the old service's keys): what the hosts
    # need beyond the common host requirements (deployments/legacy.py adds those from
    # installers/versions.py), what the mode does, and a rough wall time on real hosts.
    requirements: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    estimated_time: str = ""
    old_name: str | None = None     # the old service's name for it (one of the aliases): the key
                                    # `GET /modes` lists it under, as the old service did

    @property
    def flow(self) -> str:
        """The Prefect entrypoint (prefect.yaml, flows.MODES)."""
        return f"flows/{self.name}.py:{self.name}"

    @property
    def has_plan(self) -> bool:
        """build_plan knows the mode (others are composed of such modes' plans)."""
        return not self.runs


MODES: tuple[Mode, ...] = (
    Mode("all_in_one", "a single node that is control plane and worker at once",
         aliases=("all-in-one", "allinone"), new_cluster=True, installs=True,
         requirements=("one host",),
         features=("control plane and workloads on one node", "containerd runtime",
                   "CNI of your choice", "local-path storage class", "cluster verified at the end"),
         estimated_time="5-10 minutes"),
    Mode("ha", "three or more control planes behind kube-vip or a load balancer, plus workers",
         aliases=("ha_secure", "ha-secure"), new_cluster=True, installs=True,
         requirements=("three or more control-plane hosts (an odd number)", "any number of workers",
                       "a load balancer in front of port 6443, or a free address for kube-vip"),
         features=("stacked etcd on every control plane", "kube-vip or external load balancer",
                   "certificates shared through kubeadm's encrypted upload",
                   "workers joined in parallel", "cluster verified at the end"),
         estimated_time="15-25 minutes", old_name="ha_secure"),
    Mode("add_nodes", "join the named new nodes of the spec to its running cluster",
         aliases=("add-nodes",), installs=True, takes_nodes=True,
         requirements=("a cluster kai installed", "the new nodes in the spec, named in the request"),
         features=("joins workers or control planes", "the running nodes are left alone"),
         estimated_time="5-10 minutes"),
    Mode("reset", "kubeadm reset on every node and remove what kai installed",
         requirements=("the hosts of the spec",),
         features=("kubeadm reset", "removes kai's packages, files and done-markers"),
         estimated_time="1-3 minutes"),
    Mode("rebuild", "reset every node, then install again (all_in_one or ha)",
         runs=("reset", INSTALL),
         requirements=("the hosts of the spec",),
         features=("reset, then a fresh install", "schedulable"),
         estimated_time="10-25 minutes"),
    Mode("preflight", "check every host against the spec (read-only)",
         requirements=("the hosts of the spec",),
         features=("OS, CPU, memory, disk, ports, swap, clock and uniqueness checks",
                   "changes nothing"),
         estimated_time="under 1 minute"),
    Mode("health", "verify a running cluster (read-only)", locks_hosts=False,
         requirements=("a cluster kai installed",),
         features=("API, nodes, system pods, storage and certificates checked", "changes nothing",
                   "schedulable"),
         estimated_time="under 1 minute"),
    Mode("upgrade", "upgrade the running cluster one minor (or a patch): control planes first, "
         "then workers in batches", takes_target=True,
         requirements=("a cluster kai installed", "every node Ready", "the next minor (or a newer patch)"),
         features=("control planes one at a time, then workers in batches of max_unavailable",
                   "each node drained and uncordoned", "never breaks the version-skew policy",
                   "resumes where a failed or cancelled run stopped"),
         estimated_time="5-10 minutes per node"),
    # Read-only for the cluster like health (no host locks): a scheduled backup must not fail
    # because an install holds a node.
    Mode("etcd_backup", "snapshot etcd from a healthy control plane to the controller (keeps the newest N)",
         locks_hosts=False,
         requirements=("a cluster kai installed", "every etcd member healthy"),
         features=("etcdctl snapshot through the etcd container", "sha256 checked, stored 0600",
                   "keeps the newest N", "schedulable"),
         estimated_time="under 1 minute"),
    Mode("remove_nodes", "drain, delete and reset the named nodes of a running cluster "
         "(--force: dead nodes, without their own steps)",
         aliases=("remove-nodes", "remove"), takes_nodes=True, takes_force=True,
         requirements=("a cluster kai installed", "the nodes to remove named in the request",
                       "control planes left to keep etcd quorum"),
         features=("cordon, drain (PodDisruptionBudgets honoured), delete the Node, kubeadm reset",
                   "a control plane's etcd member removed", "the other nodes' /etc/hosts updated",
                   "--force for dead nodes"),
         estimated_time="1-3 minutes per node"),
    # A check (the default) only reads, so it takes no host locks and suits a schedule; --renew
    # changes the control planes and locks them.
    Mode("certs", "days left of every kubeadm certificate on the control planes; --renew: renew "
         "them one control plane at a time", takes_renew=True, locks_only_with=RENEW_PARAM,
         requirements=("a cluster kai installed", "every etcd member healthy (to renew)"),
         features=("days left per certificate per node (artifact and cluster_info)",
                   "alerts under 30 days", "renew: kubeadm certs renew all, static pods restarted, "
                   "admin kubeconfig refreshed", "schedulable (the check)"),
         estimated_time="under 1 minute; renew: 1-3 minutes per control plane"),
    # Destructive for the cluster's data: refused unless the caller confirms (`kai restore --yes`,
    # REST `confirm: true`); `kai plan --mode etcd_restore --snapshot NAME` shows it without.
    Mode("etcd_restore", "restore etcd on every control plane from a named snapshot (needs confirm)",
         aliases=("etcd-restore", "restore"), takes_snapshot=True,
         requirements=("a cluster kai installed", "a snapshot etcd_backup stored for this cluster",
                       "every control plane reachable", "an explicit confirmation"),
         features=("snapshot streamed to every control plane, sha256 checked on the node",
                   "etcd and the API server stopped everywhere, then restored with a new cluster token",
                   "the old data directory kept aside, named", "members and the cluster verified"),
         estimated_time="1-3 minutes"),
)

_BY_NAME = {m.name: m for m in MODES}
_CANONICAL = {**{m.name: m.name for m in MODES}, **{a: m.name for m in MODES for a in m.aliases}}

DEFAULT_RULE = "add_nodes when nodes are named, else all_in_one for one node, else ha"


def names() -> tuple[str, ...]:
    return tuple(_BY_NAME)


def get(name: str) -> Mode:
    """The mode of a canonical name (KeyError otherwise; see canonical_mode)."""
    return _BY_NAME[name]


def listed_name(mode: Mode) -> str:
    """The name `GET /modes` lists the mode under: the old service's, where it had one."""
    return mode.old_name or mode.name


def reported_name(requested: str) -> str:
    """The name a run started as `requested` answers to: the old service's name when the caller
    used it or another alias of the mode (an old client that starts `ha_secure` reads `ha_secure`
    back), else kai's. An unknown name raises SpecError."""
    mode = get(canonical_mode(requested))
    return mode.old_name if mode.old_name and requested != mode.name else mode.name


def accepted_names() -> tuple[str, ...]:
    """Every name a caller may use: the modes, then their aliases."""
    return tuple(_CANONICAL)


def with_aliases(selected: Sequence[str]) -> tuple[str, ...]:
    """The selected modes, each followed by its aliases: a CLI option's choices."""
    return tuple(name for mode in selected for name in (mode, *get(mode).aliases))


def planned_names() -> tuple[str, ...]:
    """Modes build_plan knows."""
    return tuple(m.name for m in MODES if m.has_plan)


def new_cluster_names() -> tuple[str, ...]:
    return tuple(m.name for m in MODES if m.new_cluster)


def hosts_check_modes() -> tuple[str, ...]:
    """What a hosts check can judge the hosts for (`kai hosts check --mode`, the REST API's
    hosts/check): an install mode's rules, or preflight's alone (any layout of nodes)."""
    return tuple(m.name for m in MODES if m.installs and m.has_plan) + ("preflight",)


def install_choices() -> tuple[str, ...]:
    """The install a rebuild runs after its reset: auto (default_mode) or a new-cluster mode."""
    return (AUTO,) + new_cluster_names()


def canonical_mode(name: str) -> str:
    """'all-in-one' → 'all_in_one', 'ha_secure' → 'ha'; an unknown name raises SpecError."""
    try:
        return _CANONICAL[name]
    except (KeyError, TypeError):
        aliases = [a for m in MODES for a in m.aliases]
        raise SpecError([f"mode: unknown mode {name!r} (known: {', '.join(names())}; "
                         f"aliases: {', '.join(aliases)})"]) from None


def default_mode(spec: ClusterSpec, nodes: Sequence[str] | None = None) -> str:
    """The mode when none is named: add_nodes when nodes are named, else all_in_one for a
    one-node spec, else ha."""
    if nodes:
        return "add_nodes"
    return "all_in_one" if len(spec.nodes) == 1 else "ha"


def install_mode(spec: ClusterSpec, choice: str = AUTO) -> str:
    """The install mode a rebuild runs: the choice, or default_mode's for auto."""
    return default_mode(spec) if choice == AUTO else choice


def plan_sequence(mode: str, spec: ClusterSpec, install: str = AUTO) -> tuple[str, ...]:
    """The planned modes a run of `mode` goes through, in order: the mode itself, or for a
    composed mode (rebuild) its parts — reset, then the install mode."""
    m = get(mode)
    if m.has_plan:
        return (m.name,)
    return tuple(install_mode(spec, install) if part == INSTALL else part for part in m.runs)


def flow_parameters(mode: str, spec_json: dict, nodes: Sequence[str] | None = None,
                    lock_wait_s: float | None = None, install: str = AUTO,
                    target: str | None = None, max_unavailable: int | None = None,
                    force: bool = False, renew: bool = False, snapshot: str | None = None,
                    confirm: bool = False) -> dict[str, Any]:
    """The parameters of a flow run of `mode` (only those its flow declares)."""
    m = get(mode)
    params: dict[str, Any] = {"spec": spec_json}
    if m.takes_nodes:
        params[NODES_PARAM] = list(nodes or [])
    if m.takes_target:
        params[TARGET_PARAM] = target
        if max_unavailable is not None:
            params[MAX_UNAVAILABLE_PARAM] = max_unavailable
    if m.takes_force:
        params[FORCE_PARAM] = bool(force)
    if m.takes_renew:
        params[RENEW_PARAM] = bool(renew)
    if m.takes_snapshot:
        params[SNAPSHOT_PARAM] = snapshot
        params[CONFIRM_PARAM] = bool(confirm)
    if INSTALL in m.runs:
        params[INSTALL_PARAM] = install
    if lock_wait_s is not None and m.locks_hosts:
        params[LOCK_WAIT_PARAM] = lock_wait_s
    return params


def nodes_param(mode: str, params: Mapping[str, Any]) -> list[str] | None:
    """The node names a run of `mode` was given (None for a mode that takes none)."""
    return params.get(NODES_PARAM) if get(mode).takes_nodes else None


def plan_options(mode: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The plan options a run of `mode` was given (build_plan's keywords): "to" and
    "max_unavailable" for a mode that takes a target, "force" for one that takes force, "renew"
    for certs, "snapshot" for one that takes a snapshot (never "confirm": it decides whether a
    run may start, not what it does); {} for the others."""
    m, options = get(mode), {}
    if m.takes_target:
        options.update({TARGET_PARAM: params.get(TARGET_PARAM),
                        MAX_UNAVAILABLE_PARAM: params.get(MAX_UNAVAILABLE_PARAM)})
    if m.takes_force:
        options[FORCE_PARAM] = bool(params.get(FORCE_PARAM))
    if m.takes_renew:
        options[RENEW_PARAM] = bool(params.get(RENEW_PARAM))
    if m.takes_snapshot:
        options[SNAPSHOT_PARAM] = params.get(SNAPSHOT_PARAM)
    return options


def run_locks_hosts(mode: str, options: Mapping[str, Any] | None = None) -> bool:
    """Whether a run of `mode` with these options takes the host locks: the mode's rule, and for
    a mode that locks only with an option (certs: renew) that option set."""
    m = get(mode)
    if not m.locks_hosts:
        return False
    return m.locks_only_with is None or bool((options or {}).get(m.locks_only_with))


def confirmation_problems(mode: str, confirm: bool) -> list[str]:
    """A mode that replaces the cluster's data starts only when the caller said yes."""
    if get(mode).takes_snapshot and confirm is not True:
        return [f"{CONFIRM_PARAM}: {mode} replaces the data of the running cluster with the snapshot's "
                f"(everything written since is lost); confirm it explicitly (kai restore --yes, "
                f"REST \"confirm\": true); `kai plan --mode {mode}` shows what it would do"]
    return []


def overview_rows() -> list[str]:
    """The modes table of docs/architecture.md (a test keeps the doc equal to this)."""
    rows = ["| mode | flow | plan | aliases | what |", "|---|---|---|---|---|"]
    for m in MODES:
        plan = "its own" if m.has_plan else ", then ".join(
            "the install mode's" if part == INSTALL else f"{part}'s" for part in m.runs)
        aliases = ", ".join(f"`{a}`" for a in m.aliases) or "—"
        rows.append(f"| {m.name} | `{m.flow}` | {plan} | {aliases} | {m.description} |")
    return rows
