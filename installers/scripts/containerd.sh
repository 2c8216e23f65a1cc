#!/usr/bin/env bash
# Install and configure containerd (+ runc and the CNI plugins).
#   KAI_CONTAINERD_SOURCE=release: verified upstream (or mirror) tarballs into /usr/local and
#     /opt/cni/bin, with containerd's upstream systemd unit;
#   KAI_CONTAINERD_SOURCE=distro: the distribution's package.
# Then config.toml (config-v3.toml for containerd >= 2, config-v2.toml for 1.x), certs.d mirrors
# (mirrors.list: "<registry> <file>" per line), the optional proxy drop-in (proxy.conf).
# containerd is restarted only when one of its binaries, its unit or its config changed: a rerun
# (e.g. while adding another node) must not restart it.
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_CONTAINERD_SOURCE:?KAI_CONTAINERD_SOURCE is required (release|distro)}"
: "${KAI_FILES_DIR:?KAI_FILES_DIR is required (set by kai-exec.sh)}"
: "${KAI_WORK:?KAI_WORK is required (set by kai-exec.sh)}"

kai_begin
kai_systemd_running || kai_die "systemd is not running on this node: containerd needs it"

RESTART=0
DOWNLOADS=$(mktemp -d "$KAI_WORK/downloads.XXXXXX")
UNIT_DIR=/usr/local/lib/systemd/system
DROPIN=/etc/systemd/system/containerd.service.d/kai-proxy.conf
UNITS_CHANGED=0

# install_binary SRC DEST: atomic rename, so a running binary is never overwritten in place.
install_binary() {
  local tmp
  tmp=$(kai_tmp_for "$2")
  cp "$1" "$tmp"
  chmod 0755 "$tmp"
  mv -f "$tmp" "$2"
}

