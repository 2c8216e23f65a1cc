"""`kai restore SPEC --snapshot NAME --yes`: start an etcd_restore run and follow it.

Without --yes nothing starts (the cluster would lose everything written since the snapshot); the
snapshot is a file name etcd_backup stored for this cluster. `kai plan SPEC --mode etcd_restore
--snapshot NAME` shows the steps first.
"""

from __future__ import annotations

import argparse
import sys

from deployments.cli_commands import EXIT_INVALID, command
from deployments.cli_runs import _fail, _load, _spec_arg, _start_and_follow


def _restore_args(p: argparse.ArgumentParser) -> None:
    _spec_arg(p)
    p.add_argument("--snapshot", required=True,
                   help="the snapshot's file name in the cluster's backup directory "
                        "(<cluster>-<time>-rev<N>.db, from an etcd_backup run)")
    p.add_argument("--yes", action="store_true",
                   help="confirm: replace the cluster's etcd data with the snapshot's")
    p.add_argument("--detach", action="store_true", help="print the run id and return")


@command("restore", "restore the spec's cluster's etcd from a stored snapshot (needs --yes)",
         _restore_args)
def cmd_restore(args: argparse.Namespace) -> int:
    spec, code = _load(args.spec)
    if spec is None:
        return code
    if not args.yes:  # before the server is asked anything: the answer is no either way
        from installers import modes
        for problem in modes.confirmation_problems("etcd_restore", False):
            print(problem, file=sys.stderr)
        return _fail(EXIT_INVALID, f"{args.spec}: restore not started (add --yes)")
    return _start_and_follow(args.spec, "etcd_restore", None, not args.detach, snapshot=args.snapshot,
                             confirm=True, refused=f"cannot restore {args.snapshot}",
                             started=f" ({args.snapshot})")
