#!/usr/bin/env bash
# What applying one site would change on the cluster, field by field (exit 0: nothing, 1: the
# diff is printed, >1: an error), as `kubectl diff --server-side` computes it: a server-side
# dry run of the same apply, so defaulting, admission and other managers' fields (status,
# finalizers) are accounted for and never show up as drift.
#
#   ci/diff.sh sites/north
#
# kubectl diff knows nothing of applysets: its dry run would drop the applyset.kubernetes.io/
# part-of label that ci/apply.sh sets on every object and report that as a change. So the
# rendered site is diffed with the label of its applyset (read from the parent's id) added.
# And kubectl reads the live object before the server computes the merged one, so status that
# a controller writes in between would show up: ci/drift-diff.sh compares without the fields no
# repository declares (status, resourceVersion, finalizers).
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBECTL_EXTERNAL_DIFF="$PWD/ci/drift-diff.sh"
site="${1:?usage: ci/diff.sh sites/SITE}"
namespace="$(sed -n 's/^namespace: *//p' "$site/kustomization.yaml")"
id="$(kubectl get configmap fleet -n "$namespace" \
  -o 'jsonpath={.metadata.labels.applyset\.kubernetes\.io/id}' 2>/dev/null || true)"
if [ -z "$id" ]; then
  # Never applied: everything is new.
  exec kubectl diff --server-side -k "$site"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat >"$work/kustomization.yaml" <<KUSTOMIZATION
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$work" "$site")
labels:
  - pairs:
      applyset.kubernetes.io/part-of: $id
    includeSelectors: false
KUSTOMIZATION
kubectl diff --server-side -k "$work"
