#!/usr/bin/env bash
# Prepare the OS for Kubernetes: swap off (now and after reboot), kernel modules, sysctl, the kai
# block in /etc/hosts, small prerequisite packages.
# Inputs: KAI_NODE_NAME, KAI_MODULES (space list); files sysctl.conf, modules.conf, hosts.
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_NODE_NAME:?KAI_NODE_NAME is required}"
: "${KAI_MODULES?KAI_MODULES is required (space-separated module names, may be empty)}"
: "${KAI_FILES_DIR:?KAI_FILES_DIR is required (set by kai-exec.sh)}"

kai_begin
kai_log "preparing node $KAI_NODE_NAME (hostname $(hostname 2>/dev/null || echo unknown))"

swap_off() {
  # Only when swap is active: swapoff is global, never call it otherwise.
  if [[ -n $(tail -n +2 /proc/swaps 2>/dev/null || true) ]]; then
    kai_log "turning swap off"
    kai_quiet "swapoff -a" swapoff -a
  else
    kai_log "swap: none active"
  fi

  if [[ -f /etc/fstab ]]; then
    local tmp mode
    mode=$(stat -c %a /etc/fstab)
    tmp=$(kai_tmp_for /etc/fstab)
    awk '!/^[[:space:]]*#/ && $3 == "swap" { print "# disabled by kai (kubelet needs swap off): " $0; next }
         { print }' /etc/fstab >"$tmp"
    KAI_CHANGED=0
    kai_commit_file "$tmp" /etc/fstab "$mode"
    if kai_changed; then
      kai_log "commented out swap entries in /etc/fstab"
      if kai_systemd_running; then kai_systemctl daemon-reload; fi
    fi
  fi

  # Swap units systemd knows about (fstab generator, zram, hand-written .swap units).
  if kai_systemd_running; then
    local unit units=()
    mapfile -t units < <(systemctl list-units --type=swap --all --plain --no-legend 2>/dev/null |
      awk '$1 ~ /\.swap$/ {print $1}')
    for unit in "${units[@]}"; do
      if [[ $(systemctl is-enabled "$unit" 2>/dev/null || true) != masked ]]; then
        kai_log "masking $unit"
        kai_systemctl mask "$unit"
      fi
    done
  fi
}

kernel_modules() {
  local name
  kai_install_file "$KAI_FILES_DIR/modules.conf" /etc/modules-load.d/kai.conf 0644
  for name in $KAI_MODULES; do
    kai_module_ensure "$name"
  done
}

kernel_sysctl() {
  kai_install_file "$KAI_FILES_DIR/sysctl.conf" /etc/sysctl.d/99-kai.conf 0644
  # Only kai's file: `sysctl --system` would also apply unrelated global keys that may be
  # read-only here (containers) and fail the step.
  kai_quiet "sysctl -p /etc/sysctl.d/99-kai.conf" sysctl -p /etc/sysctl.d/99-kai.conf
  kai_log "sysctl settings applied"
}

prerequisites() {
  local required=() optional=() pkg
  case $(kai_pkg_family) in
    apt)
      required=(conntrack socat curl gnupg ca-certificates iproute2 iptables kmod procps)
      optional=(ethtool ebtables)
      ;;
    dnf)
      required=(conntrack-tools socat curl gnupg2 ca-certificates iproute iptables kmod procps-ng)
      optional=(ethtool ebtables)
      ;;
    *) kai_die "no supported package manager (apt-get or dnf) on this node" ;;
  esac
  kai_pkg_install "${required[@]}"
  for pkg in "${optional[@]}"; do
    if kai_pkg_installed "$pkg"; then
      continue
    elif kai_pkg_available "$pkg"; then
      kai_pkg_install "$pkg"
    else
      kai_log "optional package $pkg is not packaged here, skipped"
    fi
  done
  kai_log "prerequisite packages present"
}

prerequisites
swap_off
kernel_modules
kernel_sysctl
kai_write_hosts_block "$KAI_FILES_DIR/hosts"
kai_done
