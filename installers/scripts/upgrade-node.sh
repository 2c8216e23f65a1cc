#!/usr/bin/env bash
# One node's part of `kai upgrade` (installers/plan_upgrade.py), chosen by KAI_UPGRADE_PART:
#   apply    the first control plane: package repository moved to the target minor, kubeadm
#            package, `kubeadm upgrade plan`, `kubeadm upgrade apply` (kubeadm-upgrade.yaml)
#   node     another control plane: repository, kubeadm package, `kubeadm upgrade node`
#   kubelet  a drained control plane: kubelet and kubectl packages, kubelet restarted
#   worker   a drained worker: repository, kubeadm package, `kubeadm upgrade node`, kubelet and
#            kubectl packages, kubelet restarted
# kai holds kubelet, kubeadm and kubectl (kube-packages.sh): each is unheld for its install and
# held again. Inputs: KAI_UPGRADE_PART, KAI_NODE_NAME, KAI_K8S_MINOR, KAI_K8S_VERSION,
# KAI_K8S_REPO, KAI_DOWNLOAD_PROXY; file kubeadm-upgrade.yaml (v1beta4 UpgradeConfiguration).
# Besides the step's done-marker, each part that finished is recorded under
# $KAI_STATE_DIR/upgrade/v<version>/, so a rerun continues where a cancel or failure stopped it
# whatever step it runs under (the batches may differ between runs).
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_UPGRADE_PART:?KAI_UPGRADE_PART is required (apply|node|kubelet|worker)}"
: "${KAI_NODE_NAME:?KAI_NODE_NAME is required}"
: "${KAI_K8S_MINOR:?KAI_K8S_MINOR is required (e.g. 1.37)}"
: "${KAI_K8S_VERSION:?KAI_K8S_VERSION is required (e.g. 1.37.1)}"
: "${KAI_K8S_REPO:?KAI_K8S_REPO is required (base URL of the pkgs.k8s.io layout)}"
: "${KAI_FILES_DIR:?KAI_FILES_DIR is required (set by kai-exec.sh)}"
: "${KAI_WORK:?KAI_WORK is required (set by kai-exec.sh)}"

case $KAI_UPGRADE_PART in apply | node | kubelet | worker) ;; *)
  kai_die "KAI_UPGRADE_PART must be apply, node, kubelet or worker, not '$KAI_UPGRADE_PART'" ;;
esac
[[ $KAI_K8S_MINOR =~ ^[0-9]+\.[0-9]+$ ]] || kai_die "KAI_K8S_MINOR must look like 1.37, not '$KAI_K8S_MINOR'"
VERSION=${KAI_K8S_VERSION#v}
[[ $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+$ && $VERSION == "$KAI_K8S_MINOR".* ]] ||
  kai_die "KAI_K8S_VERSION must be a $KAI_K8S_MINOR release such as $KAI_K8S_MINOR.1, not '$KAI_K8S_VERSION'"
CONFIG="$KAI_FILES_DIR/kubeadm-upgrade.yaml"
[[ -f $CONFIG ]] || kai_die "input file kubeadm-upgrade.yaml is missing"

kai_begin

[[ $(kai_pkg_family) == apt ]] ||
  kai_die "kai upgrade supports apt-based nodes (Debian, Ubuntu) only so far; this node has $(kai_pkg_family)"

PROGRESS="$KAI_STATE_DIR/upgrade/v$VERSION"
REPO="${KAI_K8S_REPO%/}/core:/stable:/v$KAI_K8S_MINOR"

finished() { [[ -f $PROGRESS/$1 ]]; }
record() {
  mkdir -p "$PROGRESS"
  chmod 0700 "$KAI_STATE_DIR" "$KAI_STATE_DIR/upgrade" "$PROGRESS"
  : >"$PROGRESS/$1"
}

# pkgs.k8s.io has a repository per minor: the node's list moves to the target's (kube-packages.sh
# writes the same file for installs).
REPOSITORY_SET=0
repository() {
  ((REPOSITORY_SET == 0)) || return 0
  kai_k8s_apt_repository "$REPO"
  if kai_changed; then kai_log "package repository moved to $REPO/deb/"; fi
  kai_apt_update
  REPOSITORY_SET=1
}

at_version() {
  local installed
  kai_pkg_installed "$1" || return 1
  installed=$(dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true)
  [[ $installed == "$VERSION"-* ]]
}

# packages PKG...: each at the target version, held; unheld only for its own install.
packages() {
  local pkg want=() held
  kai_pkg_repair
  for pkg in "$@"; do at_version "$pkg" || want+=("$pkg"); done
  if ((${#want[@]} > 0)); then
    repository
    kai_log "upgrading ${want[*]} to $VERSION"
    kai_apt_mark unhold "${want[@]}"
    kai_apt_get install -y --no-install-recommends "${want[@]/%/=$VERSION-*}"
  else
    kai_log "$* already at $VERSION"
  fi
  held=$(apt-mark showhold 2>/dev/null || true)
  for pkg in "$@"; do
    grep -qx "$pkg" <<<"$held" || kai_apt_mark hold "$pkg"
  done
}

kubeadm_upgrade() {
  local what=$1
  finished "kubeadm-$what" && { kai_log "kubeadm upgrade $what to v$VERSION: done earlier"; return 0; }
  local got
  got=$(kubeadm version -o short 2>&1) || kai_die "kubeadm version -o short failed: $got"
  [[ $got == "v$VERSION" ]] || kai_die "kubeadm reports $got after its upgrade, expected v$VERSION"
  if [[ $what == apply ]]; then
    kai_log "running kubeadm upgrade plan --config kubeadm-upgrade.yaml"
    kubeadm upgrade plan --config "$CONFIG" 2>&1 || kai_die "kubeadm upgrade plan failed on $KAI_NODE_NAME (its output is above)"
    kai_log "running kubeadm upgrade apply --config kubeadm-upgrade.yaml --yes"
    if ! kubeadm upgrade apply --config "$CONFIG" --yes 2>&1; then
      journalctl -u kubelet -n 30 --no-pager 2>&1 || true
      kai_die "kubeadm upgrade apply v$VERSION failed on $KAI_NODE_NAME (its output is above)"
    fi
  else
    kai_log "running kubeadm upgrade node --config kubeadm-upgrade.yaml"
    kubeadm upgrade node --config "$CONFIG" 2>&1 || kai_die "kubeadm upgrade node failed on $KAI_NODE_NAME (its output is above)"
  fi
  record "kubeadm-$what"
}

kubelet_restart() {
  local got
  finished kubelet && { kai_log "kubelet v$VERSION: restarted earlier"; return 0; }
  got=$(kai_version_of kubelet --version)
  [[ $got == "v$VERSION" ]] || kai_die "kubelet --version reports $got after its upgrade, expected v$VERSION"
  kai_systemctl daemon-reload
  kai_systemctl restart kubelet
  kai_log "kubelet restarted at v$VERSION"
  record kubelet
}

case $KAI_UPGRADE_PART in
  apply)
    packages kubeadm
    kubeadm_upgrade apply
    ;;
  node)
    packages kubeadm
    kubeadm_upgrade node
    ;;
  kubelet)
    packages kubelet kubectl
    kubelet_restart
    ;;
  worker)
    packages kubeadm
    kubeadm_upgrade node
    packages kubelet kubectl
    kubelet_restart
    ;;
esac
kai_done
