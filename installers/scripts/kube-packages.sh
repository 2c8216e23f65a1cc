#!/usr/bin/env bash
# Install kubelet, kubeadm, kubectl and cri-tools from the pkgs.k8s.io layout (upstream or the
# mirror): repository = $KAI_K8S_REPO/core:/stable:/v$KAI_K8S_MINOR/{deb,rpm}/.
# kubelet is enabled but not started (kubeadm starts it). Optional file kubelet-proxy.conf is
# kubelet's proxy drop-in. kubelet is restarted only when that drop-in changed and it runs.
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_K8S_MINOR:?KAI_K8S_MINOR is required (e.g. 1.36)}"
: "${KAI_K8S_REPO:?KAI_K8S_REPO is required (base URL of the pkgs.k8s.io layout)}"
: "${KAI_K8S_VERSION?KAI_K8S_VERSION is required (e.g. 1.36.4; may be empty for the newest patch)}"
: "${KAI_FILES_DIR:?KAI_FILES_DIR is required (set by kai-exec.sh)}"
: "${KAI_WORK:?KAI_WORK is required (set by kai-exec.sh)}"

[[ $KAI_K8S_MINOR =~ ^[0-9]+\.[0-9]+$ ]] || kai_die "KAI_K8S_MINOR must look like 1.36, not '$KAI_K8S_MINOR'"
VERSION=${KAI_K8S_VERSION#v}
[[ -z $VERSION || $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
  kai_die "KAI_K8S_VERSION must look like 1.36.4, not '$KAI_K8S_VERSION'"
[[ -z $VERSION || $VERSION == "$KAI_K8S_MINOR".* ]] ||
  kai_die "KAI_K8S_VERSION $VERSION is not a $KAI_K8S_MINOR release"

kai_begin

REPO="${KAI_K8S_REPO%/}/core:/stable:/v$KAI_K8S_MINOR"
DNF_REPO=/etc/yum.repos.d/kubernetes.repo
VERSIONED=(kubelet kubeadm kubectl)

# Does the installed PKG match the wanted version ("" = any)?
has_version() {
  local pkg=$1 installed
  case $(kai_pkg_family) in
    apt)
      kai_pkg_installed "$pkg" || return 1
      installed=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || true)
      [[ -z $VERSION || $installed == "$VERSION"-* ]]
      ;;
    dnf)
      installed=$(rpm -q --qf '%{VERSION}' "$pkg" 2>/dev/null) || return 1
      [[ -z $VERSION || $installed == "$VERSION" ]]
      ;;
  esac
}

needs_install() {
  local pkg
  for pkg in "${VERSIONED[@]}"; do
    has_version "$pkg" || return 0
  done
  kai_pkg_installed cri-tools || return 0
  return 1
}

apt_repository() {
  kai_k8s_apt_repository "$REPO"
  if kai_changed; then kai_log "repository: $REPO/deb/"; fi
}

apt_packages() {
  local pkg wanted=() held
  kai_pkg_repair # before judging what is installed: a cancelled run may have left a transaction
  if needs_install; then
    for pkg in "${VERSIONED[@]}"; do
      if [[ -n $VERSION ]]; then wanted+=("$pkg=$VERSION-*"); else wanted+=("$pkg"); fi
    done
    kai_log "installing ${wanted[*]} cri-tools"
    kai_apt_update
    kai_apt_get install -y --no-install-recommends --allow-change-held-packages --allow-downgrades \
      "${wanted[@]}" cri-tools
  else
    kai_log "kubelet, kubeadm, kubectl ${VERSION:-(any version)} and cri-tools already installed"
  fi
  held=$(apt-mark showhold 2>/dev/null || true)
  for pkg in "${VERSIONED[@]}"; do
    if ! grep -qx "$pkg" <<<"$held"; then
      kai_apt_mark hold "$pkg"
    fi
  done
}

dnf_repository() {
  local key="$KAI_WORK/repomd.xml.key"
  kai_log "fetching $REPO/rpm/repodata/repomd.xml.key"
  kai_fetch "$REPO/rpm/repodata/repomd.xml.key" "$key"
  kai_pkg_repair
  kai_pkg_transaction "rpm --import" rpm --import "$key"
  kai_write_file "$DNF_REPO" 0644 <<REPO
# installed by kai
[kubernetes]
name=Kubernetes v$KAI_K8S_MINOR
baseurl=$REPO/rpm/
enabled=1
gpgcheck=1
gpgkey=$REPO/rpm/repodata/repomd.xml.key
exclude=kubelet kubeadm kubectl cri-tools kubernetes-cni
REPO
}

dnf_packages() {
  local pkg wanted=()
  kai_pkg_repair
  if needs_install; then
    for pkg in "${VERSIONED[@]}"; do
      if [[ -n $VERSION ]]; then wanted+=("$pkg-$VERSION"); else wanted+=("$pkg"); fi
    done
    kai_log "installing ${wanted[*]} cri-tools"
    kai_dnf install --disableexcludes=kubernetes "${wanted[@]}" cri-tools
  else
    kai_log "kubelet, kubeadm, kubectl ${VERSION:-(any version)} and cri-tools already installed"
  fi
}

kubelet_service() {
  local dropin=/etc/systemd/system/kubelet.service.d/kai-proxy.conf
  kai_systemd_running || kai_die "systemd is not running on this node: kubelet needs it"
  KAI_CHANGED=0
  if [[ -f $KAI_FILES_DIR/kubelet-proxy.conf ]]; then
    kai_install_file "$KAI_FILES_DIR/kubelet-proxy.conf" "$dropin" 0644
  else
    kai_remove_file "$dropin"
  fi
  if kai_changed; then
    kai_systemctl daemon-reload
    if systemctl is-active --quiet kubelet; then
      kai_log "restarting kubelet (its proxy settings changed)"
      kai_systemctl restart kubelet
    fi
  fi
  if [[ $(systemctl is-enabled kubelet 2>/dev/null || true) != enabled ]]; then
    kai_systemctl enable kubelet
  fi
}

report_versions() {
  local kubeadm_version
  kubeadm_version=$(kubeadm version -o short 2>&1) || kai_die "kubeadm version -o short failed: $kubeadm_version"
  if [[ -n $VERSION && $kubeadm_version != "v$VERSION" ]]; then
    kai_die "kubeadm reports $kubeadm_version, expected v$VERSION"
  fi
  kai_log "kubeadm $kubeadm_version, $(kubelet --version 2>&1), $(crictl --version 2>&1)"
}

case $(kai_pkg_family) in
  apt)
    apt_repository
    apt_packages
    ;;
  dnf)
    dnf_repository
    dnf_packages
    ;;
  *) kai_die "no supported package manager (apt-get or dnf) on this node" ;;
esac
kubelet_service
report_versions
kai_done
