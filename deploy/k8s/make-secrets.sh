#!/usr/bin/env bash
# Makes the two Secrets of a quorumid deployment, for every overlay under overlays/:
#
#   deploy/k8s/make-secrets.sh [--bin QUORUMID_NODE] [--operator NAME] DIR
#
#   DIR         where everything goes (created with mode 0700). Keep it offline, never in the
#               repository: it holds the CA key and the cluster keys.
#   --bin       the quorumid-node binary that issues the certificates (`quorumid-node certs`);
#               default: quorumid-node on PATH, else
#               ${CARGO_TARGET_DIR:-~/.cache/quorumid-target}/ci/quorumid-node (as build-image.sh)
#   --operator  the name in the operator certificate (default: admin)
#
# Writes into DIR:
#   ca.pem, ca.key                the cluster CA (made once; ca.key never leaves DIR)
#   node-<id>.pem, node-<id>.key  one per pod of every overlay, id = QUORUMID_NODE_ID_BASE +
#                                 ordinal, for the names the pod is reached under: its pod name
#                                 <p>-quorumid-<n>.<p>-quorumid-peers.<ns>.svc and its
#                                 province's client Service <p>-quorumid.<ns>.svc
#   operator-<name>.pem, .key     an operator (cluster status, promote, remove, ...)
#   document-key, pseudonym-key, storage-key   64 hex characters each (made once)
#   storage-key-id                1
#   quorumid-tls.yaml             Secret quorumid-tls: ca.pem, every node's files, the operator's
#   quorumid-keys.yaml            Secret quorumid-keys: document-key, pseudonym-key, storage-key,
#                                 storage-key-id, and retired-storage-keys if DIR has that file
#
# Never made, only carried: DIR/retired-storage-keys, one line "id:hex,id:hex" (the open-only
# storage keys of a rotation, README.md "Rotate the storage key"; the node's
# QUORUMID_RETIRED_STORAGE_KEYS). A fresh deployment has none. When present it goes into
# quorumid-keys.yaml, so a later run never drops a retired key from the Secret.
# then apply them: kubectl apply -f DIR/quorumid-tls.yaml -f DIR/quorumid-keys.yaml
#
# Run it again with the same DIR to renew: the CA and the keys in DIR are kept, every
# certificate is issued anew (nodes pick renewed files up without a restart), and nodes added
# to the overlays since get theirs. A new DIR makes a new CA and NEW KEYS: only for a new
# cluster (the document key of a cluster can never change).
#
# The overlays are read for their namespace, namePrefix, replicas and QUORUMID_NODE_ID_BASE,
# so the certificates follow them. Needs bash, awk, sed, base64; no kubectl.
set -euo pipefail
umask 077

here="$(cd "$(dirname "$0")" && pwd)"
bin=""
operator="admin"
dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="${2:?--bin needs a path}"; shift 2 ;;
    --operator) operator="${2:?--operator needs a name}"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "make-secrets: unknown option $1" >&2; exit 2 ;;
    *) [ -z "$dir" ] || { echo "make-secrets: one DIR only" >&2; exit 2; }; dir="$1"; shift ;;
  esac
done
[ -n "$dir" ] || { echo "usage: $0 [--bin QUORUMID_NODE] [--operator NAME] DIR" >&2; exit 2; }
case "$operator" in
  *[!A-Za-z0-9._-]*) echo "make-secrets: operator name $operator: letters, digits, . _ - only" >&2; exit 2 ;;
esac

if [ -z "$bin" ]; then
  bin="$(command -v quorumid-node || true)"
  [ -n "$bin" ] || bin="${CARGO_TARGET_DIR:-$HOME/.cache/quorumid-target}/ci/quorumid-node"
fi
if [ ! -x "$bin" ]; then
  echo "make-secrets: no quorumid-node binary at $bin; pass --bin, or build it:" \
    "cargo build --profile ci -p quorumid-node" >&2
  exit 1
fi
"$bin" certs --help >/dev/null 2>&1 || {
  echo "make-secrets: $bin has no 'certs' command (too old?)" >&2; exit 1; }

