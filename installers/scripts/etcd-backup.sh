#!/usr/bin/env bash
# Snapshot the cluster's etcd through this control plane's etcd container, the way that works on
# every kubeadm cluster (the etcd image ships etcdctl; the node may have none): `crictl exec
# <etcd> etcdctl snapshot save` into /var/lib/etcd (a hostPath of the etcd pod), then hand it to
# the controller: $KAI_OUT_DIR/etcd-snapshot.db, etcd-snapshot.sha256, etcd-snapshot.revision.
# Refuses when any member of the cluster is unhealthy. Read-only for the cluster: no done marker;
# the snapshot leaves the node with the job.
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_OUT_DIR:?KAI_OUT_DIR is required (set by kai-exec.sh)}"

ETCD_PKI=/etc/kubernetes/pki/etcd
[[ -f $ETCD_PKI/ca.crt ]] || kai_die "$ETCD_PKI/ca.crt is missing: this node is not a control plane with a local etcd"
command -v crictl >/dev/null 2>&1 || kai_die "crictl is not installed"

cid=$(crictl ps --name etcd --state running -q) || kai_die "crictl ps failed (is containerd running?)"
cid=${cid%%$'\n'*}
[[ -n $cid ]] || kai_die "no running etcd container on this node"

etcdctl() {
  crictl exec "$cid" etcdctl --cacert="$ETCD_PKI/ca.crt" --cert="$ETCD_PKI/healthcheck-client.crt" \
    --key="$ETCD_PKI/healthcheck-client.key" "$@"
}

health=$(etcdctl endpoint health --cluster 2>&1) || {
  printf '%s\n' "$health" >&2
  kai_die "etcd is not healthy (every member must be): no snapshot taken"
}
printf '%s\n' "$health"

# The revision before the snapshot: the snapshot holds it (and any write that came in between).
status=$(etcdctl endpoint status -w json) || kai_die "etcdctl endpoint status failed"
revision=$(grep -o '"revision":[0-9]*' <<<"$status" | head -n 1 | cut -d: -f2)
[[ $revision =~ ^[0-9]+$ ]] || kai_die "no revision in etcdctl endpoint status: $status"

snapshot=/var/lib/etcd/kai-snapshot-$$.db
trap 'rm -f "$snapshot"' EXIT
kai_quiet "etcdctl snapshot save" etcdctl snapshot save "$snapshot"
[[ -s $snapshot ]] || kai_die "etcdctl snapshot save wrote no file"

mkdir -p "$KAI_OUT_DIR"
kai_install_file "$snapshot" "$KAI_OUT_DIR/etcd-snapshot.db" 0600
sha256sum "$KAI_OUT_DIR/etcd-snapshot.db" | cut -d' ' -f1 >"$KAI_OUT_DIR/etcd-snapshot.sha256"
printf '%s\n' "$revision" >"$KAI_OUT_DIR/etcd-snapshot.revision"
kai_log "etcd snapshot at revision $revision: $(stat -c %s "$snapshot") bytes, sha256 $(cat "$KAI_OUT_DIR/etcd-snapshot.sha256")"
