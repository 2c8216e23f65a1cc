#!/usr/bin/env bash
# Return the node to a blank state: `kubeadm reset`, CNI configuration, kube-vip manifest,
# root's ~/.kube, Kubernetes' own iptables chains (KUBE-*; other rules stay) and nftables table
# (kube-proxy), every kai done marker. KAI_RESET_PACKAGES=1 also removes kubelet, kubeadm,
# kubectl and their repository. KAI_RESET_ETCD_MEMBER=1 lets kubeadm remove a control plane's etcd
# member (one node leaves a cluster that stays); 0 skips that phase (the whole cluster goes, and
# members removing themselves while their peers stop lose quorum: kubeadm then retries for 2 min).
# Idempotent by nature: resetting a never-installed node succeeds.
# No done marker: it removes them all.
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_RESET_PACKAGES:?KAI_RESET_PACKAGES is required (0|1)}"
case $KAI_RESET_PACKAGES in 0 | 1) ;; *) kai_die "KAI_RESET_PACKAGES must be 0 or 1, not '$KAI_RESET_PACKAGES'" ;; esac
: "${KAI_RESET_ETCD_MEMBER:?KAI_RESET_ETCD_MEMBER is required (0|1)}"
case $KAI_RESET_ETCD_MEMBER in 0 | 1) ;; *) kai_die "KAI_RESET_ETCD_MEMBER must be 0 or 1, not '$KAI_RESET_ETCD_MEMBER'" ;; esac

kubeadm_reset() {
  if ! command -v kubeadm >/dev/null 2>&1; then
    kai_log "kubeadm is not installed: nothing for kubeadm reset"
    return 0
  fi
  local args=(-f --cleanup-tmp-dir)
  [[ $KAI_RESET_ETCD_MEMBER == 1 ]] || args+=(--skip-phases=remove-etcd-member)
  kai_log "running kubeadm reset ${args[*]}"
  kubeadm reset "${args[@]}" 2>&1 || kai_die "kubeadm reset failed (its output is above)"
}

remove_files() {
  local home=${HOME:-/root} entry
  if [[ -d /etc/cni/net.d ]]; then
    for entry in /etc/cni/net.d/* /etc/cni/net.d/.[!.]*; do
      [[ -e $entry || -L $entry ]] && rm -rf "$entry"
    done
    kai_log "emptied /etc/cni/net.d"
  fi
  kai_remove_file /etc/kubernetes/manifests/kube-vip.yaml
  if [[ $home == /?* && -d $home/.kube ]]; then
    rm -rf "$home/.kube"
    kai_log "removed $home/.kube"
  fi
}

# Delete the KUBE-* chains of one tool (iptables or ip6tables) in every table: first the jumps
# to them from other chains, then flush and delete the chains. One iptables-restore --noflush per
# table leaves every unrelated rule as it is.
clean_kube_chains() {
  local tool=$1 table dump script
  command -v "$tool-save" >/dev/null 2>&1 && command -v "$tool-restore" >/dev/null 2>&1 || return 0
  for table in filter nat mangle raw; do
    dump=$("$tool-save" -t "$table" 2>/dev/null) || continue
    script=$(awk -v table="$table" '
      /^:KUBE-/ { chains[++n] = substr($1, 2) }
      /^-A / && $2 !~ /^KUBE-/ && / -[jg] KUBE-/ { sub(/^-A /, "-D "); dels[++d] = $0 }
      END {
        if (n == 0 && d == 0) exit
        print "*" table
        for (i = 1; i <= d; i++) print dels[i]
        for (i = 1; i <= n; i++) print "-F " chains[i]
        for (i = 1; i <= n; i++) print "-X " chains[i]
        print "COMMIT"
      }' <<<"$dump")
    [[ -n $script ]] || continue
    kai_quiet "$tool-restore --noflush (table $table)" "$tool-restore" --noflush <<<"$script"
    kai_log "$tool: removed the KUBE-* chains of table $table"
  done
}

clean_nft() {
  local family _table name
  command -v nft >/dev/null 2>&1 || return 0
  while read -r _table family name; do
    if [[ $name == kube-proxy ]]; then
      kai_quiet "nft delete table $family $name" nft delete table "$family" "$name"
      kai_log "nft: removed table $family $name"
    fi
  done < <(nft list tables 2>/dev/null || true)
}

remove_packages() {
  local pkg installed=()
  kai_pkg_repair
  for pkg in kubelet kubeadm kubectl; do
    if kai_pkg_installed "$pkg"; then installed+=("$pkg"); fi
  done
  case $(kai_pkg_family) in
    apt)
      if ((${#installed[@]} > 0)); then
        kai_log "removing ${installed[*]}"
        kai_apt_mark unhold "${installed[@]}"
        kai_apt_get purge -y "${installed[@]}"
      fi
      kai_remove_file /etc/apt/sources.list.d/kubernetes.list
      kai_remove_file /etc/apt/keyrings/kubernetes-apt-keyring.gpg
      ;;
    dnf)
      if ((${#installed[@]} > 0)); then
        kai_log "removing ${installed[*]}"
        kai_dnf remove "${installed[@]}"
      fi
      kai_remove_file /etc/yum.repos.d/kubernetes.repo
      ;;
    *) kai_log "no supported package manager: no packages to remove" ;;
  esac
  kai_remove_file /etc/systemd/system/kubelet.service.d/kai-proxy.conf
}

kubeadm_reset
remove_files
clean_kube_chains iptables
clean_kube_chains ip6tables
clean_nft
if [[ $KAI_RESET_PACKAGES == 1 ]]; then remove_packages; fi
rm -rf "$KAI_STATE_DIR/done"
kai_log "node reset: kai's done markers removed"
