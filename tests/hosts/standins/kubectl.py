#!/usr/bin/python3
"""kubectl stand-in: `--kubeconfig F apply --server-side --force-conflicts -f FILE`, `version --client`,
and the day-2 node commands (kubectl_day2.py): cordon, uncordon, drain, delete node, get nodes.

Each document becomes a real server-side-apply request: PATCH <the object's path>
?fieldManager=kubectl&force=true with Content-Type application/apply-patch+yaml."""

from __future__ import annotations

import argparse
import os
import re
import sys
import urllib.parse
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

import yaml  # noqa: E402

import kubectl_day2 as day2  # noqa: E402
import standin_pki as pki  # noqa: E402
from standin_apiserver import resource_path  # noqa: E402
from standin_common import Api, Fail, run_main, version  # noqa: E402


def parse(argv):
    p = argparse.ArgumentParser(prog="kubectl", allow_abbrev=False)
    p.add_argument("--kubeconfig")
    sub = p.add_subparsers(dest="command", required=True)
    apply = sub.add_parser("apply", allow_abbrev=False)
    apply.add_argument("--server-side", action="store_true", required=True)
    apply.add_argument("--force-conflicts", action="store_true")
    apply.add_argument("-f", "--filename", required=True)
    ver = sub.add_parser("version", allow_abbrev=False)
    ver.add_argument("--client", action="store_true", required=True)
    for name in ("cordon", "uncordon"):
        sub.add_parser(name, allow_abbrev=False).add_argument("node")
    drain = sub.add_parser("drain", allow_abbrev=False)
    drain.add_argument("node")
    drain.add_argument("--ignore-daemonsets", action="store_true")
    drain.add_argument("--delete-emptydir-data", action="store_true")
    drain.add_argument("--force", action="store_true")
    drain.add_argument("--timeout", type=go_duration, default=0.0)
    drain.add_argument("--grace-period", type=int, default=-1)
    delete = sub.add_parser("delete", allow_abbrev=False)
    delete.add_argument("what", nargs="+", help="node NAME... | node/NAME...")
    delete.add_argument("--ignore-not-found", action="store_true")
    get = sub.add_parser("get", allow_abbrev=False)
    get.add_argument("what", choices=("nodes", "node", "no"))
    get.add_argument("name", nargs="?")
    get.add_argument("-o", "--output", choices=("json", "wide"))
    return p.parse_args(argv)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms)")


def go_duration(text: str) -> float:
    """A Go duration flag ("90s", "1m30s", "0") -> seconds."""
    parts = _DURATION_PART.findall(text)
    if text == "0":
        return 0.0
    if not parts or "".join(a + b for a, b in parts) != text:
        raise argparse.ArgumentTypeError(f'invalid argument "{text}": time: invalid duration "{text}"')
    return sum(float(a) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[b] for a, b in parts)


def main(argv) -> int:
    a = parse(argv)
    if a.command == "version":
        print(f"Client Version: v{version()}\nKustomize Version: v5.7.1")
        return 0
    if not a.kubeconfig:
        raise Fail("the stand-in needs --kubeconfig (kai always passes it)")
    kc = pki.read_kubeconfig(Path(a.kubeconfig).read_text())
    api = Api(kc["server"], kc["ca"], kc["cert"], kc["key"])
    if a.command != "apply":
        return day2.run(api, a)
    try:
        docs = [d for d in yaml.safe_load_all(Path(a.filename).read_text()) if d]
    except (OSError, yaml.YAMLError) as e:
        raise Fail(f'error: the path "{a.filename}" cannot be read: {e}') from e
    if not docs:
        raise Fail("error: no objects passed to apply")
    query = urllib.parse.urlencode({"fieldManager": "kubectl", **({"force": "true"} if a.force_conflicts else {})})
    failed = 0
    for doc in docs:
        if not doc.get("apiVersion") or not doc.get("kind") or not (doc.get("metadata") or {}).get("name"):
            raise Fail(f"error validating {a.filename}: apiVersion, kind and metadata.name are required")
        code, body = api.request("PATCH", f"/{resource_path(doc)}?{query}", yaml.safe_dump(doc),
                                 content_type="application/apply-patch+yaml")
        kind = doc["kind"].lower()
        if code in (200, 201):
            print(f"{kind}/{doc['metadata']['name']} serverside-applied")
        else:
            msg = body.get("message") if isinstance(body, dict) else body
            print(f'Error from server: error when applying {kind}/{doc["metadata"]["name"]}: {msg}', file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_main("kubectl", main))
