"""kai's node scripts (installers/scripts/*.sh), run for real where that cannot change this machine.

- shellcheck on every script (no findings allowed);
- lib.sh helpers: done markers, atomic change-detecting writes, the /etc/hosts block, secret
  placeholders (under strace: no secret in any execve argv or environment);
- facts.sh run on this machine (read-only);
- kubeadm-join, join-credentials, kubeadm-init, kubeconfig, kube-vip, cni, storage and reset run
  end to end in a sandbox (private mount namespace with an overlay /etc, a new network namespace
  for reset's iptables work) against strict fake kubeadm/kubectl and a loopback HTTP server.
os-prep, containerd and kube-packages change the machine itself (swap, sysctl, packages,
services): they are exercised on booted test hosts (tests/hosts/), not here.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import re
import shutil
import socket
import subprocess
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.scripts_harness import SCRIPTS_DIR, ScriptNode, can_sandbox, lib_call
from tests.support.ports import free_port

OWN_SCRIPTS = ["lib.sh", "facts.sh", "os-prep.sh", "containerd.sh", "kube-packages.sh",
               "kube-vip.sh", "kubeadm-init.sh", "join-credentials.sh", "kubeadm-join.sh",
               "kubeconfig.sh", "cni.sh", "storage.sh", "reset.sh", "local-address.sh"]
STEP_SCRIPTS = [s for s in OWN_SCRIPTS if s != "lib.sh"]
MARKER_SCRIPTS = ["os-prep.sh", "containerd.sh", "kube-packages.sh", "kube-vip.sh",
                  "kubeadm-init.sh", "kubeadm-join.sh", "cni.sh", "storage.sh"]

TOKEN = "abcdef.0123456789abcdef"
CA_HASH = "sha256:" + "7" * 64
CERT_KEY = "c0ffee" + "1" * 58

needs_sandbox = pytest.mark.skipif(not can_sandbox(), reason="needs root and unshare")


@pytest.fixture
def node(tmp_path: Path) -> ScriptNode:
    return ScriptNode(tmp_path / "node")


# --- static checks ------------------------------------------------------------------------------

@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS_DIR.glob("*.sh")))
def test_shellcheck_clean(script: str) -> None:  # every script, the day-2 modes' too
    assert shutil.which("shellcheck"), "shellcheck is required (apt-get install shellcheck)"
    res = subprocess.run(["shellcheck", "-x", "-P", str(SCRIPTS_DIR), str(SCRIPTS_DIR / script)],
                         capture_output=True, text=True, cwd=SCRIPTS_DIR)
    assert res.returncode == 0 and res.stdout == "", res.stdout + res.stderr


@pytest.mark.parametrize("script", STEP_SCRIPTS)
def test_script_header_and_markers(script: str) -> None:
    text = (SCRIPTS_DIR / script).read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert '. "${0%/*}/lib.sh"' in text
    has_markers = "\nkai_begin" in text and "\nkai_done" in text
    assert has_markers == (script in MARKER_SCRIPTS), "state-changing steps (only) use done markers"


@pytest.mark.parametrize("script,first_required", [
    ("facts.sh", "KAI_OUT_DIR"), ("os-prep.sh", "KAI_NODE_NAME"),
    ("containerd.sh", "KAI_CONTAINERD_SOURCE"), ("kube-packages.sh", "KAI_K8S_MINOR"),
    ("kube-vip.sh", "KAI_KUBE_VIP_PHASE"), ("kubeadm-init.sh", "KAI_NODE_NAME"),
    ("join-credentials.sh", "KAI_TOKEN_TTL"), ("kubeadm-join.sh", "KAI_NODE_NAME"),
    ("kubeconfig.sh", "KAI_OUT_DIR"), ("cni.sh", "KAI_CNI"), ("storage.sh", "KAI_LOCAL_PATH_URL"),
    ("reset.sh", "KAI_RESET_PACKAGES"), ("local-address.sh", "KAI_OUT_DIR")])
def test_missing_input_is_named(tmp_path: Path, script: str, first_required: str) -> None:
    # Checked before anything is touched, so running it here is safe.
    res = subprocess.run(["bash", str(SCRIPTS_DIR / script)], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "KAI_STATE_DIR": str(tmp_path)})
    assert res.returncode != 0
    assert f"{first_required} is required" in res.stderr
    assert not list(tmp_path.iterdir()), "nothing may be written before the inputs are checked"


# --- lib.sh -------------------------------------------------------------------------------------

MARKER_STEP = """
kai_begin
echo ran >> "$COUNT_FILE"
[[ ${FAIL_BEFORE_DONE:-0} == 1 ]] && exit 3
kai_done
"""


def test_done_markers(tmp_path: Path) -> None:
    state = tmp_path / "state"
    count = tmp_path / "count"

    def step(h: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return lib_call(tmp_path, MARKER_STEP, {"KAI_STATE_DIR": str(state), "KAI_STEP": "runtime",
                                                "KAI_STEP_HASH": h, "COUNT_FILE": str(count),
                                                **extra})

    first = step("h1")
    assert first.returncode == 0, first.stderr
    assert (state / "done" / "runtime").read_text() == "h1\n"
    assert oct((state / "done" / "runtime").stat().st_mode & 0o777) == "0o600"
    again = step("h1")
    assert again.returncode == 0 and "already done" in again.stdout
    assert count.read_text().count("ran") == 1
    changed = step("h2")
    assert changed.returncode == 0 and "inputs changed" in changed.stdout
    assert count.read_text().count("ran") == 2
    assert (state / "done" / "runtime").read_text() == "h2\n"
    # killed (or failed) before kai_done with new inputs: the next run redoes it
    assert step("h3", FAIL_BEFORE_DONE="1").returncode == 3
    assert step("h3").returncode == 0
    assert count.read_text().count("ran") == 4


def test_done_marker_inputs_are_checked(tmp_path: Path) -> None:
    res = lib_call(tmp_path, "kai_begin", {"KAI_STATE_DIR": str(tmp_path), "KAI_STEP": "x"})
    assert res.returncode != 0 and "KAI_STEP_HASH is required" in res.stderr
    res = lib_call(tmp_path, "kai_begin", {"KAI_STATE_DIR": str(tmp_path), "KAI_STEP": "../etc",
                                           "KAI_STEP_HASH": "h"})
    assert res.returncode != 0 and "not a plain step name" in res.stderr


def test_write_file_detects_changes_and_cleans_leftovers(tmp_path: Path) -> None:
    dest = tmp_path / "conf" / "a.conf"
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / ".a.conf.kai-stale1").write_text("left by a killed run")
    snippet = f"""
    kai_write_file {dest} 0640 <<<"one"; echo "first=$KAI_CHANGED"
    KAI_CHANGED=0; kai_write_file {dest} 0640 <<<"one"; echo "same=$KAI_CHANGED"
    KAI_CHANGED=0; kai_write_file {dest} 0640 <<<"two"; echo "other=$KAI_CHANGED"
    """
    res = lib_call(tmp_path, snippet)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["first=1", "same=0", "other=1"]
    assert dest.read_text() == "two\n"
    assert oct(dest.stat().st_mode & 0o777) == "0o640"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.conf"]


def test_hosts_block_is_replaced_not_appended(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n::1 localhost\n")
    block = tmp_path / "block"
    # render.py's form: the block carries its own markers
    block.write_text("# BEGIN kai managed block (cluster c1)\n10.250.0.2\tcp-1\n# END kai managed block\n")

    def render() -> str:
        res = lib_call(tmp_path, f"kai_render_hosts {hosts} {block} > {hosts}.new && mv {hosts}.new {hosts}")
        assert res.returncode == 0, res.stderr
        return hosts.read_text()

    once = render()
    assert once == ("127.0.0.1 localhost\n::1 localhost\n# BEGIN kai managed block (cluster c1)\n"
                    "10.250.0.2\tcp-1\n# END kai managed block\n")
    assert render() == once
    block.write_text("10.250.0.3 w-1\n")  # bare lines get the short markers
    assert render() == "127.0.0.1 localhost\n::1 localhost\n# BEGIN kai\n10.250.0.3 w-1\n# END kai\n"
    block.write_text("")
    assert render() == "127.0.0.1 localhost\n::1 localhost\n"


def test_sha256_helpers(tmp_path: Path) -> None:
    f = tmp_path / "runc.amd64"
    f.write_bytes(b"binary")
    good = hashlib.sha256(b"binary").hexdigest()
    sums = tmp_path / "runc.sha256sum"
    sums.write_text(f"{'0' * 64}  runc.arm64\n{good} *runc.amd64\n")
    ok = lib_call(tmp_path, f'kai_sha256_verify {f} "$(kai_sha256_from_list {sums} runc.amd64)"')
    assert ok.returncode == 0 and "sha256 ok" in ok.stdout
    bad = lib_call(tmp_path, f"kai_sha256_verify {f} {'0' * 64}")
    assert bad.returncode != 0
    assert f"expected {'0' * 64}, got {good}" in bad.stderr
    missing = lib_call(tmp_path, f"kai_sha256_from_list {sums} runc.s390x")
    assert missing.returncode != 0 and "no sha256 for runc.s390x" in missing.stderr


def test_module_state_knows_builtins_and_missing(tmp_path: Path) -> None:
    res = lib_call(tmp_path, "kai_module_state overlay; kai_module_state kai_no_such_module")
    assert res.returncode == 0, res.stderr
    overlay, missing = res.stdout.split()
    assert overlay in {"builtin", "loaded", "loadable"}
    assert missing == "missing"
    res = lib_call(tmp_path, "kai_module_ensure kai_no_such_module")
    assert res.returncode != 0 and "neither built in nor loadable" in res.stderr


# --- secrets ------------------------------------------------------------------------------------

JOIN_TEMPLATE = """apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: cp.example:6443
    token: __KAI_JOIN_TOKEN__
    caCertHashes: ["__KAI_CA_CERT_HASH__"]
