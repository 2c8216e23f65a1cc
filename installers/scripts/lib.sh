# shellcheck shell=bash
# Helpers shared by kai's node scripts. Sourced (never run) by every step script:
#   . "${0%/*}/lib.sh"
# Contract: docs/architecture.md §3. Inputs come only from KAI_* environment variables; results
# that must not be logged go to files in $KAI_OUT_DIR; everything printed is logged line by line.

# Functions run inside $(…) must stop at their first failure too (bash >= 4.4).
shopt -s inherit_errexit

# Non-login SSH sessions often lack the sbin directories. Append (never prepend) so that a PATH
# chosen by the caller still wins.
for _kai_dir in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
  case ":$PATH:" in
    *":$_kai_dir:"*) ;;
    *) PATH="$PATH:$_kai_dir" ;;
  esac
done
unset _kai_dir
export PATH
# Parsed tool output (ss, containerd --version, apt) must not depend on the node's locale.
export LC_ALL=C

KAI_STATE_DIR="${KAI_STATE_DIR:-/var/lib/kai}"
# Set to 1 by kai_commit_file whenever a file on the node really changed (scripts restart a
# service only then: adding a node must never restart containerd or kubelet elsewhere).
KAI_CHANGED=0
kai_changed() { ((KAI_CHANGED != 0)); }

# --- output ------------------------------------------------------------------------------------

kai_log() { printf '%s\n' "$*"; }
kai_warn() { printf 'WARNING: %s\n' "$*" >&2; }
kai_die() {
  printf 'ERROR: %s\n' "$*" >&2
  exit 1
}

# Run an external command quietly; on failure print its last output lines and die.
# Only for external commands (errexit does not apply inside a function called this way).
kai_quiet() {
  local desc=$1 log rc=0
  shift
  log=$(mktemp "${KAI_WORK:-${TMPDIR:-/tmp}}/.kai-cmd.XXXXXX")
  "$@" >"$log" 2>&1 || rc=$?
  if ((rc != 0)); then
    tail -n 60 "$log" >&2 || true
    rm -f "$log"
    kai_die "$desc failed (exit $rc)"
  fi
  rm -f "$log"
}

# Copy stdin to stdout, replacing every given secret value by <redacted> (pure bash: the
# secrets never reach a command line).
kai_redact() {
  local line secret
  while IFS= read -r line || [[ -n $line ]]; do
    for secret in "$@"; do
      [[ -n $secret ]] && line=${line//"$secret"/"<redacted>"}
    done
    printf '%s\n' "$line"
  done
}

# --- done markers ------------------------------------------------------------------------------

kai_marker_path() { printf '%s/done/%s\n' "$KAI_STATE_DIR" "$KAI_STEP"; }

# Exit 0 ("already done") when this step already ran with the same inputs ($KAI_STEP_HASH).
kai_begin() {
  : "${KAI_STEP:?KAI_STEP is required (set by the kai runner)}"
  : "${KAI_STEP_HASH:?KAI_STEP_HASH is required (set by the kai runner)}"
  case $KAI_STEP in
    .* | *[!A-Za-z0-9._-]*) kai_die "KAI_STEP '$KAI_STEP' is not a plain step name" ;;
  esac
  local marker recorded=""
  marker=$(kai_marker_path)
  if [[ -f $marker ]]; then
    IFS= read -r recorded <"$marker" || true
    if [[ $recorded == "$KAI_STEP_HASH" ]]; then
      kai_log "$KAI_STEP: already done (inputs unchanged)"
      exit 0
    fi
    kai_log "$KAI_STEP: inputs changed since the last run, doing the step again"
  fi
}

# Record that the step completed with these inputs.
kai_done() {
  local marker
  marker=$(kai_marker_path)
  mkdir -p "${marker%/*}"
  chmod 0700 "$KAI_STATE_DIR" "${marker%/*}"
  printf '%s\n' "$KAI_STEP_HASH" | kai_write_file "$marker" 0600
  kai_log "$KAI_STEP: done"
}

# --- files -------------------------------------------------------------------------------------

# Temp files live next to their destination (same filesystem, so mv is atomic) and are hidden:
# kubelet ignores dot files in /etc/kubernetes/manifests, systemd and sysctl ignore them too.
kai_tmp_for() {
  local dest=$1 dir base
  dir=$(dirname "$dest")
  base=$(basename "$dest")
  mkdir -p "$dir"
  rm -f "$dir/.$base.kai-"* # leftovers of a run killed halfway
  mktemp "$dir/.$base.kai-XXXXXX"
}

# Move TMP over DEST with MODE unless DEST already has the same content (then TMP is dropped).
# Sets KAI_CHANGED=1 when DEST changed.
kai_commit_file() {
  local tmp=$1 dest=$2 mode=$3
  if [[ -f $dest ]] && cmp -s "$tmp" "$dest"; then
    rm -f "$tmp"
    [[ $(stat -c %a "$dest") == "${mode#0}" ]] || chmod "$mode" "$dest"
    return 0
  fi
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$dest"
  KAI_CHANGED=1
}

# kai_write_file DEST MODE < content
kai_write_file() {
  local dest=$1 mode=$2 tmp
  tmp=$(kai_tmp_for "$dest")
  cat >"$tmp"
  kai_commit_file "$tmp" "$dest" "$mode"
}

