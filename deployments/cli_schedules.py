"""`kai schedule` (cron schedules of a cluster's runs: deployments/schedules.py) and `kai alerts`
(notifications of failed health runs and expiring certificates: deployments/alerts.py). Both talk
to the Prefect server; exit codes and messages as deployments/cli_runs.py's.
"""

from __future__ import annotations

import argparse
import json
import sys

from deployments.cli_commands import EXIT_FAILED, EXIT_INVALID, EXIT_NO_SERVER, EXIT_OK, command
from deployments.cli_runs import _fail, _load, _need_server, _spec_arg
from installers import modes


def _schedule_args(p):
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="attach a cron schedule with this spec to a mode's deployment")
    _spec_arg(add)
    add.add_argument("--mode", required=True, help=f"{' | '.join(modes.names())} (aliases accepted)")
    add.add_argument("--cron", required=True, help='cron expression, e.g. "*/30 * * * *"')
    add.add_argument("--timezone", default="UTC", help="IANA time zone of the cron (default UTC)")
    listing = sub.add_parser("list", help="every schedule: cluster, mode, cron, next run")
    listing.add_argument("--json", action="store_true")
    rm = sub.add_parser("remove", help="remove a schedule (and the runs it had scheduled)")
    rm.add_argument("id", help="schedule id (kai schedule list)")


@command("schedule", "cron schedules of a cluster's runs (add, list, remove)", _schedule_args)
def cmd_schedule(args: argparse.Namespace) -> int:
    if args.action == "add":
        spec, code = _load(args.spec)
        if spec is None:
            return code
    if (code := _need_server()) is not None:
        return code
    from deployments import control, schedules
    from installers.spec import SpecError

    try:
        if args.action == "add":
            entry = schedules.add(args.mode, spec.model_dump(mode="json"), args.cron, args.timezone)
            print(f"schedule {entry['id']}: {entry['mode']} of cluster {entry['cluster']} at "
                  f"'{entry['cron']}' ({entry['timezone']}); next run {entry['next_run']}")
        elif args.action == "list":
            entries = schedules.list_schedules()
            if args.json:
                print(json.dumps(entries, indent=2))
            else:
                for e in entries:
                    print(f"{e['id']}  {e['cluster'] or '-':<20} {e['mode']:<12} {e['cron']:<16} "
                          f"{'active' if e['active'] else 'paused':<7} next {e['next_run'] or '-'}")
        else:
            entry = schedules.remove(args.id)
            print(f"removed schedule {entry['id']} ({entry['mode']} of cluster {entry['cluster']})")
    except SpecError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        return _fail(EXIT_INVALID, "schedule not created: invalid")
    except control.NotServed as exc:
        return _fail(EXIT_NO_SERVER, str(exc))
    except schedules.UnknownSchedule as exc:
        return _fail(EXIT_FAILED, str(exc))
    except ValueError as exc:
        return _fail(EXIT_INVALID, str(exc))
    return EXIT_OK


def _alerts_args(p):
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    put = sub.add_parser("set", help="send alerts to a webhook (or an existing notification block)")
    target = put.add_mutually_exclusive_group(required=True)
    target.add_argument("--webhook", help="URL the alerts are POSTed to as JSON {subject, body}")
    target.add_argument("--block", help="name of a notification block made in the Prefect UI")
    sub.add_parser("show", help="the alert automations")
    sub.add_parser("clear", help="remove the alert automations")


@command("alerts", "alerts of failed health runs and expiring certificates (set, show, clear)",
         _alerts_args)
def cmd_alerts(args: argparse.Namespace) -> int:
    if (code := _need_server()) is not None:
        return code
    from deployments import alerts

    try:
        if args.action == "set":
            done = alerts.set_alerts(webhook=args.webhook, block=args.block)
            print(f"alerts of {', '.join(done['modes'])} go to block {done['block']} "
                  f"(automations: {'; '.join(done['automations'])})")
        elif args.action == "show":
            for a in alerts.show_alerts()["automations"]:
                print(f"{a['name']}  {'enabled' if a['enabled'] else 'disabled'}")
        else:
            print(f"removed {len(alerts.clear_alerts())} automation(s)")
    except ValueError as exc:
        return _fail(EXIT_INVALID, str(exc))
    return EXIT_OK
