#!/usr/bin/env bash
# Offline validation of deploy/ (make deploy-check). Not part of make test or
# CI: the first run downloads the k8s.io/kubernetes module (~40 MB zip) for
# its OpenAPI spec. Needs Go, python3 with PyYAML and jsonschema (Debian:
# python3-yaml python3-jsonschema) and npm. Everything it fetches is pinned
# and cached under ./bin (gitignored):
#   bin/tools/       kubeconform, kustomize (go install)
#   bin/k8s-schemas/ strict JSON schemas of Kubernetes, made from swagger.json
#   bin/npm/         dockerfile-utils (npm)
# Checks:
#   1. kustomize build deploy/kubernetes | kubeconform -strict, Kubernetes v1.33
#   2. deploy/compose.yaml against the Compose Specification's JSON schema
#   3. deploy/otel-collector.yaml: YAML, every pipeline component defined,
#      and `otelcol validate` when a collector is built (bin/otelcol, from
#      deploy/tools/otelcol-builder.yaml) or named by $OTELCOL
#   4. deploy/Dockerfile: dockerfile-utils lint, non-root user, no :latest
#   5. JSON of the tenants files, no unpinned image anywhere in deploy/
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=1.33.0
KUBECONFORM_VERSION=v0.8.0
KUSTOMIZE_VERSION=v5.7.1
COMPOSE_GO_VERSION=v2.16.2
DOCKERFILE_UTILS_VERSION=0.16.3

BIN=$PWD/bin
TOOLS=$BIN/tools
SCHEMAS=$BIN/k8s-schemas/v$K8S_VERSION
mkdir -p "$TOOLS"

step() { printf '== %s\n' "$*"; }

python3 -c 'import yaml, jsonschema' 2>/dev/null || {
	echo "python3 needs PyYAML and jsonschema: apt-get install -y python3-yaml python3-jsonschema" >&2
	exit 1
}

# Tools, pinned, built once. has BINARY MODULE VERSION: built from that module?
has() { [[ -x $1 ]] && go version -m "$1" | grep -qE "^[[:space:]]+mod[[:space:]]+$2[[:space:]]+$3([[:space:]]|\$)"; }
if ! has "$TOOLS/kubeconform" github.com/yannh/kubeconform "$KUBECONFORM_VERSION"; then
	step "installing kubeconform $KUBECONFORM_VERSION"
	GOBIN=$TOOLS go install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
fi
if ! has "$TOOLS/kustomize" sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"; then
	step "installing kustomize $KUSTOMIZE_VERSION"
	GOBIN=$TOOLS go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
fi
if [[ ! -x $BIN/npm/node_modules/.bin/dockerfile-utils ]]; then
	step "installing dockerfile-utils $DOCKERFILE_UTILS_VERSION (npm)"
	mkdir -p "$BIN/npm"
	npm install --prefix "$BIN/npm" --no-audit --no-fund --no-save --loglevel=error \
		"dockerfile-utils@$DOCKERFILE_UTILS_VERSION" >/dev/null
fi

