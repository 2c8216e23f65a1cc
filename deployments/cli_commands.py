"""The `kai` subcommands' registry and exit codes, shared by the modules that define commands.

A command is a function `run(args) -> exit code` decorated with `@command(name, help, args)`,
where `args(parser)` adds its arguments. deployments/cli.py (schema, init, plan) and
deployments/cli_runs.py (hosts, install, status, …) register theirs so; cli.py builds the parser
from `COMMANDS`, in the order the commands were registered.
"""

from __future__ import annotations

import argparse
from typing import Callable

EXIT_OK = 0
EXIT_FAILED = 1       # the run (or the check) failed, was cancelled, or is unknown
EXIT_INVALID = 2      # invalid spec or arguments (every problem on stderr, one per line)
EXIT_NO_SERVER = 3    # no Prefect server, or the mode is not served
EXIT_INTERRUPTED = 130

Configure = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]

# name -> (configure its parser, run it)
COMMANDS: dict[str, tuple[Configure, Run]] = {}


def command(name: str, help: str, args: Configure):
    """Register the decorated function as `kai <name>`; `args` adds its arguments."""
    def register(run: Run) -> Run:
        COMMANDS[name] = (args, run)
        run.help = help  # type: ignore[attr-defined]
        return run
    return register
