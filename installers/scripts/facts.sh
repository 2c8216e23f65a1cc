#!/usr/bin/env bash
# Gather the node facts of docs/architecture.md §5 into $KAI_OUT_DIR/facts.env (key=value lines).
# Read-only and never fails because a fact is missing: the value says so (none, missing,
# unknown, unreadable). The judging happens in Python (installers/preflight.py).
# Inputs: KAI_MODULES, KAI_BINARIES, KAI_PORTS (space-separated lists; ports may be "N",
# "N-M", optionally with "/tcp" or "/udp").
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_OUT_DIR:?KAI_OUT_DIR is required (set by kai-exec.sh)}"

os_release_value() { # KEY → value from /etc/os-release (quotes removed), or "unknown"
  local key=$1 line value
  if [[ -r /etc/os-release ]]; then
    while IFS= read -r line || [[ -n $line ]]; do
      if [[ $line == "$key="* ]]; then
        value=${line#*=}
        value=${value#[\"\']}
        value=${value%[\"\']}
        printf '%s\n' "${value:-unknown}"
        return 0
      fi
    done </etc/os-release
  fi
  echo unknown
}

meminfo_kb() { # FIELD → kB value from /proc/meminfo, or "unknown"
  local key value _unit
  while read -r key value _unit; do
    if [[ $key == "$1:" ]]; then
      echo "$value"
      return 0
    fi
  done </proc/meminfo
  echo unknown
}

cgroup_version() {
  case $(stat -fc %T /sys/fs/cgroup 2>/dev/null || true) in
    cgroup2fs) echo 2 ;;
    tmpfs | cgroupfs) echo 1 ;;
    *) echo unknown ;;
  esac
}

systemd_state() {
  local state
  if ! command -v systemctl >/dev/null 2>&1 || ! kai_systemd_running; then
    echo none
    return 0
  fi
  state=$(systemctl is-system-running 2>/dev/null || true)
  case $state in
    initializing | starting) echo starting ;;
    offline | "") echo none ;;
    *) echo "$state" ;; # running, degraded, maintenance, stopping
  esac
}

disk_free_mb() {
  local out avail
  out=$(df -Pk /var/lib 2>/dev/null | tail -n 1) || true
  avail=$(awk '{print $4}' <<<"$out")
  if [[ $avail =~ ^[0-9]+$ ]]; then echo $((avail / 1024)); else echo unknown; fi
}

binary_path() {
  local path
  path=$(command -v "$1" 2>/dev/null || true)
  if [[ $path == /* ]]; then echo "$path"; else echo missing; fi
}

macs() {
  local dev name mac out=()
  for dev in /sys/class/net/*; do
    name=${dev##*/}
    # loopback and interfaces a CNI or container runtime creates with random addresses
    case $name in
      lo | veth* | cni* | flannel* | cali* | cilium* | lxc* | vxlan* | tunl* | docker* | kube-* | kube_*) continue ;;
    esac
    mac=$(<"$dev/address") 2>/dev/null || continue
    [[ -n $mac && $mac != 00:00:00:00:00:00 ]] && out+=("$mac")
  done
  local IFS=,
  printf '%s\n' "${out[*]}"
}

product_uuid() {
  local uuid=""
  if [[ -r /sys/class/dmi/id/product_uuid ]]; then
    uuid=$(</sys/class/dmi/id/product_uuid) 2>/dev/null || uuid=""
  fi
  echo "${uuid:-unreadable}"
}

dir_empty() { # 1 when the directory is missing or empty, else 0
  if [[ -d $1 ]] && [[ -n $(ls -A "$1" 2>/dev/null) ]]; then echo 0; else echo 1; fi
}

manifests_empty() { # dir_empty for /etc/kubernetes/manifests, but kai's own kube-vip.yaml does not
  # count: kube-vip-pre-init writes it before `kubeadm init`, and a run stopped in between must
  # resume, not be taken for a node of another cluster (that one would hold the control plane's
  # manifests, etcd data or kubelet.conf too)
  local entry
  for entry in /etc/kubernetes/manifests/* /etc/kubernetes/manifests/.[!.]*; do
    if [[ -e $entry && ${entry##*/} != kube-vip.yaml ]]; then
      echo 0
      return
    fi
  done
  echo 1
}

