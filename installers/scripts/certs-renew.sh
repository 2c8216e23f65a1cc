#!/usr/bin/env bash
# Renew this control plane's kubeadm certificates and restart its control plane on them:
#   1. every etcd member healthy (this member stops for a moment: the others must hold quorum);
#   2. `kubeadm certs renew all` (new keys and certificates from the local CAs, a year each);
#   3. kubeadm's documented restart of the static pods (they do not all reload certificates):
#      their manifests (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) are moved
#      out of /etc/kubernetes/manifests until the kubelet has stopped etcd and the API server
#      (`crictl ps`), then etcd's is put back and waited for (a new container, healthy), then the
#      others, and the API server waited for (a new container answering /readyz on its advertise
#      address, serving the renewed certificate when openssl is there to compare).
# A manifest is never left out: an exit for any reason (failure, cancel, timeout) puts back what
# was moved, and a rerun first puts back what a killed run left in the stash.
# No done marker: every run asked to renew renews. Inputs: KAI_NODE_NAME, KAI_POD_TIMEOUT_S (how
# long a static pod may take to stop, and to come back).
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_NODE_NAME:?KAI_NODE_NAME is required}"
: "${KAI_POD_TIMEOUT_S:?KAI_POD_TIMEOUT_S is required (seconds)}"
[[ $KAI_POD_TIMEOUT_S =~ ^[0-9]+$ ]] || kai_die "KAI_POD_TIMEOUT_S must be a number of seconds, not '$KAI_POD_TIMEOUT_S'"

K8S=/etc/kubernetes
MANIFESTS=$K8S/manifests
ETCD_PKI=$K8S/pki/etcd
# kubeadm keeps its own backups under /etc/kubernetes/tmp: the same filesystem, so a move is atomic
STASH=$K8S/tmp/kai-certs-restart
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler)

[[ -f $K8S/pki/ca.crt && (-f $MANIFESTS/kube-apiserver.yaml || -f $STASH/kube-apiserver.yaml) ]] ||
  kai_die "this node is not a kubeadm control plane (no /etc/kubernetes/pki/ca.crt or kube-apiserver manifest)"
for tool in kubeadm crictl; do
  command -v "$tool" >/dev/null 2>&1 || kai_die "$tool is not installed"
done

# --- the stash: manifests out of the kubelet's sight, always put back -----------------------------

put_back() { # put_back NAME...: the named stashed manifests back where the kubelet reads them
  local name
  for name in "$@"; do
    if [[ -f $STASH/$name.yaml ]]; then
      mv -f "$STASH/$name.yaml" "$MANIFESTS/$name.yaml"
      kai_log "static pod $name: manifest back in $MANIFESTS"
    fi
  done
}
put_back_all() { put_back "${COMPONENTS[@]}"; }
trap put_back_all EXIT
trap 'exit 143' TERM INT HUP

put_back_all # what a killed run may have left

container() { # container NAME: the id of its running container, empty when none
  crictl ps --name "$1" --state running -q | head -n 1
}

wait_for() { # wait_for WHAT COMMAND...: until COMMAND succeeds, at most KAI_POD_TIMEOUT_S
  local what=$1 deadline=$((SECONDS + KAI_POD_TIMEOUT_S))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || kai_die "$what: not within ${KAI_POD_TIMEOUT_S} s"
    sleep 1
  done
}

etcdctl() {
  local cid
  cid=$(container etcd)
  [[ -n $cid ]] || return 1
  crictl exec "$cid" etcdctl --cacert="$ETCD_PKI/ca.crt" --cert="$ETCD_PKI/healthcheck-client.crt" \
    --key="$ETCD_PKI/healthcheck-client.key" "$@"
}

# --- 1. etcd healthy everywhere -----------------------------------------------------------------

LOCAL_ETCD=0
if [[ -f $MANIFESTS/etcd.yaml ]]; then
  LOCAL_ETCD=1
  health=$(etcdctl endpoint health --cluster 2>&1) || {
    printf '%s\n' "$health" >&2
    kai_die "etcd is not healthy (every member must be before one restarts): nothing renewed"
  }
  printf '%s\n' "$health"
fi

# --- 2. renew -----------------------------------------------------------------------------------

kai_log "running kubeadm certs renew all"
kubeadm certs renew all 2>&1 || kai_die "kubeadm certs renew all failed on $KAI_NODE_NAME (its output is above)"

# --- 3. restart the static pods -----------------------------------------------------------------

old_etcd=$(container etcd)
old_api=$(container kube-apiserver)
mkdir -p "$STASH"
chmod 0700 "$STASH"
moved=()
for name in "${COMPONENTS[@]}"; do
  if [[ -f $MANIFESTS/$name.yaml ]]; then
    mv -f "$MANIFESTS/$name.yaml" "$STASH/$name.yaml"
    moved+=("$name")
  fi
done
kai_log "static pods ${moved[*]}: manifests moved out of $MANIFESTS until the kubelet stops them"

stopped() { [[ -z $(container "$1") ]]; }
wait_for "the kubelet stopping kube-apiserver" stopped kube-apiserver
((LOCAL_ETCD == 0)) || wait_for "the kubelet stopping etcd" stopped etcd

restarted() { # restarted NAME OLD_ID: a running container that is not the old one
  local now
  now=$(container "$1")
  [[ -n $now && $now != "$2" ]]
}

if ((LOCAL_ETCD == 1)); then
  put_back etcd
  wait_for "etcd running again" restarted etcd "$old_etcd"
  etcd_healthy() { etcdctl endpoint health >/dev/null 2>&1; }
  wait_for "etcd answering on its renewed certificates" etcd_healthy
  kai_log "etcd restarted and healthy"
fi
put_back kube-apiserver kube-controller-manager kube-scheduler
wait_for "kube-apiserver running again" restarted kube-apiserver "$old_api"

# The API server's own address (kube-apiserver's flags in its manifest): not the endpoint, which
# may be a VIP or a load balancer answering from another control plane.
flag() { sed -n "s/^[[:space:]]*- --$1=//p" "$MANIFESTS/kube-apiserver.yaml" | head -n 1; }
address=$(flag advertise-address)
port=$(flag secure-port)
[[ -n $address ]] || kai_die "no --advertise-address in $MANIFESTS/kube-apiserver.yaml"
[[ $address == *:* ]] && address="[$address]"
url="https://$address:${port:-6443}"
ready() { curl -fsS --max-time 5 --cacert "$K8S/pki/ca.crt" "$url/readyz" >/dev/null 2>&1; }
wait_for "kube-apiserver ready at $url/readyz" ready
kai_log "kube-apiserver restarted and ready at $url"

if command -v openssl >/dev/null 2>&1; then
  served=$(openssl s_client -connect "${address}:${port:-6443}" </dev/null 2>/dev/null | openssl x509 -noout -enddate) ||
    kai_die "cannot read the certificate kube-apiserver serves at $url"
  on_disk=$(openssl x509 -noout -enddate -in "$K8S/pki/apiserver.crt")
  [[ $served == "$on_disk" ]] ||
    kai_die "kube-apiserver serves a certificate with ${served#notAfter=} as its end, the renewed one ends ${on_disk#notAfter=}"
  kai_log "kube-apiserver serves the renewed certificate (${on_disk#notAfter=})"
else
  kai_log "openssl is not installed: the served certificate is not compared with the renewed one"
fi
rmdir "$STASH" 2>/dev/null || true
kai_log "certificates renewed on $KAI_NODE_NAME; control plane restarted on them"
