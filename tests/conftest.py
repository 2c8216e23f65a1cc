"""Shared pytest fixtures. The test-host fixtures live in tests/hosts/fixtures.py."""

import os

from tests.hosts.fixtures import booted_hosts, clean_hosts, host_services, light_hosts  # noqa: F401

# A node marked `connection: local` (or an old all-in-one body without a host) would run kai's
# agent on the machine running the tests. In this process it refuses instead, saying why; tests
# of the local transport give their own command prefix, and the session's `kai serve` points at a
# booted host acting as the local machine (tests/support/local_machine.py).
os.environ["KAI_LOCAL_AGENT_COMMAND"] = (
    "sh -c 'echo \"tests: no local machine in this process (tests/conftest.py)\" >&2; exit 97' sh")
