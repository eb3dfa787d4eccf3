#!/usr/bin/env bash
# The diff program ci/diff.sh gives kubectl (KUBECTL_EXTERNAL_DIFF): kubectl reads each live
# object and then asks the server for the merged one, and controllers write status in between,
# so the two can differ in fields that no repository declares and that change all the time:
# status, resourceVersion and finalizers. They are left out; everything else is compared as
# `diff -u` would. Exit 0: no drift, 1: drift (printed), 2: trouble.
#
#   drift-diff.sh LIVE_DIR MERGED_DIR      (kubectl's calling convention)
set -uo pipefail
live="${1:?}"
merged="${2:?}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Objects as kubectl writes them: YAML with the top-level keys at column 0 and metadata's
# fields indented by two spaces, list items of metadata at the same indentation.
declared_only() {
  awk '
    /^status:/ { skip = 1; next }
    /^[^ ]/ { skip = 0 }
    skip { next }
    /^  resourceVersion:/ { next }
    /^  finalizers:/ { finalizers = 1; next }
    finalizers && /^  - / { next }
    { finalizers = 0; print }
  ' "$1"
}

for side in live merged; do
  mkdir -p "$work/$side"
  dir="$live"
  [ "$side" = merged ] && dir="$merged"
  for file in "$dir"/*; do
    [ -f "$file" ] || continue
    declared_only "$file" >"$work/$side/$(basename "$file")" || exit 2
  done
done
cd "$work" && diff -u -N -r live merged