# kai_install_file SRC DEST MODE: copy SRC to DEST atomically, only if the content differs.
kai_install_file() {
  local src=$1 dest=$2 mode=$3 tmp
  [[ -f $src ]] || kai_die "input file $(basename "$src") is missing"
  if [[ -f $dest ]] && cmp -s "$src" "$dest"; then
    [[ $(stat -c %a "$dest") == "${mode#0}" ]] || chmod "$mode" "$dest"
    return 0
  fi
  tmp=$(kai_tmp_for "$dest")
  cat "$src" >"$tmp"
  kai_commit_file "$tmp" "$dest" "$mode"
  kai_log "updated $dest"
}

# kai_remove_file DEST: remove a file kai installed earlier (sets KAI_CHANGED=1 if it existed).
kai_remove_file() {
  if [[ -e $1 || -L $1 ]]; then
    rm -f "$1"
    KAI_CHANGED=1
    kai_log "removed $1"
  fi
}

# kai_render_secrets SRC DEST: copy SRC to DEST (0600) with the placeholders __KAI_JOIN_TOKEN__,
# __KAI_CA_CERT_HASH__ and __KAI_CERTIFICATE_KEY__ replaced by the values of the environment
# variables of the same name. Only bash builtins touch the secret values: they appear in no
# process's argv (ps) and are never printed.
kai_render_secrets() {
  local src=$1 dest=$2 content="" name var old_umask
  [[ -f $src ]] || kai_die "input file ${src##*/} is missing"
  IFS= read -r -d '' content <"$src" || true
  for name in JOIN_TOKEN CA_CERT_HASH CERTIFICATE_KEY; do
    var=KAI_$name
    if [[ $content == *"__KAI_${name}__"* ]]; then
      [[ -n ${!var:-} ]] || kai_die "$var is required: ${src##*/} has the placeholder __KAI_${name}__"
      content=${content//"__KAI_${name}__"/"${!var}"}
    fi
  done
  if [[ $content == *__KAI_*__* ]]; then
    kai_die "${src##*/} still has an unknown __KAI_…__ placeholder after substitution"
  fi
  old_umask=$(umask)
  umask 077
  rm -f "$dest"
  printf '%s' "$content" >"$dest"
  umask "$old_umask"
  chmod 0600 "$dest"
}

# --- downloads ---------------------------------------------------------------------------------

# amd64|arm64, the architecture names release URLs use.
kai_arch() {
  case $(uname -m) in
    x86_64 | amd64) echo amd64 ;;
    aarch64 | arm64) echo arm64 ;;
    *) kai_die "unsupported CPU architecture $(uname -m) (kai supports x86_64 and aarch64)" ;;
  esac
}

# Substitute the literal {arch} the versions table leaves in binary URLs.
kai_url() {
  local url=$1 arch
  arch=$(kai_arch)
  printf '%s\n' "${url//\{arch\}/$arch}"
}

# kai_fetch URL DEST: download through $KAI_DOWNLOAD_PROXY when set (never a global proxy).
kai_fetch() {
  local url=$1 dest=$2
  local args=(--fail --silent --show-error --location --retry 3 --retry-delay 2
    --connect-timeout 20 --output "$dest")
  if [[ -n ${KAI_DOWNLOAD_PROXY:-} ]]; then
    args+=(--proxy "$KAI_DOWNLOAD_PROXY")
  fi
  curl "${args[@]}" "$url" || kai_die "download failed: $url"
}

kai_sha256_of() {
  local sum
  sum=$(sha256sum "$1")
  printf '%s\n' "${sum%% *}"
}

