"""The step kinds: one table, kind → Prefect task → node script → default policy.

Every plan step has a kind (installers/plan.py `Step.kind`). The kind says which task in tasks/
runs the step (a flow calls that task with the step), which static script that task runs on each
of the step's hosts (installers/scripts/, built by `<kind>_job` in the planner module of the mode
that runs the kind), and how long a step of the kind may take by default (the spec's `steps:` block overrides it per kind). The spec's list of
kinds, the plan's default policies, `kai plan`'s "script:" lines and the "Where is X" table of
docs/architecture.md all come from here; tests/test_step_kinds.py checks each task's docstring names
its script and the doc's table matches this one.

Prefect-free: the task is named by its entrypoint, not imported.
"""

from __future__ import annotations

from dataclasses import dataclass

from installers.backoff import capped_exponential

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
class StepKind:
    name: str
    task: str                # the Prefect task running a step of this kind: "tasks/<module>.py:<function>"
    script: str | None       # what that task runs on each host (installers/scripts/); None: controller only
    policy: StepPolicy       # the default; the spec's `steps.<kind>` overrides it
    note: str = ""           # where else the kind's logic lives (shown in docs/architecture.md)
    planner: str = "plan.py"  # the module under installers/ holding the kind's job builder: the
                              # planner of the mode that runs the kind (day-2 modes have their own)

    @property
    def polling(self) -> bool:
        """Looks at the cluster until it is healthy or the deadline passes (no retries)."""
        return self.policy.polling

    @property
    def job(self) -> str | None:
        """The builder of one host's job for this kind, in `job_module`."""
        return f"{self.name}_job" if self.script else None

    @property
    def job_module(self) -> str:
        """The planner module holding `job`, importable ("installers.plan_upgrade")."""
        return "installers." + self.planner.removesuffix(".py")

    @property
    def task_module(self) -> str:
        return self.task.partition(":")[0].removesuffix(".py").replace("/", ".")

    @property
    def task_function(self) -> str:
        return self.task.partition(":")[2]


UPGRADE_PLANNER = "plan_upgrade.py"
REMOVE_PLANNER = "remove_plan.py"
CERTS_PLANNER = "certs_plan.py"
RESTORE_PLANNER = "restore_plan.py"