# fetch_verified URL SUMS_URL → path of the verified download
fetch_verified() {
  local url=$1 sums_url=$2 name file expected
  name=${url##*/}
  file="$DOWNLOADS/$name"
  kai_log "downloading $url" >&2
  kai_fetch "$url" "$file"
  kai_fetch "$sums_url" "$file.sums"
  expected=$(kai_sha256_from_list "$file.sums" "$name")
  kai_sha256_verify "$file" "$expected" "$name" >&2
  printf '%s\n' "$file"
}

install_containerd_release() {
  : "${KAI_CONTAINERD_VERSION:?KAI_CONTAINERD_VERSION is required for a release install}"
  : "${KAI_CONTAINERD_URL:?KAI_CONTAINERD_URL is required for a release install}"
  local current url file f
  current=$(kai_version_of /usr/local/bin/containerd --version)
  if [[ ${current#v} == "$KAI_CONTAINERD_VERSION" ]]; then
    kai_log "containerd $KAI_CONTAINERD_VERSION already installed"
  else
    url=$(kai_url "$KAI_CONTAINERD_URL")
    kai_log "installing containerd $KAI_CONTAINERD_VERSION (now: $current)"
    file=$(fetch_verified "$url" "$url.sha256sum")
    mkdir -p "$DOWNLOADS/containerd"
    tar -C "$DOWNLOADS/containerd" -xzf "$file"
    for f in "$DOWNLOADS"/containerd/bin/*; do
      install_binary "$f" "/usr/local/bin/${f##*/}"
    done
    RESTART=1
  fi

  KAI_CHANGED=0
  kai_write_file "$UNIT_DIR/containerd.service" 0644 <<'UNIT'
# containerd's upstream unit (containerd/containerd containerd.service), installed by kai.
[Unit]
Description=containerd container runtime
Documentation=https://containerd.io
After=network.target local-fs.target dbus.service

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/containerd

Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=5

# Having non-zero Limit*s causes performance problems due to accounting overhead
# in the kernel. We recommend using cgroups to do container-local accounting.
LimitNPROC=infinity
LimitCORE=infinity

# Comment TasksMax if your systemd version does not supports it.
# Only systemd 226 and above support this version.
TasksMax=infinity
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
UNIT
  if kai_changed; then
    kai_log "updated $UNIT_DIR/containerd.service"
    UNITS_CHANGED=1
    RESTART=1
  fi
}

# runc changes need no containerd restart: each new container runs the runc binary on disk.
install_runc_release() {
  : "${KAI_RUNC_VERSION:?KAI_RUNC_VERSION is required for a release install}"
  : "${KAI_RUNC_URL:?KAI_RUNC_URL is required for a release install}"
  local current url file
  current=$(kai_version_of /usr/local/sbin/runc --version)
  if [[ ${current#v} == "$KAI_RUNC_VERSION" ]]; then
    kai_log "runc $KAI_RUNC_VERSION already installed"
    return 0
  fi
  url=$(kai_url "$KAI_RUNC_URL")
  kai_log "installing runc $KAI_RUNC_VERSION (now: $current)"
  file=$(fetch_verified "$url" "${url%/*}/runc.sha256sum")
  install_binary "$file" /usr/local/sbin/runc
}

install_cni_plugins_release() {
  : "${KAI_CNI_PLUGINS_VERSION:?KAI_CNI_PLUGINS_VERSION is required for a release install}"
  : "${KAI_CNI_PLUGINS_URL:?KAI_CNI_PLUGINS_URL is required for a release install}"
  local stamp=/opt/cni/bin/.kai-cni-plugins-version current="" url file f
  if [[ -f $stamp ]]; then IFS= read -r current <"$stamp" || true; fi
  if [[ $current == "$KAI_CNI_PLUGINS_VERSION" ]]; then
    kai_log "CNI plugins $KAI_CNI_PLUGINS_VERSION already installed"
    return 0
  fi
  url=$(kai_url "$KAI_CNI_PLUGINS_URL")
  kai_log "installing CNI plugins $KAI_CNI_PLUGINS_VERSION into /opt/cni/bin"
  file=$(fetch_verified "$url" "$url.sha256")
  mkdir -p "$DOWNLOADS/cni" /opt/cni/bin
  tar -C "$DOWNLOADS/cni" -xzf "$file"
  for f in "$DOWNLOADS"/cni/*; do
    [[ -f $f ]] && install_binary "$f" "/opt/cni/bin/${f##*/}"
  done
  printf '%s\n' "$KAI_CNI_PLUGINS_VERSION" | kai_write_file "$stamp" 0644
}

install_distro() {
  case $(kai_pkg_family) in
    apt) kai_pkg_install containerd ;;
    dnf)
      if kai_pkg_installed containerd.io || kai_pkg_installed containerd; then
        :
      elif kai_pkg_available containerd.io; then
        kai_pkg_install containerd.io
      else
        kai_pkg_install containerd
      fi
      ;;
    *) kai_die "no supported package manager (apt-get or dnf) on this node" ;;
  esac
  if [[ -e $UNIT_DIR/containerd.service ]]; then
    kai_warn "$UNIT_DIR/containerd.service (a release install) overrides the package's unit"
  fi
  if [[ -n ${KAI_CNI_PLUGINS_URL:-} ]]; then
    install_cni_plugins_release
  else
    distro_cni_plugins
  fi
}

# The packaged CNI plugins live outside /opt/cni/bin, where kubelet-era CNIs look for them.
distro_cni_plugins() {
  local dir f
  kai_pkg_install containernetworking-plugins
  for dir in /usr/lib/cni /usr/libexec/cni; do
    [[ -d $dir ]] || continue
    mkdir -p /opt/cni/bin
    for f in "$dir"/*; do
      [[ -e /opt/cni/bin/${f##*/} ]] || ln -s "$f" "/opt/cni/bin/${f##*/}"
    done
    kai_log "CNI plugins from $dir linked into /opt/cni/bin"
    return 0
  done
  kai_die "containernetworking-plugins is installed but neither /usr/lib/cni nor /usr/libexec/cni exists"
}

containerd_binary() {
  if [[ $KAI_CONTAINERD_SOURCE == release ]]; then
    echo /usr/local/bin/containerd
  else
    command -v containerd || kai_die "containerd is not on PATH after installing the package"
  fi
}

