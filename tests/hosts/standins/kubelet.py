#!/usr/bin/python3
"""kubelet stand-in: `--version`, and as kubelet.service: healthz on 127.0.0.1:10248, node status
heartbeats (with its version) to the API stand-in with kubelet.conf, the kube-vip static pod's VIP
(ip addr add), restarts of the API stand-in when its static pod manifest changes (stopped while
it is moved away), and the etcd
static pod: Debian's etcd run with the manifest's flags (standin_etcd). Start and
stop are written to the version journal (standin_common.version_event)."""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

import yaml  # noqa: E402

import standin_etcd as etcd  # noqa: E402
import standin_pki as pki  # noqa: E402
from standin_apiserver import RUNNING_MANIFEST  # noqa: E402
from standin_common import Api, Fail, run_main, version, version_event  # noqa: E402

KUBE_VIP = Path("/etc/kubernetes/manifests/kube-vip.yaml")
APISERVER_MANIFEST = Path("/etc/kubernetes/manifests/kube-apiserver.yaml")
API_UNIT = Path("/etc/systemd/system/kai-standin-apiserver.service")
API_STATE = Path("/var/lib/kai-standin-apiserver")
API_HELD_MARK = API_STATE / "stopped-by-kubelet"  # its manifest left the static pod path
HEARTBEAT_S = 5.0
STATIC_POD_CHECK_S = 1.0


class Healthz(BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/healthz"
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(b"ok" if ok else b"not found")

    def log_message(self, *args):
        pass


def vip_from_manifest() -> tuple[str, str] | None:
    """(address, interface) from the kube-vip pod's env, like the real kube-vip reads them."""
    try:
        pod = yaml.safe_load(KUBE_VIP.read_text())
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env", [])}
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError) as e:
        print(f"kube-vip manifest unreadable: {e}", file=sys.stderr, flush=True)
        return None
    if env.get("address") and env.get("vip_interface"):
        return env["address"], env["vip_interface"]
    print("kube-vip manifest without address/vip_interface env", file=sys.stderr, flush=True)
    return None


class Vip:
    """kube-vip in ARP mode: the control plane leading the election (etcd.LeaderLock) holds the VIP
    on its interface; every other one makes sure it does not."""

    def __init__(self, name: str):
        self.name = name
        self.want: tuple[str, str] | None = None
        self.lock: etcd.LeaderLock | None = None
        self.held = False

    def sync(self) -> None:
        want = vip_from_manifest() if KUBE_VIP.exists() and APISERVER_MANIFEST.exists() else None
        if want != self.want:  # kube-vip's pod went, came or changed: the old one lets go
            self.release()
            self.want = want
        if want is None:
            return
        if self.lock is None:  # kube-vip reaches etcd through the API server; this, directly
            self.lock = etcd.LeaderLock(etcd.Gateway(f"https://127.0.0.1:{etcd.CLIENT_PORT}", str(etcd.ETCD_PKI / "ca.crt"),
                                                     str(etcd.ETCD_PKI / "healthcheck-client.crt"),
                                                     str(etcd.ETCD_PKI / "healthcheck-client.key"), timeout=2),
                                        self.name)
        if self.lock.lead():
            if not self.on_this_node(want):
                r = subprocess.run(["ip", "addr", "add", f"{want[0]}/32", "dev", want[1]], capture_output=True, text=True)
                if r.returncode != 0 and "File exists" not in r.stderr:
                    print(f"kube-vip: ip addr add failed: {r.stderr.strip()}", file=sys.stderr, flush=True)
                    return
            if not self.held:
                print(f"kube-vip: leading, holding {want[0]} on {want[1]}", file=sys.stderr, flush=True)
            self.held = True
        elif self.held or self.on_this_node(want):
            # lost the lead, or the address outlived an earlier kubelet process (a test host's
            # network namespace outlives a power-off): only the leader may answer for the VIP
            self.drop(want)
            print(f"kube-vip: not leading, {want[0]} released", file=sys.stderr, flush=True)

    @staticmethod
    def on_this_node(want: tuple[str, str]) -> bool:
        r = subprocess.run(["ip", "-o", "addr", "show", "dev", want[1], "to", f"{want[0]}/32"],
                           capture_output=True, text=True)
        return r.returncode == 0 and bool(r.stdout.strip())

    def drop(self, want: tuple[str, str]) -> None:
        subprocess.run(["ip", "addr", "del", f"{want[0]}/32", "dev", want[1]], capture_output=True)
        self.held = False

    def release(self) -> None:
        """The address first, then the lead: no moment with two holders."""
        if self.want is not None and (self.held or self.on_this_node(self.want)):
            self.drop(self.want)
            print(f"kube-vip: stopped, {self.want[0]} released", file=sys.stderr, flush=True)
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def parse(argv):
    p = argparse.ArgumentParser(prog="kubelet", allow_abbrev=False)
    p.add_argument("--version", action="store_true")
    for flag in ("--bootstrap-kubeconfig", "--kubeconfig", "--config", "--container-runtime-endpoint",
                 "--node-ip", "--hostname-override", "--pod-infra-container-image", "--node-labels",
                 "--register-with-taints"):
        p.add_argument(flag)
    return p.parse_args(argv)


