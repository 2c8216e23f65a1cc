"""Keys: the host's (verified against known_hosts or pinned fingerprints) and ours (to log in)."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import threading

import paramiko

from installers.ssh.target import ConnectError, HostKeyError, SSHTarget

log = logging.getLogger("installers.ssh")


def hostkey_name(host: str, port: int) -> str:
    """How known_hosts names a host: `host`, or `[host]:port` off port 22."""
    return host if port == 22 else f"[{host}]:{port}"


_known_hosts_cache: dict[str, tuple[tuple[int, int], paramiko.HostKeys]] = {}
_known_hosts_lock = threading.Lock()


def load_known_hosts(path: str) -> paramiko.HostKeys:
    """Parsed once per file version: every connection parsing the whole file was O(hosts²)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return paramiko.HostKeys()
    version = (st.st_mtime_ns, st.st_size)  # accept_new appends: a new version is re-read
    with _known_hosts_lock:
        cached = _known_hosts_cache.get(path)
        if cached is None or cached[0] != version:
            keys = paramiko.HostKeys()
            keys.load(path)  # handles hashed entries and [host]:port
            cached = _known_hosts_cache[path] = (version, keys)
        return cached[1]


def _append_known_host(path: str, name: str, key: paramiko.PKey) -> None:
    """Append one line, like OpenSSH's accept-new; locked so parallel connects don't interleave."""
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{name} {key.get_name()} {key.get_base64()}\n".encode())
    finally:
        os.close(fd)


class VerifyHostKey(paramiko.MissingHostKeyPolicy):
    """Called by SSHClient when the key is not in the loaded host keys.

    With pinned fingerprints nothing is loaded, so every key lands here and must match a pin.
    Without pins: accept_new appends the key to known_hosts, otherwise refuse. (A *changed* key
    never gets here: SSHClient raises BadHostKeyException, which the connection turns into
    HostKeyError.)
    """

    def __init__(self, target: SSHTarget):
        self.target = target

    def missing_host_key(self, client, hostname, key) -> None:
        t = self.target
        presented = key.fingerprint
        if t.host_key_fingerprints:
            if presented in t.host_key_fingerprints:
                return
            raise HostKeyError(
                f"host key mismatch for {t.node} ({t.address}): expected "
                f"{' or '.join(t.host_key_fingerprints)}, presented {key.get_name()} {presented} "
                "— refusing to connect (fix the pin if the host was really re-keyed)"
            )
        if t.accept_new:
            _append_known_host(t.known_hosts_path, hostname, key)
            log.info("%s: accepted new host key %s %s into %s", t.node, key.get_name(),
                     presented, t.known_hosts_path)
            return
        raise HostKeyError(
            f"unknown host key for {t.node} ({t.address}): presented {key.get_name()} {presented} "
            f"— not in {t.known_hosts_path}. Verify it, then add it to known_hosts "
            f"(ssh-keyscan -p {t.port} {t.host}), pin it in host_key_fingerprints, "
            "or set accept_new"
        )


def changed_host_key_error(t: SSHTarget, e: paramiko.BadHostKeyException) -> HostKeyError:
    return HostKeyError(
        f"host key for {t.node} ({t.address}) has CHANGED: expected "
        f"{e.expected_key.get_name()} {e.expected_key.fingerprint} "
        f"(from {t.known_hosts_path}), presented {e.key.get_name()} {e.key.fingerprint}"
        " — possible man-in-the-middle; if the host was re-keyed, remove the old entry "
        f"(ssh-keygen -R '{hostkey_name(t.host, t.port)}' -f {t.known_hosts_path})"
    )


def load_private_key(target: SSHTarget) -> paramiko.PKey | None:
    """The client key from key_text (a Secret block's value) or key_file; None: agent/password.
    Its problems are configuration errors, never retried."""
    where = f"SSHTarget({target.node!r})"
    if target.key_text:
        errors = []
        for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
            try:
                return cls.from_private_key(io.StringIO(target.key_text), target.key_passphrase)
            except paramiko.PasswordRequiredException:
                raise ConnectError(f"{where}.key_passphrase: the key in key_text is encrypted",
                                   retryable=False) from None
            except (paramiko.SSHException, ValueError) as e:
                errors.append(f"{cls.__name__}: {type(e).__name__}")
        raise ConnectError(
            f"{where}.key_text: not a readable Ed25519/ECDSA/RSA private key "
            f"(or wrong key_passphrase) [{'; '.join(errors)}]", retryable=False)
    if target.key_file:
        path = os.path.expanduser(target.key_file)
        try:
            return paramiko.PKey.from_path(path, target.key_passphrase)
        except FileNotFoundError:
            raise ConnectError(f"{where}.key_file: {path} does not exist", retryable=False) from None
        except paramiko.PasswordRequiredException:
            raise ConnectError(f"{where}.key_passphrase: {path} is encrypted",
                               retryable=False) from None
        except (paramiko.SSHException, ValueError, OSError) as e:
            raise ConnectError(f"{where}.key_file: cannot load {path}: {type(e).__name__}: {e}",
                               retryable=False) from None
    return None
