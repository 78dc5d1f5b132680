#!/usr/bin/env bash
# Lints deploy/ with Debian's tools; ctest `lint_deploy` (tests/lint) runs it in `make test`.
#   scripts/lint-deploy.sh            check; exit 1 on any finding, 77 (ctest: skipped) when a
#                                     tool is missing (scripts/install-deps.sh installs them)
#   scripts/lint-deploy.sh --update   first regenerate deploy/k8s/prometheusrule.yaml from
#                                     deploy/prometheus/alerts.yml, then check
set -uo pipefail
cd "$(dirname "$0")/.."

python=/usr/bin/python3  # Debian's, which has python3-yaml (not a pyenv/venv python3)
missing=()
command -v yamllint > /dev/null || missing+=(yamllint)
command -v promtool > /dev/null || missing+=("promtool (package prometheus)")
"$python" -c 'import yaml' 2> /dev/null || missing+=(python3-yaml)
if [ ${#missing[@]} -gt 0 ]; then
  echo "lint-deploy: SKIPPED, missing: ${missing[*]} (run scripts/install-deps.sh)" >&2
  exit 77
fi

failed=()
step() {
  local name=$1
  shift
  echo "== $name"
  if ! "$@"; then failed+=("$name"); fi
}

json_valid() {
  local file ok=0
  for file in deploy/grafana/*.json; do
    "$python" -m json.tool "$file" > /dev/null || { echo "$file: invalid JSON" >&2; ok=1; }
  done
  return $ok
}

step "lint_deploy.py" "$python" scripts/lint_deploy.py "$@"
step "yamllint" yamllint --strict -c .yamllint deploy/
step "promtool check rules" promtool check rules deploy/prometheus/alerts.yml
step "promtool test rules" promtool test rules deploy/prometheus/alerts_test.yml
step "json" json_valid
# Not a Debian package; used when present (it renders the kustomization as kubectl apply -k would).
if command -v kubectl > /dev/null; then
  step "kubectl kustomize" bash -c 'kubectl kustomize deploy/k8s > /dev/null'
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "lint-deploy: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "lint-deploy: ok"
