"""`kai upgrade SPEC --to 1.37`: start the upgrade mode (flows/upgrade.py) and follow it.

The target is checked before anything starts (one minor at a time, never down: the problems name
the field); `kai plan SPEC --mode upgrade --to 1.37` shows the node order and batches first.
"""

from __future__ import annotations

import argparse
import sys

from deployments.cli_commands import EXIT_INVALID, EXIT_NO_SERVER, EXIT_OK, command
from deployments.cli_runs import _fail, _load, _need_server, _spec_arg, follow_run


def _upgrade_args(p: argparse.ArgumentParser) -> None:
    _spec_arg(p)
    p.add_argument("--to", required=True,
                   help="the Kubernetes version to move to: the next minor (1.37) or a newer patch")
    p.add_argument("--max-unavailable", type=int, default=None,
                   help="workers drained and upgraded at once (default 1)")
    p.add_argument("--detach", action="store_true", help="print the run id and return")


@command("upgrade", "upgrade the spec's running cluster one minor (control planes, then workers)",
         _upgrade_args)
def cmd_upgrade(args: argparse.Namespace) -> int:
    spec, code = _load(args.spec)
    if spec is None:
        return code
    if (code := _need_server()) is not None:
        return code
    from deployments import control
    from installers.spec import SpecError

    try:
        run_id = control.start("upgrade", spec.model_dump(mode="json"), to=args.to,
                               max_unavailable=args.max_unavailable)
    except SpecError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        return _fail(EXIT_INVALID, f"{args.spec}: cannot upgrade to {args.to}")
    except control.NotServed as exc:
        return _fail(EXIT_NO_SERVER, str(exc))
    print(f"started upgrade run {run_id} (to {args.to})")
    if args.detach:
        return EXIT_OK
    return follow_run(run_id)