# kai_sha256_verify FILE EXPECTED [WHAT]: die naming expected and actual digest on mismatch.
kai_sha256_verify() {
  local file=$1 expected=${2,,} what=${3:-${1##*/}} got
  got=$(kai_sha256_of "$file")
  [[ $expected =~ ^[0-9a-f]{64}$ ]] || kai_die "invalid expected sha256 for $what: '$2'"
  [[ $got == "$expected" ]] || kai_die "sha256 mismatch for $what: expected $expected, got $got"
  kai_log "sha256 ok for $what"
}

# kai_sha256_from_list SUMFILE NAME: the digest for NAME in a sha256sum-style list
# ("<hex>  [*]<name>" lines); a list with one bare digest also counts.
kai_sha256_from_list() {
  local file=$1 name=$2 hex rest
  while read -r hex rest || [[ -n $hex ]]; do
    rest=${rest#\*}
    if [[ -z $rest || ${rest##*/} == "$name" ]]; then
      printf '%s\n' "$hex"
      return 0
    fi
  done <"$file"
  kai_die "${file##*/} lists no sha256 for $name"
}

# kai_version_of COMMAND ARGS…: the first x.y.z word of its output (a leading v kept), or
# "unknown" when the command fails or prints none.
kai_version_of() {
  local out word words=()
  out=$("$@" 2>/dev/null) || {
    echo unknown
    return 0
  }
  read -r -a words <<<"${out//$'\n'/ }"
  for word in "${words[@]}"; do
    if [[ $word =~ ^v?[0-9]+\.[0-9]+\.[0-9]+ ]]; then
      echo "${BASH_REMATCH[0]}"
      return 0
    fi
  done
  echo unknown
}

# --- packages ----------------------------------------------------------------------------------

kai_pkg_family() {
  if command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
    echo apt
  elif command -v dnf >/dev/null 2>&1; then
    echo dnf
  else
    echo unknown
  fi
}

# --- package transactions that no cancel can cut in half ---------------------------------------
# A cancelled or timed-out step is killed by kai-exec.sh: TERM to its process group, KILL 5 s
# later, then KILL to every process whose environment holds KAI_WORK. dpkg or rpm killed halfway
# leaves the package database broken ("dpkg was interrupted") for every later run. So a command
# that changes the package database runs in a session of its own (out of the step's process
# group) with a clean environment (no KAI_WORK): the kill cannot reach it, and it finishes (or
# rolls back) by itself even when the step is gone. The step waits for it, and on TERM keeps
# waiting for as long as the agent lets it. Before installing, every package step waits for the
# package lock (such a transaction of a cancelled run may still be running) and repairs what an
# interrupted transaction left (kai_pkg_repair).

# How long a package step waits for another package transaction to release the lock (seconds).
KAI_PKG_LOCK_TIMEOUT=${KAI_PKG_LOCK_TIMEOUT:-300}
_KAI_PKG_TX_PID=""
_KAI_PKG_TX_DESC=""
KAI_PKG_TX_OUTPUT="" # the last lines a package transaction printed

# kai_pkg_try DESC COMMAND...: run COMMAND as an unkillable package transaction (see above) and
# return its exit status; its output's last lines are in KAI_PKG_TX_OUTPUT.
kai_pkg_try() {
  local desc=$1 log rc=0
  shift
  log=$(mktemp "${KAI_WORK:-${TMPDIR:-/tmp}}/.kai-pkg.XXXXXX")
  _KAI_PKG_TX_DESC=$desc
  trap _kai_pkg_on_stop TERM INT HUP
  # setsid: its own session and process group (the agent's group kill misses it); env -i: none of
  # the step's environment (KAI_WORK is what the agent's straggler kill looks for); cd /: it must
  # not keep $KAI_WORK busy. Its log may be deleted with $KAI_WORK while it runs: harmless.
  (cd / && exec setsid env -i PATH="$PATH" LC_ALL=C DEBIAN_FRONTEND=noninteractive "$@") \
    </dev/null >"$log" 2>&1 &
  _KAI_PKG_TX_PID=$!
  wait "$_KAI_PKG_TX_PID" || rc=$?
  trap - TERM INT HUP
  _KAI_PKG_TX_PID=""
  KAI_PKG_TX_OUTPUT=$(tail -n 60 "$log" 2>/dev/null || true)
  rm -f "$log"
  return "$rc"
}

# kai_pkg_transaction DESC COMMAND...: kai_pkg_try, and die with the command's output on failure.
kai_pkg_transaction() {
  local rc=0
  kai_pkg_try "$@" || rc=$?
  if ((rc != 0)); then
    printf '%s\n' "$KAI_PKG_TX_OUTPUT" >&2
    kai_die "$1 failed (exit $rc)"
  fi
}

# The step is being stopped (cancel, timeout) while a package transaction runs: let it finish.
# shellcheck disable=SC2317  # called from the TERM/INT/HUP trap
_kai_pkg_on_stop() {
  trap '' TERM INT HUP
  if [[ -n $_KAI_PKG_TX_PID ]]; then
    kai_warn "stop requested during $_KAI_PKG_TX_DESC: letting the package manager finish its" \
      "transaction (pid $_KAI_PKG_TX_PID; it is never interrupted, and the next run waits for it)"
    wait "$_KAI_PKG_TX_PID" || true
    kai_warn "$_KAI_PKG_TX_DESC finished; the step stops now"
  fi
  exit 143
}

# apt-get with the download proxy passed explicitly and a bounded wait for the dpkg lock. All but
# `update` (which only downloads lists) change the package database: they run as transactions.
kai_apt_get() {
  local proxy=() run=kai_pkg_transaction
  [[ $1 != update ]] || run=kai_quiet
  if [[ -n ${KAI_DOWNLOAD_PROXY:-} ]]; then
    proxy=(-o "Acquire::http::Proxy=$KAI_DOWNLOAD_PROXY" -o "Acquire::https::Proxy=$KAI_DOWNLOAD_PROXY")
  fi
  "$run" "apt-get $1" env DEBIAN_FRONTEND=noninteractive apt-get -q "${proxy[@]}" \
    -o "DPkg::Lock::Timeout=$KAI_PKG_LOCK_TIMEOUT" -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold "$@"
}

KAI_APT_UPDATED=0
kai_apt_update() {
  if ((KAI_APT_UPDATED == 0)); then
    kai_pkg_repair
    kai_log "apt-get update"
    kai_apt_get update
    KAI_APT_UPDATED=1
  fi
}

kai_dnf() {
  local proxy=()
  if [[ -n ${KAI_DOWNLOAD_PROXY:-} ]]; then
    proxy=("--setopt=proxy=$KAI_DOWNLOAD_PROXY")
  fi
  kai_pkg_repair
  kai_pkg_transaction "dnf $1" dnf -y -q "${proxy[@]}" "$@"
}

# kai_apt_mark hold|unhold PKG...: package selections live in dpkg's database too.
kai_apt_mark() {
  kai_pkg_transaction "apt-mark $1" apt-mark "$@"
}

# --- waiting for the package lock, repairing an interrupted database ------------------------------

# The pids holding a POSIX/OFD lock on FILE (from /proc/locks; no lock is taken to find out).
kai_lock_holders() {
  local file=$1 dev ino major minor _n _kind _mode _rw pid id _rest
  [[ -e $file ]] || return 0
  read -r dev ino < <(stat -c '%d %i' "$file")
  major=$(((dev >> 8) & 0xfff))
  minor=$(((dev & 0xff) | ((dev >> 12) & 0xfff00)))
  id=$(printf '%02x:%02x:%s' "$major" "$minor" "$ino")
  # "1: POSIX  ADVISORY  WRITE 1234 00:2e:5678 0 EOF"; "1: -> POSIX …" lines are waiters
  while read -r _n _kind _mode _rw pid dev _rest; do
    [[ $_kind != "->" && $dev == "$id" ]] && printf '%s\n' "$pid"
  done </proc/locks
  return 0
}

# kai_pkg_wait_unlocked LOCKFILE...: wait until no process holds any of the lock files, for at
# most KAI_PKG_LOCK_TIMEOUT seconds; die naming the holder when it does not end.
kai_pkg_wait_unlocked() {
  local deadline holders="" file pid who waited=0
  deadline=$((SECONDS + KAI_PKG_LOCK_TIMEOUT))
  while :; do
    holders=""
    for file in "$@"; do
      holders+=$(kai_lock_holders "$file")
    done
    [[ -n $holders ]] || break
    pid=${holders%%$'\n'*}
    who="pid $pid ($(tr '\0\n' '  ' 2>/dev/null <"/proc/$pid/cmdline" || echo gone))"
    if ((waited == 0)); then
      kai_log "waiting up to ${KAI_PKG_LOCK_TIMEOUT} s for another package transaction to finish: ${who% }"
      waited=1
    fi
    ((SECONDS < deadline)) ||
      kai_die "the package lock is still held after ${KAI_PKG_LOCK_TIMEOUT} s by ${who% }"
    sleep 1
  done
  if ((waited == 1)); then kai_log "the package lock is free"; fi
}

# What is wrong with dpkg's database: an interrupted run's journal, and dpkg --audit's findings.
kai_dpkg_problems() {
  local f
  for f in /var/lib/dpkg/updates/*; do
    if [[ ${f##*/} =~ ^[0-9]+$ ]]; then
      echo "dpkg was interrupted (its journal /var/lib/dpkg/updates is not empty)"
      break
    fi
  done
  dpkg --audit 2>&1 || true
}

kai_apt_repair() {
  local problems rc=0
  kai_pkg_wait_unlocked /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock
  problems=$(kai_dpkg_problems)
  [[ -n $problems ]] || return 0
  kai_warn "the package database needs repair (a package transaction was interrupted):"
  printf '%s\n' "$problems" | head -n 30 >&2
  kai_log "repairing the package database: dpkg --configure -a"
  kai_pkg_try "dpkg --configure -a" dpkg --force-confdef --force-confold --configure -a || rc=$?
  if ((rc != 0)); then # half-installed packages: apt-get -f install reinstalls them
    printf '%s\n' "$KAI_PKG_TX_OUTPUT" | tail -n 15 >&2
    kai_warn "dpkg --configure -a failed (exit $rc); apt-get -f install comes next"
  fi
  kai_log "repairing the package database: apt-get -f install"
  kai_apt_get install -f -y --no-install-recommends
  problems=$(kai_dpkg_problems)
  [[ -z $problems ]] ||
    kai_die "the package database is still broken after dpkg --configure -a and apt-get -f install: $problems"
  kai_log "package database repaired"
}

# rpm keeps no journal to replay: an interrupted rpm/dnf transaction leaves an rpm database that
# cannot be read (rebuilt with rpm --rebuilddb) or duplicate and half-removed packages, which
# `dnf check` finds and `dnf remove --duplicates` cleans up.
kai_dnf_repair() {
  local problems rc=0
  kai_pkg_wait_unlocked /var/lib/rpm/.rpm.lock /var/lib/dnf/rpmdb_lock.pid
  if ! problems=$(rpm -q rpm 2>&1); then
    kai_warn "the rpm database cannot be read: $problems"
    kai_log "repairing the package database: rpm --rebuilddb"
    kai_pkg_transaction "rpm --rebuilddb" rpm --rebuilddb
  fi
  problems=$(dnf -q check 2>&1) || rc=$?
  ((rc != 0)) || return 0
  if [[ $problems == *"No such command"* || $problems == *"Unknown argument"* ]]; then
    kai_log "this dnf has no 'check' command: duplicate packages are not looked for"
    return 0
  fi
  kai_warn "the package database needs repair (a package transaction was interrupted):"
  printf '%s\n' "$problems" | head -n 30 >&2
  kai_log "repairing the package database: dnf remove --duplicates"
  kai_pkg_transaction "dnf remove --duplicates" dnf -y -q remove --duplicates
  problems=$(dnf -q check 2>&1) ||
    kai_die "the package database is still broken after dnf remove --duplicates: $problems"
  kai_log "package database repaired"
}

# kai_pkg_repair: once per step, before it changes packages: wait (bounded) for any other package
# transaction, then repair an interrupted one's leftovers, logging what was done.
KAI_PKG_REPAIRED=0
kai_pkg_repair() {
  ((KAI_PKG_REPAIRED == 0)) || return 0
  KAI_PKG_REPAIRED=1 # (set first: the repair itself runs apt-get/dnf)
  case $(kai_pkg_family) in
    apt) kai_apt_repair ;;
    dnf) kai_dnf_repair ;;
    *) ;;
  esac
}

