"""Shared by the stand-in commands: the invocation journal and a small HTTPS client."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

JOURNAL = Path("/var/log/kai-standins.jsonl")
VERSION_FILE = Path(__file__).resolve().parent / "VERSION"

# Values that must never reach the journal: bootstrap tokens, certificate keys, CA pins.
_SECRET_FLAGS = {"--certificate-key", "--token", "--discovery-token", "--tls-bootstrap-token",
                 "--discovery-token-ca-cert-hash"}
_SECRET_PATTERNS = (re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}"), re.compile(r"\b[a-f0-9]{64}\b"))


class Fail(Exception):
    """A stand-in error: printed to stderr, exit code 1 (like kubeadm's `error execution phase`)."""


def mask_argv(argv: list[str]) -> list[str]:
    out, hide_next = [], False
    for a in argv:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        flag, eq, _ = a.partition("=")
        if flag in _SECRET_FLAGS:
            if eq:
                out.append(f"{flag}=***")
            else:
                out.append(a)
                hide_next = True
            continue
        for p in _SECRET_PATTERNS:
            a = p.sub("***", a)
        out.append(a)
    return out


def version() -> str:
    """The package version baked in at build time, e.g. "1.36.4"."""
    try:
        return VERSION_FILE.read_text().strip()
    except FileNotFoundError:
        return "0.0.0"


def journal(tool: str, argv: list[str], rc: int, started: float, path: Path = JOURNAL) -> None:
    rec = {"time": time.time(), "started": started, "host": socket.gethostname(), "tool": tool,
           "argv": mask_argv([tool] + argv), "cwd": os.getcwd(), "exit_code": rc}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")
    except OSError as e:  # the journal must not change the command's outcome
        print(f"warning: cannot write journal {path}: {e}", file=sys.stderr)


# --- the version journal ---------------------------------------------------------------------------
# One line per moment a versioned component starts or stops on this host, so a test can replay
# every host's journal in time order and check the version-skew policy at each step
# (tests/hosts/version_skew.py). The hosts share the machine's clock (containers, one kernel).
VERSIONS_JOURNAL = Path("/var/log/kai-standin-versions.jsonl")


def version_event(component: str, node: str, version_: str, event: str,
                  path: Path | None = None) -> None:
    """Append {time, host, node, component, version, event: start|stop}; never fails the caller."""
    rec = {"time": time.time(), "host": socket.gethostname(), "node": node, "component": component,
           "version": version_.removeprefix("v"), "event": event, "pid": os.getpid()}
    path = path or Path(os.environ.get("KAI_STANDIN_VERSIONS_JOURNAL") or VERSIONS_JOURNAL)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")
    except OSError as e:
        print(f"warning: cannot write version journal {path}: {e}", file=sys.stderr)


def parse_version(text: str) -> tuple[int, int, int]:
    """"v1.36.4" / "1.36.4" / "1.36" -> (1, 36, 4); raises Fail naming the text otherwise."""
    parts = text.strip().removeprefix("v").split("-")[0].split(".")
    if len(parts) not in (2, 3) or not all(p.isascii() and p.isdigit() for p in parts):
        raise Fail(f'couldn\'t parse version "{text}": illegal version string')
    major, minor, patch = (int(p) for p in (parts + ["0"])[:3])
    return major, minor, patch


FAULTS = Path("/etc/kai-standin/faults.json")


def inject_fault(tool: str, argv: list[str], path: Path = FAULTS) -> None:
    """Tests inject faults into the stand-ins (never the product): faults.json maps
    "<tool> <subcommand>" to {"fail": N, "sleep": S}: sleep S seconds, then fail the next N calls
    the way a flaky real command would (non-zero exit, an error on stderr)."""
    try:
        faults = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    key = f"{tool} {argv[0]}" if argv else tool
    fault = faults.get(key)
    if not fault:
        return
    if fault.get("sleep"):
        time.sleep(float(fault["sleep"]))
    if fault.get("fail", 0) > 0:
        fault["fail"] -= 1
        path.write_text(json.dumps(faults))
        raise Fail(f"{key}: injected transient failure ({fault['fail']} more to come)")


def run_main(tool: str, main, argv: list[str] | None = None, journal_path: Path = JOURNAL) -> int:
    """Run main(argv), journal the invocation, map Fail/SystemExit to exit codes."""
    argv = sys.argv[1:] if argv is None else argv
    started = time.time()
    rc = 0
    try:
        inject_fault(tool, argv)
        rc = main(argv) or 0
    except Fail as e:
        print(f"error: {e}", file=sys.stderr)
        rc = 1
    except SystemExit as e:  # argparse: unknown flag / subcommand -> 2
        rc = e.code if isinstance(e.code, int) else 1
    finally:
        journal(tool, argv, rc, started, journal_path)
    return rc


# --- HTTPS client --------------------------------------------------------------------------------

class Api:
    """Talks to the API stand-in. verify=None means unverified (discovery before the CA is known)."""

    def __init__(self, server: str, ca: bytes | None, cert: bytes | None = None, key: bytes | None = None,
                 bearer: str | None = None, timeout: float = 10):
        u = urllib.parse.urlsplit(server if "://" in server else f"https://{server}")
        self.host, self.port = u.hostname, u.port or 6443
        self.bearer, self.timeout = bearer, timeout
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if ca is None:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx.load_verify_locations(cadata=ca.decode())
        if cert and key:
            # ssl wants files; keep them private and short-lived.
            with tempfile.TemporaryDirectory() as d:
                cp, kp = Path(d, "c.pem"), Path(d, "k.pem")
                cp.write_bytes(cert)
                fd = os.open(kp, os.O_WRONLY | os.O_CREAT, 0o600)
                os.write(fd, key)
                os.close(fd)
                ctx.load_cert_chain(cp, kp)
        self.ctx = ctx

    def request(self, method: str, path: str, body=None, content_type: str = "application/json"):
        """-> (status, parsed JSON or text)."""
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=self.timeout)
        headers = {"Accept": "application/json"}
        if self.bearer:
            headers["Authorization"] = f"Bearer {self.bearer}"
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            data = data.encode() if isinstance(data, str) else data
            headers["Content-Type"] = content_type
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw or b"null")
        except ValueError:
            return resp.status, raw.decode(errors="replace")
