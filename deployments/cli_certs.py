"""`kai certs SPEC [--renew]`: days left of every kubeadm certificate on the control planes
(flows/certs.py), and with --renew their renewal, one control plane at a time; follows the run.

Without --renew nothing changes on the nodes (schedule it: `kai schedule add certs SPEC CRON`);
the run's `certificates` artifact and its cluster_info carry the days left per node.
"""

from __future__ import annotations

import argparse

from deployments.cli_commands import command
from deployments.cli_runs import _spec_arg, _start_and_follow


def _certs_args(p: argparse.ArgumentParser) -> None:
    _spec_arg(p)
    p.add_argument("--renew", action="store_true",
                   help="renew them (kubeadm certs renew all, static pods restarted, one control "
                        "plane at a time) and refresh kai's admin kubeconfig")
    p.add_argument("--detach", action="store_true", help="print the run id and return")


@command("certs", "days left of every kubeadm certificate; --renew renews them", _certs_args)
def cmd_certs(args: argparse.Namespace) -> int:
    return _start_and_follow(args.spec, "certs", None, not args.detach, renew=args.renew,
                             started=" (renew)" if args.renew else " (check only)")
