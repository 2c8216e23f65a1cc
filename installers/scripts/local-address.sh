#!/usr/bin/env bash
# The address of the machine kai runs on, for a node that is this machine and has no address in
# the request (the old API's all-in-one body has no host). kubeadm's own choice: the IPv4 address
# of the interface holding the default route; without a default route, the machine's one global
# IPv4 address. Read-only. Writes it to $KAI_OUT_DIR/address; no choice is an error naming why.
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_OUT_DIR:?KAI_OUT_DIR is required (set by kai-exec.sh)}"

global_ipv4() { # [device] → the global IPv4 addresses, one a line
  local args=(-4 -o addr show scope global) _n _dev _fam addr _rest
  [[ -z ${1:-} ]] || args=(-4 -o addr show dev "$1" scope global)
  while read -r _n _dev _fam addr _rest; do
    printf '%s\n' "${addr%/*}"
  done < <(ip "${args[@]}")
}

command -v ip >/dev/null 2>&1 || kai_die "no 'ip' command (iproute2) to read this machine's addresses"

dev=""
read -r -a route <<<"$(ip -4 route show default 2>/dev/null | head -n 1)"
for ((i = 0; i + 1 < ${#route[@]}; i++)); do
  if [[ ${route[i]} == dev ]]; then
    dev=${route[i + 1]}
    break
  fi
done

mapfile -t found < <(global_ipv4 "$dev")
if [[ -n $dev ]]; then
  ((${#found[@]} > 0)) || kai_die "the default route's interface $dev has no global IPv4 address"
elif ((${#found[@]} != 1)); then
  kai_die "no default route, and ${#found[@]} global IPv4 addresses (not one): give the node's address"
fi
printf '%s\n' "${found[0]}" >"$KAI_OUT_DIR/address"
echo "this machine's address: ${found[0]}${dev:+ (default route via $dev)}"
