#!/usr/bin/env bash
# Render each kustomize overlay and validate every object offline with
# kubeconform in strict mode (unknown fields are errors) against the
# Kubernetes 1.31 and Gateway API v1.2 schemas in ../shared/k8s-schemas.
#
# Tools come from .bin/ at the repository root; missing ones are installed
# there with `go install` at the versions the Makefile pins.
#
# The prod overlay needs the secret files that operators create in
# overlays/prod/secrets/. This script never reads them: it builds a copy
# of the overlays with placeholder secret files instead.
set -euo pipefail

deploy_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(dirname "$deploy_dir")
bin_dir="$repo_dir/.bin"
schema_dir="${K8S_SCHEMA_DIR:-$repo_dir/../shared/k8s-schemas}"

kustomize_version=v5.8.1
kubeconform_version=v0.8.0

if [[ ! -x "$bin_dir/kustomize" ]]; then
  GOBIN="$bin_dir" go install "sigs.k8s.io/kustomize/kustomize/v5@$kustomize_version"
fi
if [[ ! -x "$bin_dir/kubeconform" ]]; then
  GOBIN="$bin_dir" go install "github.com/yannh/kubeconform/cmd/kubeconform@$kubeconform_version"
fi
if [[ ! -d "$schema_dir/v1.31.0-standalone-strict" ]]; then
  echo "validate.sh: schema folder $schema_dir/v1.31.0-standalone-strict not found; set K8S_SCHEMA_DIR" >&2
  exit 1
fi

work_dir=$(mktemp -d)
trap 'rm -rf "$work_dir"' EXIT

cp -r "$deploy_dir/base" "$deploy_dir/overlays" "$deploy_dir/nginx" "$work_dir/"
rm -rf "$work_dir/overlays/prod/secrets"
mkdir -p "$work_dir/overlays/prod/secrets"
echo 'cGxhY2Vob2xkZXItcGxhY2Vob2xkZXItcGxhY2Vob2w=' > "$work_dir/overlays/prod/secrets/auth-kek"
echo 'postgres://auth:placeholder@auth-db.example.com:5432/auth?sslmode=verify-full' > "$work_dir/overlays/prod/secrets/auth-database-url"
echo 'postgres://todo:placeholder@todo-db.example.com:5432/todo?sslmode=verify-full' > "$work_dir/overlays/prod/secrets/todo-database-url"

for overlay in dev prod; do
  echo "== $overlay"
  "$bin_dir/kustomize" build "$work_dir/overlays/$overlay" > "$work_dir/$overlay.yaml"
  "$bin_dir/kubeconform" -strict -summary -kubernetes-version 1.31.0 \
    -schema-location "$schema_dir" \
    -schema-location "$schema_dir/crds/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json" \
    "$work_dir/$overlay.yaml"
done
