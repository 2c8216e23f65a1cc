#!/usr/bin/python3
"""crictl stand-in: `--version`, and what kai uses to reach etcd on a control plane, as on a real
cluster (the etcd 3.6 image kubeadm runs ships etcdctl and etcdutl):

    crictl ps --name etcd --state running -q      the etcd container's id (nothing if not running)
    crictl ps --name kube-apiserver --state running -q   the API server's (the API stand-in's unit)
    crictl exec <id> etcdctl <args>                Debian's real etcdctl, with these args (not
                                                   `snapshot restore`: etcd 3.6 moved it to etcdutl)
    crictl exec <id> etcdutl version
    crictl exec <id> etcdutl snapshot restore <file> --data-dir=… --name=… --initial-cluster=…
        --initial-cluster-token=… --initial-advertise-peer-urls=… [--skip-hash-check]
                                                   Debian's etcdctl 3.4 `snapshot restore`, which
                                                   takes exactly these flags

The "container" is the kubelet stand-in's etcd unit (standin_etcd), or the API stand-in's unit;
an id is new with every start of the unit, as a container's is with every restart. The other
control-plane pods (controller-manager, scheduler) do not run here: their ps lists nothing. Like the real pod, it sees
only its two hostPath mounts (/var/lib/etcd, /etc/kubernetes/pki/etcd): a file argument elsewhere
fails as it would in the container. Anything else fails loudly."""

from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

import standin_etcd as etcd  # noqa: E402
from standin_common import Fail, run_main, version  # noqa: E402

API_UNIT = "kai-standin-apiserver.service"
PS_NAMES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def ps_args(name: str) -> list[str]:
    return ["ps", "--name", name, "--state", "running", "-q"]


def running_id(name: str) -> str | None:
    if name == "etcd":
        return etcd.running_container()
    if name == "kube-apiserver":
        return etcd.unit_container(API_UNIT, name)
    return None
FILE_FLAGS = ("--cacert", "--cert", "--key", "--data-dir", "--wal-dir")
# etcdutl 3.6 `snapshot restore` flags that etcdctl 3.4's `snapshot restore` takes the same way
# (etcdutl's others -- --bump-revision, --mark-compacted, … -- fail: 3.4 cannot do them)
ETCDUTL_RESTORE_FLAGS = ("--data-dir", "--wal-dir", "--name", "--initial-cluster", "--initial-cluster-token",
                         "--initial-advertise-peer-urls")
ETCDUTL_VERSION = etcd.IMAGE.rsplit(":", 1)[1].split("-")[0]


def etcdutl(args: list[str]) -> list[str]:
    """etcdutl's command line as Debian's etcdctl runs it (Fail on anything else)."""
    if args == ["version"]:
        return ["version"]
    if args[:2] != ["snapshot", "restore"] or len(args) < 3 or args[2].startswith("-"):
        raise Fail(f"crictl stand-in: etcdutl runs only `version` and `snapshot restore <file> …`, not {args}")
    out, rest = ["snapshot", "restore", args[2]], args[3:]
    i = 0
    while i < len(rest):
        flag, eq, value = rest[i].partition("=")
        if flag == "--skip-hash-check" and not eq:
            out.append(flag)
        elif flag in ETCDUTL_RESTORE_FLAGS:
            if not eq:
                i += 1
                if i == len(rest):
                    raise Fail(f"Error: flag needs an argument: {flag}")
                value = rest[i]
            out.append(f"{flag}={value}")
        else:
            raise Fail(f"Error: unknown flag: {flag}")
        i += 1
    return out


def container_files(args: list[str]) -> None:
    """Fail like the container would on a file outside its mounts."""
    for i, a in enumerate(args):
        flag, eq, value = a.partition("=")
        if flag in FILE_FLAGS:
            etcd.pod_path(value if eq else (args[i + 1] if i + 1 < len(args) else ""))
    words = [a for a in args if not a.startswith("-")]
    if words[:1] == ["snapshot"] and len(words) >= 3:
        etcd.pod_path(words[2])


def cmd_exec(argv: list[str]) -> int:
    if len(argv) < 2:
        raise Fail("crictl exec: need a container id and a command")
    cid, command = argv[0], argv[1:]
    running = etcd.running_container()
    if running is None or not (len(cid) >= 12 and running.startswith(cid)):
        raise Fail(f'execing command in container: rpc error: code = NotFound desc = could not find container "{cid}"')
    if command[0] not in ("etcdctl", "etcdutl"):
        raise Fail(f"crictl stand-in: exec runs only etcdctl or etcdutl in the etcd container, not {command[0]!r}")
    words = [a for a in command[1:] if not a.startswith("-")]
    if command[0] == "etcdctl" and words[:2] == ["snapshot", "restore"]:
        print('Error: unknown command "restore" for "etcdctl snapshot" (etcd 3.6: etcdutl snapshot restore)',
              file=sys.stderr)
        return 1
    if command == ["etcdutl", "version"]:
        print(f"etcdutl version: {ETCDUTL_VERSION}\nAPI version: {ETCDUTL_VERSION.rsplit('.', 1)[0]}")
        return 0
    if command[0] == "etcdutl":
        command = ["etcdctl", *etcdutl(command[1:])]
    try:
        container_files(command[1:])
    except etcd.EtcdError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    # The container's working directory is / and its environment etcd's own (ETCDCTL_API=3 is
    # etcdctl 3.4's default); stdout/stderr pass through.
    return subprocess.run([etcd.ETCDCTL_BIN, *command[1:]], cwd="/",
                          env={"PATH": "/usr/local/bin:/usr/bin:/bin"}).returncode


def main(argv) -> int:
    if argv == ["--version"]:
        print(f"crictl version v{version()}")
        return 0
    for name in PS_NAMES:
        if argv == ps_args(name):
            cid = running_id(name)
            if cid:
                print(cid)
            return 0
    if argv[:1] == ["exec"]:
        return cmd_exec(argv[1:])
    raise Fail(f"crictl stand-in: unsupported arguments {argv} (only --version, "
               f"`{' '.join(ps_args('NAME'))}` for {', '.join(PS_NAMES)} and "
               f"`exec <id> etcdctl|etcdutl …`)")


if __name__ == "__main__":
    sys.exit(run_main("crictl", main))
