"""`kai` command line. One small function per subcommand; each registers itself with `@command`
(deployments/cli_commands.py); the commands that run things are in deployments/cli_runs.py.

Commands that only read a spec (schema, init, plan) import no Prefect and contact nothing.
Exit codes: 0 ok, 2 invalid spec or arguments (every problem on stderr, one per line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from installers import modes
from deployments.cli_commands import (COMMANDS, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK,
                                      command)


def _problems_to_stderr(problems: list[str]) -> int:
    for problem in problems:
        print(problem, file=sys.stderr)
    return EXIT_INVALID


# --- schema ------------------------------------------------------------------------------------

def _schema_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", help="write to this file instead of stdout")


@command("schema", "print the JSON Schema of the cluster spec", _schema_args)
def cmd_schema(args: argparse.Namespace) -> int:
    from installers.spec import spec_json_schema
    text = json.dumps(spec_json_schema(), indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


# --- init --------------------------------------------------------------------------------------

def _init_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=modes.with_aliases(modes.new_cluster_names()),
                   default="all_in_one", metavar="MODE",
                   help=f"{' | '.join(modes.new_cluster_names())} (aliases accepted)")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")


@command("init", "write a commented sample cluster spec", _init_args)
def cmd_init(args: argparse.Namespace) -> int:
    from installers.samples import sample_spec
    args.mode = modes.canonical_mode(args.mode)
    text = sample_spec(args.mode)
    if args.output:
        out = Path(args.output)
        if out.exists() and not args.force:
            print(f"{out}: exists (use --force to overwrite)", file=sys.stderr)
            return EXIT_INVALID
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out} ({args.mode}); check it with: kai plan {out} --mode {args.mode}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


# --- plan --------------------------------------------------------------------------------------

def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="cluster spec (YAML)")
    p.add_argument("--mode", default=None,
                   help=f"{' | '.join(modes.planned_names())} (aliases accepted; "
                        f"default: {modes.DEFAULT_RULE})")
    p.add_argument("--nodes", default=None, help="comma-separated node names (add_nodes, remove_nodes)")
    p.add_argument("--to", default=None, help="upgrade: the Kubernetes version to move to (1.37)")
    p.add_argument("--max-unavailable", type=int, default=None,
                   help="upgrade: workers upgraded at once (default 1)")
    p.add_argument("--force", action="store_true",
                   help="remove_nodes: the nodes are dead (no drain, no reset, never contacted)")
    p.add_argument("--renew", action="store_true", help="certs: renew the certificates too")
    p.add_argument("--snapshot", default=None,
                   help="etcd_restore: the stored snapshot's file name (no confirmation needed to plan)")
    p.add_argument("--scripts", action="store_true",
                   help="also show each job's script, env inputs and rendered files")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


@command("plan", "print what a mode would do, host by host (contacts nothing)", _plan_args)
def cmd_plan(args: argparse.Namespace) -> int:
    from installers.plan import build_plan, plan_to_dict
    from installers.spec import SpecError
    from installers.spec_problems import collect_problems

    try:
        spec, problems = collect_problems(args.spec)
    except SpecError as exc:
        return _problems_to_stderr(exc.problems)
    if problems or spec is None:
        return _problems_to_stderr(problems)
    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()] if args.nodes else None
    try:
        mode = modes.canonical_mode(args.mode) if args.mode else modes.default_mode(spec, nodes)
        options = {modes.TARGET_PARAM: args.to, modes.MAX_UNAVAILABLE_PARAM: args.max_unavailable,
                   modes.FORCE_PARAM: args.force, modes.RENEW_PARAM: args.renew,
                   modes.SNAPSHOT_PARAM: args.snapshot}
        plan = build_plan(spec, mode, nodes=nodes, **options)
    except SpecError as exc:
        return _problems_to_stderr(exc.problems)
    if args.json:
        print(json.dumps(plan_to_dict(plan), indent=2))
    else:
        sys.stdout.write(format_plan(plan, scripts=args.scripts))
    return EXIT_OK


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _waits(delays: list[float]) -> str:
    """Retry waits with repeats folded: '10s, 20s, 40s, 60s ×17'."""
    parts: list[str] = []
    i = 0
    while i < len(delays):
        j = i
        while j < len(delays) and delays[j] == delays[i]:
            j += 1
        parts.append(_seconds(delays[i]) + (f" ×{j - i}" if j - i > 1 else ""))
        i = j
    return ", ".join(parts)


def format_policy(step) -> str:
    """The step's retry schedule or deadline, and the longest it can take before it fails."""
    from installers.cluster_poll import POLL_S

    pol = step.policy
    order = "parallel" if step.parallel else "one host at a time"
    bound = f"fails within {_seconds(step.time_bound_s())}"
    if pol.polling:
        return (f"policy: polls every {_seconds(POLL_S)} until deadline={_seconds(pol.deadline_s)}, "
                f"timeout={_seconds(pol.timeout_s)} per look, no retries; {bound}")
    waits = f"waits {_waits(pol.retry_delays())}" if pol.retries else "no waits"
    return (f"policy: retries={pol.retries} retry_delay={_seconds(pol.retry_delay_s)} "
            f"max_retry_delay={_seconds(pol.max_retry_delay_s)} timeout={_seconds(pol.timeout_s)} "
            f"({order}); {waits}; {bound}")