controlPlane:
  certificateKey: __KAI_CERTIFICATE_KEY__
"""


def test_render_secrets_keeps_them_off_command_lines(tmp_path: Path) -> None:
    assert shutil.which("strace"), "strace is required (apt-get install strace)"
    src, dest, log = tmp_path / "join.yaml", tmp_path / "out.yaml", tmp_path / "strace.log"
    src.write_text(JOIN_TEMPLATE)
    res = lib_call(tmp_path, f"kai_render_secrets {src} {dest}",
                   {"KAI_JOIN_TOKEN": TOKEN, "KAI_CA_CERT_HASH": CA_HASH,
                    "KAI_CERTIFICATE_KEY": CERT_KEY}, strace_log=log)
    assert res.returncode == 0, res.stderr
    out = dest.read_text()
    assert f"token: {TOKEN}\n" in out and f'["{CA_HASH}"]' in out and CERT_KEY in out
    assert "__KAI_" not in out
    assert oct(dest.stat().st_mode & 0o777) == "0o600"
    execs = [ln for ln in log.read_text().splitlines() if "execve(" in ln]
    assert len(execs) >= 2, "strace saw the helper's commands (rm, chmod)"
    for secret in (TOKEN, CA_HASH, CERT_KEY):
        assert not any(secret in ln for ln in execs)
        assert secret not in res.stdout + res.stderr


def test_render_secrets_names_missing_secret(tmp_path: Path) -> None:
    src, dest = tmp_path / "join.yaml", tmp_path / "out.yaml"
    src.write_text(JOIN_TEMPLATE)
    res = lib_call(tmp_path, f"kai_render_secrets {src} {dest}",
                   {"KAI_JOIN_TOKEN": TOKEN, "KAI_CA_CERT_HASH": CA_HASH})
    assert res.returncode != 0
    assert "KAI_CERTIFICATE_KEY is required" in res.stderr and TOKEN not in res.stderr
    src.write_text("token: __KAI_JOIN_TOKEN__\nother: __KAI_SOMETHING__\n")
    res = lib_call(tmp_path, f"kai_render_secrets {src} {dest}", {"KAI_JOIN_TOKEN": TOKEN})
    assert res.returncode != 0 and "unknown __KAI_" in res.stderr


# --- facts.sh -----------------------------------------------------------------------------------

FACT_SHAPES = {
    "os_id": r"[a-z0-9._-]+|unknown", "os_version_id": r"[0-9A-Za-z._-]+|unknown",
    "os_pretty": r".+", "arch": r"x86_64|aarch64|[a-z0-9_]+", "cpus": r"[1-9][0-9]*",
    "mem_mb": r"[1-9][0-9]*", "disk_free_mb": r"[0-9]+", "swap_total_kb": r"[0-9]+",
    "cgroup_version": r"1|2|unknown", "systemd_state": r"running|degraded|starting|none|[a-z]+",
    "pkg_family": r"apt|dnf|unknown", "ports_in_use": r"([0-9]+(,[0-9]+)*)?",
    "hostname": r"[^\s=]+", "macs": r"([0-9a-f]{2}(:[0-9a-f]{2}){5}(,|$))*",
    "product_uuid": r"[0-9A-Fa-f-]{36}|unreadable", "time_epoch": r"[0-9]{10}",
    "kube_manifests_empty": r"[01]", "etcd_dir_empty": r"[01]",
    "containerd_version": r"[0-9]+\.[0-9]+\.[0-9]+|none|unknown",
    "kubelet_version": r"v[0-9]+\.[0-9]+\.[0-9]+|none|unknown", "kubeadm_done": r"[01]", "kubelet_server": r"https://\S+|none|unknown",
}


@needs_sandbox
@pytest.mark.parametrize("manifests, empty", [
    ((), "1"),
    (("kube-vip.yaml",), "1"),  # kai's own, written before kubeadm init: a rerun resumes
    (("kube-vip.yaml", "kube-apiserver.yaml"), "0"),
    ((".hidden",), "0"),
])
def test_facts_manifests_empty_ignores_only_kais_kube_vip(node: ScriptNode, manifests, empty) -> None:
    for name in manifests:
        node.etc(f"kubernetes/manifests/{name}", "kind: Pod\n")
    setup = "mkdir -p /etc/kubernetes/manifests"
    res = node.run("facts.sh", {"KAI_MODULES": "", "KAI_BINARIES": "", "KAI_PORTS": ""},
                   sandbox=True, setup=setup)
    assert res.returncode == 0, res.stdout + res.stderr
    facts = dict(line.split("=", 1) for line in (node.out / "facts.env").read_text().splitlines())
    assert facts["kube_manifests_empty"] == empty, manifests


@contextlib.contextmanager
def ports_in_use(tcp_host: str = "127.0.0.1"):
    """A listening TCP socket on tcp_host and a bound UDP one on 127.0.0.1 → (tcp port, udp port),
    both closed afterwards."""
    tcp = socket.socket(socket.AF_INET6 if ":" in tcp_host else socket.AF_INET, socket.SOCK_STREAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        tcp.bind((tcp_host, 0))
        tcp.listen()
        udp.bind(("127.0.0.1", 0))
        yield tcp.getsockname()[1], udp.getsockname()[1]
    finally:
        tcp.close()
        udp.close()


def test_facts_on_this_machine(node: ScriptNode) -> None:
    unused_port = free_port()
    with ports_in_use() as (tcp_port, udp_port):
        res = node.run("facts.sh", {
            "KAI_MODULES": "overlay kai_no_such_module",
            "KAI_BINARIES": "bash kai-no-such-binary",
            "KAI_PORTS": f"{tcp_port} {udp_port}/udp {unused_port} {tcp_port}/udp 1-1"})
    assert res.returncode == 0, res.stderr
    lines = (node.out / "facts.env").read_text().splitlines()
    facts = dict(ln.split("=", 1) for ln in lines)
    assert len(facts) == len(lines), "one line per key"
    expected_keys = set(FACT_SHAPES) | {"module_overlay", "module_kai_no_such_module",
                                        "binary_bash", "binary_kai-no-such-binary"}
    assert set(facts) == expected_keys
    for key, shape in FACT_SHAPES.items():
        assert re.fullmatch(shape, facts[key]), f"{key}={facts[key]!r}"
    assert facts["module_overlay"] in {"builtin", "loaded", "loadable"}
    assert facts["module_kai_no_such_module"] == "missing"
    assert facts["binary_bash"].endswith("/bash") and os.access(facts["binary_bash"], os.X_OK)
    assert facts["binary_kai-no-such-binary"] == "missing"
    assert sorted(int(p) for p in facts["ports_in_use"].split(",")) == sorted({tcp_port, udp_port})
    assert facts["hostname"] == socket.gethostname()
    assert int(facts["cpus"]) == os.cpu_count()
    assert facts["kubeadm_done"] == ("1" if Path("/etc/kubernetes/kubelet.conf").exists() else "0")


def test_listening_ports_without_ss(tmp_path: Path) -> None:
    """The /proc/net fallback sees the same sockets as ss."""
    with ports_in_use("::1") as (tcp_port, udp_port):
        proc = lib_call(tmp_path, "kai_listening_ports_proc")
        ss = lib_call(tmp_path, "kai_listening_ports_ss")
    assert proc.returncode == 0 and ss.returncode == 0
    for entry in (f"tcp {tcp_port}", f"udp {udp_port}"):
        assert entry in proc.stdout.splitlines() and entry in ss.stdout.splitlines()


# --- kubeadm-join.sh ------------------------------------------------------------------------------

def join_fake(node: ScriptNode) -> None:
    node.fake("kubeadm", f"""