def run(a) -> int:
    if not a.config or not Path(a.config).exists():
        raise Fail(f'failed to load kubelet config file, path: {a.config}, error: failed to load Kubelet '
                   f'config file {a.config}, error failed to read kubelet config file "{a.config}"')
    if not a.kubeconfig or not Path(a.kubeconfig).exists():
        raise Fail(f"failed to run Kubelet: unable to load bootstrap kubeconfig: stat {a.bootstrap_kubeconfig}: "
                   "no such file or directory")
    cfg = yaml.safe_load(Path(a.config).read_text()) or {}
    if cfg.get("failSwapOn", True) and len(Path("/proc/swaps").read_text().strip().splitlines()) > 1:
        raise Fail("failed to run Kubelet: running with swap on is not supported, please disable swap")
    kc = pki.read_kubeconfig(Path(a.kubeconfig).read_text())
    name, _ = pki.cert_subject(pki.load_cert(kc["cert"]))
    name = name.removeprefix("system:node:")
    # Read once: a package upgrade replaces the files, but this process stays the old kubelet
    # until it is restarted -- like the real binary.
    v = version()
    healthz = ThreadingHTTPServer(("127.0.0.1", 10248), Healthz)
    threading.Thread(target=healthz.serve_forever, daemon=True).start()
    vip = Vip(name)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=StaticPods().watch, args=(stop,), daemon=True).start()
    print(f"kubelet stand-in v{v} for node {name}, API {kc['server']}", file=sys.stderr, flush=True)
    version_event("kubelet", name, v, "start")
    seen = False  # kubeadm registers the Node; the kubelet only registers it *again*
    try:
        while not stop.is_set():
            vip.sync()
            seen = heartbeat(Api(kc["server"], kc["ca"], kc["cert"], kc["key"], timeout=4), name, v,
                             a.node_labels, seen)
            stop.wait(HEARTBEAT_S)
    finally:
        version_event("kubelet", name, v, "stop")
    vip.release()
    healthz.shutdown()
    return 0


def heartbeat(api: Api, name: str, v: str, node_labels: str | None, seen: bool) -> bool:
    """Post node status with this kubelet's version -> whether the Node exists (or existed). A Node
    deleted under a running kubelet is registered again, as the real kubelet does (so a node
    removal must stop the kubelet before deleting the Node)."""
    status = {"conditions": [{"type": "Ready"}], "nodeInfo": {"kubeletVersion": f"v{v}"}}
    try:
        code, body = api.request("PATCH", f"/api/v1/nodes/{name}/status", {"status": status},
                                 content_type="application/strategic-merge-patch+json")
        if code == 200:
            return True
        if code == 404 and seen:
            labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
            labels.update(dict(kv.split("=", 1) for kv in (node_labels or "").split(",") if "=" in kv))
            code, body = api.request("POST", "/api/v1/nodes", {
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
                "status": {"nodeInfo": {"kubeletVersion": f"v{v}", "operatingSystem": "linux",
                                        "architecture": "amd64"}}})
            print(f"registered node {name} again: {code}", file=sys.stderr, flush=True)
        else:
            print(f"node status update failed: {code} {body}", file=sys.stderr, flush=True)
    except OSError as e:
        print(f"node status update failed: {e}", file=sys.stderr, flush=True)
    return seen


