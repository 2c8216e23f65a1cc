"""etcd snapshots on the controller: checked, named, stored 0600, pruned. No Prefect, no I/O
besides the backup directory (the snapshot comes from installers/scripts/etcd-backup.sh).

A snapshot's file name carries what identifies it without opening it:
`<cluster>-<UTC time>-rev<etcd revision>.db`, e.g. `prod-20261201T213000Z-rev48213.db`; names
sort by time within a cluster, which retention relies on.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

NAME_RE = re.compile(r"^(?P<cluster>.+)-(?P<time>\d{8}T\d{6}Z)-rev(?P<revision>\d+)\.db$")


class BackupError(Exception):
    pass


@dataclass(frozen=True)
class Backup:
    path: Path
    size: int
    sha256: str
    revision: int
    node: str

    def row(self) -> dict:
        """One row of the run's artifact."""
        return {"file": str(self.path), "size_bytes": self.size, "sha256": self.sha256,
                "revision": self.revision, "node": self.node}


def backup_dir(configured: str | None, cluster_dir: Path) -> Path:
    """The spec's etcd_backup.directory, else <state dir>/clusters/<cluster>/etcd-backups."""
    return (Path(configured) if configured else cluster_dir / "etcd-backups").expanduser()


def file_name(cluster: str, revision: int, now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{cluster}-{stamp}-rev{revision}.db"


def parse_outputs(outputs: dict[str, bytes]) -> tuple[bytes, str, int]:
    """(snapshot, sha256 the node computed, revision) from the backup job's outputs."""
    missing = [n for n in ("etcd-snapshot.db", "etcd-snapshot.sha256", "etcd-snapshot.revision")
               if n not in outputs]
    if missing:
        raise BackupError(f"the node sent no {', '.join(missing)}")
    sha = outputs["etcd-snapshot.sha256"].decode().strip()
    rev = outputs["etcd-snapshot.revision"].decode().strip()
    if not re.fullmatch(r"[0-9a-f]{64}", sha) or not rev.isdigit():
        raise BackupError(f"bad snapshot metadata from the node: sha256 {sha!r}, revision {rev!r}")
    return outputs["etcd-snapshot.db"], sha, int(rev)


def store(directory: Path, cluster: str, node: str, outputs: dict[str, bytes],
          now: float | None = None) -> Backup:
    """Check the snapshot against the node's sha256, then write it 0600 (atomically: a partial
    file never carries a backup's name)."""
    data, sha, revision = parse_outputs(outputs)
    got = hashlib.sha256(data).hexdigest()
    if got != sha:
        raise BackupError(f"snapshot from {node} is corrupt: sha256 {got} on the controller, {sha} on the node")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / file_name(cluster, revision, now)
    tmp = path.with_name(f".{path.name}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return Backup(path, len(data), sha, revision, node)


def backups(directory: Path, cluster: str) -> list[Path]:
    """This cluster's snapshots in the directory, oldest first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir()
             if (m := NAME_RE.match(p.name)) and m["cluster"] == cluster and p.is_file()]
    return sorted(found, key=lambda p: NAME_RE.match(p.name)["time"])


def name_problems(cluster: str, name: object) -> list[str]:
    """What is wrong with a snapshot name a restore was given (pure: the file is looked at by the
    restore run). A name, never a path: only this cluster's snapshots in its backup directory."""
    if not isinstance(name, str) or not name:
        return ["snapshot: name the snapshot to restore (a file name etcd_backup stored, "
                f"e.g. {file_name(cluster, 1234, 0)})"]
    shown = name if len(name) <= 200 else name[:200] + "…"
    m = NAME_RE.match(name)
    if "/" in name or "\\" in name or not name.isprintable() or not m:
        return [f"snapshot: {shown!r} is not a snapshot name (<cluster>-<YYYYmmddTHHMMSSZ>-rev<N>.db, "
                f"a file name, not a path)"]
    if m["cluster"] != cluster:
        return [f"snapshot: {shown!r} is a snapshot of cluster {m['cluster']!r}, not of {cluster!r}"]
    return []


def snapshot_file(directory: Path, cluster: str, name: str) -> Path:
    """The stored snapshot a restore names, checked: this cluster's, a regular file, 0600."""
    problems = name_problems(cluster, name)
    if problems:
        raise BackupError(problems[0])
    path = directory / name
    if not path.is_file():
        known = [p.name for p in backups(directory, cluster)]
        raise BackupError(f"snapshot: {name} is not in {directory} (this cluster's snapshots there: "
                          f"{', '.join(known[-5:]) or 'none'})")
    return path


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prune(directory: Path, cluster: str, keep: int) -> list[Path]:
    """Remove all but the newest `keep` snapshots of the cluster -> the removed files."""
    old = backups(directory, cluster)[:-keep] if keep > 0 else []
    for p in old:
        p.unlink(missing_ok=True)
    return old