kai_pkg_installed() {
  case $(kai_pkg_family) in
    apt) [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]] ;;
    dnf) rpm -q --whatprovides "$1" >/dev/null 2>&1 ;;
    *) return 1 ;;
  esac
}

# Can the package manager install this name? (Used for optional prerequisites.)
kai_pkg_available() {
  case $(kai_pkg_family) in
    apt)
      kai_apt_update
      apt-cache show --no-all-versions "$1" >/dev/null 2>&1
      ;;
    dnf)
      local proxy=()
      [[ -z ${KAI_DOWNLOAD_PROXY:-} ]] || proxy=("--setopt=proxy=$KAI_DOWNLOAD_PROXY")
      dnf -q "${proxy[@]}" list "$1" >/dev/null 2>&1
      ;;
    *) return 1 ;;
  esac
}

# kai_pkg_install NAME...: install the names that are not installed yet (no network otherwise).
kai_pkg_install() {
  local missing=() pkg
  kai_pkg_repair # first: a half-installed package does not count as installed
  for pkg in "$@"; do
    kai_pkg_installed "$pkg" || missing+=("$pkg")
  done
  ((${#missing[@]} > 0)) || return 0
  kai_log "installing ${missing[*]}"
  case $(kai_pkg_family) in
    apt)
      kai_apt_update
      kai_apt_get install -y --no-install-recommends "${missing[@]}"
      ;;
    dnf) kai_dnf install "${missing[@]}" ;;
    *) kai_die "no supported package manager (apt-get or dnf) on this node" ;;
  esac
}

