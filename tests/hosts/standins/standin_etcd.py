"""The stacked etcd of the test clusters, made real: Debian's etcd binary (etcd-server) run as a
static pod by the kubelet stand-in, the API stand-in's objects kept in it through etcd's v3 JSON
gateway, and the etcdctl calls kubeadm makes (member add / remove) done with Debian's etcdctl.

Shared by kubeadm.py (writes the manifest, adds and removes members), kubelet.py (runs the
manifest), crictl.py (`ps` / `exec` into the etcd "container") and standin_apiserver.py (storage).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shlex
import ssl
import subprocess
import threading
import time
from pathlib import Path

import yaml

PKI = Path("/etc/kubernetes/pki")
ETCD_PKI = PKI / "etcd"
ETCD_DIR = Path("/var/lib/etcd")
MANIFEST = Path("/etc/kubernetes/manifests/etcd.yaml")
UNIT = Path("/etc/systemd/system/kai-standin-etcd.service")
ETCD_BIN = "/usr/bin/etcd"
ETCDCTL_BIN = "/usr/bin/etcdctl"
IMAGE = "registry.k8s.io/etcd:3.6.6-0"
CLIENT_PORT, PEER_PORT = 2379, 2380
# What the real etcd pod mounts from the host (kubeadm's manifest: hostPath volumes).
POD_MOUNTS = (ETCD_DIR, ETCD_PKI)


class EtcdError(Exception):
    pass


# --- the static pod manifest (kubeadm's pkg/phases/etcd/local.go, flags of etcd 3.4+) ----------

def pod_command(name: str, address: str, initial_cluster: str, existing: bool) -> list[str]:
    """etcd's command in kubeadm's manifest. Every flag must be one Debian's etcd knows: the
    kubelet stand-in runs exactly this, and etcd refuses unknown flags."""
    cmd = [
        "etcd",
        f"--advertise-client-urls=https://{address}:{CLIENT_PORT}",
        f"--cert-file={ETCD_PKI}/server.crt",
        "--client-cert-auth=true",
        f"--data-dir={ETCD_DIR}",
        "--experimental-initial-corrupt-check=true",
        "--experimental-watch-progress-notify-interval=5s",
        f"--initial-advertise-peer-urls=https://{address}:{PEER_PORT}",
        f"--initial-cluster={initial_cluster}",
        f"--key-file={ETCD_PKI}/server.key",
        f"--listen-client-urls=https://127.0.0.1:{CLIENT_PORT},https://{address}:{CLIENT_PORT}",
        "--listen-metrics-urls=http://127.0.0.1:2381",
        f"--listen-peer-urls=https://{address}:{PEER_PORT}",
        f"--name={name}",
        f"--peer-cert-file={ETCD_PKI}/peer.crt",
        "--peer-client-cert-auth=true",
        f"--peer-key-file={ETCD_PKI}/peer.key",
        f"--peer-trusted-ca-file={ETCD_PKI}/ca.crt",
        "--snapshot-count=10000",
        f"--trusted-ca-file={ETCD_PKI}/ca.crt",
    ]
    if existing:
        cmd.insert(9, "--initial-cluster-state=existing")
    return cmd


def manifest(command: list[str]) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "etcd", "namespace": "kube-system",
                     "annotations": {"kubeadm.kubernetes.io/etcd.advertise-client-urls":
                                     command[1].split("=", 1)[1]},
                     "labels": {"component": "etcd", "tier": "control-plane"}},
        "spec": {"hostNetwork": True, "priorityClassName": "system-node-critical",
                 "containers": [{"name": "etcd", "image": IMAGE, "command": command,
                                 "volumeMounts": [{"name": "etcd-data", "mountPath": str(ETCD_DIR)},
                                                  {"name": "etcd-certs", "mountPath": str(ETCD_PKI)}]}],
                 "volumes": [{"name": "etcd-data", "hostPath": {"path": str(ETCD_DIR), "type": "DirectoryOrCreate"}},
                             {"name": "etcd-certs", "hostPath": {"path": str(ETCD_PKI), "type": "DirectoryOrCreate"}}]},
    }, sort_keys=False)


def manifest_command(text: str) -> list[str]:
    """The container's command from an etcd manifest; the program must be etcd."""
    pod = yaml.safe_load(text)
    cmd = pod["spec"]["containers"][0]["command"]
    if not cmd or cmd[0] != "etcd":
        raise EtcdError(f"etcd manifest runs {cmd[:1]!r}, not etcd")
    return [str(c) for c in cmd]


