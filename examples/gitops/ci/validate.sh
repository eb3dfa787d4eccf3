#!/usr/bin/env bash
# The fleet repository's CI check: render every site as the cluster will receive it
# (kubectl kustomize) and let `devplane validate` check the result offline: schemas, model
# resolution (the standard library included), references between objects, attribute values,
# batches. Exits non-zero on the first site with a problem, naming file, object and field.
#
#   ci/validate.sh                    # every site under sites/
#   DEVPLANE="docker run --rm -i registry.example.com/iot/devplane:0.1.0" ci/validate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
devplane="${DEVPLANE:-devplane}"
status=0
for site in sites/*/; do
  site="${site%/}"
  echo "== ${site}"
  rendered="$(kubectl kustomize "$site")"
  # Word splitting of $devplane is wanted: it may be a command with arguments.
  # shellcheck disable=SC2086
  if ! printf '%s\n' "$rendered" | $devplane validate -f -; then
    status=1
  fi
done
exit "$status"