if [[ $# -eq 3 && $1 == join && $2 == --config ]]; then
  cp "$3" {node.root}/captured-join.yaml
  stat -c %a "$3" > {node.root}/captured-mode
  mkdir -p /etc/kubernetes && echo kubelet > /etc/kubernetes/kubelet.conf
  echo "This node has joined the cluster"
  exit 0
fi
echo "fake kubeadm: unsupported: $*" >&2; exit 64
""")


JOIN_ENV = {"KAI_NODE_NAME": "cp-2", "KAI_CONTROL_PLANE": "1", "KAI_JOIN_TOKEN": TOKEN,
            "KAI_CA_CERT_HASH": CA_HASH, "KAI_CERTIFICATE_KEY": CERT_KEY}


@needs_sandbox
def test_kubeadm_join_secrets_never_on_a_command_line(node: ScriptNode) -> None:
    assert shutil.which("strace"), "strace is required (apt-get install strace)"
    join_fake(node)
    node.file("kubeadm-join.yaml", JOIN_TEMPLATE)
    res = node.run("kubeadm-join.sh", JOIN_ENV, sandbox=True, strace=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "This node has joined the cluster" in res.stdout
    captured = (node.root / "captured-join.yaml").read_text()
    assert TOKEN in captured and CA_HASH in captured and CERT_KEY in captured
    assert (node.root / "captured-mode").read_text().strip() == "600"
    execs = node.execve_lines()
    assert any("kubeadm" in ln and '"join", "--config"' in ln for ln in execs)
    # The first execve is the script's own bash (its environment holds the secrets, as kai-exec
    # gives them); no process started after it may see them, in argv or environment.
    for ln in execs[1:]:
        for secret in (TOKEN, CA_HASH, CERT_KEY):
            assert secret not in ln, ln[:200]
    for secret in (TOKEN, CA_HASH, CERT_KEY):
        assert secret not in res.stdout + res.stderr
    assert not (node.work / "kubeadm-join.yaml").exists(), "rendered config removed after use"
    again = node.run("kubeadm-join.sh", JOIN_ENV, sandbox=True)
    assert again.returncode == 0 and "already done" in again.stdout


@needs_sandbox
def test_kubeadm_join_skips_a_joined_node(node: ScriptNode) -> None:
    join_fake(node)
    node.file("kubeadm-join.yaml", JOIN_TEMPLATE)
    node.etc("kubernetes/kubelet.conf", "joined earlier\n")
    res = node.run("kubeadm-join.sh", JOIN_ENV, sandbox=True)
    assert res.returncode == 0 and "already joined" in res.stdout
    assert not (node.root / "captured-join.yaml").exists()


@needs_sandbox
def test_kubeadm_join_failure_is_reported_redacted(node: ScriptNode) -> None:
    node.fake("kubeadm", f'echo "error: bad token {TOKEN}" >&2; exit 1\n')
    node.fake("journalctl", 'echo "kubelet: no logs here"\n')
    node.file("kubeadm-join.yaml", JOIN_TEMPLATE)
    res = node.run("kubeadm-join.sh", {**JOIN_ENV, "KAI_CONTROL_PLANE": "0"}, sandbox=True)
    assert res.returncode != 0
    assert "kubeadm join failed on cp-2" in res.stderr
    assert "error: bad token <redacted>" in res.stdout and TOKEN not in res.stdout + res.stderr
    assert not (node.state / "done" / "kubeadm-join").exists()


# --- join-credentials.sh ------------------------------------------------------------------------

def make_ca() -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            "sha256:" + hashlib.sha256(spki).hexdigest())


def control_plane_for_join_credentials(node: ScriptNode, kubeadm: str) -> str:
    """A control plane's CA and admin.conf, and `kubeadm` as the fake's script → the CA's hash."""
    ca_pem, ca_hash = make_ca()
    node.etc("kubernetes/pki/ca.crt", ca_pem)
    node.etc("kubernetes/admin.conf", "admin\n")
    node.fake("kubeadm", kubeadm)
    return ca_hash


@needs_sandbox
def test_join_credentials(node: ScriptNode) -> None:
    ca_hash = control_plane_for_join_credentials(node, f"""
printf '%s\\n' "$*" >> {node.root}/kubeadm.calls
case "$*" in
  "token create --ttl 1h --description kai join") echo {TOKEN} ;;
  "certs certificate-key") echo {CERT_KEY} ;;
  "init phase upload-certs --upload-certs --config "*" --skip-certificate-key-print")
    # the key must come in the 0600 config file, never in argv
    cfg=${{6}}
    [[ $(stat -c %a "$cfg") == 600 ]] || {{ echo "config not 0600" >&2; exit 65; }}
    grep -q 'certificateKey: "{CERT_KEY}"' "$cfg" || {{ echo "no key in config" >&2; exit 66; }}
    echo "[upload-certs] Storing the certificates" ;;
  *) echo "fake kubeadm: unsupported: $*" >&2; exit 64 ;;
esac
""")
    res = node.run("join-credentials.sh", {"KAI_TOKEN_TTL": "1h", "KAI_NEED_CERT_KEY": "1"},
                   sandbox=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (node.out / "token").read_text() == TOKEN + "\n"
    assert (node.out / "ca_hash").read_text() == ca_hash + "\n"
    assert (node.out / "certificate_key").read_text() == CERT_KEY + "\n"
    for name in ("token", "ca_hash", "certificate_key"):
        assert oct((node.out / name).stat().st_mode & 0o777) == "0o600"
    for secret in (TOKEN, CERT_KEY, ca_hash):
        assert secret not in res.stdout + res.stderr
    calls = (node.root / "kubeadm.calls").read_text()
    assert calls.count("\n") == 3
    assert CERT_KEY not in calls, "the certificate key must never be in kubeadm's argv"
    assert not (node.state / "done").exists(), "read-only step: no marker"


@needs_sandbox
def test_join_credentials_upload_failure_is_redacted(node: ScriptNode) -> None:
    control_plane_for_join_credentials(node, f"""
case "$1 $2" in
  "token create") echo {TOKEN} ;;
  "certs certificate-key") echo {CERT_KEY} ;;
  *) echo "error uploading with key {CERT_KEY}"; exit 1 ;;
esac
""")
    res = node.run("join-credentials.sh", {"KAI_TOKEN_TTL": "1h", "KAI_NEED_CERT_KEY": "1"},
                   sandbox=True)
    assert res.returncode != 0
    assert "error uploading with key <redacted>" in res.stderr
    assert CERT_KEY not in res.stdout + res.stderr
    assert not (node.out / "certificate_key").exists()


# --- kubeadm-init.sh, kubeconfig.sh, kube-vip.sh --------------------------------------------------

@needs_sandbox
def test_kubeadm_init_then_kubeconfig(node: ScriptNode) -> None:
    node.file("kubeadm.yaml", "kind: InitConfiguration\n")
    node.fake("kubeadm", f"""
if [[ "$*" == "init --config $KAI_FILES_DIR/kubeadm.yaml --upload-certs --skip-token-print --skip-certificate-key-print" ]]; then
  mkdir -p /etc/kubernetes && echo "admin-kubeconfig" > /etc/kubernetes/admin.conf
  echo "Your Kubernetes control-plane has initialized successfully!"; exit 0
fi
echo "fake kubeadm: unsupported: $*" >&2; exit 64
""")
    env = {"KAI_NODE_NAME": "cp-1", "KAI_UPLOAD_CERTS": "1"}
    res = node.run("kubeadm-init.sh", env, sandbox=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "initialized successfully" in res.stdout
    assert node.etc_path("kubernetes/admin.conf").read_text() == "admin-kubeconfig\n"
    assert (node.home / ".kube" / "config").read_text() == "admin-kubeconfig\n"
    assert node.run("kubeadm-init.sh", env, sandbox=True).stdout.count("already done") == 1
    changed = node.run("kubeadm-init.sh", env, sandbox=True, step_hash="hash-2")
    assert changed.returncode != 0 and "different inputs" in changed.stderr

    got = node.run("kubeconfig.sh", sandbox=True)
    assert got.returncode == 0, got.stderr
    assert (node.out / "admin.conf").read_text() == "admin-kubeconfig\n"
    assert oct((node.out / "admin.conf").stat().st_mode & 0o777) == "0o600"
    assert "admin-kubeconfig" not in got.stdout + got.stderr


def kubeadm_init_on_cp1(node: ScriptNode, kubeadm: str):
    """kubeadm-init.sh on node cp-1 (no certificate upload), `kubeadm` the fake's script."""
    node.file("kubeadm.yaml", "kind: InitConfiguration\n")
    node.fake("kubeadm", kubeadm)
    return node.run("kubeadm-init.sh", {"KAI_NODE_NAME": "cp-1", "KAI_UPLOAD_CERTS": "0"}, sandbox=True)


@needs_sandbox
def test_kubeadm_init_refuses_unknown_control_plane(node: ScriptNode) -> None:
    node.etc("kubernetes/admin.conf", "someone else's\n")
    res = kubeadm_init_on_cp1(node, 'echo "must not run" >&2; exit 64\n')
    assert res.returncode != 0 and "reset this node first" in res.stderr
    assert "must not run" not in res.stderr


@needs_sandbox
def test_kubeadm_init_failure_shows_kubelet_log(node: ScriptNode) -> None:
    node.fake("journalctl", 'echo "kubelet: failed to run Kubelet: $*"\n')
    res = kubeadm_init_on_cp1(node, 'echo "[wait-control-plane] timed out"; exit 1\n')
    assert res.returncode != 0
    assert "[wait-control-plane] timed out" in res.stdout
    assert "kubelet: failed to run Kubelet: -u kubelet -n 50 --no-pager" in res.stdout
    assert "kubeadm init failed on cp-1" in res.stderr


KUBE_VIP = """apiVersion: v1
kind: Pod
spec:
  volumes:
  - hostPath:
      path: /etc/kubernetes/super-admin.conf
    name: kubeconfig
"""


@needs_sandbox
def test_kube_vip_phases(node: ScriptNode) -> None:
    node.file("kube-vip.yaml", KUBE_VIP)
    manifest = node.etc_path("kubernetes/manifests/kube-vip.yaml")
    res = node.run("kube-vip.sh", {"KAI_KUBE_VIP_PHASE": "pre-init"}, step="kube-vip-pre",
                   sandbox=True)
    assert res.returncode == 0, res.stderr
    assert manifest.read_text() == KUBE_VIP
    node.etc("kubernetes/admin.conf", "admin\n")
    res = node.run("kube-vip.sh", {"KAI_KUBE_VIP_PHASE": "post-init"}, step="kube-vip-post",
                   sandbox=True)
    assert res.returncode == 0, res.stderr
    assert "path: /etc/kubernetes/admin.conf" in manifest.read_text()
    assert "super-admin" not in manifest.read_text()
    assert [p.name for p in manifest.parent.iterdir()] == ["kube-vip.yaml"]
    bad = node.run("kube-vip.sh", {"KAI_KUBE_VIP_PHASE": "later"}, sandbox=True)
    assert bad.returncode != 0 and "pre-init, post-init or join" in bad.stderr


# --- cni.sh, storage.sh ---------------------------------------------------------------------------

FLANNEL = """kind: ConfigMap
data:
  net-conf.json: |
    {
      "Network": "10.244.0.0/16",
      "Backend": {"Type": "vxlan"}
    }
"""


@pytest.fixture
def http_files(tmp_path: Path):
    """A loopback HTTP server for downloads (the network rule: loopback only)."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):  # keep pytest output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def kubectl_fake(node: ScriptNode) -> None:
    node.fake("kubectl", f"""
if [[ $# -eq 7 && "$1 $2 $3 $4 $5 $6" == "--kubeconfig /etc/kubernetes/admin.conf apply --server-side --force-conflicts -f" ]]; then
  mkdir -p {node.root}/applied
  n=$(ls {node.root}/applied | wc -l)
  cp "$7" "{node.root}/applied/$n-${{7##*/}}"
  echo "configmap/x serverside-applied"; exit 0
fi
echo "fake kubectl: unsupported: $*" >&2; exit 64
""")


@needs_sandbox
def test_cni_flannel_pod_cidr_and_checksum(node: ScriptNode, http_files) -> None:
    root, base = http_files
    (root / "kube-flannel.yml").write_text(FLANNEL)
    good = hashlib.sha256(FLANNEL.encode()).hexdigest()
    node.etc("kubernetes/admin.conf", "admin\n")
    kubectl_fake(node)
    env = {"KAI_CNI": "flannel", "KAI_CNI_VERSION": "0.27.4", "KAI_CNI_SOURCE": "manifest",
           "KAI_CNI_MANIFEST_URL": f"{base}/kube-flannel.yml", "KAI_CNI_MANIFEST_SHA256": "0" * 64,
           "KAI_CNI_MANIFEST_SUMS_URL": "", "KAI_POD_CIDR": "10.32.0.0/12"}
    bad = node.run("cni.sh", env, sandbox=True)
    assert bad.returncode != 0
    assert f"expected {'0' * 64}, got {good}" in bad.stderr
    assert not (node.root / "applied").exists()

    ok = node.run("cni.sh", {**env, "KAI_CNI_MANIFEST_SHA256": good}, sandbox=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    applied = (node.root / "applied" / "0-cni-flannel.yaml").read_text()
    assert '"Network": "10.32.0.0/12"' in applied and "10.244.0.0/16" not in applied
    again = node.run("cni.sh", {**env, "KAI_CNI_MANIFEST_SHA256": good}, sandbox=True)
    assert "already done" in again.stdout
    assert len(list((node.root / "applied").iterdir())) == 1


@needs_sandbox
def test_cni_flannel_without_network_line_fails(node: ScriptNode, http_files) -> None:
    root, base = http_files
    (root / "kube-flannel.yml").write_text("kind: ConfigMap\n")
    node.etc("kubernetes/admin.conf", "admin\n")
    kubectl_fake(node)
    res = node.run("cni.sh", {"KAI_CNI": "flannel", "KAI_CNI_VERSION": "0.27.4",
                              "KAI_CNI_SOURCE": "manifest", "KAI_CNI_MANIFEST_SUMS_URL": "",
                              "KAI_CNI_MANIFEST_URL": f"{base}/kube-flannel.yml",
                              "KAI_CNI_MANIFEST_SHA256": "", "KAI_POD_CIDR": "10.32.0.0/12"},
                   sandbox=True)
    assert res.returncode != 0 and "no '\"Network\": \"10.244.0.0/16\"' line" in res.stderr


@needs_sandbox
def test_storage_applies_provisioner_and_class(node: ScriptNode, http_files) -> None:
    root, base = http_files
    (root / "local-path-storage.yaml").write_text("kind: Deployment\n")
    node.file("storageclass.yaml", "kind: StorageClass\n")
    node.etc("kubernetes/admin.conf", "admin\n")
    kubectl_fake(node)
    res = node.run("storage.sh", {"KAI_LOCAL_PATH_URL": f"{base}/local-path-storage.yaml",
                                  "KAI_LOCAL_PATH_SHA256": ""}, sandbox=True)
    assert res.returncode == 0, res.stdout + res.stderr
    applied = sorted(p.name for p in (node.root / "applied").iterdir())
    assert applied == ["0-local-path-storage.yaml", "1-storageclass.yaml"]
    missing = node.run("storage.sh", {"KAI_LOCAL_PATH_URL": f"{base}/nope.yaml",
                                      "KAI_LOCAL_PATH_SHA256": ""}, sandbox=True, step_hash="h2")
    assert missing.returncode != 0 and "download failed" in missing.stderr


# --- reset.sh -----------------------------------------------------------------------------------

@needs_sandbox
@pytest.mark.parametrize("leave_etcd,kubeadm_args", [
    ("1", "reset -f --cleanup-tmp-dir"),                                      # one node leaves
    ("0", "reset -f --cleanup-tmp-dir --skip-phases=remove-etcd-member"),    # the whole cluster goes
])
def test_reset_cleans_kube_state_only(node: ScriptNode, leave_etcd: str, kubeadm_args: str) -> None:
    if not shutil.which("iptables-restore", path="/usr/sbin:/sbin:/usr/bin"):
        pytest.skip("iptables is not installed (apt-get install iptables)")
    node.fake("kubeadm", f"""
[[ "$*" == "{kubeadm_args}" ]] || {{ echo "fake kubeadm: unsupported: $*" >&2; exit 64; }}
touch {node.root}/kubeadm-reset-ran
""")
    node.etc("cni/net.d/10-flannel.conflist", "{}")
    node.etc("kubernetes/manifests/kube-vip.yaml", "kind: Pod\n")
    (node.home / ".kube").mkdir()
    (node.home / ".kube" / "config").write_text("x")
    (node.state / "done").mkdir()
    (node.state / "done" / "runtime").write_text("h\n")
    setup = ("PATH=$PATH:/usr/sbin:/sbin\n"
             "iptables -N KUBE-SERVICES; iptables -N KUBE-FIREWALL\n"
             "iptables -A INPUT -m comment --comment 'kubernetes service portals' -j KUBE-SERVICES\n"
             "iptables -A KUBE-SERVICES -j KUBE-FIREWALL\n"
             "iptables -A INPUT -p tcp --dport 22 -j ACCEPT\n"
             "iptables -t nat -N KUBE-POSTROUTING; iptables -t nat -A POSTROUTING -j KUBE-POSTROUTING\n")
    post = "PATH=$PATH:/usr/sbin:/sbin; iptables-save"
    res = node.run("reset.sh", {"KAI_RESET_PACKAGES": "0", "KAI_RESET_ETCD_MEMBER": leave_etcd},
                   sandbox=True, netns=True, setup=setup, post=post)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (node.root / "kubeadm-reset-ran").exists()
    rules = node.post_log.read_text()
    assert "KUBE-" not in rules
    assert "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT" in rules
    assert not list((node.state / "done").glob("*")) if (node.state / "done").exists() else True
    assert not (node.home / ".kube").exists()
    # the overlay records deletions as whiteouts (character devices)
    for rel in ("cni/net.d/10-flannel.conflist", "kubernetes/manifests/kube-vip.yaml"):
        p = node.etc_path(rel)
        assert not p.exists() or p.is_char_device()


@needs_sandbox
def test_reset_of_a_blank_node(node: ScriptNode) -> None:
    res = node.run("reset.sh", {"KAI_RESET_PACKAGES": "0", "KAI_RESET_ETCD_MEMBER": "0"},
                   sandbox=True, netns=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "kubeadm is not installed" in res.stdout
    twice = node.run("reset.sh", {"KAI_RESET_PACKAGES": "0", "KAI_RESET_ETCD_MEMBER": "0"},
                     sandbox=True, netns=True)
    assert twice.returncode == 0


# --- containerd.sh (release source) ---------------------------------------------------------------

def release_files(www: Path, version: str) -> None:
    """Fake containerd / runc / CNI plugin releases in the §6 mirror layout, with checksums."""
    import io
    import tarfile

    def tgz(members: dict[str, str]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, text in members.items():
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o755
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    c = www / f"containerd/v{version}"
    c.mkdir(parents=True)
    tar = tgz({"bin/containerd": f"#!/bin/sh\necho containerd github.com/containerd/containerd/v2 v{version} abc\n",
               "bin/ctr": "#!/bin/sh\necho ctr\n"})
    (c / f"containerd-{version}-linux-amd64.tar.gz").write_bytes(tar)
    (c / f"containerd-{version}-linux-amd64.tar.gz.sha256sum").write_text(
        f"{hashlib.sha256(tar).hexdigest()}  containerd-{version}-linux-amd64.tar.gz\n")
    r = www / "runc/v1.4.0"
    r.mkdir(parents=True)
    runc = b"#!/bin/sh\necho runc version 1.4.0\n"
    (r / "runc.amd64").write_bytes(runc)
    (r / "runc.sha256sum").write_text(f"{'0' * 64}  runc.arm64\n{hashlib.sha256(runc).hexdigest()}  runc.amd64\n")
    n = www / "cni-plugins/v1.8.0"
    n.mkdir(parents=True)
    cni = tgz({"./bridge": "#!/bin/sh\n", "./loopback": "#!/bin/sh\n"})
    (n / "cni-plugins-linux-amd64-v1.8.0.tgz").write_bytes(cni)
    (n / "cni-plugins-linux-amd64-v1.8.0.tgz.sha256").write_text(
        f"{hashlib.sha256(cni).hexdigest()}  cni-plugins-linux-amd64-v1.8.0.tgz\n")


def systemctl_fake(node: ScriptNode) -> None:
    """Records every call; remembers enabled/started like systemd would."""
    node.fake("systemctl", f"""
printf '%s\\n' "$*" >> {node.root}/systemctl.calls
case $1 in
  is-enabled) [[ -f {node.root}/enabled ]] && echo enabled || echo disabled ;;
  is-active) [[ -f {node.root}/active ]] ;;
  enable) touch {node.root}/enabled ;;
  start|restart) touch {node.root}/active ;;
  daemon-reload) ;;
  *) echo "fake systemctl: unsupported: $*" >&2; exit 64 ;;
