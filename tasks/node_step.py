"""The one mechanism every node step uses: run a plan Step's script on each of its hosts.

A step is ONE Prefect task that fans out over its hosts (not one task per host × step): the
benchmarks in `benchmarks/` show per-(host, step) task runs cost the Prefect server ~50 ms CPU
each and fall minutes behind at 200 hosts, while a per-step task stays within a few percent of a
plain paramiko loop. Per-host visibility comes from host-prefixed log lines, a table artifact per
step with a row per host, and failure messages that name host, step and the real error output.

Host output reaches Prefect in batches (`HostLines`): all lines that arrive within half a second
become one log record. Each record costs the Prefect server about 0.6 ms of CPU, so a line per
record was 40 % of its CPU in a 200-host run; the UI still shows every line, with its host, live.

Retries are Prefect's (declared per step from the plan's policy). Hosts that already succeeded in
an earlier attempt of the same run are not run again; on a new run the node scripts' done-markers
make finished work a fast no-op — that is what makes resume after a failure or a kill safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.context import TaskRunContext

from installers.plan import HostJob, Step, job_hash
from installers.scripts_store import lib_text, script_text
from installers.ssh import HostKeyError, JobResult, RemoteJob
from tasks.context import current_run
from tasks.fanout import fan_out
from tasks.node_lock import KAI_LOCKED_EXIT

TAIL_LINES = 15
LOG_BATCH_S = 0.5  # host output is sent to Prefect at most this late
LOG_BATCH_MAX_LINES = 400  # and in records of at most this many lines


@dataclass
class HostOutcome:
    node: str
    address: str
    ok: bool
    duration_s: float
    attempt: int
    exit_code: int | None = None
    error: str = ""
    tail: list[str] = field(default_factory=list)
    skipped: bool = False  # already done earlier in this run
    retryable: bool = True


class HostLines:
    """Host output of one step as `[host] line` records, one per LOG_BATCH_S (see module doc)."""

    def __init__(self, logger, batch_s: float = LOG_BATCH_S, max_lines: int = LOG_BATCH_MAX_LINES):
        self._logger = logger
        self._max = max_lines
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_every, args=(batch_s,), daemon=True,
                                         name="kai-host-lines")
        self._flusher.start()

    def add(self, node: str, line: str) -> None:
        with self._lock:
            self._lines.append(f"[{node}] {line}")
            full = len(self._lines) >= self._max
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
        if lines:
            self._logger.info("\n".join(lines))

    def close(self) -> None:
        self._stop.set()
        self._flusher.join()
        self.flush()

    def _flush_every(self, batch_s: float) -> None:
        while not self._stop.wait(batch_s):
            self.flush()


class StepFailed(Exception):
    """A step failed on one or more hosts. The message names each host and its real error output."""

    def __init__(self, step: Step, failures: list[HostOutcome], total: int):
        self.step_name = step.name
        self.failures = failures
        self.retryable = all(f.retryable for f in failures)
        lines = [f"step '{step.name}' ({step.title}) failed on {len(failures)} of {total} host(s):"]
        for f in failures:
            lines.append(f"  {f.node} ({f.address}): {f.error}")
            lines.extend(f"    | {line}" for line in f.tail[-TAIL_LINES:])
        super().__init__("\n".join(lines))


def retry_unless_permanent(task, task_run, state) -> bool:
    """Prefect retry_condition_fn: host-key and authentication problems are never retried."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the failure decides; others follow the policy
        return getattr(exc, "retryable", True)
    return True