# --- kernel modules ----------------------------------------------------------------------------

kai_valid_name() { [[ $1 =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]]; }

# builtin|loaded|loadable|missing. Kernels may build modules in (no /lib/modules at all).
kai_module_state() {
  local name=$1 sysname=${1//-/_} builtin_list
  builtin_list="/lib/modules/$(uname -r)/modules.builtin"
  if [[ -e /sys/module/$sysname/initstate ]]; then
    echo loaded
  elif [[ -d /sys/module/$sysname ]]; then
    echo builtin
  elif [[ -r $builtin_list ]] && grep -Eq "(^|/)${name//[-_]/[-_]}\.ko(\.[a-z]+)?$" "$builtin_list"; then
    echo builtin
  elif kai_module_feature_present "$sysname"; then
    # built in without parameters (so no /sys/module entry) and no modules.builtin to say so
    echo builtin
  elif modinfo "$name" >/dev/null 2>&1 || modprobe -n "$name" >/dev/null 2>&1; then
    echo loadable
  else
    echo missing
  fi
}

# What a module provides, for the two Kubernetes needs (overlay, br_netfilter).
kai_module_feature_present() {
  case $1 in
    overlay) grep -qw overlay /proc/filesystems 2>/dev/null ;;
    br_netfilter) [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] ;;
    *) return 1 ;;
  esac
}

# Load a module unless it is built in or loaded; die only if neither works.
kai_module_ensure() {
  local name=$1 state err
  kai_valid_name "$name" || kai_die "invalid kernel module name '$name'"
  state=$(kai_module_state "$name")
  case $state in
    builtin | loaded) kai_log "kernel module $name: $state" ;;
    *)
      if ! err=$(modprobe "$name" 2>&1); then
        kai_die "kernel module $name is neither built in nor loadable: ${err:-modprobe failed}"
      fi
      kai_log "kernel module $name: loaded now"
      ;;
  esac
}

# --- /etc/hosts --------------------------------------------------------------------------------

