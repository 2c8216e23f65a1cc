#!/usr/bin/env bash
# Restore this control plane's etcd from a snapshot, one part per plan step (the order and the why:
# installers/restore_plan.py). KAI_RESTORE_PART:
#   stage   the snapshot ($KAI_FILES_DIR/snapshot.db, sha256 checked) restored with `etcdutl
#           snapshot restore` in the running etcd container into $STAGE/data, beside the live data:
#           this member's name and peer URL, the whole initial cluster, the run's new cluster token
#   stop    the etcd and kube-apiserver static pod manifests moved to $HELD; wait until both stopped
#   swap    the live member directory moved aside ($ETCD_DIR/kai-before-restore-<UTC time>, kept for
#           a manual recovery), the restored one put in its place
#   start   the manifests back; wait until the local etcd and API server answer
#   verify  every expected member in the one restored cluster, all healthy
# Files only under /var/lib/etcd and /etc/kubernetes/pki/etcd reach the etcd container (its mounts),
# so the staging directory is inside /var/lib/etcd, and the swap renames within that one file
# system (also when /var/lib/etcd is a mount point of its own). stage and swap record done-markers
# (their inputs carry the run's cluster token: a new run does them again); stop, start and verify
# look at the node's state and are idempotent.
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_RESTORE_PART:?KAI_RESTORE_PART is required (stage|stop|swap|start|verify)}"

MANIFESTS=/etc/kubernetes/manifests
HELD=/etc/kubernetes/kai-restore-held   # not the kubelet's static pod path: pods there are stopped
ETCD_DIR=/var/lib/etcd
STAGE=$ETCD_DIR/kai-restore
ETCD_PKI=/etc/kubernetes/pki/etcd
STATIC_PODS=(etcd kube-apiserver)

command -v crictl >/dev/null 2>&1 || kai_die "crictl is not installed"

running() { # the id of the running container named $1 (empty: none)
  local ids
  ids=$(crictl ps --name "$1" --state running -q) || kai_die "crictl ps failed (is containerd running?)"
  printf '%s\n' "${ids%%$'\n'*}"
}

etcd_exec() { # a command in this node's running etcd container
  local cid
  cid=$(running etcd)
  [[ -n $cid ]] || { printf 'no running etcd container on this node\n' >&2; return 1; }
  crictl exec "$cid" "$@"
}

etcdctl() {
  etcd_exec etcdctl --cacert="$ETCD_PKI/ca.crt" --cert="$ETCD_PKI/healthcheck-client.crt" \
    --key="$ETCD_PKI/healthcheck-client.key" "$@"
}

DEADLINE=$((SECONDS + ${KAI_RESTORE_WAIT_S:-120}))
wait_for() { # wait_for "what" command…: until the command succeeds, or the step's wait is over
  local what=$1
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < DEADLINE)) || kai_die "$what: not within ${KAI_RESTORE_WAIT_S:-120} s"
    sleep 1
  done
}