# --- the overlays: one "prefix namespace base replicas" line each ----------------------------

base_sts="$here/base/statefulset.yaml"
sts_name="$(awk '/^metadata:/ { m = 1; next } m && /^  name:/ { print $2; exit }' "$base_sts")"
peers="$(awk '/^  serviceName:/ { print $2; exit }' "$base_sts")"
base_replicas="$(awk '/^  replicas:/ { print $2; exit }' "$base_sts")"
[ -n "$sts_name" ] && [ -n "$peers" ] || { echo "make-secrets: cannot read $base_sts" >&2; exit 1; }

unquote() { sed -e 's/^["'\'']//' -e 's/["'\'']$//'; }
overlays=()
namespace=""
for k in "$here"/overlays/*/kustomization.yaml; do
  prefix="$(sed -n 's/^namePrefix: *//p' "$k" | unquote)"
  ns="$(sed -n 's/^namespace: *//p' "$k" | unquote)"
  id_base="$(sed -n 's/^ *- *QUORUMID_NODE_ID_BASE=\([0-9][0-9]*\) *$/\1/p' "$k")"
  replicas="$(awk '/^replicas:/ { r = 1; next } r && /^[^ #-]/ { exit }
                   r && /count:/ { print $2; exit }' "$k")"
  replicas="${replicas:-$base_replicas}"
  if [ -z "$prefix" ] || [ -z "$ns" ] || [ -z "$id_base" ] || [ -z "$replicas" ]; then
    echo "make-secrets: $k: cannot read namePrefix, namespace, QUORUMID_NODE_ID_BASE or replicas" \
      "(got '$prefix' '$ns' '$id_base' '$replicas')" >&2
    exit 1
  fi
  if [ -n "$namespace" ] && [ "$ns" != "$namespace" ]; then
    echo "make-secrets: overlays in namespaces $namespace and $ns; the Secrets are per namespace" >&2
    exit 1
  fi
  namespace="$ns"
  overlays+=("$prefix $ns $id_base $replicas")
