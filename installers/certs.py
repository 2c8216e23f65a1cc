"""The certs mode's judging: what `kubeadm certs check-expiration -o json` says on each control
plane (certs-check.sh hands it back), as rows of days left, and what is wrong with them.

kubeadm's object is output.kubeadm.k8s.io/v1alpha3 CertificateExpirationInfo
(cmd/kubeadm/app/apis/output/v1alpha3/types.go): `certificates` and `certificateAuthorities`, each
entry {name, expirationDate (RFC 3339), residualTime (seconds, negative once expired),
externallyManaged, caName (certificates only), missing}. Days left are whole days, rounded down,
as health reports them (installers/cluster_check.py, whose CERT_WARN_DAYS is the warning line here).
Pure: no I/O.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from installers.cluster_check import CERT_WARN_DAYS

OUTPUT_API = "output.kubeadm.k8s.io/v1alpha3"
# Only the node kubeadm init ran on has super-admin.conf (a joined control plane has none).
MAY_BE_MISSING = ("super-admin.conf",)
DAY_S = 86400


@dataclass(frozen=True)
class CertRow:
    node: str
    certificate: str   # kubeadm's name: apiserver, etcd-peer, admin.conf, … ; a CA: ca, etcd-ca, …
    authority: bool    # a CA (kubeadm never renews those)
    ca: str            # the CA that signed it ("" for a CA)
    expires: str       # RFC 3339, "" when missing
    days_left: int | None  # whole days, negative once expired; None when missing
    missing: bool = False
    external: bool = False  # its CA's key is not on the node: kubeadm cannot renew it

    @property
    def renewable(self) -> bool:
        return not (self.authority or self.missing or self.external)

    def row(self) -> dict:
        return asdict(self)


def parse_expiration(node: str, text: str) -> list[CertRow]:
    """The rows of one node's `kubeadm certs check-expiration -o json`; ValueError naming the
    node when it is not kubeadm's object."""
    try:
        info = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{node}: kubeadm certs check-expiration -o json printed no JSON: {exc}") from None
    if not isinstance(info, dict) or info.get("kind") != "CertificateExpirationInfo":
        raise ValueError(f"{node}: kubeadm certs check-expiration -o json: not a CertificateExpirationInfo "
                         f"({str(info)[:80]})")
    if info.get("apiVersion") != OUTPUT_API:
        raise ValueError(f"{node}: kubeadm certs check-expiration: apiVersion {info.get('apiVersion')!r}, "
                         f"kai reads {OUTPUT_API}")
    rows = []
    for key, authority in (("certificates", False), ("certificateAuthorities", True)):
        for entry in info.get(key) or []:
            missing = bool(entry.get("missing"))
            seconds = entry.get("residualTime")
            rows.append(CertRow(
                node=node, certificate=str(entry["name"]), authority=authority,
                ca=str(entry.get("caName") or ""), expires=str(entry.get("expirationDate") or ""),
                days_left=None if missing or seconds is None else int(seconds) // DAY_S,
                missing=missing, external=bool(entry.get("externallyManaged"))))
    return rows


def by_node(rows: list[CertRow]) -> dict[str, dict[str, int | None]]:
    """{node: {certificate: days left}}: what `cluster_info` carries."""
    out: dict[str, dict[str, int | None]] = {}
    for r in rows:
        out.setdefault(r.node, {})[r.certificate] = r.days_left
    return out


def judge(rows: list[CertRow], warn_days: int = CERT_WARN_DAYS) -> tuple[list[str], list[str]]:
    """(errors, warnings): an expired certificate is an error; one under warn_days, or missing
    (but for super-admin.conf on a joined control plane), a warning."""
    errors, warnings = [], []
    for r in rows:
        what = f"{r.node}: {'CA ' if r.authority else ''}{r.certificate}"
        if r.missing:
            if r.certificate not in MAY_BE_MISSING:
                warnings.append(f"{what} is missing")
        elif r.days_left is not None and r.days_left < 0:
            errors.append(f"{what} expired on {r.expires[:10]}")
        elif r.days_left is not None and r.days_left < warn_days:
            warnings.append(f"{what} expires in {r.days_left} days ({r.expires[:10]})"
                            + ("" if r.renewable else ": kubeadm does not renew it"))
    return errors, warnings


def not_renewed(before: list[CertRow], after: list[CertRow]) -> list[str]:
    """Each renewable certificate whose expiry did not move later: what a renewal left behind."""
    old = {(r.node, r.certificate): r for r in before}
    problems = []
    for r in after:
        prev = old.get((r.node, r.certificate))
        if prev is None or not (r.renewable and prev.renewable):
            continue
        if r.expires <= prev.expires:  # RFC 3339 in UTC: ordered as text
            problems.append(f"{r.node}: {r.certificate} still expires on {r.expires[:10]} after the renewal")
    return problems


def report_rows(rows: list[CertRow], before: list[CertRow] | None = None) -> list[dict]:
    """The `certificates` artifact: a row per certificate per node (days left before the renewal
    too, when there was one)."""
    old = {(r.node, r.certificate): r for r in before or []}
    out = []
    for r in rows:
        row = {"node": r.node, "certificate": r.certificate, "kind": "CA" if r.authority else "certificate",
               "signed by": r.ca, "expires": r.expires, "days left": "" if r.days_left is None else r.days_left,
               "state": state(r)}
        if before is not None:
            prev = old.get((r.node, r.certificate))
            row["days left before"] = "" if prev is None or prev.days_left is None else prev.days_left
        out.append(row)
    return out


def state(r: CertRow, warn_days: int = CERT_WARN_DAYS) -> str:
    if r.missing:
        return "missing"
    if r.days_left is not None and r.days_left < 0:
        return "EXPIRED"
    if r.days_left is not None and r.days_left < warn_days:
        return "expiring"
    return "ok"
