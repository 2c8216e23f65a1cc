"""kubectl's node commands for the stand-in: cordon, uncordon, drain, delete node, get nodes.

Output and errors follow kubectl's (k8s.io/kubectl/pkg/drain and pkg/cmd/drain): drain cordons,
refuses DaemonSet pods without --ignore-daemonsets, pods without a controller without --force and
pods with emptyDir volumes without --delete-emptydir-data, skips mirror (static) pods, then evicts
through the API (which honours PodDisruptionBudgets), retrying a refused eviction every 5 s until
--timeout, and waits for each evicted pod to be gone. Python 3 standard library + the stand-in
modules only (runs on the test hosts).
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import datetime, timezone

from standin_common import Api, Fail

EVICTION_RETRY_S = 5.0   # kubectl's fixed retry interval after a 429
DELETE_POLL_S = 1.0      # kubectl's wait-for-delete poll interval


def err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def go_duration_str(seconds: float) -> str:
    """Seconds -> Go's time.Duration.String() for whole seconds ("20s", "1m30s", "1h0m0s")."""
    s = int(round(seconds))
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    if h:
        return f"{h}h{m}m{sec}s"
    return f"{m}m{sec}s" if m else f"{sec}s"


def get_node(api: Api, name: str) -> dict:
    code, body = api.request("GET", f"/api/v1/nodes/{name}")
    if code != 200:
        raise Fail(api_error(body))
    return body


def api_error(body) -> str:
    if isinstance(body, dict):
        return f"Error from server ({body.get('reason', 'Unknown')}): {body.get('message')}"
    return f"Error from server: {body}"


def set_unschedulable(api: Api, name: str, on: bool) -> None:
    node = get_node(api, name)
    word = "cordoned" if on else "uncordoned"
    if bool((node.get("spec") or {}).get("unschedulable")) == on:
        print(f"node/{name} already {word}", flush=True)
        return
    code, body = api.request("PATCH", f"/api/v1/nodes/{name}", {"spec": {"unschedulable": True if on else None}},
                             content_type="application/strategic-merge-patch+json")
    if code != 200:
        raise Fail(api_error(body))
    print(f"node/{name} {word}", flush=True)


# --- drain ----------------------------------------------------------------------------------------

def classify(pods: list[dict], a) -> tuple[list[dict], list[str], list[str]]:
    """kubectl's drain filters, in its order -> (pods to evict, errors, warnings)."""
    to_evict, errors, warnings = [], {}, {}

    def note(table, message, pod):
        table.setdefault(message, []).append(f"{pod['metadata']['namespace']}/{pod['metadata']['name']}")

    for pod in pods:
        meta = pod["metadata"]
        if pod["status"].get("phase") in ("Succeeded", "Failed"):
            continue
        if "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
            continue  # static pods: only the kubelet can remove them
        owners = meta.get("ownerReferences") or []
        if any(o.get("kind") == "DaemonSet" for o in owners):
            if a.ignore_daemonsets:
                note(warnings, "ignoring DaemonSet-managed Pods", pod)
            else:
                note(errors, "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore)", pod)
            continue
        if not owners:
            if not a.force:
                note(errors, "cannot delete Pods that declare no controller (use --force to override)", pod)
                continue
            note(warnings, "deleting Pods that declare no controller", pod)
        if any("emptyDir" in v for v in pod["spec"].get("volumes") or []):
            if not a.delete_emptydir_data:
                note(errors, "cannot delete Pods with local storage (use --delete-emptydir-data to override)", pod)
                continue
            note(warnings, "deleting Pods with local storage", pod)
        to_evict.append(pod)
    fmt = lambda t: [f"{m}: {', '.join(p)}" for m, p in t.items()]  # noqa: E731
    return to_evict, fmt(errors), fmt(warnings)


def evict_one(api: Api, pod: dict, a, deadline: float | None, errors: list[str]) -> None:
    ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}}
    if a.grace_period >= 0:
        body["deleteOptions"] = {"gracePeriodSeconds": a.grace_period}
    while True:
        if deadline is not None and time.time() >= deadline:
            errors.append(f'error when evicting pods/"{name}" -n "{ns}": global timeout reached: '
                          f"{go_duration_str(a.timeout)}")
            return
        code, resp = api.request("POST", f"/api/v1/namespaces/{ns}/pods/{name}/eviction", body)
        if code in (200, 201):
            break
        if code == 404:
            return  # gone already
        message = resp.get("message") if isinstance(resp, dict) else resp
        if code == 429:
            err(f'error when evicting pods/"{name}" -n "{ns}" (will retry after 5s): {message}')
            time.sleep(EVICTION_RETRY_S)
            continue
        errors.append(f'error when evicting pods/"{name}" -n "{ns}": {message}')
        return
    while True:  # wait for the pod to be gone (its replacement has another name)
        code, _ = api.request("GET", f"/api/v1/namespaces/{ns}/pods/{name}")
        if code == 404:
            print(f"pod/{name} evicted", flush=True)
            return
        if deadline is not None and time.time() >= deadline:
            errors.append(f'error when waiting for pod "{name}" in namespace "{ns}" to terminate: '
                          f"global timeout reached: {go_duration_str(a.timeout)}")
            return
        time.sleep(DELETE_POLL_S)


