"""Test hosts for kai's tests: booted systemd-nspawn hosts, light netns+sshd hosts, apt proxy.

See booted.py, light.py and fixtures.py; ``python -m tests.hosts --help`` for the CLI.
"""

from .booted import BootedHosts, Host, spec_fragment
from .instance import Service
from .light import LightHost, LightHosts
from .network import Bridge

__all__ = ["BootedHosts", "Bridge", "Host", "LightHost", "LightHosts", "Service", "spec_fragment"]
