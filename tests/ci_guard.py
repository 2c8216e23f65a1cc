"""pytest plugin (loaded with `-p tests.ci_guard`): under CI, end-to-end tests may not be skipped.

Tests marked `hosts`, `e2e` or `sshd` need real machinery (booted test hosts, a Prefect server, a
real sshd). On a developer machine without it they may skip; in CI a skip would hide that nothing
real was tested, so the session fails and says which tests were skipped and why.
"""

from __future__ import annotations

import os

import pytest

REAL_MARKERS = ("hosts", "e2e", "sshd")
_skipped: list[str] = []
_ran: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    keywords = report.keywords
    if not any(m in keywords for m in REAL_MARKERS):
        return
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append(f"{report.nodeid}: {reason}")
    elif report.when == "call":
        _ran.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not os.environ.get("CI"):
        return
    if _skipped:
        print("\nCI guard: end-to-end tests were skipped — CI fails:")
        for line in _skipped:
            print("  " + line)
        session.exitstatus = 1
    elif not _ran and not session.config.getoption("-k") and not session.config.getoption("-m"):
        print("\nCI guard: no end-to-end test ran — CI fails")
        session.exitstatus = 1
    else:
        print(f"\nCI guard: {len(_ran)} end-to-end test(s) ran, none skipped")
