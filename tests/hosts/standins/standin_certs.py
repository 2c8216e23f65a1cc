"""`kubeadm certs check-expiration` and `kubeadm certs renew all` for the kubeadm stand-in, on the
real PKI it wrote (kubeadm.py): the certificates kubeadm's renewal manager knows
(cmd/kubeadm/app/phases/certs/renewal/manager.go), their names, CAs and long names, the text
table and the `-o json|yaml` object (output.kubeadm.k8s.io/v1alpha3 CertificateExpirationInfo).

A renewal keeps subject, SANs and usages and makes a new key, like kubeadm's FileRenewer; the
validity of every leaf certificate the stand-in issues (init, join, renew) is kubeadm's one year,
or `leaf_days` from the test knob /etc/kai-standin/pki.json — how a test gets certificates that
expire soon, real ones, without waiting a year. CAs keep kubeadm's ten years and are never renewed.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

import standin_pki as pki

K8S = Path("/etc/kubernetes")
PKI = K8S / "pki"
KNOB = Path("/etc/kai-standin/pki.json")
LEAF_DAYS = 365          # kubeadm's CertificateValidityPeriod
OUTPUT_API = "output.kubeadm.k8s.io/v1alpha3"
OUTPUT_FORMATS = ("text", "json", "yaml")


def leaf_days() -> int:
    """Validity of the leaf certificates kubeadm issues now: a year, or the test knob's."""
    try:
        return int(json.loads(KNOB.read_text())["leaf_days"])
    except (OSError, ValueError, KeyError, TypeError):
        return LEAF_DAYS


@dataclass(frozen=True)
class Cert:
    name: str        # what kubeadm calls it (check-expiration's CERTIFICATE, `renew <name>`)
    file: str        # under the cert dir (PKI certificates) or /etc/kubernetes (kubeconfigs)
    ca: str          # the CA's name
    long_name: str

    @property
    def kubeconfig(self) -> bool:
        return self.file.endswith(".conf")


CAS = {"ca": "ca", "etcd-ca": "etcd/ca", "front-proxy-ca": "front-proxy-ca"}  # name -> base name
# Sorted by name, as kubeadm's renewal manager lists them.
CERTS = (
    Cert("admin.conf", "admin.conf", "ca",
         "certificate embedded in the kubeconfig file for the admin to use and for kubeadm itself"),
    Cert("apiserver", "apiserver", "ca", "certificate for serving the Kubernetes API"),
    Cert("apiserver-etcd-client", "apiserver-etcd-client", "etcd-ca",
         "certificate the apiserver uses to access etcd"),
    Cert("apiserver-kubelet-client", "apiserver-kubelet-client", "ca",
         "certificate for the API server to connect to kubelet"),
    Cert("controller-manager.conf", "controller-manager.conf", "ca",
         "certificate embedded in the kubeconfig file for the controller manager to use"),
    Cert("etcd-healthcheck-client", "etcd/healthcheck-client", "etcd-ca",
         "certificate for liveness probes to healthcheck etcd"),
    Cert("etcd-peer", "etcd/peer", "etcd-ca", "certificate for etcd nodes to communicate with each other"),
    Cert("etcd-server", "etcd/server", "etcd-ca", "certificate for serving etcd"),
    Cert("front-proxy-client", "front-proxy-client", "front-proxy-ca",
         "certificate for the front proxy client"),
    Cert("scheduler.conf", "scheduler.conf", "ca",
         "certificate embedded in the kubeconfig file for the scheduler manager to use"),
    Cert("super-admin.conf", "super-admin.conf", "ca",
         "certificate embedded in the kubeconfig file for the super-admin"),
)


def _path(cert: Cert, cert_dir: Path) -> Path:
    return K8S / cert.file if cert.kubeconfig else cert_dir / f"{cert.file}.crt"


def read_cert(cert: Cert, cert_dir: Path) -> x509.Certificate | None:
    path = _path(cert, cert_dir)
    if not path.exists():
        return None
    if cert.kubeconfig:
        return pki.load_cert(pki.read_kubeconfig(path.read_text())["cert"])
    return pki.load_cert(path.read_bytes())


def _ca_paths(ca: str, cert_dir: Path) -> tuple[Path, Path]:
    base = CAS[ca]
    return cert_dir / f"{base}.crt", cert_dir / f"{base}.key"


def _entry(name: str, cert: x509.Certificate | None, now: dt.datetime, ca: str | None,
           external: bool) -> dict:
    if cert is None:
        return {"name": name, "expirationDate": None, "residualTime": 0, "externallyManaged": False,
                "missing": True}
    # not_valid_after_utc from cryptography 42; the test hosts' Debian 12 has 38
    expires = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after.replace(tzinfo=dt.timezone.utc)
    entry = {"name": name, "expirationDate": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
             "residualTime": int((expires - now).total_seconds()), "externallyManaged": external}
    if ca:
        entry["caName"] = ca
    entry["missing"] = False
    return entry


def expiration_info(cert_dir: Path = PKI, now: dt.datetime | None = None) -> dict:
    """kubeadm's CertificateExpirationInfo (v1alpha3), as `-o json` prints it."""
    now = now or dt.datetime.now(dt.timezone.utc)
    certs = []
    for c in CERTS:
        ca_crt, ca_key = _ca_paths(c.ca, cert_dir)
        certs.append(_entry(c.name, read_cert(c, cert_dir), now, c.ca, ca_crt.exists() and not ca_key.exists()))
    cas = []
    for name in sorted(CAS):
        crt, key = _ca_paths(name, cert_dir)
        cas.append(_entry(name, pki.load_cert(crt.read_bytes()) if crt.exists() else None, now, None,
                          crt.exists() and not key.exists()))
    return {"kind": "CertificateExpirationInfo", "apiVersion": OUTPUT_API,
            "certificates": certs, "certificateAuthorities": cas}