def manifest_flag(text: str, flag: str) -> str | None:
    for arg in manifest_command(text)[1:]:
        if arg.startswith(f"--{flag}="):
            return arg.split("=", 1)[1]
    return None


# --- the kubelet's part: the manifest as a systemd unit (the "container") ----------------------

def unit_text(command: list[str], manifest_sha: str) -> str:
    """etcd under systemd, restarted when it dies, as the kubelet restarts a crashed static pod.
    The unit is the container: it outlives a kubelet restart, and `kubeadm reset` removes it."""
    args = " ".join(shlex.quote(a) for a in [ETCD_BIN, *command[1:]])
    return ("[Unit]\nDescription=kai stand-in: the etcd static pod (Debian's etcd)\n"
            "StartLimitIntervalSec=0\n\n"
            f"[Service]\n# manifest-sha256={manifest_sha}\nExecStart={args}\n"
            "Restart=always\nRestartSec=1\nLimitNOFILE=65536\n")


def container_id(invocation_id: str, name: str = "etcd") -> str:
    """A 64-hex container id, new with every start of the unit (like a container's)."""
    return hashlib.sha256(f"{name}/{invocation_id}".encode()).hexdigest()


def unit_container(unit: str, name: str) -> str | None:
    """The id of the "container" a systemd unit stands for, None when it is not running."""
    r = subprocess.run(["systemctl", "show", "-p", "ActiveState,SubState,InvocationID", unit],
                       capture_output=True, text=True)
    props = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    if props.get("ActiveState") != "active" or props.get("SubState") != "running" or not props.get("InvocationID"):
        return None
    return container_id(props["InvocationID"], name)


def running_container() -> str | None:
    """The id of the running etcd "container", None when it is not running."""
    return unit_container(UNIT.name, "etcd")


# --- etcdctl (kubeadm's member add / remove; what `crictl exec` runs) --------------------------

def etcdctl(endpoints: list[str], *args: str, cert: str = "healthcheck-client",
            timeout: float = 30) -> subprocess.CompletedProcess:
    """Debian's etcdctl with the etcd CA and a client certificate of kubeadm's PKI."""
    cert_path = PKI / "apiserver-etcd-client" if cert == "apiserver-etcd-client" else ETCD_PKI / cert
    cmd = [ETCDCTL_BIN, f"--endpoints={','.join(endpoints)}", f"--cacert={ETCD_PKI}/ca.crt",
           f"--cert={cert_path}.crt", f"--key={cert_path}.key", "--dial-timeout=5s",
           "--command-timeout=10s", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={"ETCDCTL_API": "3"})


def member_list(endpoints: list[str]) -> list[dict]:
    r = etcdctl(endpoints, "member", "list", "-w", "json")
    if r.returncode != 0:
        raise EtcdError(f"etcdctl member list: {r.stderr.strip()}")
    return json.loads(r.stdout).get("members") or []


def member_add(endpoints: list[str], name: str, peer_url: str, timeout_s: float = 120) -> str:
    """Add `name` as a voting member (kubeadm's etcd phase of `join --control-plane`) -> the
    --initial-cluster the new member starts with. A member with this peer URL is reused (a join
    that is retried), and "unhealthy cluster" is retried: etcd refuses an add that would cost
    quorum while a previous new member is still starting."""
    deadline, last = time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline:
        try:
            members = member_list(endpoints)
            mine = [m for m in members if peer_url in (m.get("peerURLs") or [])]
            if not mine:
                r = etcdctl(endpoints, "member", "add", name, f"--peer-urls={peer_url}", "-w", "json")
                if r.returncode != 0:
                    raise EtcdError(f"etcdctl member add: {r.stderr.strip()}")
                members = json.loads(r.stdout).get("members") or []
            return ",".join(f"{m.get('name') or name}={m['peerURLs'][0]}"
                            for m in members if m.get("peerURLs"))
        except (EtcdError, subprocess.TimeoutExpired, ValueError) as e:
            last = str(e)
            time.sleep(2)
    raise EtcdError(f"error execution phase control-plane-join/etcd: error creating local etcd static pod "
                    f"manifest file: {last}")


