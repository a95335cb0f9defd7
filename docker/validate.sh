#!/usr/bin/env bash
# Static checks of the deployment files (see "Static checks" in docker/README.md):
#   - kubernetes-validate (strict, against the Kubernetes API schemas) on every
#     manifest of docker/k8s and docker/k8s/alerts, and on what kustomize builds;
#   - checkov (Kubernetes and secrets policies) on the files and on the build;
#   - docker/k8s/alerts/lakestream.rules.yml is exactly the PrometheusRule's spec;
#   - promtool (when installed: Debian package `prometheus`) checks the rules and
#     every PromQL expression of the Grafana dashboard.
# Installs kubernetes-validate and checkov from PyPI into a venv under
# $LAKESTREAM_CACHE (default ~/.cache/lakestream) on the first run only.
# Exits non-zero on the first failing check.
#
#   docker/validate.sh                # check
#   docker/validate.sh --write-rules  # regenerate lakestream.rules.yml from prometheusrule.yaml
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VERSION="${LAKESTREAM_K8S_VERSION:-1.32.0}"
CACHE="${LAKESTREAM_CACHE:-$HOME/.cache/lakestream}"
VENV="$CACHE/venv-ops"
# Versions the checks were last reviewed with (docker/README.md, "Static checks").
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECKOV_VERSION=3.3.30
ALERTS=docker/k8s/alerts

# The plain Prometheus rules file: the header below plus the PrometheusRule's spec, de-indented.
render_rules() {
  cat <<'EOF'
# GENERATED from prometheusrule.yaml (its `spec`, de-indented) by
# `docker/validate.sh --write-rules`: edit prometheusrule.yaml, then run that.
# The same alerts for a Prometheus that is not run by the Operator:
#   rule_files: [/etc/prometheus/rules/lakestream.rules.yml]
# `promtool check rules lakestream.rules.yml` validates it.
EOF
  awk 'found { sub(/^  /, ""); print } /^spec:/ { found = 1 }' "$ALERTS/prometheusrule.yaml"
}

if [ "${1:-}" = --write-rules ]; then
  render_rules > "$ALERTS/lakestream.rules.yml"
  echo "wrote $ALERTS/lakestream.rules.yml"
  exit 0
fi

step() { printf '\n== %s\n' "$*"; }

step "tools ($VENV)"
if ! "$VENV/bin/pip" show -q "kubernetes-validate" "checkov" >/dev/null 2>&1 \
  || [ "$("$VENV/bin/pip" show checkov 2>/dev/null | sed -n 's/^Version: //p')" != "$CHECKOV_VERSION" ] \
  || [ "$("$VENV/bin/pip" show kubernetes-validate 2>/dev/null | sed -n 's/^Version: //p')" != "$KUBERNETES_VALIDATE_VERSION" ]; then
  mkdir -p "$CACHE"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "checkov==$CHECKOV_VERSION"
fi
echo "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version), checkov $("$VENV/bin/checkov" --version)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step "rules: $ALERTS/lakestream.rules.yml is the PrometheusRule's spec"
render_rules > "$work/lakestream.rules.yml"
if ! diff -u "$ALERTS/lakestream.rules.yml" "$work/lakestream.rules.yml"; then
  echo "$ALERTS/lakestream.rules.yml differs from prometheusrule.yaml: run docker/validate.sh --write-rules" >&2
  exit 1
fi
echo ok

# kustomize build of both kustomizations (kubectl's built-in kustomize, or kustomize).
# On a machine without either, root installs Debian's kubectl (kept for later runs).
if ! command -v kustomize >/dev/null 2>&1 && ! command -v kubectl >/dev/null 2>&1 \
  && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get install -y -q kubectl >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q kubectl >/dev/null 2>&1; }) \
    || echo "WARNING: could not install kubectl from Debian's packages" >&2
fi
built=""
if command -v kustomize >/dev/null 2>&1; then
  build() { kustomize build "$1"; }
elif command -v kubectl >/dev/null 2>&1; then
  build() { kubectl kustomize "$1"; }
else
  build() { return 1; }
fi
step "kustomize build docker/k8s, $ALERTS"
mkdir -p "$work/built"
if build docker/k8s > "$work/built/k8s.yaml" && build "$ALERTS" > "$work/built/alerts.yaml"; then
  built="$work/built"
  grep -n 'image:' "$work/built/k8s.yaml"
else
  echo "WARNING: neither kustomize nor kubectl is installed: the built manifests (image name, tag and digest) are not checked" >&2
fi

# Kubernetes manifests only (the plain rules file is not one). Kinds without a
# schema in kubernetes-validate (Kustomization, KEDA's and the Prometheus
# Operator's CRDs) are reported as warnings, not failures.
manifests=(docker/k8s/*.yaml "$ALERTS"/*.yaml)
step "kubernetes-validate --strict (Kubernetes $KUBERNETES_VERSION)"
"$VENV/bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" "${manifests[@]}"
if [ -n "$built" ]; then
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" "$built"/*.yaml
fi
echo ok

# The raw files name the image `lakestream` without tag or digest on purpose:
# kustomization.yaml's images: sets both. CKV_K8S_14 (tag), CKV_K8S_43 (digest)
# and CKV_K8S_15 (pull policy; passes for an image pinned by digest) are
# therefore checked on the built output only.
step "checkov: files of docker/k8s (kubernetes, secrets)"
"$VENV/bin/checkov" -d docker/k8s --framework kubernetes secrets --skip-download --compact --quiet \
  --skip-check CKV_K8S_14,CKV_K8S_15,CKV_K8S_43
if [ -n "$built" ]; then
  step "checkov: kustomize build (kubernetes, every check)"
  "$VENV/bin/checkov" -d "$built" --framework kubernetes --skip-download --compact --quiet
fi
echo ok

if command -v promtool >/dev/null 2>&1; then
  step "promtool: alert rules and the dashboard's expressions"
  promtool check rules "$ALERTS/lakestream.rules.yml"
  # Each dashboard expression (Grafana variables replaced) as a recording rule.
  python3 - docker/grafana/lakestream.json > "$work/dashboard.rules.yml" <<'EOF'
import json, sys
dashboard = json.load(open(sys.argv[1]))
rules = []
for panel in dashboard["panels"]:
    for target in panel.get("targets", []):
        expr = target["expr"].replace("$__rate_interval", "1m")
        for var in ("namespace", "pod", "table"):
            expr = expr.replace("$" + var, "x")
        rules.append({"record": "dashboard:panel_%d:%s" % (panel["id"], target["refId"]), "expr": expr})
print(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
EOF
  promtool check rules "$work/dashboard.rules.yml"
else
  step "promtool not installed (apt-get install prometheus): PromQL syntax not checked"
fi

printf '\nall static checks passed\n'
