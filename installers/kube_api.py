"""The Kubernetes API as the admin kubeconfig's user: its CA pinned, its client certificate
presented (plain httpx and ssl, no kubectl). Shared by the looks at a running cluster:
installers/cluster_check.py (verify, health, remove_nodes' verify) and installers/upgrade_checks.py.
"""

from __future__ import annotations

import base64
import socket
import ssl
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import httpx
import yaml
from cryptography import x509


class KubeconfigCredentials:
    """The first cluster and user of a kubeconfig as an SSL context (files removed on close)."""

    def __init__(self, kubeconfig: Path):
        config = yaml.safe_load(Path(kubeconfig).read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        self.server = cluster["server"].rstrip("/")
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        self.client_cert = base64.b64decode(user["client-certificate-data"])
        key = base64.b64decode(user["client-key-data"])
        self.context = ssl.create_default_context(cadata=ca)
        # ssl only loads a client key from a file: a private 0700 dir, deleted right away
        with tempfile.TemporaryDirectory(prefix="kai-cred-") as tmp:
            cert_path, key_path = Path(tmp, "c.pem"), Path(tmp, "k.pem")
            cert_path.write_bytes(self.client_cert)
            key_path.touch(mode=0o600)
            key_path.write_bytes(key)
            self.context.load_cert_chain(cert_path, key_path)

    def client(self, timeout: float) -> httpx.Client:
        return httpx.Client(base_url=self.server, verify=self.context, timeout=timeout)

    def serving_cert(self, timeout: float) -> x509.Certificate:
        url = urlparse(self.server)
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout) as sock:
            with self.context.wrap_socket(sock, server_hostname=url.hostname) as tls:
                return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def is_ready(conditions: list[dict]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions or [])


def describe_error(exc: BaseException) -> str:
    # some httpx/ssl errors have an empty str(): the type alone still says what happened
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