class StaticPods:
    """The part of the kubelet that runs static pods. etcd.yaml: Debian's etcd with the manifest's
    flags, as a systemd unit (started, restarted when the manifest changes, stopped when it goes).
    kube-apiserver.yaml: when it changes (kubeadm upgrade rewrites it), restart the API stand-in
    so it runs what the manifest now says; the API stand-in records the hash of the manifest it
    started from (standin_apiserver.RUNNING_MANIFEST). When it goes, the API stand-in is stopped,
    and started again when it comes back."""

    def __init__(self):
        self.restarted_for: str | None = None
        self.etcd_seen = False  # this kubelet process has made sure etcd runs

    def sync(self) -> None:
        self.sync_etcd()
        self.sync_apiserver()

    def sync_etcd(self) -> None:
        if not etcd.MANIFEST.exists():
            if etcd.UNIT.exists():
                print("static pod etcd: manifest removed, stopping it", file=sys.stderr, flush=True)
                subprocess.run(["systemctl", "stop", etcd.UNIT.name], capture_output=True)
                etcd.UNIT.unlink()
                subprocess.run(["systemctl", "daemon-reload"], capture_output=True)
            return
        text = etcd.MANIFEST.read_text()
        try:
            want = etcd.unit_text(etcd.manifest_command(text), hashlib.sha256(text.encode()).hexdigest())
        except (etcd.EtcdError, KeyError, IndexError, TypeError, yaml.YAMLError) as e:
            print(f"static pod etcd: bad manifest: {e}", file=sys.stderr, flush=True)
            return
        if etcd.UNIT.exists() and etcd.UNIT.read_text() == want:
            if not self.etcd_seen:  # e.g. after a reboot: the unit is not enabled, the kubelet starts it
                subprocess.run(["systemctl", "start", etcd.UNIT.name], capture_output=True)
                self.etcd_seen = True
            return  # running, or restarted by systemd when it died
        print("static pod etcd: starting it from its manifest", file=sys.stderr, flush=True)
        etcd.UNIT.write_text(want)
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True)
        subprocess.run(["systemctl", "restart", etcd.UNIT.name], capture_output=True)
        self.etcd_seen = True

    def sync_apiserver(self) -> None:
        if not API_UNIT.exists():
            return
        # A manifest moved out of the static pod path stops the pod; moved back, it starts again
        # (an etcd restore). The mark remembers that this kubelet stopped it: an API server stopped
        # by hand (a test's outage) stays stopped.
        if not APISERVER_MANIFEST.exists():
            if not API_HELD_MARK.exists():
                print("static pod kube-apiserver: manifest removed, stopping it", file=sys.stderr, flush=True)
                API_HELD_MARK.parent.mkdir(parents=True, exist_ok=True)
                API_HELD_MARK.write_text("")
                subprocess.run(["systemctl", "stop", API_UNIT.name], capture_output=True)
            return
        if API_HELD_MARK.exists():
            print("static pod kube-apiserver: manifest back, starting it", file=sys.stderr, flush=True)
            subprocess.run(["systemctl", "start", API_UNIT.name], capture_output=True)
            API_HELD_MARK.unlink()
            return
        want = hashlib.sha256(APISERVER_MANIFEST.read_bytes()).hexdigest()
        try:
            running = (API_STATE / RUNNING_MANIFEST).read_text().strip()
        except OSError:
            return  # not started from a manifest yet
        if want != running and want != self.restarted_for:
            print("static pod kube-apiserver: manifest changed, restarting it", file=sys.stderr, flush=True)
            subprocess.run(["systemctl", "restart", API_UNIT.name], capture_output=True)
            self.restarted_for = want

    def watch(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.sync()
            except OSError as e:
                print(f"static pods: {e}", file=sys.stderr, flush=True)
            stop.wait(STATIC_POD_CHECK_S)


def main(argv) -> int:
    a = parse(argv)
    if a.version:
        print(f"Kubernetes v{version()}")
        return 0
    return run(a)


if __name__ == "__main__":
    # Only short commands are journaled: the service's long run is in journald.
    if "--version" in sys.argv[1:]:
        sys.exit(run_main("kubelet", main))
    try:
        sys.exit(main(sys.argv[1:]))
    except Fail as e:
        print(f"E0000 {e}", file=sys.stderr)
        sys.exit(1)
