"""`kai certs SPEC [--renew]`: days left of every kubeadm certificate on the control planes
(flows/certs.py), and with --renew their renewal, one control plane at a time; follows the run.

Without --renew nothing changes on the nodes (schedule it: `kai schedule add certs SPEC CRON`);
the run's `certificates` artifact and its cluster_info carry the days left per node.
"""

from __future__ import annotations

import argparse
import sys

from deployments.cli_commands import EXIT_INVALID, EXIT_NO_SERVER, EXIT_OK, command
from deployments.cli_runs import _fail, _load, _need_server, _spec_arg, follow_run


def _certs_args(p: argparse.ArgumentParser) -> None:
    _spec_arg(p)
    p.add_argument("--renew", action="store_true",
                   help="renew them (kubeadm certs renew all, static pods restarted, one control "
                        "plane at a time) and refresh kai's admin kubeconfig")
    p.add_argument("--detach", action="store_true", help="print the run id and return")


@command("certs", "days left of every kubeadm certificate; --renew renews them", _certs_args)
def cmd_certs(args: argparse.Namespace) -> int:
    spec, code = _load(args.spec)
    if spec is None:
        return code
    if (code := _need_server()) is not None:
        return code
    from deployments import control
    from installers.spec import SpecError

    try:
        run_id = control.start("certs", spec.model_dump(mode="json"), renew=args.renew)
    except SpecError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        return _fail(EXIT_INVALID, f"{args.spec}: not valid for certs")
    except control.NotServed as exc:
        return _fail(EXIT_NO_SERVER, str(exc))
    print(f"started certs run {run_id}" + (" (renew)" if args.renew else " (check only)"))
    if args.detach:
        return EXIT_OK
    return follow_run(run_id)