def short_human_duration(seconds: int) -> str:
    """apimachinery's duration.ShortHumanDuration."""
    if seconds < 0:
        return "<invalid>"
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if minutes < 60:
        return f"{minutes}m"
    if hours < 24:
        return f"{hours}h"
    if hours < 24 * 365:
        return f"{days}d"
    return f"{days // 365}y"


def _table(rows: list[list[str]]) -> list[str]:
    """Go's tabwriter with minwidth 10, padding 3, as kubeadm sets it up."""
    widths = [max(10, *(len(r[i]) + 3 for r in rows if i < len(r) - 1)) for i in range(len(rows[0]) - 1)]
    return ["".join(cell.ljust(widths[i]) if i < len(r) - 1 else cell for i, cell in enumerate(r)).rstrip()
            for r in rows]


def text_output(info: dict) -> str:
    def when(e: dict) -> str:
        return dt.datetime.strptime(e["expirationDate"], "%Y-%m-%dT%H:%M:%SZ").strftime("%b %d, %Y %H:%M UTC")

    yes_no = lambda b: "yes" if b else "no"  # noqa: E731
    certs = [["CERTIFICATE", "EXPIRES", "RESIDUAL TIME", "CERTIFICATE AUTHORITY", "EXTERNALLY MANAGED"]]
    certs += [[f"!MISSING! {e['name']}", "", "", "", ""] if e["missing"] else
              [e["name"], when(e), short_human_duration(e["residualTime"]), e["caName"],
               yes_no(e["externallyManaged"])] for e in info["certificates"]]
    cas = [["CERTIFICATE AUTHORITY", "EXPIRES", "RESIDUAL TIME", "EXTERNALLY MANAGED"]]
    cas += [[f"!MISSING! {e['name']}", "", "", ""] if e["missing"] else
            [e["name"], when(e), short_human_duration(e["residualTime"]), yes_no(e["externallyManaged"])]
            for e in info["certificateAuthorities"]]
    return "\n".join(_table(certs) + [""] + _table(cas)) + "\n"


def check_expiration(output: str, cert_dir: Path = PKI) -> str:
    info = expiration_info(cert_dir)
    if output == "json":
        return json.dumps(info, indent=4) + "\n"
    if output == "yaml":
        return yaml.safe_dump(info, sort_keys=False)
    return ("[check-expiration] Reading configuration from the cluster...\n"
            "[check-expiration] FYI: You can look at this config file with "
            "'kubectl -n kube-system get cm kubeadm-config -o yaml'\n\n" + text_output(info))


def _renewed(old: x509.Certificate, ca_key, ca_cert):
    """A new key and certificate with the old one's subject, SANs and usages (kubeadm's renewal)."""
    cn, orgs = pki.cert_subject(old)
    try:
        san = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(n) for n in san.get_values_for_type(x509.DNSName)] + \
               [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        sans = []
    try:
        usages = old.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = []
    return pki.issue(ca_key, ca_cert, cn, orgs=tuple(orgs), sans=sans,
                     server=ExtendedKeyUsageOID.SERVER_AUTH in usages,
                     client=ExtendedKeyUsageOID.CLIENT_AUTH in usages, days=leaf_days())


def renew_all(say, cert_dir: Path = PKI) -> None:
    """`kubeadm certs renew all`: every certificate that exists, signed by its local CA; one line
    each, as kubeadm prints them."""
    say("[renew] Reading configuration from the cluster...")
    say("[renew] FYI: You can look at this config file with 'kubectl -n kube-system get cm kubeadm-config -o yaml'\n")
    for c in CERTS:
        old = read_cert(c, cert_dir)
        if old is None:
            say(f"MISSING! {c.long_name}")
            continue
        ca_crt, ca_key = _ca_paths(c.ca, cert_dir)
        if not ca_key.exists():
            say(f"Detected external {CAS[c.ca]}, {c.long_name} can't be renewed")
            continue
        key, cert = _renewed(old, pki.load_key(ca_key.read_bytes()), pki.load_cert(ca_crt.read_bytes()))
        path = _path(c, cert_dir)
        if c.kubeconfig:
            kc = yaml.safe_load(path.read_text())
            current = next(ctx["context"] for ctx in kc["contexts"] if ctx["name"] == kc["current-context"])
            user = next(u["user"] for u in kc["users"] if u["name"] == current["user"])
            user["client-certificate-data"] = base64.b64encode(pki.cert_pem(cert)).decode()
            user["client-key-data"] = base64.b64encode(pki.key_pem(key)).decode()
            pki.write_private(path, yaml.safe_dump(kc, sort_keys=False).encode())
        else:
            pki.write_private(cert_dir / f"{c.file}.key", pki.key_pem(key))
            pki.write_private(path, pki.cert_pem(cert), 0o644)
        say(f"{c.long_name} renewed")
    say("\nDone renewing certificates. You must restart the kube-apiserver, kube-controller-manager, "
        "kube-scheduler and etcd, so that they can use the new certificates.")