done
[ ${#overlays[@]} -gt 0 ] || { echo "make-secrets: no overlays under $here/overlays" >&2; exit 1; }

# --- CA, certificates, keys --------------------------------------------------------------------

# Generated keys are never committed: refuse a DIR inside a git work tree.
existing="$dir"
while [ ! -d "$existing" ]; do existing="$(dirname "$existing")"; done
if command -v git >/dev/null && top="$(git -C "$existing" rev-parse --show-toplevel 2>/dev/null)"; then
  echo "make-secrets: $dir is inside the git work tree $top; keys must never be committed:" \
    "choose a directory outside it" >&2
  exit 1
fi
mkdir -p "$dir"
chmod 700 "$dir"
certs() { "$bin" certs --dir "$dir" "$@" >/dev/null; }

if [ -f "$dir/ca.key" ]; then
  echo "make-secrets: keeping the CA in $dir" >&2
elif [ -e "$dir/ca.pem" ]; then
  echo "make-secrets: $dir/ca.pem without ca.key: not a CA this script can issue from" >&2
  exit 1
else
  certs ca
  echo "make-secrets: new CA in $dir" >&2
fi

# Node ids must not collide (check.py says the same of the rendered overlays).
dups="$(for o in "${overlays[@]}"; do
  read -r _ _ id_base replicas <<<"$o"
  for ((i = 0; i < replicas; i++)); do echo $((id_base + i)); done
done | sort | uniq -d | tr '\n' ' ')"
[ -z "$dups" ] || { echo "make-secrets: overlays share node ids: $dups" >&2; exit 1; }

tls_files=(ca.pem)
for o in "${overlays[@]}"; do
  read -r prefix ns id_base replicas <<<"$o"
  client="$prefix$sts_name.$ns.svc"
  for ((i = 0; i < replicas; i++)); do
    id=$((id_base + i))
    certs issue "node/$id" --host "$prefix$sts_name-$i.$prefix$peers.$ns.svc" --host "$client"
    tls_files+=("node-$id.pem" "node-$id.key")
    echo "make-secrets: node $id: $prefix$sts_name-$i.$prefix$peers.$ns.svc, $client" >&2
  done
done
certs issue "operator/$operator"
tls_files+=("operator-$operator.pem" "operator-$operator.key")

new_key() {
  local f="$dir/$1"
  if [ -f "$f" ]; then
    grep -Eqx '[0-9a-fA-F]{64}' "$f" || { echo "make-secrets: $f is not 64 hex characters" >&2; exit 1; }
    echo "make-secrets: keeping $1" >&2
  else
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$f"
    echo >>"$f"
    echo "make-secrets: new $1" >&2
  fi
}
new_key document-key
new_key pseudonym-key
new_key storage-key
[ -f "$dir/storage-key-id" ] || echo 1 >"$dir/storage-key-id"
grep -Eqx '[0-9]+' "$dir/storage-key-id" || {
  echo "make-secrets: $dir/storage-key-id is not a key id" >&2; exit 1; }
key_files=(document-key pseudonym-key storage-key storage-key-id)
if [ -f "$dir/retired-storage-keys" ]; then
  # The node's rules, checked here rather than at the start of every pod: id:hex pairs, each id
  # once, none the active id (the node refuses that).
  active_id="$(tr -d ' \n' <"$dir/storage-key-id")"
  retired="$(tr -d ' \n' <"$dir/retired-storage-keys")"
  grep -Eqx '[0-9]+:[0-9a-fA-F]{64}(,[0-9]+:[0-9a-fA-F]{64})*' <<<"$retired" || {
    echo "make-secrets: $dir/retired-storage-keys must be id:key pairs (64 hex characters)," \
      "comma-separated, on one line" >&2; exit 1; }
  ids="$(tr ',' '\n' <<<"$retired" | cut -d: -f1 | sed 's/^0*\([0-9]\)/\1/')"
  dup="$(sort <<<"$ids" | uniq -d | paste -sd, -)"
  [ -z "$dup" ] || { echo "make-secrets: $dir/retired-storage-keys lists id $dup more than once" >&2; exit 1; }
  if grep -qx "$(sed 's/^0*\([0-9]\)/\1/' <<<"$active_id")" <<<"$ids"; then
    echo "make-secrets: $dir/retired-storage-keys lists $active_id, the active storage-key-id:" \
      "the node refuses to start with it" >&2
    exit 1
  fi
  key_files+=(retired-storage-keys)
  echo "make-secrets: keeping retired storage keys $(paste -sd, - <<<"$ids")" >&2
fi

# --- the Secrets, as YAML (no kubectl needed) ---------------------------------------------------

secret() { # NAME FILE...: a Secret whose keys are the files' names, values their contents
  local name="$1"; shift
  printf '# Made by deploy/k8s/make-secrets.sh on %s. Never commit.\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: %s\n' "$name" "$namespace"
  printf '  labels:\n    app.kubernetes.io/name: quorumid\ntype: Opaque\ndata:\n'
  local f
  for f in "$@"; do
    if [ "${f%-key}" != "$f" ] || [ "$f" = storage-key-id ] || [ "$f" = retired-storage-keys ]; then
      # A value for an environment variable: no trailing newline.
      printf '  %s: %s\n' "$f" "$(tr -d '\n' <"$dir/$f" | base64 | tr -d '\n')"
    else
      printf '  %s: %s\n' "$f" "$(base64 <"$dir/$f" | tr -d '\n')"
    fi
  done
}
secret quorumid-tls "${tls_files[@]}" >"$dir/quorumid-tls.yaml"
secret quorumid-keys "${key_files[@]}" >"$dir/quorumid-keys.yaml"

echo "make-secrets: wrote $dir/quorumid-tls.yaml ($(( (${#tls_files[@]} - 3) / 2 )) nodes) and $dir/quorumid-keys.yaml" >&2
echo "kubectl apply -f $dir/quorumid-tls.yaml -f $dir/quorumid-keys.yaml"