install_config() {
  local bin version major config
  bin=$(containerd_binary)
  version=$(kai_version_of "$bin" --version)
  version=${version#v}
  [[ $version =~ ^[0-9]+\. ]] || kai_die "cannot read the version of $bin ('$bin --version' failed or printed no version)"
  major=${version%%.*}
  if ((major >= 2)); then config="config-v3.toml"; else config="config-v2.toml"; fi
  kai_log "containerd $version: using $config"
  KAI_CHANGED=0
  kai_install_file "$KAI_FILES_DIR/$config" /etc/containerd/config.toml 0644
  if kai_changed; then RESTART=1; fi
}

# certs.d/<registry>/hosts.toml per mirrors.list line. containerd reads these at each pull: no
# restart. Registries kai configured earlier but no longer lists are removed.
install_mirrors() {
  local list="$KAI_FILES_DIR/mirrors.list" registry file registries=() old
  local record=/etc/containerd/certs.d/.kai-registries
  if [[ -f $list ]]; then
    while read -r registry file _ || [[ -n $registry ]]; do
      [[ -z $registry || $registry == \#* ]] && continue
      [[ $registry =~ ^(_default|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?)$ ]] ||
        kai_die "mirrors.list: invalid registry name '$registry'"
      [[ -n $file && $file != */* && $file != .* ]] ||
        kai_die "mirrors.list: invalid file name '$file' for $registry"
      kai_install_file "$KAI_FILES_DIR/$file" "/etc/containerd/certs.d/$registry/hosts.toml" 0644
      registries+=("$registry")
    done <"$list"
  fi
  if [[ -f $record ]]; then
    while read -r old; do
      [[ -n $old && $old != */* && $old != .* ]] || continue
      if [[ " ${registries[*]} " != *" $old "* ]]; then
        rm -f "/etc/containerd/certs.d/$old/hosts.toml"
        rmdir "/etc/containerd/certs.d/$old" 2>/dev/null || true
        kai_log "removed the mirror configuration of $old"
      fi
    done <"$record"
  fi
  if ((${#registries[@]} > 0)) || [[ -f $record ]]; then
    printf '%s\n' "${registries[@]}" | kai_write_file "$record" 0644
  fi
  kai_log "registry mirrors: ${#registries[@]} configured"
}

install_proxy_dropin() {
  KAI_CHANGED=0
  if [[ -f $KAI_FILES_DIR/proxy.conf ]]; then
    kai_install_file "$KAI_FILES_DIR/proxy.conf" "$DROPIN" 0644
  else
    kai_remove_file "$DROPIN"
  fi
  if kai_changed; then
    UNITS_CHANGED=1
    RESTART=1
  fi
}

start_containerd() {
  if ((UNITS_CHANGED)); then kai_systemctl daemon-reload; fi
  if [[ $(systemctl is-enabled containerd 2>/dev/null || true) != enabled ]]; then
    kai_systemctl enable containerd
  fi
  if ((RESTART)); then
    kai_log "restarting containerd (its binaries, unit or configuration changed)"
    kai_systemctl restart containerd
  elif ! systemctl is-active --quiet containerd; then
    kai_log "starting containerd"
    kai_systemctl start containerd
  else
    kai_log "containerd unchanged and running: not restarted"
  fi
}

check_containerd() {
  local i out=""
  for ((i = 0; i < 30; i++)); do
    if out=$(ctr version 2>&1); then
      kai_log "containerd is up ('ctr version' answers)"
      return 0
    fi
    sleep 1
  done
  printf '%s\n' "$out" >&2
  journalctl -u containerd -n 30 --no-pager >&2 || true
  kai_die "containerd does not answer 'ctr version' after 30 s"
}

case $KAI_CONTAINERD_SOURCE in
  release)
    install_containerd_release
    install_runc_release
    install_cni_plugins_release
    ;;
  distro) install_distro ;;
  *) kai_die "KAI_CONTAINERD_SOURCE must be release or distro, not '$KAI_CONTAINERD_SOURCE'" ;;
esac
install_config
install_mirrors
install_proxy_dropin
start_containerd
check_containerd
kai_done
