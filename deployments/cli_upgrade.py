"""`kai upgrade SPEC --to 1.37`: start the upgrade mode (flows/upgrade.py) and follow it.

The target is checked before anything starts (one minor at a time, never down: the problems name
the field); `kai plan SPEC --mode upgrade --to 1.37` shows the node order and batches first.
"""

from __future__ import annotations

import argparse

from deployments.cli_commands import command
from deployments.cli_runs import _spec_arg, _start_and_follow


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
    return _start_and_follow(args.spec, "upgrade", None, not args.detach, to=args.to,
                             max_unavailable=args.max_unavailable,
                             refused=f"cannot upgrade to {args.to}", started=f" (to {args.to})")