STEP_KINDS: tuple[StepKind, ...] = (
    StepKind("facts", "tasks/preflight.py:preflight", "facts.sh", StepPolicy(1, 5, 30),
             note="judged in `installers/preflight.py`"),
    StepKind("os_prep", "tasks/node_tasks.py:os_prep", "os-prep.sh", StepPolicy(2, 5, 120)),
    StepKind("runtime", "tasks/node_tasks.py:runtime", "containerd.sh", StepPolicy(3, 10, 600)),
    StepKind("kube_packages", "tasks/node_tasks.py:kube_packages", "kube-packages.sh",
             StepPolicy(3, 10, 600)),
    StepKind("kube_vip", "tasks/node_tasks.py:kube_vip", "kube-vip.sh", StepPolicy(2, 5, 120)),
    StepKind("kubeadm_init", "tasks/node_tasks.py:kubeadm_init", "kubeadm-init.sh",
             StepPolicy(1, 30, 900)),
    StepKind("join_credentials", "tasks/join.py:join_credentials", "join-credentials.sh",
             StepPolicy(2, 5, 120)),
    StepKind("join", "tasks/join.py:join", "kubeadm-join.sh", StepPolicy(2, 30, 900)),
    StepKind("kubeconfig", "tasks/kubeconfig.py:kubeconfig", "kubeconfig.sh", StepPolicy(2, 5, 60)),
    StepKind("cni", "tasks/node_tasks.py:cni", "cni.sh", StepPolicy(3, 10, 600)),
    StepKind("storage", "tasks/node_tasks.py:storage", "storage.sh", StepPolicy(3, 10, 300)),
    StepKind("monitoring", "tasks/addons.py:monitoring", "monitoring.sh", StepPolicy(2, 10, 900)),
    # Polling steps: no retries, a deadline. An install's verify waits for nodes to turn Ready
    # after the CNI is up; a scheduled health run must report a broken cluster quickly.
    StepKind("verify", "tasks/verify.py:verify", None, StepPolicy(0, 0, 10, deadline_s=600),
             note="polls `installers/cluster_check.py`"),
    StepKind("health", "tasks/verify.py:verify", None, StepPolicy(0, 0, 10, deadline_s=120),
             note="the health mode's verify, its own deadline"),
    # health's read of each node's binaries (kubeadm is not in the Node object): one attempt, an
    # unreachable node is a warning (tasks/versions.py), so no retry waits for it
    StepKind("node_versions", "tasks/versions.py:node_versions", "node-versions.sh", StepPolicy(0, 0, 30),
             note="compared with the spec in `installers/cluster_check.py` (version_drift)"),
    StepKind("reset", "tasks/node_tasks.py:reset", "reset.sh", StepPolicy(1, 10, 600)),
    # The upgrade mode (flows/upgrade.py, installers/plan_upgrade.py).
    StepKind("upgrade_facts", "tasks/upgrade.py:upgrade_preflight", "upgrade-facts.sh",
             StepPolicy(1, 5, 60), note="judged with the API's view in `installers/upgrade_checks.py`",
             planner=UPGRADE_PLANNER),
    StepKind("upgrade_node", "tasks/upgrade.py:upgrade_node", "upgrade-node.sh",
             StepPolicy(1, 20, 900), planner=UPGRADE_PLANNER),
    # A drain waits for PodDisruptionBudgets: kubectl's --timeout is this timeout less a margin
    # (installers/plan_upgrade.py), so the error names the pod that blocked it.
    StepKind("drain", "tasks/upgrade.py:drain", "upgrade-drain.sh", StepPolicy(1, 10, 330),
             planner=UPGRADE_PLANNER),
    StepKind("uncordon", "tasks/upgrade.py:uncordon", "upgrade-uncordon.sh", StepPolicy(2, 5, 300),
             planner=UPGRADE_PLANNER),
    StepKind("upgrade_report", "tasks/upgrade.py:upgrade_report", None, StepPolicy(1, 5, 60),
             note="each node's version before/after, nodes left cordoned"),
    StepKind("etcd_backup", "tasks/etcd_backup.py:etcd_backup", "etcd-backup.sh", StepPolicy(2, 10, 300),
             note="stored by `installers/etcd_backups.py`"),
    # remove_nodes (installers/remove_plan.py). A drain waits for PodDisruptionBudgets: its
    # kubectl --timeout is the step's timeout less a margin, so the step fails with kubectl's
    # error naming the blocking pod rather than being killed.
    StepKind("quorum_check", "tasks/remove.py:quorum_check", None, StepPolicy(2, 5, 30),
             note="the rules: `installers/removal.py`"),
    StepKind("reachable", "tasks/remove.py:reachable", "remove-reachable.sh", StepPolicy(1, 5, 30),
             planner=REMOVE_PLANNER),
    StepKind("cordon", "tasks/remove.py:cordon", "remove-cordon.sh", StepPolicy(2, 5, 120),
             planner=REMOVE_PLANNER),
    StepKind("remove_drain", "tasks/remove.py:drain", "remove-drain.sh", StepPolicy(1, 10, 330),
             planner=REMOVE_PLANNER),
    StepKind("kube_vip_leave", "tasks/remove.py:kube_vip_leave", "remove-kube-vip.sh",
             StepPolicy(2, 5, 120), planner=REMOVE_PLANNER),
    StepKind("etcd_member_remove", "tasks/remove.py:etcd_member_remove", "remove-etcd-member.sh",
             StepPolicy(2, 10, 120), planner=REMOVE_PLANNER),
    StepKind("delete_node", "tasks/remove.py:delete_node", "remove-delete-node.sh",
             StepPolicy(2, 5, 120), planner=REMOVE_PLANNER),
    StepKind("hosts_block", "tasks/remove.py:hosts_block", "hosts-block.sh", StepPolicy(2, 5, 60),
             planner=REMOVE_PLANNER),
    StepKind("verify_removal", "tasks/remove.py:verify_removal", None,
             StepPolicy(0, 0, 10, deadline_s=300), note="polls `installers/cluster_check.py`"),
    # certs (installers/certs_plan.py). A renewal restarts the node's static pods and waits for
    # each (certs_plan.POD_TIMEOUT_S to stop, as long to come back): its timeout covers that.
    StepKind("certs_check", "tasks/certs.py:certs_check", "certs-check.sh", StepPolicy(1, 5, 60),
             note="judged in `installers/certs.py`", planner=CERTS_PLANNER),
    StepKind("certs_renew", "tasks/certs.py:certs_renew", "certs-renew.sh", StepPolicy(1, 10, 600),
             planner=CERTS_PLANNER),
    # etcd_restore (installers/restore_plan.py): one script, a part per step, each attempt
    # idempotent. stop and start wait inside (their waits end before the timeout, so the error
    # says what never happened).
    StepKind("restore_snapshot", "tasks/etcd_restore.py:restore_snapshot", None, StepPolicy(0, 0, 60),
             note="the snapshot on the controller: `installers/etcd_backups.py`"),
    StepKind("etcd_restore_stage", "tasks/etcd_restore.py:etcd_restore_stage", "etcd-restore.sh",
             StepPolicy(1, 10, 600), planner=RESTORE_PLANNER),
    StepKind("etcd_restore_stop", "tasks/etcd_restore.py:etcd_restore_stop", "etcd-restore.sh",
             StepPolicy(1, 5, 180), planner=RESTORE_PLANNER),
    StepKind("etcd_restore_swap", "tasks/etcd_restore.py:etcd_restore_swap", "etcd-restore.sh",
             StepPolicy(1, 5, 120), planner=RESTORE_PLANNER),
    StepKind("etcd_restore_start", "tasks/etcd_restore.py:etcd_restore_start", "etcd-restore.sh",
             StepPolicy(1, 5, 300), planner=RESTORE_PLANNER),
    StepKind("etcd_restore_verify", "tasks/etcd_restore.py:etcd_restore_verify", "etcd-restore.sh",
             StepPolicy(1, 5, 180), planner=RESTORE_PLANNER),
)

_BY_NAME = {kind.name: kind for kind in STEP_KINDS}


def names() -> tuple[str, ...]:
    return tuple(_BY_NAME)


def get(name: str) -> StepKind:
    return _BY_NAME[name]


def script_of(kind: str) -> str:
    """The node script of a host-side kind (a plan job of a controller-only kind is a bug)."""
    script = _BY_NAME[kind].script
    if script is None:
        raise ValueError(f"internal: step kind {kind} runs on the controller, it has no node script")
    return script


def where_is_x_rows() -> list[str]:
    """The "Where is X" table of docs/architecture.md (a test keeps the doc equal to this)."""
    rows = ["| step kind | task (`tasks/`) | plan job (`installers/`) | node script (`installers/scripts/`) |",
            "|---|---|---|---|"]
    for k in STEP_KINDS:
        module = k.task.partition(":")[0].removeprefix("tasks/")
        note = f" ({k.note})" if k.note else ""
        job = f"`{k.planner}` `{k.job}`" if k.job else "— (controller only)"
        script = f"`{k.script}`" if k.script else "—"
        rows.append(f"| {k.name} | `{module}` `{k.task_function}`{note} | {job} | {script} |")
    return rows
