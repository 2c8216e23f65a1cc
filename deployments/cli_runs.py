"""`kai` subcommands that run things: hosts check, install, status, logs, cancel, kubeconfig, reset, serve.
(Their neighbours: upgrade in cli_upgrade.py, remove in cli_remove.py, schedule and alerts in
cli_schedules.py; each registers with deployments/cli_commands.py's `@command`.)

All but `kubeconfig` and `serve` talk to a Prefect server (`hosts check` only for a spec naming
Secret blocks), the one `installers.settings.resolve_settings` finds: PREFECT_API_URL from the
environment, else from ./.env, else the running `kai serve`'s (<state dir>/serve.json); never a
temporary one of Prefect's own. Output goes through rich's Console, which writes plain text (no
markup, no escape sequences) when stdout is not a terminal. Exit codes: 0 ok;
1 the run (or the check) failed, was cancelled, or is unknown; 2 invalid spec or arguments;
3 no Prefect server / mode not served. Every failure prints one line saying why.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from installers import modes
from deployments.cli_commands import EXIT_FAILED, EXIT_INVALID, EXIT_NO_SERVER, EXIT_OK, command


def _fail(code: int, message: str) -> int:
    print(f"kai: {message}", file=sys.stderr)
    return code


def _state_dir() -> Path:
    from installers.settings import resolve_settings
    return resolve_settings().state_path()


def _need_server() -> int | None:
    """Point Prefect at the server (before anything imports prefect); an exit code if there is none."""
    from installers.settings import NoPrefectServer, resolve_settings
    try:
        resolve_settings(need_prefect=True)
    except NoPrefectServer as exc:
        return _fail(EXIT_NO_SERVER, str(exc))
    return None


def _load(path: str):
    """(spec, None) or (None, exit code) with every problem on stderr."""
    from installers.spec import SpecError
    from installers.spec_problems import collect_problems

    try:
        spec, problems = collect_problems(Path(path))
    except SpecError as exc:
        problems, spec = exc.problems, None
    if problems or spec is None:
        for p in problems:
            print(p, file=sys.stderr)
        return None, _fail(EXIT_INVALID, f"{path}: invalid spec ({len(problems)} problem(s))")
    return spec, None


# --- hosts check -------------------------------------------------------------------------------

def _secret_blocks(spec) -> set[str]:
    """Every Prefect Secret block the spec names (`*_secret` fields, bastions and nodes included)."""
    found: set[str] = set()

    def walk(value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key.endswith("_secret") and isinstance(item, str) and item:
                    found.add(item)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(spec.model_dump(mode="json"))
    return found


def _spec_arg(p):
    p.add_argument("spec", help="cluster spec (YAML)")


def _id_arg(p):
    p.add_argument("id", help="run id")


def _hosts_args(p):
    p.add_argument("action", choices=["check"])
    _spec_arg(p)
    judged = modes.hosts_check_modes()
    p.add_argument("--mode", default=None, choices=modes.with_aliases(judged), metavar="MODE",
                   help=f"judge the hosts for {' | '.join(judged)} (preflight: any layout; "
                        f"aliases accepted; default: {modes.DEFAULT_RULE})")


@command("hosts", "SSH to every host (keys verified) and judge the preflight facts", _hosts_args)
def cmd_hosts(args: argparse.Namespace) -> int:
    from installers.spec import validate_for_mode

    spec, code = _load(args.spec)
    if spec is None:
        return code
    mode = modes.canonical_mode(args.mode) if args.mode else modes.default_mode(spec)
    problems = validate_for_mode(spec, mode)
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        return _fail(EXIT_INVALID, f"{args.spec}: not valid for {mode}")
    # Secret blocks live on the Prefect server: find it before any host is contacted, and before
    # anything imports Prefect (it reads PREFECT_API_URL once, when imported)
    blocks = _secret_blocks(spec)
    if blocks and (code := _need_server()) is not None:
        return code

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from deployments.hosts_check import check_hosts

    console = Console()
    try:
        checks = check_hosts(spec, mode)
    except ValueError as exc:  # Prefect: "Unable to find block document named …"
        return _fail(EXIT_FAILED, f"Secret blocks {', '.join(sorted(blocks))} on the Prefect server "
                                  f"at {os.environ.get('PREFECT_API_URL')}: {exc}")
    for check in checks:
        table = Table(title=f"{check.node} ({check.address})", title_justify="left")
        for col in ("check", "severity", "message"):
            table.add_column(col)
        if check.error is not None:
            what = "host key" if check.reachable and not check.host_key_verified else "connect"
            table.add_row(what, "[red]error[/]", Text(check.error))
        else:
            table.add_row("system", "info", Text(check.system()))
        for x in check.findings:
            color = "red" if x.severity == "error" else "yellow"
            table.add_row(x.check, f"[{color}]{x.severity}[/]", Text(x.message))
        if check.error is None and not check.findings:
            table.add_row("all", "[green]ok[/]", "every check passed")
        console.print(table)
    unreachable = [c for c in checks if not c.reachable]
    untrusted = [c for c in checks if c.reachable and not c.host_key_verified]
    findings = [x for c in checks for x in c.findings]
    errors = [x for x in findings if x.severity == "error"]
    if any(c.error for c in checks) or errors:
        return _fail(EXIT_FAILED, f"hosts check: {len(unreachable)} host(s) unreachable, "
                                  f"{len(untrusted)} host key(s) not verified, "
                                  f"{len(errors)} error(s)")
    print(f"hosts check: {len(checks)} host(s) ok ({len(findings)} warning(s))")
    return EXIT_OK


# --- install / reset: start and follow ---------------------------------------------------------

def _start_and_follow(spec_path: str, mode: str | None, nodes: list[str] | None, follow: bool,
                      *, refused: str | None = None, started: str = "", **params) -> int:
    """Start a run of `mode` (default: the spec's) and follow it unless detached. `params`: the
    mode's other flow parameters (force, to, max_unavailable), only those given are sent;
    `refused`: the one-line error when the spec does not suit the mode (default "not valid for
    <mode>"); `started`: said after "started <mode> run <id>"."""
    spec, code = _load(spec_path)
    if spec is None:
        return code
    if (code := _need_server()) is not None:
        return code
    from deployments import control
    from installers.spec import SpecError

    mode = modes.canonical_mode(mode) if mode else modes.default_mode(spec, nodes)
    given = {name: value for name, value in params.items() if value is not None and value is not False}
    try:
        run_id = control.start(mode, spec.model_dump(mode="json"), nodes=nodes, **given)
    except SpecError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        return _fail(EXIT_INVALID, f"{spec_path}: {refused or f'not valid for {mode}'}")
    except control.NotServed as exc:
        return _fail(EXIT_NO_SERVER, str(exc))
    print(f"started {mode} run {run_id}{started}")
    if not follow:
        return EXIT_OK
    return follow_run(run_id)


def follow_run(run_id: str) -> int:
    """Live progress + logs until the run is final. Ctrl-C asks whether to cancel it."""
    from rich.console import Console
    from rich.live import Live
    from rich.prompt import Confirm

    from deployments import control

    console = Console()
    offset = 0
    while True:
        try:
            with Live(console=console, refresh_per_second=4, transient=True) as live:
                while True:
                    st = control.status(run_id)
                    for entry in control.logs(run_id, limit=500, offset=offset):
                        offset += 1
                        _print_log_line(live.console, entry)
                    live.update(_progress_line(st))
                    if st["final"]:
                        break
                    time.sleep(1.0)
            break
        except KeyboardInterrupt:
            if Confirm.ask(f"cancel run {run_id}?", default=False):
                try:
                    control.cancel(run_id)
                    console.print("cancel requested; following until the run stops")
                except control.RunFinished:
                    pass
            else:
                console.print(f"the run goes on; follow it with: kai logs -f {run_id}")
                return EXIT_FAILED
    for entry in control.logs(run_id, limit=1000, offset=offset):  # lines that came late
        _print_log_line(console, entry)
    return _summary(st)


def _print_log_line(console, entry: dict) -> None:
    """One log line, its time dimmed on a terminal. A Text, not markup: a message may hold
    brackets, and rich drops the style (no escape sequences) when stdout is not a terminal.
    soft_wrap: a long line stays one line in a file or pipe instead of breaking at 80 columns."""
    from rich.text import Text
    line = Text.assemble((entry["timestamp"][11:19], "dim"), f" {entry['level']:<7} {entry['message']}")
    console.print(line, highlight=False, soft_wrap=True)


def _progress_line(st: dict):
    from rich.text import Text
    bar_width = 30
    filled = int(bar_width * st["percent"] / 100)
    return Text(f"[{'#' * filled}{'.' * (bar_width - filled)}] {st['percent']:5.1f}%  "
                f"{st['state']:<10} step {st['steps_done']}/{st['total_steps']} "
                f"{st['current_step'] or ''}  {st['duration_s'] or 0:.0f}s")


def _summary(st: dict) -> int:
    if st["state"] == "COMPLETED":
        info = st.get("cluster_info") or {}
        extra = f"; kubeconfig {info['kubeconfig_path']}" if info.get("kubeconfig_path") else ""
        print(f"{st['mode']} completed in {st['duration_s'] or 0:.0f} s{extra}")
        return EXIT_OK
    failure = st.get("failure") or {}
    where = f" at step {failure['step']}" if failure.get("step") else ""
    hosts = f" on {', '.join(failure['hosts'])}" if failure.get("hosts") else ""
    message = (failure.get("message") or "").splitlines()[0] if failure.get("message") else ""
    return _fail(EXIT_FAILED, f"{st['mode']} {st['state'].lower()}{where}{hosts}: {message}".rstrip(": "))


def _install_args(p):
    _spec_arg(p)
    p.add_argument("--mode", default=None,
                   help=f"{' | '.join(modes.names())} (aliases accepted; "
                        f"default: {modes.DEFAULT_RULE})")
    p.add_argument("--nodes", default=None, help="comma-separated node names (add_nodes)")
    p.add_argument("--detach", action="store_true", help="print the run id and return")


@command("install", "start an install and follow its progress and logs", _install_args)
def cmd_install(args: argparse.Namespace) -> int:
    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()] if args.nodes else None
    return _start_and_follow(args.spec, args.mode, nodes, not args.detach)


# --- status / logs / cancel --------------------------------------------------------------------

def _with_run(fn):
    def wrapper(args: argparse.Namespace) -> int:
        if (code := _need_server()) is not None:
            return code
        from deployments import control
        try:
            return fn(args)
        except control.UnknownRun as exc:
            return _fail(EXIT_FAILED, str(exc))
        except control.RunFinished as exc:
            return _fail(EXIT_FAILED, str(exc))
        except ValueError as exc:
            return _fail(EXIT_INVALID, str(exc))
    return wrapper


def _status_args(p):
    _id_arg(p)
    p.add_argument("--json", action="store_true")


@command("status", "show a run's state, steps and per-host results", _status_args)
@_with_run
def cmd_status(args: argparse.Namespace) -> int:
    from deployments import control
    st = control.status(args.id)
    if args.json:
        print(json.dumps(st, indent=2))
        return EXIT_OK
    print(f"{st['mode']} run {st['id']}: {st['state']}  {st['percent']}%  "
          f"step {st['steps_done']}/{st['total_steps']} {st['current_step'] or ''}  "
          f"{st['duration_s'] or 0:.0f}s")
    for step in st["steps"]:
        hosts = ", ".join(f"{h['host']}={h['status']}" for h in step["hosts"])
        print(f"  {step['state']:<10} {step['name']:<22} {step['duration_s'] or 0:6.1f}s  {hosts}")
    if st["failure"]:
        print(f"  error: {st['failure']['message']}")
    if st["cluster_info"]:
        info = st["cluster_info"]
        print(f"  cluster: {len(info.get('nodes', []))} node(s), kubeconfig {info.get('kubeconfig_path')}")
    return EXIT_OK


def _logs_args(p):
    _id_arg(p)
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--level", default=None, help="DEBUG | INFO | WARNING | ERROR | CRITICAL")
    p.add_argument("--limit", type=int, default=200)


@command("logs", "show (or follow) a run's logs", _logs_args)
@_with_run
def cmd_logs(args: argparse.Namespace) -> int:
    from deployments import control
    if args.follow:
        try:
            for e in control.follow_logs(args.id, args.level):
                print(f"{e['timestamp']} {e['level']:<7} {e['message']}", flush=True)
        except KeyboardInterrupt:
            return EXIT_OK
        return EXIT_OK
    for e in control.logs(args.id, args.level, args.limit):
        print(f"{e['timestamp']} {e['level']:<7} {e['message']}")
    return EXIT_OK


@command("cancel", "cancel a run", _id_arg)
@_with_run
def cmd_cancel(args: argparse.Namespace) -> int:
    from deployments import control
    state = control.cancel(args.id)
    print(f"run {args.id}: {state.lower()}")
    return EXIT_OK


# --- kubeconfig / reset / serve ----------------------------------------------------------------

@command("kubeconfig", "print the path of the saved admin kubeconfig", _spec_arg)
def cmd_kubeconfig(args: argparse.Namespace) -> int:
    spec, code = _load(args.spec)
    if spec is None:
        return code
    path = _state_dir() / "clusters" / spec.name / "admin.conf"
    if not path.exists():
        return _fail(EXIT_FAILED, f"no kubeconfig saved for cluster {spec.name!r} at {path} "
                                  f"(install it first: kai install {args.spec})")
    print(path)
    return EXIT_OK


def _reset_args(p):
    _spec_arg(p)
    p.add_argument("--detach", action="store_true", help="print the run id and return")


@command("reset", "reset every node of the spec's cluster", _reset_args)
def cmd_reset(args: argparse.Namespace) -> int:
    return _start_and_follow(args.spec, "reset", None, not args.detach)


def _serve_args(p):
    p.add_argument("--prefect-port", type=int, default=4200)
    p.add_argument("--api-host", default=None, help="default KAI_API_HOST (127.0.0.1)")
    p.add_argument("--api-port", type=int, default=None, help="default KAI_API_PORT (8080)")


@command("serve", "Prefect server + a deployment per mode + UI + REST API", _serve_args)
def cmd_serve(args: argparse.Namespace) -> int:
    from deployments.serve import serve
    return serve(args.prefect_port, args.api_host, args.api_port)