def drain(api: Api, a) -> int:
    get_node(api, a.node)
    set_unschedulable(api, a.node, True)
    deadline = time.time() + a.timeout if a.timeout > 0 else None
    code, body = api.request("GET", "/api/v1/pods")
    if code != 200:
        raise Fail(api_error(body))
    pods = [p for p in body["items"] if p["spec"].get("nodeName") == a.node]
    to_evict, errors, warnings = classify(pods, a)
    if errors:
        return drain_failed(a.node, errors)
    if warnings:
        err(f"Warning: {'; '.join(warnings)}")
    for pod in to_evict:
        print(f"evicting pod {pod['metadata']['namespace']}/{pod['metadata']['name']}", flush=True)
    failures: list[str] = []
    threads = [threading.Thread(target=evict_one, args=(api, p, a, deadline, failures)) for p in to_evict]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        return drain_failed(a.node, failures)
    print(f"node/{a.node} drained", flush=True)
    return 0


def drain_failed(node: str, errors: list[str]) -> int:
    joined = errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]"
    err(f'error: unable to drain node "{node}" due to error: {joined}, continuing command...')
    err(f"There are pending nodes to be drained:\n {node}")
    for e in errors:
        err(e)
    return 1


# --- delete node, get nodes -----------------------------------------------------------------------

def delete_nodes(api: Api, a) -> int:
    what = a.what
    if what[0] in ("node", "nodes", "no"):
        names = what[1:]
    elif all(w.startswith(("node/", "nodes/")) for w in what):
        names = [w.split("/", 1)[1] for w in what]
    else:
        raise Fail(f"the stand-in deletes only nodes (got {' '.join(what)!r})")
    if not names:
        raise Fail("error: resource(s) were provided, but no name was specified")
    failed = 0
    for name in names:
        code, body = api.request("DELETE", f"/api/v1/nodes/{name}")
        if code == 200:
            print(f'node "{name}" deleted', flush=True)
        elif code == 404 and a.ignore_not_found:
            continue
        else:
            err(api_error(body))
            failed += 1
    return 1 if failed else 0


def node_status(node: dict) -> str:
    ready = next((c for c in (node.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), None)
    word = {"True": "Ready", "False": "NotReady"}.get((ready or {}).get("status"), "Unknown")
    return word + (",SchedulingDisabled" if (node.get("spec") or {}).get("unschedulable") else "")


def get_nodes(api: Api, a) -> int:
    path = f"/api/v1/nodes/{a.name}" if a.name else "/api/v1/nodes"
    code, body = api.request("GET", path)
    if code != 200:
        raise Fail(api_error(body))
    if a.output == "json":
        import json
        print(json.dumps(body, indent=4))
        return 0
    nodes = [body] if a.name else body["items"]
    rows = [("NAME", "STATUS", "ROLES", "AGE", "VERSION") + (("INTERNAL-IP",) if a.output == "wide" else ())]
    for n in nodes:
        labels = n["metadata"].get("labels") or {}
        roles = ",".join(sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))) or "<none>"
        created = n["metadata"].get("creationTimestamp")
        age = "<unknown>"
        if created:
            t = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
            age = f"{int(time.time() - t)}s"
        info = (n.get("status") or {}).get("nodeInfo") or {}
        row = (n["metadata"]["name"], node_status(n), roles, age, info.get("kubeletVersion", ""))
        if a.output == "wide":
            ips = [x["address"] for x in (n.get("status") or {}).get("addresses") or [] if x["type"] == "InternalIP"]
            row += (ips[0] if ips else "<none>",)
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def run(api: Api, a) -> int:
    if a.command in ("cordon", "uncordon"):
        set_unschedulable(api, a.node, a.command == "cordon")
        return 0
    return {"drain": drain, "delete": delete_nodes, "get": get_nodes}[a.command](api, a)
