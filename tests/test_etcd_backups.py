"""etcd snapshots on the controller (installers/etcd_backups.py): checked against the node's
sha256, named with cluster, UTC time and revision, written 0600, pruned to the newest N."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from installers import etcd_backups as eb

T0 = 1_796_000_000.0  # 2026-11-30T00:53:20Z


def outputs(data: bytes, revision: int = 42, sha: str | None = None) -> dict[str, bytes]:
    return {"etcd-snapshot.db": data,
            "etcd-snapshot.sha256": ((sha or hashlib.sha256(data).hexdigest()) + "\n").encode(),
            "etcd-snapshot.revision": f"{revision}\n".encode()}


def test_a_checked_snapshot_is_stored_0600_with_cluster_time_and_revision(tmp_path):
    b = eb.store(tmp_path / "backups", "prod", "cp-1", outputs(b"snap" * 100, 4711), now=T0)
    assert b.path.name == "prod-20261130T005320Z-rev4711.db"
    assert b.path.read_bytes() == b"snap" * 100 and b.size == 400 and b.revision == 4711
    assert stat.S_IMODE(b.path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "backups").stat().st_mode) == 0o700
    assert b.row() == {"file": str(b.path), "size_bytes": 400, "sha256": hashlib.sha256(b"snap" * 100).hexdigest(),
                       "revision": 4711, "node": "cp-1"}
    assert [p.name for p in (tmp_path / "backups").iterdir()] == [b.path.name]  # no partial file left


def test_a_snapshot_that_does_not_match_the_nodes_checksum_is_refused(tmp_path):
    with pytest.raises(eb.BackupError, match="corrupt"):
        eb.store(tmp_path, "prod", "cp-1", outputs(b"snap", sha=hashlib.sha256(b"other").hexdigest()))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("broken", [
    {"etcd-snapshot.revision": b"abc\n"}, {"etcd-snapshot.sha256": b"not-a-sum\n"}])
def test_bad_metadata_or_missing_outputs_are_refused(tmp_path, broken):
    with pytest.raises(eb.BackupError, match="bad snapshot metadata"):
        eb.store(tmp_path, "prod", "cp-1", {**outputs(b"snap"), **broken})
    with pytest.raises(eb.BackupError, match="etcd-snapshot.sha256"):
        eb.store(tmp_path, "prod", "cp-1", {"etcd-snapshot.db": b"x", "etcd-snapshot.revision": b"1"})


def test_retention_keeps_the_newest_n_of_this_cluster_only(tmp_path):
    made = [eb.store(tmp_path, "prod", "cp-1", outputs(b"%d" % i, 10 + i), now=T0 + 3600 * i).path
            for i in range(5)]
    other = eb.store(tmp_path, "prod-eu", "cp-1", outputs(b"eu", 1), now=T0).path
    (tmp_path / "notes.txt").write_text("not a backup")
    removed = eb.prune(tmp_path, "prod", keep=2)
    assert removed == made[:3]
    assert eb.backups(tmp_path, "prod") == made[3:]
    assert other.exists() and (tmp_path / "notes.txt").exists()
    assert eb.prune(tmp_path, "prod", keep=2) == []


def test_the_default_directory_is_under_the_clusters_state_dir():
    assert eb.backup_dir(None, Path("/s/clusters/prod")) == Path("/s/clusters/prod/etcd-backups")
    assert eb.backup_dir("/b", Path("/s/clusters/prod")) == Path("/b")
    assert eb.backup_dir("~/b", Path("/x")) == Path("~/b").expanduser()