def member_remove_self(peer_url: str, timeout_s: float = 120, interval_s: float = 0.5) -> str:
    """kubeadm reset's remove-etcd-member phase: this node's member leaves the cluster (not when
    it is the only one). -> what was done, for kubeadm's output. As kubeadm's etcd client does
    (RemoveMember: poll every EtcdAPICallRetryInterval = 500 ms for EtcdAPICallTimeout = 2 min,
    "member not found" counts as removed), a refused removal is retried: etcd's strict
    reconfiguration check answers "unhealthy cluster" while a member that joined moments ago is not
    yet counted active (etcd 3.4 wants 5 s of connection), which a reset right after a join meets."""
    local = [f"https://127.0.0.1:{CLIENT_PORT}"]
    members = member_list(local)
    mine = [m for m in members if peer_url in (m.get("peerURLs") or [])]
    if not mine:
        return f"no etcd member with peer URL {peer_url}"
    if len(members) == 1:
        return "this is the only etcd member: nothing to remove"
    others = [u for m in members if m not in mine for u in (m.get("clientURLs") or [])]
    member_id = format(int(mine[0]["ID"]), "x")
    deadline = time.monotonic() + timeout_s
    while True:
        r = etcdctl(others or local, "member", "remove", member_id)
        if r.returncode == 0 or "member not found" in r.stderr:
            return f"removed etcd member {mine[0].get('name')} ({member_id})"
        if time.monotonic() + interval_s > deadline:
            raise EtcdError(f"etcdctl member remove: {r.stderr.strip()}")
        time.sleep(interval_s)


# --- the API stand-in's storage: etcd's v3 JSON gateway ----------------------------------------

def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _unb64(s: str) -> str:
    return base64.b64decode(s).decode()


