"""Certificates, kubeconfigs, bootstrap tokens and the cluster-info JWS for the stand-ins.

Written against python3-cryptography 38 (Debian 12), which is what the test hosts have.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import string
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
CERT_KEY_RE = re.compile(r"^[a-f0-9]{64}$")
_TOKEN_ALPHABET = string.ascii_lowercase + string.digits


def new_token() -> str:
    pick = lambda n: "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(n))  # noqa: E731
    return f"{pick(6)}.{pick(16)}"


def new_certificate_key() -> str:
    return secrets.token_hex(32)


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name(attrs + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def new_ca(cn: str = "kubernetes", days: int = 3650):
    key = new_key()
    now = dt.datetime.utcnow()
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, True, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _san(names) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def issue(ca_key, ca_cert, cn: str, *, orgs: tuple[str, ...] = (), sans=(), server=False,
          client=False, key=None, days: int = 365):
    """Sign a leaf certificate; returns (key, cert)."""
    key = key or new_key()
    now = dt.datetime.utcnow()
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    b = (x509.CertificateBuilder().subject_name(_name(cn, orgs)).issuer_name(ca_cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
         .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(_san(sans)), critical=False)
    return key, b.sign(ca_key, hashes.SHA256())


def sign_csr(ca_key, ca_cert, csr: x509.CertificateSigningRequest, days: int = 365) -> x509.Certificate:
    """Sign a client CSR keeping its subject (the kubelet's system:node:<name> / system:nodes)."""
    now = dt.datetime.utcnow()
    return (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca_cert.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))


def new_csr(key, cn: str, orgs: tuple[str, ...] = ()) -> x509.CertificateSigningRequest:
    return x509.CertificateSigningRequestBuilder().subject_name(_name(cn, orgs)).sign(key, hashes.SHA256())


def cert_pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def pub_pem(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def load_cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def load_key(pem: bytes):
    return serialization.load_pem_private_key(pem, password=None)


def ca_cert_hash(cert: x509.Certificate) -> str:
    """kubeadm's discovery pin: sha256 of the CA's SubjectPublicKeyInfo (DER)."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def cert_subject(cert: x509.Certificate) -> tuple[str, list[str]]:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return (cn[0].value if cn else ""), [o.value for o in orgs]


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def kubeconfig(server: str, ca: bytes, user: str, client_cert: bytes, client_key: bytes,
               cluster: str = "kubernetes") -> str:
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    ctx = f"{user}@{cluster}"
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"certificate-authority-data": b64(ca), "server": server}}],
        "contexts": [{"name": ctx, "context": {"cluster": cluster, "user": user}}],
        "current-context": ctx, "preferences": {},
        "users": [{"name": user, "user": {"client-certificate-data": b64(client_cert),
                                          "client-key-data": b64(client_key)}}],
    }, sort_keys=False)


def read_kubeconfig(text: str) -> dict:
    """-> {server, ca, cert, key} (PEM bytes) of the current context."""
    kc = yaml.safe_load(text)
    ctx_name = kc["current-context"]
    ctx = next(c["context"] for c in kc["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in kc["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in kc["users"] if u["name"] == ctx["user"])
    d = base64.b64decode
    return {"server": cluster["server"], "ca": d(cluster["certificate-authority-data"]),
            "cert": d(user["client-certificate-data"]), "key": d(user["client-key-data"])}


# --- cluster-info JWS (bootstrap-token signing, RFC 7515 detached HS256 like the real signer) ----

def _b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jws_detached(token_id: str, token_secret: str, payload: str) -> str:
    header = _b64url(json.dumps({"alg": "HS256", "kid": token_id}, separators=(",", ":")).encode())
    signing_input = f"{header}.{_b64url(payload.encode())}".encode()
    sig = hmac.new(f"{token_id}.{token_secret}".encode(), signing_input, hashlib.sha256).digest()
    return f"{header}..{_b64url(sig)}"


def jws_verify(token_id: str, token_secret: str, payload: str, detached: str) -> bool:
    return hmac.compare_digest(jws_detached(token_id, token_secret, payload), detached)


# --- kubeadm-certs: control-plane certificates encrypted with the certificate key (AES-GCM) -----

SHARED_CERTS = ("ca.crt", "ca.key", "sa.key", "sa.pub", "front-proxy-ca.crt", "front-proxy-ca.key",
                "etcd/ca.crt", "etcd/ca.key")


def encrypt_certs(files: dict[str, bytes], certificate_key: str) -> dict[str, str]:
    aes = AESGCM(bytes.fromhex(certificate_key))
    out = {}
    for name, data in files.items():
        nonce = os.urandom(12)
        out[name.replace("/", "-")] = base64.b64encode(nonce + aes.encrypt(nonce, data, None)).decode()
    return out


def decrypt_certs(data: dict[str, str], certificate_key: str) -> dict[str, bytes]:
    """Raises cryptography's InvalidTag when the key is wrong."""
    aes = AESGCM(bytes.fromhex(certificate_key))
    out = {}
    for name in SHARED_CERTS:
        blob = base64.b64decode(data[name.replace("/", "-")])
        out[name] = aes.decrypt(blob[:12], blob[12:], None)
    return out
