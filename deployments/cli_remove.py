"""`kai remove SPEC --nodes a,b [--force]`: start a remove_nodes run and follow it (like install).

The spec stays as it is: the run's last log lines and its `removal-report` artifact say which
entries to delete from it afterwards.
"""

from __future__ import annotations

import argparse
import sys

from deployments.cli_commands import EXIT_INVALID, command
from deployments.cli_runs import _spec_arg, _start_and_follow


def _remove_args(p: argparse.ArgumentParser) -> None:
    _spec_arg(p)
    p.add_argument("--nodes", required=True, help="comma-separated names of the nodes to remove")
    p.add_argument("--force", action="store_true",
                   help="the nodes are dead: delete them (and a control plane's etcd member) "
                        "without drain or reset, never contacting them")
    p.add_argument("--detach", action="store_true", help="print the run id and return")


@command("remove", "remove nodes from a running cluster (drain, reset, delete)", _remove_args)
def cmd_remove(args: argparse.Namespace) -> int:
    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
    if not nodes:
        print("kai: --nodes: name at least one node to remove", file=sys.stderr)
        return EXIT_INVALID
    return _start_and_follow(args.spec, "remove_nodes", nodes, not args.detach, force=args.force)
