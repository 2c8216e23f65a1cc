#!/usr/bin/env bash
# Read-only facts for `kai upgrade`'s preflight (judged in installers/upgrade_checks.py together
# with the API's view): package family, free disk where the packages go, the kubeadm and kubelet
# binaries' versions, the Kubernetes package repository's minor, and the nodes an earlier upgrade
# run cordoned (upgrade-drain.sh's records: on the first control plane only). Input: KAI_K8S_VERSION (the
# target, for the log). Output: $KAI_OUT_DIR/facts.env (key=value lines). No done-marker.
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_K8S_VERSION:?KAI_K8S_VERSION is required (the target of the upgrade, e.g. 1.37.1)}"
: "${KAI_OUT_DIR:?KAI_OUT_DIR is required (set by kai-exec.sh)}"

free_mb() {
  local dir=$1 _fs _blocks _used avail _rest
  while [[ ! -d $dir ]]; do dir=${dir%/*}; done
  { read -r _; read -r _fs _blocks _used avail _rest; } < <(df -Pm "${dir:-/}")
  printf '%s\n' "$avail"
}

repo_minor() {
  local list=/etc/apt/sources.list.d/kubernetes.list line
  [[ -f $list ]] || { echo none; return 0; }
  line=$(<"$list")
  if [[ $line =~ /v([0-9]+\.[0-9]+)/deb/ ]]; then echo "${BASH_REMATCH[1]}"; else echo unknown; fi
}

kai_cordoned() {
  local record names=()
  for record in "$KAI_STATE_DIR"/upgrade/cordoned/*; do
    [[ -f $record && $(<"$record") == kai ]] && names+=("${record##*/}")
  done
  local IFS=,
  printf '%s\n' "${names[*]}"
}

{
  echo "pkg_family=$(kai_pkg_family)"
  echo "disk_free_mb=$(free_mb /var/cache/apt/archives)"
  echo "kubeadm_version=$(kai_version_of kubeadm version -o short)"
  echo "kubelet_version=$(kai_version_of kubelet --version)"
  echo "repo_minor=$(repo_minor)"
  echo "kai_cordoned=$(kai_cordoned)"
} >"$KAI_OUT_DIR/facts.env"
kai_log "upgrade facts (target v$KAI_K8S_VERSION): $(tr '\n' ' ' <"$KAI_OUT_DIR/facts.env")"