# kai_render_hosts CURRENT BLOCK: print CURRENT without any previous kai block, followed by BLOCK.
# A block is the lines from one starting with "# BEGIN kai" to one starting with "# END kai".
# BLOCK may carry its own markers (render.py writes them) or not (then they are added).
kai_render_hosts() {
  local current=$1 block=$2 line skip=0 body=""
  if [[ -f $current ]]; then
    while IFS= read -r line || [[ -n $line ]]; do
      if [[ $line == "# BEGIN kai"* ]]; then
        skip=1
      elif [[ $line == "# END kai"* ]]; then
        skip=0
      elif ((skip == 0)); then
        printf '%s\n' "$line"
      fi
    done <"$current"
  fi
  if [[ -f $block ]]; then
    IFS= read -r -d '' body <"$block" || true
  fi
  [[ -n ${body//[[:space:]]/} ]] || return 0
  [[ $body == *$'\n' ]] || body+=$'\n'
  if [[ $body == "# BEGIN kai"* ]]; then
    printf '%s' "$body"
  else
    printf '# BEGIN kai\n%s# END kai\n' "$body"
  fi
}

# kai_k8s_apt_repository REPO: point apt at pkgs.k8s.io's repository REPO (one per minor, e.g.
# …/core:/stable:/v1.36): its Release.key as the keyring, the list naming it; KAI_CHANGED=1 when
# the list changed. The key is fetched on every run: an expired key (2024) broke installs that
# cached it. kube-packages.sh (installs) and upgrade-node.sh (the list moves to the target minor).
KAI_K8S_KEYRING=/etc/apt/keyrings/kubernetes-apt-keyring.gpg
KAI_K8S_APT_LIST=/etc/apt/sources.list.d/kubernetes.list
kai_k8s_apt_repository() {
  local repo=$1 key="$KAI_WORK/Release.key" gpghome
  kai_log "fetching $repo/deb/Release.key"
  kai_fetch "$repo/deb/Release.key" "$key"
  if grep -q -- '-----BEGIN PGP PUBLIC KEY BLOCK-----' "$key"; then
    gpghome=$(mktemp -d "$KAI_WORK/gnupg.XXXXXX") # keeps root's ~/.gnupg untouched
    kai_quiet "gpg --dearmor" gpg --homedir "$gpghome" --batch --yes --dearmor -o "$KAI_WORK/keyring.gpg" "$key"
  else
    cp "$key" "$KAI_WORK/keyring.gpg" # already binary
  fi
  mkdir -p /etc/apt/keyrings
  chmod 0755 /etc/apt/keyrings
  kai_install_file "$KAI_WORK/keyring.gpg" "$KAI_K8S_KEYRING" 0644
  KAI_CHANGED=0
  kai_write_file "$KAI_K8S_APT_LIST" 0644 <<<"deb [signed-by=$KAI_K8S_KEYRING] $repo/deb/ /"
}

# kai_write_hosts_block BLOCK: /etc/hosts with its kai block replaced by BLOCK (kai_render_hosts),
# written only when that changes it; everything outside the block stays. os-prep.sh and
# hosts-block.sh (remove_nodes).
kai_write_hosts_block() {
  local block=$1 tmp
  tmp=$(kai_tmp_for /etc/hosts)
  kai_render_hosts /etc/hosts "$block" >"$tmp"
  if [[ -f /etc/hosts ]] && cmp -s "$tmp" /etc/hosts; then
    rm -f "$tmp"
    kai_log "/etc/hosts: kai block up to date"
    return 0
  fi
  chmod 0644 "$tmp"
  # /etc/hosts is a bind mount in some containers: rename fails there, rewrite it in place.
  if ! mv -f "$tmp" /etc/hosts 2>/dev/null; then
    cat "$tmp" >/etc/hosts
    rm -f "$tmp"
  fi
  kai_log "/etc/hosts: kai block rewritten"
}

# --- listening sockets -------------------------------------------------------------------------

# "tcp PORT" / "udp PORT" per listening socket: ss (iproute2) when present, else /proc/net.
kai_listening_ports() {
  if command -v ss >/dev/null 2>&1; then
    kai_listening_ports_ss
  else
    kai_listening_ports_proc
  fi
}

kai_listening_ports_ss() {
  local netid _state _recvq _sendq local_addr _rest
  ss -Htuln 2>/dev/null | while read -r netid _state _recvq _sendq local_addr _rest; do
    printf '%s %s\n' "$netid" "${local_addr##*:}"
  done | sort -u
}

# /proc/net/{tcp,udp}[6]: TCP in state 0A (LISTEN), UDP in state 07 (bound, unconnected).
kai_listening_ports_proc() {
  local file proto want _sl local_addr _rem st _rest
  for file in /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6; do
    [[ -r $file ]] || continue
    proto=${file##*/}
    proto=${proto%6}
    if [[ $proto == tcp ]]; then want=0A; else want=07; fi
    while read -r _sl local_addr _rem st _rest; do
      [[ $st == "$want" ]] || continue
      printf '%s %d\n' "$proto" "$((16#${local_addr##*:}))"
    done < <(tail -n +2 "$file")
  done | sort -u
}

# --- Kubernetes API ----------------------------------------------------------------------------

# kai_kubectl_apply FILE: server-side apply with the admin kubeconfig; a few attempts, because an
# API server that just came up (or a webhook that is starting) may refuse for some seconds.
kai_kubectl_apply() {
  local file=$1 attempt out=""
  [[ -f /etc/kubernetes/admin.conf ]] ||
    kai_die "/etc/kubernetes/admin.conf is missing: run this on an initialised control plane"
  for attempt in 1 2 3 4 5; do
    if out=$(kubectl --kubeconfig /etc/kubernetes/admin.conf apply --server-side \
      --force-conflicts -f "$file" 2>&1); then
      printf '%s\n' "$out"
      return 0
    fi
    printf '%s\n' "$out" >&2
    if ((attempt < 5)); then
      kai_log "kubectl apply failed (attempt $attempt of 5), retrying in 5 s"
      sleep 5
    fi
  done
  kai_die "kubectl apply -f ${file##*/} failed 5 times (the last error is above)"
}

# kai_fetch_manifest URL SHA256 DEST: download, verify when a digest is given.
kai_fetch_manifest() {
  local url=$1 sha=$2 dest=$3
  kai_log "downloading $url"
  kai_fetch "$url" "$dest"
  if [[ -n $sha ]]; then
    kai_sha256_verify "$dest" "$sha" "${url##*/}"
  else
    kai_log "no sha256 pinned for ${url##*/}: not verified"
  fi
}

# --- verified add-on files (installers/addons.py) ------------------------------------------------

# kai_report_file FILE NAME SOURCE VERIFIED_BY: one line "<sha256> <name> <verified-by> <source>"
# in $KAI_OUT_DIR/files.sha256, returned to the controller for the run's report.
kai_report_file() {
  local sum
  sum=$(kai_sha256_of "$1")
  printf '%s %s %s %s\n' "$sum" "$2" "$4" "$3" >>"$KAI_OUT_DIR/files.sha256"
  kai_log "sha256 $sum $2 ($4)"
}

# kai_helm_index_digest INDEX FILE: the digest a Helm repository's index.yaml publishes for the
# chart archive FILE (the entry whose urls list it). Entries are the list items ("- key: value")
# at the indentation of the first one; deeper list items (maintainers, dependencies) are not.
kai_helm_index_digest() {
  local index=$1 file=$2 line indent="" digest="" found=0
  while IFS= read -r line || [[ -n $line ]]; do
    if [[ $line =~ ^([[:space:]]*)-[[:space:]]+[A-Za-z]+:([[:space:]]|$) ]] &&
      [[ -z $indent || ${BASH_REMATCH[1]} == "$indent" ]]; then
      indent=${BASH_REMATCH[1]}
      if ((found)); then break; fi
      digest=""
      line=${line/-/ }
    fi
    if [[ $line =~ ^[[:space:]]*digest:[[:space:]]*\"?([0-9a-fA-F]{64})\"?[[:space:]]*$ ]]; then
      digest=${BASH_REMATCH[1]}
    elif [[ $line =~ ^[[:space:]]*-[[:space:]]+\"?([^\"[:space:]]+)\"?[[:space:]]*$ ]]; then
      local url=${BASH_REMATCH[1]}
      [[ $url == "$file" || $url == */"$file" ]] && found=1
    fi
  done <"$index"
  ((found)) || kai_die "${index##*/} lists no chart archive $file"
  [[ -n $digest ]] || kai_die "${index##*/} lists $file without a digest"
  printf '%s\n' "${digest,,}"
}

# kai_fetch_verified URL DEST PIN SUMS_URL: download URL to DEST and check it against every sha256
# known for it: PIN (may be empty) and the one published at SUMS_URL (may be empty): a
# sha256sum-style list, or a Helm repository's index.yaml. A mismatch stops the step, naming the
# file, the expected and the actual digest. The file's sha256 goes to the run's report.
kai_fetch_verified() {
  local url=$1 dest=$2 pin=$3 sums_url=$4 name=${1##*/} published by=()
  kai_log "downloading $url"
  kai_fetch "$url" "$dest"
  if [[ -n $pin ]]; then
    kai_sha256_verify "$dest" "$pin" "$name (pinned)"
    by+=(pin)
  fi
  if [[ -n $sums_url ]]; then
    kai_fetch "$sums_url" "$dest.sums"
    if [[ ${sums_url##*/} == index.yaml ]]; then
      published=$(kai_helm_index_digest "$dest.sums" "$name")
    else
      published=$(kai_sha256_from_list "$dest.sums" "$name")
    fi
    rm -f "$dest.sums"
    kai_sha256_verify "$dest" "$published" "$name (published in ${sums_url##*/})"
    by+=("${sums_url##*/}")
  fi
  ((${#by[@]})) || kai_warn "no sha256 known for $name (no pin, no published list): not verified"
  local IFS=+
  kai_report_file "$dest" "$name" "$url" "${by[*]:-unverified}"
}

# --- systemd -----------------------------------------------------------------------------------

kai_systemd_running() { [[ -d /run/systemd/system ]]; }

kai_systemctl() { kai_quiet "systemctl $*" systemctl "$@"; }

# === node lock: one kai run per host, whichever controller runs it =============================
# (One block, driven by tasks/node_lock.py; keep it together.)
# Prefect's host lock lives in one Prefect server: two kai installations would not see each
# other's. So the host holds a lock too: $KAI_STATE_DIR/lock names the run, the controller (a
# stable id of the kai installation) and when its lease runs out (epoch seconds). Every step of a
# run takes or refreshes it as it sources this file (the runner sets KAI_LOCK_*); the controller
# refreshes it meanwhile (lock.sh) and releases it when the run ends.
# - another controller's run with a live lease: the step is refused at once (KAI_LOCKED_EXIT),
#   naming that run and controller;
# - a lease that ran out (its controller died): taken over, and said so;
# - another run of the *same* controller: taken over — that controller's Prefect host lock, which
#   this run holds, guarantees the other run is over (killed before it could release).
# flock makes the check and the write one step, so two controllers cannot both win.

KAI_LOCKED_EXIT=75

kai_lock_file() { printf '%s/lock\n' "$KAI_STATE_DIR"; }

# kai_lock_read FILE: the holder into _kai_lock_{run,run_name,controller,controller_name,expires}.
kai_lock_read() {
  local key value
  _kai_lock_run="" _kai_lock_run_name="" _kai_lock_controller="" _kai_lock_controller_name=""
  _kai_lock_expires=0
  [[ -f $1 ]] || return 0
  while IFS='=' read -r key value || [[ -n $key ]]; do
    case $key in
      run) _kai_lock_run=$value ;;
      run_name) _kai_lock_run_name=$value ;;
      controller) _kai_lock_controller=$value ;;
      controller_name) _kai_lock_controller_name=$value ;;
      expires) _kai_lock_expires=$value ;;
    esac
  done <"$1"
  [[ $_kai_lock_expires =~ ^[0-9]+$ ]] || _kai_lock_expires=0
}

kai_lock_holder() {
  printf "run '%s' (%s) of controller %s (%s)" "$_kai_lock_run_name" "$_kai_lock_run" \
    "$_kai_lock_controller" "$_kai_lock_controller_name"
}

# Write our lock with a fresh lease (tmp + mv: a reader never sees half a file).
kai_lock_write() {
  local file=$1 now=$2 tmp
  tmp=$(mktemp "$file.XXXXXX")
  printf 'run=%s\nrun_name=%s\ncontroller=%s\ncontroller_name=%s\nexpires=%s\n' \
    "$KAI_LOCK_RUN" "${KAI_LOCK_RUN_NAME:-}" "$KAI_LOCK_CONTROLLER" \
    "${KAI_LOCK_CONTROLLER_NAME:-}" "$((now + KAI_LOCK_LEASE_S))" >"$tmp"
  chmod 0600 "$tmp"
  mv -f "$tmp" "$file"
}

# The decision under the flock: refuse (exit), take over (say so), take, or refresh (quietly).
kai_lock_hold_locked() {
  local file=$1 now=$2
  kai_lock_read "$file"
  if [[ -n $_kai_lock_run && $_kai_lock_run != "$KAI_LOCK_RUN" ]]; then
    if [[ $_kai_lock_controller == "$KAI_LOCK_CONTROLLER" ]]; then
      kai_log "node lock: taking over from $(kai_lock_holder), an earlier run of this controller"
    elif ((_kai_lock_expires > now)); then
      printf 'ERROR: %s is locked by kai %s for %d s more; two kai installations must not work on one host at once: refusing step %s\n' \
        "$(hostname)" "$(kai_lock_holder)" "$((_kai_lock_expires - now))" "${KAI_STEP:-?}" >&2
      exit "$KAI_LOCKED_EXIT"
    else
      kai_log "node lock: taking over the stale lock of $(kai_lock_holder): its lease ran out $((now - _kai_lock_expires)) s ago"
    fi
  elif [[ -z $_kai_lock_run ]]; then
    kai_log "node lock: taken by run '${KAI_LOCK_RUN_NAME:-}' ($KAI_LOCK_RUN) of controller $KAI_LOCK_CONTROLLER, lease ${KAI_LOCK_LEASE_S} s"
  fi
  kai_lock_write "$file" "$now"
}

kai_lock_release_locked() {
  local file=$1
  kai_lock_read "$file"
  if [[ -z $_kai_lock_run ]]; then
    kai_log "node lock: not held"
  elif [[ $_kai_lock_run == "$KAI_LOCK_RUN" && $_kai_lock_controller == "$KAI_LOCK_CONTROLLER" ]]; then
    rm -f "$file"
    kai_log "node lock: released by run $KAI_LOCK_RUN"
  else
    kai_log "node lock: held by $(kai_lock_holder), not by this run: left alone"
  fi
}

# kai_node_lock hold|release
kai_node_lock() {
  local action=$1 file fd now
  : "${KAI_LOCK_RUN:?KAI_LOCK_RUN is required (set by the kai runner)}"
  : "${KAI_LOCK_CONTROLLER:?KAI_LOCK_CONTROLLER is required (set by the kai runner)}"
  [[ ${KAI_LOCK_LEASE_S:-} =~ ^[1-9][0-9]*$ ]] ||
    kai_die "KAI_LOCK_LEASE_S must be a whole number of seconds, got '${KAI_LOCK_LEASE_S:-}'"
  file=$(kai_lock_file)
  mkdir -p "$KAI_STATE_DIR"
  chmod 0700 "$KAI_STATE_DIR"
  exec {fd}>>"$file.flock"
  flock -w 30 "$fd" || kai_die "node lock: $file.flock stayed locked for 30 s"
  now=$(date +%s)
  case $action in
    hold) kai_lock_hold_locked "$file" "$now" ;;
    release) kai_lock_release_locked "$file" ;;
    *) kai_die "kai_node_lock: unknown action '$action'" ;;
  esac
  exec {fd}>&-
}

# Every step of a locked run checks and refreshes the lock before it does anything (lock.sh,
# which sets KAI_LOCK_ACTION, does its own action instead).
if [[ -n ${KAI_LOCK_RUN:-} && -z ${KAI_LOCK_ACTION:-} ]]; then
  kai_node_lock hold
fi
# === end of the node-lock block =================================================================