manifest_flag() { # manifest_flag FLAG FILE: the value of --FLAG= in a static pod's command
  local line
  while IFS= read -r line; do
    line=${line#"${line%%[![:space:]]*}"}
    line=${line#- }
    line=${line#[\"\']}
    line=${line%[\"\']}
    if [[ $line == "--$1="* ]]; then
      printf '%s\n' "${line#"--$1="}"
      return 0
    fi
  done <"$2"
  return 1
}

put_back_manifests() { # the held manifests back where the kubelet runs them
  local pod
  for pod in "${STATIC_PODS[@]}"; do
    if [[ -f $HELD/$pod.yaml ]]; then
      mv -f "$HELD/$pod.yaml" "$MANIFESTS/$pod.yaml"
      kai_log "$pod: manifest back in $MANIFESTS, the kubelet starts it"
    elif [[ -f $MANIFESTS/$pod.yaml ]]; then
      kai_log "$pod: manifest already in $MANIFESTS"
    else
      kai_die "no $pod manifest in $MANIFESTS or $HELD: is this a control plane kubeadm set up?"
    fi
  done
  rmdir "$HELD" 2>/dev/null || true
}

gone() { # no running container named $1 (crictl failing is not "gone")
  local ids
  ids=$(crictl ps --name "$1" --state running -q) || return 1
  [[ -z $ids ]]
}

api_answers() {
  local host=$KAI_API_ADDRESS code
  [[ $host == *:* ]] && host="[$host]"
  code=$(curl --silent --output /dev/null --write-out '%{http_code}' --max-time 3 \
    --cacert /etc/kubernetes/pki/ca.crt "https://$host:$KAI_API_PORT/readyz") || return 1
  [[ $code == 200 ]]
}

stage() {
  : "${KAI_FILES_DIR:?KAI_FILES_DIR is required (set by kai-exec.sh)}"
  : "${KAI_SNAPSHOT_NAME:?}" "${KAI_SNAPSHOT_SHA256:?}" "${KAI_ETCD_CLUSTER_TOKEN:?}"
  : "${KAI_ETCD_NAME:?}" "${KAI_ETCD_PEER_URL:?}" "${KAI_ETCD_INITIAL_CLUSTER:?}"
  kai_begin
  local got manifest=$MANIFESTS/etcd.yaml
  got=$(sha256sum "$KAI_FILES_DIR/snapshot.db" | cut -d' ' -f1)
  [[ $got == "$KAI_SNAPSHOT_SHA256" ]] ||
    kai_die "$KAI_SNAPSHOT_NAME arrived corrupt: sha256 $got here, $KAI_SNAPSHOT_SHA256 on the controller"
  kai_log "$KAI_SNAPSHOT_NAME received: $(stat -c %s "$KAI_FILES_DIR/snapshot.db") bytes, sha256 verified"
  if [[ -d $HELD ]]; then # an earlier restore stopped here: etcdutl runs in the etcd container
    kai_log "an earlier restore left the static pods stopped: starting them to stage this one"
    put_back_manifests
  fi
  [[ -f $manifest ]] || kai_die "$manifest is missing: this node is not a control plane with a local etcd"
  [[ $(manifest_flag name "$manifest") == "$KAI_ETCD_NAME" ]] ||
    kai_die "this node's etcd member is '$(manifest_flag name "$manifest" || true)' in $manifest, the spec says '$KAI_ETCD_NAME'"
  [[ $(manifest_flag initial-advertise-peer-urls "$manifest") == "$KAI_ETCD_PEER_URL" ]] ||
    kai_die "this node's etcd peer URL is '$(manifest_flag initial-advertise-peer-urls "$manifest" || true)' in $manifest, the spec says '$KAI_ETCD_PEER_URL'"
  wait_for "a running etcd container (etcdutl runs in it)" etcd_exec etcdutl version

  rm -rf "$STAGE"
  mkdir -m 0700 "$STAGE"
  install -m 0600 "$KAI_FILES_DIR/snapshot.db" "$STAGE/snapshot.db"
  kai_quiet "etcdutl snapshot restore" etcd_exec etcdutl snapshot restore "$STAGE/snapshot.db" \
    --data-dir="$STAGE/data" --name="$KAI_ETCD_NAME" --initial-advertise-peer-urls="$KAI_ETCD_PEER_URL" \
    --initial-cluster="$KAI_ETCD_INITIAL_CLUSTER" --initial-cluster-token="$KAI_ETCD_CLUSTER_TOKEN"
  rm -f "$STAGE/snapshot.db"
  [[ -d $STAGE/data/member ]] || kai_die "etcdutl snapshot restore wrote no member directory"
  kai_log "restored into $STAGE/data: member $KAI_ETCD_NAME of $KAI_ETCD_INITIAL_CLUSTER (new cluster token)"
  kai_done
}

stop() {
  local pod
  [[ -d $HELD ]] || mkdir -m 0700 "$HELD"
  for pod in "${STATIC_PODS[@]}"; do
    if [[ -f $MANIFESTS/$pod.yaml ]]; then
      mv -f "$MANIFESTS/$pod.yaml" "$HELD/$pod.yaml"
      kai_log "$pod: manifest moved to $HELD, the kubelet stops it"
    elif [[ -f $HELD/$pod.yaml ]]; then
      kai_log "$pod: manifest already in $HELD"
    else
      kai_die "no $pod manifest in $MANIFESTS or $HELD: is this a control plane kubeadm set up?"
    fi
  done
  for pod in "${STATIC_PODS[@]}"; do
    wait_for "$pod to stop" gone "$pod"
    kai_log "$pod: stopped"
  done
}

swap() {
  : "${KAI_SNAPSHOT_NAME:?}" "${KAI_ETCD_CLUSTER_TOKEN:?}"
  kai_begin
  gone etcd || kai_die "etcd still runs on this node (or crictl cannot tell): its data is swapped only while it is stopped"
  local aside
  if [[ -d $STAGE/data/member ]]; then
    if [[ -d $ETCD_DIR/member ]]; then
      aside=$ETCD_DIR/kai-before-restore-$(date -u +%Y%m%dT%H%M%SZ)
      mkdir -m 0700 "$aside"
      mv "$ETCD_DIR/member" "$aside/member"
      kai_log "the data etcd had before the restore is kept in $aside"
    fi
    mv "$STAGE/data/member" "$ETCD_DIR/member"
  elif [[ ! -d $ETCD_DIR/member ]]; then
    kai_die "no restored data in $STAGE/data and none in $ETCD_DIR: the stage step must run first"
  fi # else: an earlier attempt of this run swapped and stopped before its marker
  rm -rf "$STAGE"
  chmod 0700 "$ETCD_DIR"
  kai_log "$ETCD_DIR/member is now $KAI_SNAPSHOT_NAME's data"
  kai_done
}

start() {
  : "${KAI_API_ADDRESS:?}" "${KAI_API_PORT:?}"
  put_back_manifests
  wait_for "etcd to answer on this node" etcdctl endpoint health
  kai_log "etcd answers"
  wait_for "the API server to answer at https://$KAI_API_ADDRESS:$KAI_API_PORT/readyz" api_answers
  kai_log "the API server answers"
}

verify() {
  : "${KAI_ETCD_MEMBERS:?}"
  wait_for "every etcd member healthy (endpoint health --cluster)" etcdctl endpoint health --cluster
  local list status want got ids
  list=$(etcdctl member list -w json) || kai_die "etcdctl member list failed"
  got=$(grep -o '"name":"[^"]*"' <<<"$list" | cut -d'"' -f4 | sort | tr '\n' ' ')
  want=$(tr ' ' '\n' <<<"$KAI_ETCD_MEMBERS" | sort | tr '\n' ' ')
  [[ $got == "$want" ]] || kai_die "etcd members after the restore: ${got:-none}; expected: $want"
  status=$(etcdctl endpoint status --cluster -w json) || kai_die "etcdctl endpoint status failed"
  ids=$(grep -o '"cluster_id":[0-9]*' <<<"$status" | sort -u | wc -l)
  ((ids == 1)) || kai_die "the members answer for $ids different clusters: $status"
  kai_log "etcd members: ${got% }; all healthy, one cluster"
}

case $KAI_RESTORE_PART in
  stage) stage ;;
  stop) stop ;;
  swap) swap ;;
  start) start ;;
  verify) verify ;;
  *) kai_die "KAI_RESTORE_PART must be stage, stop, swap, start or verify, not '$KAI_RESTORE_PART'" ;;
esac
