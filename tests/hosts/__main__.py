"""CLI for the test hosts, for poking at them by hand.

    python -m tests.hosts up 3            # booted hosts (index 0 unless --index)
    python -m tests.hosts status
    python -m tests.hosts exec kai0-n1 'systemctl is-system-running'
    python -m tests.hosts spec            # the ssh/nodes part of a kai spec for them
    python -m tests.hosts down
    python -m tests.hosts light-up 50     # light hosts (netns + the machine's sshd)
    python -m tests.hosts light-down

Hosts outlive the command; ``down`` (or any later harness run of the same index) removes them.
Test sessions use index 1 and up, so they never touch the CLI's hosts.
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from . import network
from .booted import BootedHosts, Host, _alive, bridge_for
from .instance import state_dir
from .light import LightHosts


def _load_hosts(index: int) -> list[Host]:
    path = state_dir("booted", index) / "state.json"
    if not path.exists():
        sys.exit(f"no booted hosts with index {index} (run: python -m tests.hosts up N)")
    data = json.loads(path.read_text())
    hosts = []
    for i, h in enumerate(data["hosts"], 1):
        host = Host(name=h["name"], address=h["address"], index=i, known_hosts=data["known_hosts"],
                    key_file=data["key_file"], workdir=state_dir("booted", index) / "hosts" / f"n{i}",
                    lower=state_dir("booted", index))
        host.launcher_pid, host.leader_pid = h["launcher_pid"], h["leader_pid"]
        hosts.append(host)
    return hosts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hosts", description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=int, default=0, help="harness instance index (default 0)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start N booted hosts")
    up.add_argument("count", type=int, nargs="?", default=3)
    sub.add_parser("down", help="stop the booted hosts and remove everything")
    sub.add_parser("status", help="show the hosts")
    sub.add_parser("spec", help="print the ssh/nodes part of a kai spec (YAML)")
    ex = sub.add_parser("exec", help="run a command inside a booted host (no ssh)")
    ex.add_argument("host")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    lu = sub.add_parser("light-up", help="start N light hosts")
    lu.add_argument("count", type=int, nargs="?", default=50)
    sub.add_parser("light-down", help="stop the light hosts")
    args = parser.parse_args(argv)

    if args.cmd == "up":
        hosts = BootedHosts(args.count, index=args.index).up()
        hosts.detach()  # the hosts outlive this command; `down` cleans them
        for h in hosts:
            print(f"{h.name}\t{h.address}\tleader {h.leader_pid}")
        print(f"known_hosts {hosts.known_hosts}\nkey {hosts.key_file}")
        print(f"timings: " + ", ".join(f"{k}={v:.1f}" for k, v in hosts.timings.items()))
    elif args.cmd == "down":
        hosts = BootedHosts(1, index=args.index)
        hosts.hosts = _load_hosts(args.index) if (hosts.state / "state.json").exists() else []
        hosts.down()
        print("down")
    elif args.cmd == "status":
        bridge = bridge_for(args.index)
        print(f"bridge {bridge.name}: {'up' if bridge.exists() else 'absent'}")
        for h in _load_hosts(args.index):
            state = h.system_state() if h.leader_pid and _alive(h.leader_pid) else "stopped"
            print(f"{h.name}\t{h.address}\t{state}")
        print("cgroups: " + " ".join(network.list_cgroups(f"kai{args.index}-")))
    elif args.cmd == "spec":
        from .booted import spec_fragment
        print(yaml.safe_dump(spec_fragment(_load_hosts(args.index)), sort_keys=False))
    elif args.cmd == "exec":
        hosts = {h.name: h for h in _load_hosts(args.index)}
        if args.host not in hosts:
            sys.exit(f"host: unknown {args.host!r}; known: {', '.join(hosts)}")
        result = hosts[args.host].exec(args.command if len(args.command) > 1 else args.command[0],
                                       check=False, timeout=None)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        return result.returncode
    elif args.cmd == "light-up":
        light = LightHosts(args.count, index=args.index).up()
        light.detach()
        print(f"{len(light)} light hosts on {light.bridge.name} in {light.timings['bring_up_s']:.1f}s; "
              f"known_hosts {light.known_hosts}, key {light.key_file}")
    elif args.cmd == "light-down":
        LightHosts(1, index=args.index).down()
        print("down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
