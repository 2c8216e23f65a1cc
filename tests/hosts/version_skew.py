"""Check the Kubernetes version-skew policy over the stand-ins' version journals.

Every kubelet and API stand-in appends a line to /var/log/kai-standin-versions.jsonl on its host
when it starts or stops (standin_common.version_event). Replaying all hosts' lines in time order
gives, at every moment, which versions ran; `skew_violations` checks each moment against
https://kubernetes.io/releases/version-skew-policy/ :

  - kube-apiserver: in an HA cluster the newest and oldest API servers are within one minor;
  - kubelet: never newer than any kube-apiserver, and at most three minors older.

Versions are compared by minor, as the policy states them (a kubelet 1.36.5 beside an API server
1.36.4 is supported). The booted hosts are containers on one kernel, so their clocks agree.
A component killed without its stop line (SIGKILL) stays "running" until its next start: the
check errs towards reporting.

    events = read_journals(hosts)          # booted hosts (tests/hosts)
    assert not skew_violations(events), skew_violations(events)
"""

from __future__ import annotations

import json
from dataclasses import dataclass

JOURNAL = "/var/log/kai-standin-versions.jsonl"
APISERVER, KUBELET = "kube-apiserver", "kubelet"
MAX_APISERVER_MINOR_SKEW = 1
MAX_KUBELET_MINOR_LAG = 3


@dataclass(frozen=True)
class Event:
    time: float
    host: str
    node: str
    component: str
    version: str
    event: str  # "start" | "stop"

    @property
    def minor(self) -> tuple[int, int]:
        major, minor = self.version.removeprefix("v").split(".")[:2]
        return int(major), int(minor)


def parse_journal(text: str, host: str = "") -> list[Event]:
    out = []
    for line in text.splitlines():
        if line.strip():
            r = json.loads(line)
            out.append(Event(r["time"], r.get("host") or host, r["node"], r["component"], r["version"], r["event"]))
    return out


def read_journals(hosts) -> list[Event]:
    """All events of these booted hosts (objects with .exec and .name), in time order."""
    events = []
    for h in hosts:
        r = h.exec(f"cat {JOURNAL}", check=False)
        events += parse_journal(r.stdout if r.returncode == 0 else "", h.name)
    return sorted(events, key=lambda e: (e.time, e.event != "stop"))


def skew_violations(events: list[Event]) -> list[str]:
    """One message per moment a breach of the policy began (empty: the versions never broke it)."""
    running: dict[tuple[str, str], Event] = {}
    out: list[str] = []
    before: set[tuple] = set()
    for e in sorted(events, key=lambda e: (e.time, e.event != "stop")):
        key = (e.node, e.component)
        if e.event == "stop":
            running.pop(key, None)
        else:
            running[key] = e
        now = breaches(running.values())
        for b, message in sorted(now.items()):
            if b not in before:
                out.append(f"t={e.time:.3f} (after {e.component} v{e.version} {e.event} on {e.node}): {message}")
        before = set(now)
    return out


def breaches(running) -> dict[tuple, str]:
    apis = [r for r in running if r.component == APISERVER]
    kubelets = [r for r in running if r.component == KUBELET]
    out: dict[tuple, str] = {}
    if not apis:
        return out
    lo, hi = min(apis, key=lambda r: r.minor), max(apis, key=lambda r: r.minor)
    if hi.minor[1] - lo.minor[1] > MAX_APISERVER_MINOR_SKEW:
        out[("apis", hi.node, hi.version, lo.node, lo.version)] = (
            f"kube-apiserver v{hi.version} on {hi.node} and v{lo.version} on {lo.node} are more than "
            f"{MAX_APISERVER_MINOR_SKEW} minor apart")
    for k in kubelets:
        if k.minor > lo.minor:
            out[("newer", k.node, k.version, lo.node, lo.version)] = (
                f"kubelet v{k.version} on {k.node} is newer than kube-apiserver v{lo.version} on {lo.node}")
        elif hi.minor[1] - k.minor[1] > MAX_KUBELET_MINOR_LAG:
            out[("older", k.node, k.version, hi.node, hi.version)] = (
                f"kubelet v{k.version} on {k.node} is more than {MAX_KUBELET_MINOR_LAG} minors older than "
                f"kube-apiserver v{hi.version} on {hi.node}")
    return out
