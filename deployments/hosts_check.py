"""Check hosts without installing anything: reachable over SSH, host key verified, what system, and
the preflight findings — the old SSH manager's job. `kai hosts check` (deployments/cli_runs.py)
and `POST /api/v1/hosts/check` (deployments/api.py) both call check_hosts.

Each host gets preflight's `facts` step (facts.sh, read-only) through the same runner as a run,
in parallel. A host whose key does not match is reported as not verified and nothing more is done
on it: the runner refuses the connection before authenticating, so no command ever reaches it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from installers.preflight import Finding
from installers.spec import ClusterSpec


@dataclass
class HostCheck:
    node: str
    address: str
    reachable: bool              # an SSH server answered (whether or not we then trusted it)
    host_key_verified: bool      # its key matched known_hosts or a pinned fingerprint
    error: str | None = None     # why the facts could not be gathered
    facts: dict[str, str] = field(default_factory=dict)   # facts.env
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not any(f.severity == "error" for f in self.findings)

    def system(self) -> str:
        f = self.facts
        return (f"{f.get('os_pretty', '?')} {f.get('arch', '?')}, {f.get('cpus', '?')} CPUs, "
                f"{f.get('mem_mb', '?')} MiB, {f.get('disk_free_mb', '?')} MiB free disk")

    def as_dict(self) -> dict:
        f = self.facts
        return {"node": self.node, "address": self.address, "reachable": self.reachable,
                "host_key_verified": self.host_key_verified, "ok": self.ok, "error": self.error,
                "os": f.get("os_pretty") or None, "os_id": f.get("os_id") or None,
                "arch": f.get("arch") or None, "cpus": _int(f.get("cpus")),
                "memory_mb": _int(f.get("mem_mb")), "disk_free_mb": _int(f.get("disk_free_mb")),
                "hostname": f.get("hostname") or None,
                "findings": [{"check": x.check, "severity": x.severity, "message": x.message}
                             for x in self.findings]}


def _int(value: str | None) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _failed_connect(exc: BaseException) -> tuple[bool, bool]:
    """(reachable, host key verified) for a host whose facts could not be gathered."""
    from installers.ssh import ConnectError, HostKeyError

    if isinstance(exc, HostKeyError):   # it answered, with a key we do not trust
        return True, False
    if isinstance(exc, ConnectError):
        # authentication comes after the key exchange: the key was verified
        return (True, True) if str(exc).startswith("authentication failed") else (False, False)
    return True, True                   # connected; facts.sh itself failed


def check_hosts(spec: ClusterSpec, mode: str,
                secrets: Mapping[str, str] | None = None) -> list[HostCheck]:
    """Every node of the spec checked, in the spec's order. The Secret blocks the spec names are
    read from the Prefect server (ValueError if one cannot be), or, with `secrets`, from that
    mapping (an old request's password or key, held in memory only)."""
    from installers import redact
    from installers.plan import build_plan
    from installers.preflight import evaluate, parse_facts_env
    from installers.ssh import Fleet
    from tasks.fanout import fan_out
    from tasks.node_step import build_remote_job
    from tasks.targets import load_secret_block, ssh_targets

    def in_memory(name: str) -> str:
        redact.REDACTOR.add(secrets[name])
        return secrets[name]

    step = build_plan(spec, "preflight").step("facts")
    fleet = Fleet(ssh_targets(spec, secret=in_memory if secrets is not None else load_secret_block))
    checks: dict[str, HostCheck] = {}
    try:
        def gather(job) -> dict[str, str]:
            result = fleet.get(job.node).run_job(build_remote_job(step, job, {}))
            if not result.ok:
                raise RuntimeError(f"facts.sh exit code {result.exit_code}: "
                                   + " | ".join(result.tail[-3:]))
            return parse_facts_env(result.outputs.get("facts.env", b"").decode())

        for job, outcome in zip(step.jobs, fan_out(gather, list(step.jobs))):
            if isinstance(outcome, BaseException):
                reachable, verified = _failed_connect(outcome)
                checks[job.node] = HostCheck(job.node, job.address, reachable, verified,
                                             error=f"{type(outcome).__name__}: {outcome}")
            else:
                checks[job.node] = HostCheck(job.node, job.address, True, True, facts=outcome)
    finally:
        fleet.close()
    facts = {name: c.facts for name, c in checks.items() if c.error is None}
    for finding in evaluate(spec, mode, facts):
        checks[finding.node].findings.append(finding)
    return [checks[job.node] for job in step.jobs]