containerd_version() {
  local bin v
  bin=$(command -v containerd 2>/dev/null || true)
  [[ -n $bin ]] || {
    echo none
    return 0
  }
  v=$(kai_version_of "$bin" --version)
  echo "${v#v}"
}

kubelet_version() {
  local bin v
  bin=$(command -v kubelet 2>/dev/null || true)
  [[ -n $bin ]] || {
    echo none
    return 0
  }
  v=$(kai_version_of "$bin" --version)
  [[ $v == unknown || $v == v* ]] || v="v$v"
  echo "$v"
}

# kai_listening_ports (lib) gives "proto port" lines; keep those in KAI_PORTS.
ports_in_use() {
  local wanted=() spec proto port lo hi listening hits=()
  read -r -a wanted <<<"${KAI_PORTS:-}"
  ((${#wanted[@]} > 0)) || return 0
  listening=$(kai_listening_ports)
  while read -r proto port; do
    [[ -n $port ]] || continue
    for spec in "${wanted[@]}"; do
      local want_proto="" range=$spec
      if [[ $spec == */* ]]; then
        want_proto=${spec#*/}
        range=${spec%/*}
      fi
      lo=${range%-*}
      hi=${range#*-}
      [[ $lo =~ ^[0-9]+$ && $hi =~ ^[0-9]+$ ]] || continue
      [[ -z $want_proto || $want_proto == "$proto" ]] || continue
      if ((port >= lo && port <= hi)); then
        hits+=("$port")
        break
      fi
    done
  done <<<"$listening"
  ((${#hits[@]} > 0)) || return 0
  printf '%s\n' "${hits[@]}" | sort -un | paste -sd, -
}

emit() { printf '%s=%s\n' "$1" "${2//$'\n'/ }"; }

# The API server this node's kubelet talks to: tells a member of *this* cluster (a rerun or a
# resume, fine) from a member of another one (an error).
kubelet_server() {
  local line
  [[ -r /etc/kubernetes/kubelet.conf ]] || { echo none; return; }
  while IFS= read -r line; do
    if [[ $line =~ ^[[:space:]]+server:[[:space:]]*([^[:space:]]+) ]]; then
      echo "${BASH_REMATCH[1]}"
      return
    fi
  done </etc/kubernetes/kubelet.conf
  echo unknown
}

collect() {
  local mem swap name
  emit os_id "$(os_release_value ID)"
  emit os_version_id "$(os_release_value VERSION_ID)"
  emit os_pretty "$(os_release_value PRETTY_NAME)"
  emit arch "$(uname -m)"
  emit cpus "$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo unknown)"
  mem=$(meminfo_kb MemTotal)
  if [[ $mem =~ ^[0-9]+$ ]]; then emit mem_mb $((mem / 1024)); else emit mem_mb unknown; fi
  emit disk_free_mb "$(disk_free_mb)"
  swap=$(meminfo_kb SwapTotal)
  emit swap_total_kb "$swap"
  emit cgroup_version "$(cgroup_version)"
  emit systemd_state "$(systemd_state)"
  emit pkg_family "$(kai_pkg_family)"
  for name in ${KAI_MODULES:-}; do
    if kai_valid_name "$name"; then
      emit "module_$name" "$(kai_module_state "$name")"
    else
      emit "module_$name" missing
    fi
  done
  for name in ${KAI_BINARIES:-}; do
    emit "binary_$name" "$(binary_path "$name")"
  done
  emit ports_in_use "$(ports_in_use || true)"
  emit hostname "$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname 2>/dev/null || echo unknown)"
  emit macs "$(macs)"
  emit product_uuid "$(product_uuid)"
  emit time_epoch "$(printf '%(%s)T' -1)"
  emit kube_manifests_empty "$(manifests_empty)"
  emit etcd_dir_empty "$(dir_empty /var/lib/etcd)"
  emit containerd_version "$(containerd_version)"
  emit kubelet_version "$(kubelet_version)"
  if [[ -e /etc/kubernetes/kubelet.conf ]]; then emit kubeadm_done 1; else emit kubeadm_done 0; fi
  emit kubelet_server "$(kubelet_server)"
}

mkdir -p "$KAI_OUT_DIR"
kai_write_file "$KAI_OUT_DIR/facts.env" 0600 < <(collect)
kai_log "facts gathered: $(grep -c . "$KAI_OUT_DIR/facts.env") keys"
