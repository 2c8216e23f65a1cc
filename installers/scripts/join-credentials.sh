#!/usr/bin/env bash
# On the first control plane: make fresh join credentials and hand them back in $KAI_OUT_DIR
# (never printed): token, ca_hash ("sha256:<hex>") and, with KAI_NEED_CERT_KEY=1, certificate_key
# after uploading the control-plane certificates encrypted with it.
# Inputs: KAI_TOKEN_TTL (e.g. 1h), KAI_NEED_CERT_KEY (0|1). Read-only step: no done marker (a
# rerun must make new credentials).
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_TOKEN_TTL:?KAI_TOKEN_TTL is required (e.g. 1h)}"
: "${KAI_NEED_CERT_KEY:?KAI_NEED_CERT_KEY is required (0|1)}"
: "${KAI_OUT_DIR:?KAI_OUT_DIR is required (set by kai-exec.sh)}"
: "${KAI_WORK:?KAI_WORK is required (set by kai-exec.sh)}"

case $KAI_NEED_CERT_KEY in 0 | 1) ;; *) kai_die "KAI_NEED_CERT_KEY must be 0 or 1, not '$KAI_NEED_CERT_KEY'" ;; esac
[[ -f /etc/kubernetes/admin.conf ]] || kai_die "/etc/kubernetes/admin.conf is missing: this node is not an initialised control plane"
[[ -f /etc/kubernetes/pki/ca.crt ]] || kai_die "/etc/kubernetes/pki/ca.crt is missing"

# write_secret_file PATH VALUE: a 0600 file written by builtins only (no secret in any argv).
write_secret_file() {
  local old_umask
  old_umask=$(umask)
  umask 077
  rm -f "$1"
  printf '%s\n' "$2" >"$1"
  umask "$old_umask"
}

# write_secret NAME VALUE: into $KAI_OUT_DIR, handed back to the controller (never printed).
write_secret() {
  mkdir -p "$KAI_OUT_DIR"
  write_secret_file "$KAI_OUT_DIR/$1" "$2"
}

token=$(kubeadm token create --ttl "$KAI_TOKEN_TTL" --description "kai join") ||
  kai_die "kubeadm token create failed (its error is above)"
token=${token//[[:space:]]/}
[[ $token =~ ^[a-z0-9]{6}\.[a-z0-9]{16}$ ]] || kai_die "kubeadm token create printed no bootstrap token"
write_secret token "$token"
kai_log "join token created (valid for $KAI_TOKEN_TTL)"

der_hash=$(openssl x509 -pubkey -noout -in /etc/kubernetes/pki/ca.crt |
  openssl pkey -pubin -outform der | sha256sum) || kai_die "cannot compute the CA public key hash"
der_hash=${der_hash%% *}
[[ $der_hash =~ ^[0-9a-f]{64}$ ]] || kai_die "unexpected CA hash '$der_hash'"
write_secret ca_hash "sha256:$der_hash"
kai_log "CA public key hash computed"

if [[ $KAI_NEED_CERT_KEY == 1 ]]; then
  key=$(kubeadm certs certificate-key) || kai_die "kubeadm certs certificate-key failed"
  key=${key//[[:space:]]/}
  [[ $key =~ ^[0-9a-f]{64}$ ]] || kai_die "kubeadm certs certificate-key printed no 64-hex key"
  # The key reaches kubeadm in a 0600 config file (InitConfiguration.certificateKey), never in
  # its argv, which any local user could read in /proc. Output is captured and printed only on
  # failure, with the key redacted.
  keyconf="$KAI_WORK/upload-certs.yaml"
  write_secret_file "$keyconf" "apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
certificateKey: \"$key\""
  if ! out=$(kubeadm init phase upload-certs --upload-certs --config "$keyconf" --skip-certificate-key-print 2>&1); then
    kai_redact "$key" <<<"$out" >&2
    kai_die "kubeadm init phase upload-certs failed"
  fi
  write_secret certificate_key "$key"
  kai_log "control-plane certificates uploaded (the key expires with them after 2 h)"
fi