def run_node_step(
    step: Step,
    secret_env: Mapping[str, str] | None = None,
    on_result: Callable[[HostJob, JobResult], None] | None = None,
    run_files: Mapping[str, bytes] | None = None,
) -> list[HostOutcome]:
    """Run `step` on every host of its plan entry; raise StepFailed naming every failed host.
    `run_files`: files made at run time for every host (an etcd snapshot), sent beside the plan's
    own; like secrets, not part of the done-marker hash (put their checksum in the job's env)."""
    run = current_run()
    logger = get_run_logger()
    task_ctx = TaskRunContext.get()
    attempt = task_ctx.task_run.run_count if task_ctx else 1
    pending = [job for job in step.jobs if (step.name, job.node) not in run.done]
    skipped = [job for job in step.jobs if (step.name, job.node) in run.done]
    if attempt > 1:
        logger.info("%s: attempt %d on %d host(s) (%d already succeeded)",
                    step.name, attempt, len(pending), len(skipped))
    secrets = dict(secret_env or {})
    host_lines = HostLines(logger)

    def run_one(job: HostJob) -> HostOutcome:
        started = time.monotonic()
        try:
            conn = run.fleet.get(job.node)
            remote = build_remote_job(step, job, secrets,
                                      run.node_lock.env() if run.node_lock else None, run_files)
            if run.node_lock is not None:
                run.note_locked(job.node)  # the job takes the node's lock first thing
            result = conn.run_job(
                remote,
                on_line=lambda line: host_lines.add(job.node, line),
                cancel=run.cancel,
            )
        except HostKeyError as exc:  # never retried: a changed key needs a human
            return HostOutcome(job.node, job.address, False, time.monotonic() - started, attempt,
                               error=str(exc), retryable=False)
        except Exception as exc:  # noqa: BLE001 - connection problems become a per-host failure
            # ConnectError says whether a retry can help (a dropped link can, a refused login not)
            return HostOutcome(job.node, job.address, False, time.monotonic() - started, attempt,
                               error=f"{type(exc).__name__}: {exc}",
                               retryable=getattr(exc, "retryable", True))
        if on_result is not None and result.ok:
            on_result(job, result)
        outcome = HostOutcome(job.node, job.address, result.ok, result.duration_s, attempt,
                              exit_code=result.exit_code, tail=list(result.tail))
        if result.error:
            outcome.error = result.error
        elif result.exit_code == KAI_LOCKED_EXIT and run.node_lock is not None:
            # another kai installation's run holds the host (the output names it): waiting in a
            # retry would only delay the refusal
            outcome.error = "refused: the host is locked by another kai run (see its output)"
            outcome.retryable = False
        elif result.timed_out:
            outcome.error = f"timed out after {step.policy.timeout_s:.0f} s"
        elif result.cancelled:
            outcome.error = "cancelled"
        elif not result.ok:
            outcome.error = f"exit code {result.exit_code}"
        return outcome

    try:
        if step.parallel:
            raw = fan_out(run_one, pending, limit=run.parallelism, cancel=run.cancel)
        else:  # e.g. control-plane joins: one after another, stop at the first failure
            raw = []
            for job in pending:
                raw.append(run_one(job))
                if not raw[-1].ok:
                    break
    finally:
        host_lines.close()
    outcomes: list[HostOutcome] = []
    for job, item in zip(pending, raw):
        if isinstance(item, BaseException):
            item = HostOutcome(job.node, job.address, False, 0.0, attempt,
                               error=f"{type(item).__name__}: {item}")
        outcomes.append(item)
        if item.ok:
            run.done.add((step.name, job.node))
    outcomes += [HostOutcome(j.node, j.address, True, 0.0, attempt, skipped=True) for j in skipped]
    publish_step_table(step, outcomes)

    failures = [o for o in outcomes if not o.ok]
    if failures:
        for f in failures:
            logger.error("[%s] %s failed: %s", f.node, step.name, f.error)
        raise StepFailed(step, failures, len(step.jobs))
    logger.info("%s: ok on %d host(s)", step.name, len(outcomes))
    return outcomes


def build_remote_job(step: Step, job: HostJob, secrets: Mapping[str, str],
                     lock_env: Mapping[str, str] | None = None,
                     run_files: Mapping[str, bytes] | None = None) -> RemoteJob:
    script = script_text(job.script)
    lib = lib_text()
    env = dict(job.env)  # KAI_STEP comes from RemoteJob.step (installers/ssh/frame.py)
    env["KAI_STEP_HASH"] = job_hash(job, script, lib)
    # the node lock's inputs name this run: added after the hash, so a rerun still skips done work
    env.update(lock_env or {})
    missing = [name for name in job.secret_env if name not in secrets]
    if missing:
        raise RuntimeError(f"internal: step {step.name} needs secrets {missing} that were not produced")
    return RemoteJob(
        step=step.name,
        script=job.script,
        script_text=script,
        lib_text=lib,
        env=env,
        secret_env={name: secrets[name] for name in job.secret_env},
        files={**job.files, **(run_files or {})},
        timeout_s=step.policy.timeout_s,
    )


def publish_step_table(step: Step, outcomes: list[HostOutcome]) -> None:
    """One table artifact per step, one row per host: the per-host view in the Prefect UI."""
    rows = [
        {
            "host": o.node,
            "address": o.address,
            "status": "skipped (done)" if o.skipped else ("ok" if o.ok else "FAILED"),
            "attempt": o.attempt,
            "seconds": round(o.duration_s, 1),
            "exit": "" if o.exit_code is None else o.exit_code,
            "error": o.error if not o.ok else "",
            "last output": (o.tail[-1] if o.tail and not o.ok else ""),
        }
        for o in sorted(outcomes, key=lambda o: o.node)
    ]
    create_table_artifact(rows, key=f"step-{step.name}".lower().replace("_", "-"),
                          description=f"{step.title}: result per host")