def format_runs(step) -> str:
    """Which task runs the step and which script it runs on the hosts (installers/step_kinds.py)."""
    from installers import step_kinds

    kind = step_kinds.get(step.kind)
    return f"runs: {kind.script or 'on the controller'} (task {kind.task})"


def format_plan(plan, *, scripts: bool = False) -> str:
    from installers.plan import read_script

    lines = [f"kai plan: mode {plan.mode}, cluster {plan.cluster}"]
    for warning in plan.warnings:
        lines.append(f"  warning: {warning}")
    for i, phase in enumerate(plan.phases, 1):
        lines.append("")
        lines.append(f"{i}. {phase.name} — {phase.title}")
        for step in phase.steps:
            lines.append(f"   - {step.name} [{step.kind}] {step.title}")
            lines.append(f"     {format_runs(step)}")
            lines.append(f"     {format_policy(step)}")
            if not step.jobs:
                lines.append("     hosts: controller (no host script)")
                continue
            lines.append("     hosts: " + ", ".join(f"{j.node} ({j.address})" for j in step.jobs))
            if scripts:
                for job in step.jobs:
                    present = read_script(job.script) is not None
                    lines.append(f"     > {job.node}: {job.script}"
                                 + ("" if present else "  (script not written yet)"))
                    for key in sorted(job.env):
                        lines.append(f"         env {key}={job.env[key]!r}")
                    for key in job.secret_env:
                        lines.append(f"         env {key}=<secret, supplied at run time>")
                    for name in sorted(job.files):
                        lines.append(f"         file {name}:")
                        lines.extend(f"           | {line}" for line in job.files[name].splitlines())
    lines.append("")
    return "\n".join(lines)


# hosts, install, status, logs, cancel, kubeconfig, reset, serve: registered when imported
from deployments import cli_runs  # noqa: E402,F401
from deployments import cli_schedules  # noqa: E402,F401  (schedule, alerts)
from deployments import cli_upgrade  # noqa: E402,F401  (upgrade)
from deployments import cli_remove  # noqa: E402,F401  (remove)
from deployments import cli_certs  # noqa: E402,F401  (certs)
from deployments import cli_restore  # noqa: E402,F401  (restore)


# --- entry point -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kai", description="kubeadm cluster installer on Prefect")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (configure, run) in COMMANDS.items():
        p = sub.add_parser(name, help=getattr(run, "help", None))
        configure(p)
        p.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args)


def run_command(args: argparse.Namespace) -> int:
    """Run a subcommand; whatever escapes it becomes one line per problem and a non-zero exit,
    never a traceback (KAI_DEBUG=1 shows the traceback of an unexpected error)."""
    from installers.spec_loading import SpecError, one_line

    try:
        return args.func(args)
    except SpecError as exc:
        return _problems_to_stderr([one_line(p) for p in exc.problems])
    except KeyboardInterrupt:
        print("kai: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # e.g. -o into a missing directory, a full disk
        where = f"{exc.filename}: " if exc.filename else ""
        print(one_line(f"kai: {where}{exc.strerror or exc}"), file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - the user gets one line, not a traceback
        if os.environ.get("KAI_DEBUG"):
            raise
        print(one_line(f"kai: {args.command} failed: {type(exc).__name__}: {' '.join(str(exc).split())}"),
              file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
