#!/usr/bin/python3
"""crictl stand-in: `crictl --version` only."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

from standin_common import Fail, run_main, version  # noqa: E402


def main(argv) -> int:
    if argv == ["--version"]:
        print(f"crictl version v{version()}")
        return 0
    raise Fail(f"crictl stand-in: unsupported arguments {argv} (only --version)")


if __name__ == "__main__":
    sys.exit(run_main("crictl", main))
