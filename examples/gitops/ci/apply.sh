#!/usr/bin/env bash
# Apply one site to the cluster as its owner: server-side apply (the repository owns the
# fields it sets, controllers own status and what they add), with an applyset, so that what
# was removed from the repository is pruned from the cluster, and only that: objects the
# repository never applied (devices created by batches or registered by gateways) are not in
# the set and are never touched.
#
#   ci/apply.sh sites/north [extra kubectl flags, e.g. --dry-run=server]
#
# The applyset's parent is the ConfigMap `fleet` in the site's namespace (which must exist).
# kubectl 1.27-1.33 still gates applysets behind KUBECTL_APPLYSET=true.
set -euo pipefail
cd "$(dirname "$0")/.."
site="${1:?usage: ci/apply.sh sites/SITE [kubectl flags]}"
shift
namespace="$(sed -n 's/^namespace: *//p' "$site/kustomization.yaml")"
if [ -z "$namespace" ]; then
  echo "$site/kustomization.yaml sets no namespace" >&2
  exit 2
fi
KUBECTL_APPLYSET=true exec kubectl apply --server-side --prune \
  --applyset=configmap/fleet -n "$namespace" -k "$site" "$@"
