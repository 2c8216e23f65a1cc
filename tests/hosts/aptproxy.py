"""A small caching HTTP proxy for apt inside the test hosts.

Listens on a bridge's gateway address and forwards plain-HTTP GET/HEAD requests to Debian's
mirror only (the host apt on this machine uses, read from /etc/apt/sources.list*); any other
destination, CONNECT, or method is refused with 403/405. Package files (``*.deb`` and ``by-hash``
indices, immutable by name) are cached on disk and shared between runs; index files are passed
through so that apt always sees a consistent archive.

Run as its own process (``python -m tests.hosts.aptproxy --listen ADDR:PORT --cache DIR``) so
that hosts brought up by the CLI keep a proxy after the CLI exits.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import shutil
import tempfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx

log = logging.getLogger("kai.aptproxy")

DEFAULT_ALLOWED = ("deb.debian.org",)
PORT = 3142
_CACHEABLE = re.compile(r"(\.deb|/by-hash/[A-Za-z0-9]+/[0-9a-f]+)$")
_PASS_HEADERS = ("content-type", "last-modified", "etag", "content-length")


def apt_hosts(sources_dir: Path = Path("/etc/apt")) -> tuple[str, ...]:
    """The deb.debian.org-style hosts this machine's apt uses (only Debian's own mirrors)."""
    hosts: set[str] = set()
    files = [sources_dir / "sources.list", *sorted((sources_dir / "sources.list.d").glob("*"))]
    for f in files:
        if not f.is_file() or not (f.name.endswith(".list") or f.name.endswith(".sources")):
            continue
        for url in re.findall(r"https?://[^\s\]]+", f.read_text()):
            host = urlsplit(url).hostname or ""
            if host.endswith("debian.org") and not host.startswith("snapshot."):
                hosts.add(host)
    return tuple(sorted(hosts)) or DEFAULT_ALLOWED


class ProxyHandler(BaseHTTPRequestHandler):
    server: "AptProxy"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # route to logging, not stderr noise
        log.debug("%s " + fmt, self.client_address[0], *args)

    def _refuse(self, code: int, why: str) -> None:
        body = why.encode() + b"\n"
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        log.warning("refused %s %s: %s", self.command, self.path, why)

    def do_CONNECT(self):
        self._refuse(405, "CONNECT is not allowed")

    def do_POST(self):
        self._refuse(405, "only GET and HEAD are forwarded")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_POST

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urlsplit(self.path)
        if url.scheme != "http" or url.hostname not in self.server.allowed or url.port not in (None, 80):
            self._refuse(403, f"destination not allowed: {url.scheme}://{url.netloc}")
            return
        cacheable = bool(_CACHEABLE.search(url.path))
        cached = self.server.cache_path(self.path) if cacheable else None
        if cached is not None and cached.exists():
            self._send_file(cached)
            return
        try:
            with self.server.client.stream(self.command, self.path) as resp:
                if resp.status_code != 200 or cached is None or self.command == "HEAD":
                    self._relay(resp)
                    return
                self._relay_and_store(resp, cached)
        except httpx.HTTPError as exc:
            self._refuse(502, f"upstream error: {type(exc).__name__}")

    def _send_file(self, path: Path) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if self.command != "HEAD":
            with path.open("rb") as fh:
                shutil.copyfileobj(fh, self.wfile)

    def _headers(self, resp: httpx.Response) -> None:
        self.send_response(resp.status_code)
        for name in _PASS_HEADERS:
            if name in resp.headers:
                self.send_header(name, resp.headers[name])
        if "content-length" not in resp.headers:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()

    def _relay(self, resp: httpx.Response) -> None:
        self._headers(resp)
        if self.command != "HEAD":
            for chunk in resp.iter_raw():
                self.wfile.write(chunk)

    def _relay_and_store(self, resp: httpx.Response, cached: Path) -> None:
        self._headers(resp)
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in resp.iter_raw():
                    out.write(chunk)
                    self.wfile.write(chunk)
            os.replace(tmp, cached)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


class AptProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, listen: tuple[str, int], cache: Path, allowed: tuple[str, ...]):
        super().__init__(listen, ProxyHandler)
        self.cache = cache
        self.allowed = allowed
        # No environment proxies, no redirects to other hosts: exactly the allowed mirror.
        self.client = httpx.Client(trust_env=False, follow_redirects=False,
                                   timeout=httpx.Timeout(30.0, read=120.0))

    def cache_path(self, url: str) -> Path:
        parts = urlsplit(url)
        name = hashlib.sha256(url.encode()).hexdigest()[:16] + "-" + Path(parts.path).name
        return self.cache / parts.hostname / name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="ADDR:PORT")
    parser.add_argument("--cache", required=True, type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    addr, _, port = args.listen.rpartition(":")
    server = AptProxy((addr, int(port)), args.cache, apt_hosts())
    log.info("apt proxy on %s forwarding only to %s", args.listen, ", ".join(server.allowed))
    server.serve_forever()


if __name__ == "__main__":
    main()