def _prefix_end(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class Gateway:
    """POST JSON to etcd's gRPC gateway (/v3/...) over TLS with a client certificate."""

    def __init__(self, endpoint: str, ca: str, cert: str, key: str, timeout: float = 10):
        host_port = endpoint.removeprefix("https://").rstrip("/")
        self.host, _, port = host_port.rpartition(":")
        self.port = int(port)
        self.ctx = ssl.create_default_context(cafile=ca)
        self.ctx.load_cert_chain(cert, key)
        self.timeout = timeout

    def connect(self, timeout: float | None = None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx,
                                           timeout=self.timeout if timeout is None else timeout)

    def call(self, path: str, body: dict) -> dict:
        conn = self.connect()
        try:
            conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise EtcdError(f"etcd {path} at {self.host}:{self.port}: {e}") from e
        finally:
            conn.close()
        out = json.loads(raw or b"{}")
        if resp.status != 200:
            raise EtcdError(f"etcd {path}: {resp.status} {out.get('message') or out.get('error') or raw[:200]!r}")
        return out


class EtcdState:
    """The API stand-in's sections (objects, times, heartbeats, …) as keys under PREFIX in etcd,
    with a local copy kept current by a watch -- the role of kube-apiserver's watch cache. Every
    control plane's API stand-in writes through its own etcd member; the others see the write
    through their watch, so etcd (not the stand-in) replicates."""

    PREFIX = "/registry/kai-standin/"

    def __init__(self, gateway: Gateway, sections: tuple[str, ...], load_timeout_s: float = 300):
        self.gw = gateway
        self.lock = threading.RLock()
        self.data: dict[str, dict] = {s: {} for s in sections}
        self.revs: dict[tuple[str, str], int] = {}  # (section, key) -> mod revision (deletes too)
        self.watching = threading.Event()
        rev = self._load(load_timeout_s)
        threading.Thread(target=self._watch_forever, args=(rev,), daemon=True).start()

    @classmethod
    def _split(cls, etcd_key: str) -> tuple[str, str]:
        section, _, key = etcd_key.removeprefix(cls.PREFIX).partition("/")
        return section, key

    def _load(self, timeout_s: float) -> int:
        """Read everything (waits for etcd, which the kubelet may still be starting) -> revision."""
        deadline, last = time.monotonic() + timeout_s, None
        while True:
            try:
                out = self.gw.call("/v3/kv/range", {"key": _b64(self.PREFIX), "range_end": _b64(_prefix_end(self.PREFIX))})
                break
            except (OSError, EtcdError, ValueError) as e:
                last = e
                if time.monotonic() > deadline:
                    raise EtcdError(f"etcd not reachable at {self.gw.host}:{self.gw.port}: {last}") from e
                time.sleep(1)
        with self.lock:
            for s in self.data:
                self.data[s].clear()
            for kv in out.get("kvs") or []:
                section, key = self._split(_unb64(kv["key"]))
                if section in self.data:
                    self.data[section][key] = json.loads(_unb64(kv["value"]))
                    self.revs[(section, key)] = int(kv["mod_revision"])
        return int(out["header"]["revision"])

    def _watch_forever(self, rev: int) -> None:
        while True:
            try:
                rev = self._watch(rev)
            except (OSError, EtcdError, ValueError, http.client.HTTPException) as e:
                self.watching.clear()
                print(f"etcd watch: {e}; reconnecting", flush=True)
                time.sleep(1)
                try:  # compacted or missed: read everything again
                    rev = self._load(30)
                except EtcdError as e2:
                    print(f"etcd reload: {e2}", flush=True)

    def _watch(self, rev: int) -> int:
        conn = self.gw.connect(timeout=30)  # progress notifications come every 5 s
        body = {"create_request": {"key": _b64(self.PREFIX), "range_end": _b64(_prefix_end(self.PREFIX)),
                                   "start_revision": rev + 1, "progress_notify": True}}
        conn.request("POST", "/v3/watch", body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise EtcdError(f"watch: {resp.status} {resp.read()[:200]!r}")
        try:
            while True:
                line = resp.readline()
                if not line:
                    raise EtcdError("watch stream ended")
                msg = json.loads(line)
                if "error" in msg:
                    raise EtcdError(f"watch: {msg['error']}")
                result = msg.get("result") or {}
                if result.get("canceled") or result.get("compact_revision"):
                    raise EtcdError(f"watch canceled: {result.get('cancel_reason') or 'compacted'}")
                self.watching.set()
                for ev in result.get("events") or []:
                    kv = ev["kv"]
                    section, key = self._split(_unb64(kv["key"]))
                    value = None if ev.get("type") == "DELETE" else json.loads(_unb64(kv["value"]))
                    self._cache(section, key, value, int(kv["mod_revision"]))
                    rev = max(rev, int(kv["mod_revision"]))
                rev = max(rev, int((result.get("header") or {}).get("revision", rev)))
        finally:
            conn.close()

    def _cache(self, section: str, key: str, value, rev: int) -> None:
        """Apply a change unless a newer one of the same key is already here (a watch event may
        arrive after this process's own, later write)."""
        if section not in self.data:
            return
        with self.lock:
            if self.revs.get((section, key), 0) >= rev:
                return
            self.revs[(section, key)] = rev
            if value is None:
                self.data[section].pop(key, None)
            else:
                self.data[section][key] = value

    def apply(self, ops: list[list]) -> None:
        """set/del ops in one etcd transaction; the local copy follows at the write's revision."""
        reqs = []
        for op in ops:
            k = _b64(f"{self.PREFIX}{op[1]}/{op[2]}")
            if op[0] == "set":
                reqs.append({"request_put": {"key": k, "value": _b64(json.dumps(op[3]))}})
            else:
                reqs.append({"request_delete_range": {"key": k}})
        out = self.gw.call("/v3/kv/txn", {"success": reqs})
        rev = int(out["header"]["revision"])
        for op in ops:
            self._cache(op[1], op[2], op[3] if op[0] == "set" else None, rev)

    def unhealthy(self) -> str | None:
        """kube-apiserver's /readyz/etcd check: a quorum read of /registry/health (the key it reads,
        storage/storagebackend/factory/etcd3.go) answers within 2 s -> None, or why not."""
        conn = self.gw.connect(timeout=2)
        try:
            conn.request("POST", "/v3/kv/range", body=json.dumps({"key": _b64("/registry/health")}),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            return None if resp.status == 200 else f"etcd answered {resp.status}"
        except (OSError, http.client.HTTPException) as e:
            return f"etcd at {self.gw.host}:{self.gw.port}: {e}"
        finally:
            conn.close()

    def get(self, section: str, key: str, default=None):
        with self.lock:
            return self.data[section].get(key, default)

    def items(self, section: str) -> list[tuple[str, object]]:
        with self.lock:
            return list(self.data[section].items())


def pod_path(path: str) -> str:
    """A file path as the etcd container sees it: only its two hostPath mounts exist there."""
    p = os.path.normpath(path)
    if not any(p == str(m) or p.startswith(f"{m}/") for m in POD_MOUNTS):
        raise EtcdError(f"open {path}: no such file or directory (the etcd pod mounts only "
                        f"{', '.join(str(m) for m in POD_MOUNTS)})")
    return p


# --- kube-vip's leader election (the kubelet stand-in runs kube-vip) -----------------------------

class LeaderLock:
    """kube-vip's control-plane leader election, in short: one key bound to an etcd lease, created
    only while absent (a transaction), kept by keep-alives. Whoever created it leads until it lets
    go (revokes the lease) or stops renewing (the lease expires after TTL_S for everyone else). The
    real kube-vip does the same through a coordination.k8s.io Lease, plndr-cp-lock, which the API
    server keeps in etcd: at most one control plane holds the VIP. (Pinging the VIP to see whether
    it is taken, as this stand-in once did, let two control planes claim it in the same second.)"""

    KEY = "/registry/leases/kube-system/plndr-cp-lock"
    TTL_S = 15
    # A leader that cannot renew steps down before its lease can expire for the others.
    RENEW_DEADLINE_S = 10

    def __init__(self, gateway: Gateway, identity: str):
        self.gw, self.identity = gateway, identity
        self.lease: str | None = None
        self.leading = False
        self.renewed = 0.0

    def lead(self) -> bool:
        """Renew, or try to take, the leadership -> whether this process leads now. etcd out of
        reach keeps a leader leading until RENEW_DEADLINE_S after its last renewal."""
        now = time.monotonic()
        try:
            if self.lease is None or not self._keep_alive():
                self.lease = self.gw.call("/v3/lease/grant", {"TTL": self.TTL_S})["ID"]
            self.leading = self._take_or_read() == self.lease
        except (OSError, EtcdError, ValueError, KeyError, http.client.HTTPException) as e:
            print(f"kube-vip: leader election: {e}", flush=True)
            self.leading = self.leading and now - self.renewed < self.RENEW_DEADLINE_S
            return self.leading
        if self.leading:
            self.renewed = now
        return self.leading

    def release(self) -> None:
        """Let go at once (kube-vip's ReleaseOnCancel): revoking the lease deletes the key."""
        lease, self.lease, self.leading = self.lease, None, False
        if lease is not None:
            try:
                self.gw.call("/v3/lease/revoke", {"ID": lease})
            except (OSError, EtcdError, ValueError, http.client.HTTPException) as e:
                print(f"kube-vip: revoking its lease: {e} (it expires within {self.TTL_S} s)", flush=True)

    def _keep_alive(self) -> bool:
        """-> whether the lease is still alive (an expired or unknown one answers without a TTL)."""
        out = self.gw.call("/v3/lease/keepalive", {"ID": self.lease})
        return int((out.get("result") or {}).get("TTL") or 0) > 0

    def _take_or_read(self) -> str | None:
        """Create the key with this process's lease if there is none -> the lease holding it."""
        key = _b64(self.KEY)
        value = _b64(json.dumps({"holderIdentity": self.identity, "leaseDurationSeconds": self.TTL_S}))
        out = self.gw.call("/v3/kv/txn", {
            "compare": [{"key": key, "target": "CREATE", "create_revision": 0, "result": "EQUAL"}],
            "success": [{"request_put": {"key": key, "value": value, "lease": self.lease}}],
            "failure": [{"request_range": {"key": key}}]})
        if out.get("succeeded"):
            return self.lease
        kvs = ((out.get("responses") or [{}])[0].get("response_range") or {}).get("kvs") or []
        return kvs[0].get("lease") if kvs else None
