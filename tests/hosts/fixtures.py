"""pytest fixtures for the test hosts (registered in tests/conftest.py).

- ``booted_hosts`` (session): ``KAI_TEST_HOSTS`` (default 3) booted hosts, torn down at the end.
- ``clean_hosts`` (module): the same hosts, reset to the pristine rootfs for the module.
- ``light_hosts``: a factory ``light_hosts(n)`` for netns+sshd hosts, torn down after the test.
- ``host_services`` (session): extra services on the bridge's gateway, started with the hosts.
  Empty here; a conftest may override it, e.g. to serve the local mirror:

      @pytest.fixture(scope="session")
      def host_services():
          return [Service("mirror", lambda bridge: [...], port=8080)]

  Stand-ins are installed with ``booted_hosts.add_provisioner(fn)``: fn(host) runs on every host
  now and again after every reset.

When the machine cannot run the hosts (not root, no systemd-nspawn, …) the fixtures skip, except
under CI (env ``CI`` set), where they fail: a skipped end-to-end test must not look green.
"""

from __future__ import annotations

import os
import shutil

import pytest

from .booted import BootedHosts
from .instance import Service
from .light import LightHosts

REQUIRED_TOOLS = ("systemd-nspawn", "debootstrap", "unshare", "nsenter", "ip", "ssh-keygen", "zstd")


def missing_prerequisites(booted: bool = True) -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append("not root")
    tools = REQUIRED_TOOLS if booted else ("ip", "ssh-keygen")
    problems += [f"{t} not installed" for t in tools if shutil.which(t) is None]
    if not os.path.exists("/usr/sbin/sshd"):
        problems.append("/usr/sbin/sshd not installed (openssh-server)")
    if not os.path.isdir("/sys/fs/cgroup"):
        problems.append("no /sys/fs/cgroup")
    return problems


def require(booted: bool = True) -> None:
    problems = missing_prerequisites(booted)
    if problems:
        why = "test hosts unavailable: " + "; ".join(problems)
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def host_count() -> int:
    raw = os.environ.get("KAI_TEST_HOSTS", "3")
    try:
        return int(raw)
    except ValueError:
        raise pytest.UsageError(f"KAI_TEST_HOSTS: not a number: {raw!r}") from None


@pytest.fixture(scope="session")
def host_services() -> list[Service]:
    return []


@pytest.fixture(scope="session")
def booted_hosts(host_services):
    require(booted=True)
    hosts = BootedHosts(host_count(), services=host_services)
    try:
        hosts.up()
        print(f"\nbooted hosts: {', '.join(f'{h.name}={h.address}' for h in hosts)}; "
              + ", ".join(f"{k}={v:.1f}s" for k, v in hosts.timings.items()))
        yield hosts
    finally:
        hosts.down()


@pytest.fixture(scope="module")
def clean_hosts(booted_hosts):
    """The booted hosts, reset before the module (the first module gets them fresh)."""
    if getattr(booted_hosts, "_dirty", False):
        booted_hosts.reset()
    booted_hosts._dirty = True
    return booted_hosts


@pytest.fixture
def light_hosts():
    require(booted=False)
    made: list[LightHosts] = []

    def factory(count: int = 50) -> LightHosts:
        hosts = LightHosts(count)
        made.append(hosts)
        return hosts.up()

    yield factory
    for hosts in made:
        hosts.down()
