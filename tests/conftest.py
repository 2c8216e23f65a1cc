"""Shared pytest fixtures. The test-host fixtures live in tests/hosts/fixtures.py."""

from tests.hosts.fixtures import booted_hosts, clean_hosts, host_services, light_hosts  # noqa: F401