esac
""")


@needs_sandbox
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="fake releases are amd64")
def test_containerd_release_install_restarts_only_on_change(node: ScriptNode, http_files) -> None:
    www, base = http_files
    release_files(www, "2.3.4")
    systemctl_fake(node)
    node.fake("ctr", '[[ "$*" == version ]]\n')
    node.file("config-v3.toml", "version = 3\n")
    node.file("config-v2.toml", "version = 2\n")
    node.file("mirrors.list", "docker.io\tmirror-0.toml\n")
    node.file("mirror-0.toml", 'server = "https://registry-1.docker.io"\n')
    env = {"KAI_CONTAINERD_SOURCE": "release", "KAI_CONTAINERD_VERSION": "2.3.4",
           "KAI_CONTAINERD_URL": f"{base}/containerd/v2.3.4/containerd-2.3.4-linux-{{arch}}.tar.gz",
           "KAI_RUNC_VERSION": "1.4.0", "KAI_RUNC_URL": f"{base}/runc/v1.4.0/runc.{{arch}}",
           "KAI_CNI_PLUGINS_VERSION": "1.8.0",
           "KAI_CNI_PLUGINS_URL": f"{base}/cni-plugins/v1.8.0/cni-plugins-linux-{{arch}}-v1.8.0.tgz",
           "KAI_DOWNLOAD_PROXY": ""}
    kw = dict(sandbox=True, overlays=("/usr/local", "/opt"), systemd=True)
    res = node.run("containerd.sh", env, **kw)
    assert res.returncode == 0, res.stdout + res.stderr
    usr_local, opt = node.upper_dir("/usr/local"), node.upper_dir("/opt")
    assert "v2.3.4" in (usr_local / "bin/containerd").read_text()
    assert (usr_local / "sbin/runc").read_text().endswith("runc version 1.4.0\n")
    assert sorted(p.name for p in (opt / "cni/bin").iterdir()) == [".kai-cni-plugins-version",
                                                                   "bridge", "loopback"]
    assert "ExecStart=/usr/local/bin/containerd" in (
        usr_local / "lib/systemd/system/containerd.service").read_text()
    assert node.etc_path("containerd/config.toml").read_text() == "version = 3\n"
    assert "registry-1.docker.io" in node.etc_path("containerd/certs.d/docker.io/hosts.toml").read_text()
    calls = (node.root / "systemctl.calls").read_text().splitlines()
    assert calls.count("restart containerd") == 1 and "enable containerd" in calls

    # Rerun with other inputs (new step hash) but identical files: no restart.
    (node.root / "systemctl.calls").unlink()
    again = node.run("containerd.sh", env, step_hash="hash-2", **kw)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "not restarted" in again.stdout
    calls = (node.root / "systemctl.calls").read_text().splitlines()
    assert not any(c.startswith(("restart", "start")) for c in calls), calls

    # A changed configuration restarts it; a tampered download fails loudly.
    node.file("config-v3.toml", "version = 3\n# changed\n")
    changed = node.run("containerd.sh", env, step_hash="hash-3", **kw)
    assert changed.returncode == 0 and "restarting containerd" in changed.stdout
    (www / "runc/v1.4.0/runc.amd64").write_bytes(b"tampered")
    (usr_local / "sbin/runc").unlink()
    bad = node.run("containerd.sh", env, step_hash="hash-5", **kw)
    assert bad.returncode != 0 and "sha256 mismatch for runc.amd64" in bad.stderr
    assert not (usr_local / "sbin/runc").exists()
