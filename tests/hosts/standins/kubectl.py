#!/usr/bin/python3
"""kubectl stand-in: `--kubeconfig F apply --server-side --force-conflicts -f FILE`, `version --client`,
`wait --for condition=C --all CustomResourceDefinition [--timeout D]`, and the day-2 node commands
(kubectl_day2.py): cordon, uncordon, drain, delete node, get nodes. Custom kinds are mapped to
their REST path by API discovery of their group, like kubectl's REST mapper: a kind no
Established CRD serves is "no matches for kind … ensure CRDs are installed first".

Each document becomes a real server-side-apply request: PATCH <the object's path>
?fieldManager=kubectl&force=true with Content-Type application/apply-patch+yaml."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

import yaml  # noqa: E402

import kubectl_day2 as day2  # noqa: E402
import standin_crds as crds  # noqa: E402
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
    wait = sub.add_parser("wait", allow_abbrev=False)
    wait.add_argument("resource", choices=CRD_NAMES)
    wait.add_argument("--for", dest="condition", required=True, type=condition_arg)
    wait.add_argument("--all", action="store_true", required=True)
    wait.add_argument("--timeout", type=go_duration, default=30.0)
    get = sub.add_parser("get", allow_abbrev=False)
    get.add_argument("what", choices=("nodes", "node", "no"))
    get.add_argument("name", nargs="?")
    get.add_argument("-o", "--output", choices=("json", "wide"))
    return p.parse_args(argv)


# `kubectl wait` here waits for CustomResourceDefinitions only (monitoring.sh, like
# kube-prometheus's quickstart): the names kubectl accepts for the type.
CRD_NAMES = ("CustomResourceDefinition", "customresourcedefinition", "customresourcedefinitions",
             "crd", "crds")
CRD_COLLECTION = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
WAIT_POLL_S = 0.5


def condition_arg(text: str) -> str:
    kind, eq, cond = text.partition("=")
    if kind != "condition" or not eq or not cond:
        raise argparse.ArgumentTypeError(f'unrecognized condition: "{text}"')
    return cond


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
    if a.command == "wait":
        return wait_crds(api, a.condition, a.timeout)
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
        kind = doc["kind"].lower()
        path = object_path(api, doc)
        if path is None:
            group_version = doc["apiVersion"]
            meta = doc["metadata"]
            print(f'error: resource mapping not found for name: "{meta["name"]}" namespace: '
                  f'"{meta.get("namespace", "")}" from "{a.filename}": no matches for kind '
                  f'"{doc["kind"]}" in version "{group_version}"\nensure CRDs are installed first',
                  file=sys.stderr)
            failed += 1
            continue
        code, body = api.request("PATCH", f"/{path}?{query}", yaml.safe_dump(doc),
                                 content_type="application/apply-patch+yaml")
        if code in (200, 201):
            print(f"{kind}/{doc['metadata']['name']} serverside-applied")
        else:
            msg = body.get("message") if isinstance(body, dict) else body
            print(f'Error from server: error when applying {kind}/{doc["metadata"]["name"]}: {msg}', file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def object_path(api: Api, doc: dict) -> str | None:
    """The object's REST path. Built-in kinds: known; custom kinds: from API discovery of their
    group (like kubectl's REST mapper), None when the server serves no such kind."""
    if not crds.is_custom(doc["apiVersion"]):
        return resource_path(doc)
    code, body = api.request("GET", f"/apis/{doc['apiVersion']}")
    if code != 200:
        return None
    for res in body.get("resources", []):
        if res["kind"] == doc["kind"] and "/" not in res["name"]:
            meta = doc["metadata"]
            if res["namespaced"]:
                return (f"apis/{doc['apiVersion']}/namespaces/{meta.get('namespace') or 'default'}"
                        f"/{res['name']}/{meta['name']}")
            return f"apis/{doc['apiVersion']}/{res['name']}/{meta['name']}"
    return None


def wait_crds(api: Api, condition: str, timeout_s: float) -> int:
    """`kubectl wait --for condition=C --all crd --timeout=T`: every CRD has C=True, or fail."""
    deadline = time.monotonic() + timeout_s
    met: set[str] = set()
    while True:
        code, body = api.request("GET", CRD_COLLECTION)
        if code != 200:
            raise Fail(day2.api_error(body))
        items = body.get("items", [])
        if not items:
            raise Fail("no matching resources found")
        for crd in items:
            name = crd["metadata"]["name"]
            conds = (crd.get("status") or {}).get("conditions") or []
            if name not in met and any(c["type"] == condition and c["status"] == "True" for c in conds):
                met.add(name)
                print(f"customresourcedefinition.apiextensions.k8s.io/{name} condition met", flush=True)
        waiting = sorted({c["metadata"]["name"] for c in items} - met)
        if not waiting:
            return 0
        if time.monotonic() >= deadline:
            raise Fail(f"timed out waiting for the condition on customresourcedefinitions/{waiting[0]}")
        time.sleep(WAIT_POLL_S)


if __name__ == "__main__":
    sys.exit(run_main("kubectl", main))