# Kubernetes schemas from the OpenAPI spec in the k8s.io/kubernetes module.
if [[ ! -f $SCHEMAS/deployment-apps-v1.json ]]; then
	step "building Kubernetes v$K8S_VERSION schemas (go mod download k8s.io/kubernetes@v$K8S_VERSION)"
	dir=$(cd "$(mktemp -d)" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
	rm -rf "$SCHEMAS.tmp"
	python3 deploy/tools/openapi2jsonschema.py "$dir/api/openapi-spec/swagger.json" "$SCHEMAS.tmp"
	mv "$SCHEMAS.tmp" "$SCHEMAS"
fi

step "kubeconform -strict: kustomize build deploy/kubernetes, Kubernetes v$K8S_VERSION"
rendered=$(mktemp --suffix=.yaml) # kubeconform reads only *.yaml, *.yml, *.json
trap 'rm -f "$rendered"' EXIT
"$TOOLS/kustomize" build deploy/kubernetes >"$rendered"
want=$(grep -c '^kind: ' "$rendered")
out=$("$TOOLS/kubeconform" -strict -summary -verbose \
	-schema-location "$SCHEMAS/{{ .ResourceKind }}{{ .KindSuffix }}.json" "$rendered") || { echo "$out"; exit 1; }
echo "$out" | sed "s|$rendered|kustomize build deploy/kubernetes|"
# A schema that is missing or a file that is not read must not pass quietly.
echo "$out" | grep -q "Valid: $want, Invalid: 0, Errors: 0, Skipped: 0" ||
	{ echo "  expected $want valid resources" >&2; exit 1; }

step "compose: deploy/compose.yaml against compose-spec (compose-go $COMPOSE_GO_VERSION)"
compose_dir=$(cd "$(mktemp -d)" && go mod download -json "github.com/compose-spec/compose-go/v2@$COMPOSE_GO_VERSION" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
python3 - "$compose_dir/schema/compose-spec.json" deploy/compose.yaml <<'EOF'
import json, os, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
doc = yaml.safe_load(open(sys.argv[2]))
errors = sorted(jsonschema.validators.validator_for(schema)(schema).iter_errors(doc), key=str)
for e in errors:
    print(f"  {'/'.join(map(str, e.absolute_path))}: {e.message}")
base = os.path.dirname(sys.argv[2])
for name, svc in doc["services"].items():
    for v in svc.get("volumes", []):
        src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
        if src.startswith(".") and not os.path.exists(os.path.join(base, src)):
            errors.append(src); print(f"  services/{name}/volumes: {src} does not exist")
    build = svc.get("build")
    if build and not os.path.exists(os.path.join(base, build["context"], build["dockerfile"])):
        errors.append(build); print(f"  services/{name}/build: no Dockerfile")
print(f"  {len(doc['services'])} services: {', '.join(doc['services'])}: " + ("INVALID" if errors else "valid"))
sys.exit(1 if errors else 0)
EOF

step "otel collector: deploy/otel-collector.yaml"
python3 - deploy/otel-collector.yaml <<'EOF'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
bad = [f"extension {e}" for e in c["service"].get("extensions", []) if e not in c.get("extensions", {})]
for name, p in c["service"]["pipelines"].items():
    for kind in ("receivers", "processors", "exporters"):
        bad += [f"pipeline {name}: {kind[:-1]} {x} undefined" for x in p.get(kind, []) if x not in c.get(kind, {})]
    if not p.get("receivers") or not p.get("exporters"):
        bad.append(f"pipeline {name}: needs receivers and exporters")
for b in bad:
    print("  " + b)
print(f"  pipelines {', '.join(c['service']['pipelines'])}: " + ("INVALID" if bad else "every component defined"))
sys.exit(1 if bad else 0)
EOF
OTELCOL=${OTELCOL:-$BIN/otelcol/otelcol-linkgate}
if [[ -x $OTELCOL ]]; then
	"$OTELCOL" validate --config=deploy/otel-collector.yaml
	echo "  ${OTELCOL#"$PWD/"} validate: ok"
else
	echo "  (no collector binary: build one with deploy/tools/otelcol-builder.yaml, or set OTELCOL, to also run 'validate')"
fi

step "Dockerfile: dockerfile-utils $DOCKERFILE_UTILS_VERSION lint deploy/Dockerfile"
"$BIN/npm/node_modules/.bin/dockerfile-utils" lint deploy/Dockerfile
grep -Eq '^USER 65532(:65532)?$' deploy/Dockerfile || { echo "  deploy/Dockerfile must end as USER 65532 (non-root)" >&2; exit 1; }
echo "  lint clean, runs as USER 65532"

step "pinning and JSON"
if grep -rnE '(image:|FROM)[[:space:]]+[^[:space:]]+:latest\b|newTag:[[:space:]]*latest' deploy/; then
	echo "  unpinned :latest image above" >&2; exit 1
fi
for f in deploy/local/tenants.json; do python3 -m json.tool "$f" >/dev/null; done
python3 - <<'EOF'
import json, yaml
s = yaml.safe_load(open("deploy/kubernetes/secret.yaml"))
json.loads(s["stringData"]["tenants.json"])
EOF
echo "  no :latest; tenants files are JSON"
step "deploy-check: ok"
