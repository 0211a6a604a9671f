#!/usr/bin/env bash
# checkov over the Helm chart (rendered by the pinned helm, every profile), offline. checkov is a ~290 MB
# install, so it lives in its own venv under var/ and runs here, not in the default test run.
# Checks the chart deliberately does not pass are listed with their reason in helm/appliance/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/helm.sh >/dev/null
venv=var/checkov-venv
if [ ! -x "$venv/bin/checkov" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'checkov==3.3.30'
fi
export PATH="$PWD/var/tools:$PATH"
skips=$(grep -o '^| CKV_K8S_[0-9]*' helm/appliance/README.md | tr -d '| ' | paste -sd, - || true)
# Every profile, and the default values with each rayTLS mode that adds containers, volumes or fields.
variants=("" values-cpu-test.yaml values-20b.yaml values-120b.yaml
  "rayTLS=secret:--set rayTLS.mode=secret --set rayTLS.caSecretName=appliance-ray-ca"
  "rayTLS=kuberay:--set rayTLS.mode=kuberay --api-versions cert-manager.io/v1")
for variant in "${variants[@]}"; do
  args=(--set global.imageRegistry=registry.site.local --set "image.digest=sha256:$(printf 'ab%.0s' {1..32})")
  profile=${variant%%:*}
  case "$variant" in
    *:*) read -ra more <<<"${variant#*:}"; args+=("${more[@]}") ;;
    ?*) args+=(-f "helm/appliance/$profile") ;;
  esac
  out=$(mktemp -d)
  var/tools/helm template appliance helm/appliance --api-versions ray.io/v1 "${args[@]}" > "$out/chart.yaml" 2>/dev/null
  # checkov does not read pod templates inside a RayService: add each as the Pod KubeRay would create.
  .venv/bin/python - "$out/chart.yaml" > "$out/rendered.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in list(docs):
    if d["kind"] != "RayService":
        continue
    c = d["spec"]["rayClusterConfig"]
    for role, t in [("head", c["headGroupSpec"]["template"])] + [(g["groupName"], g["template"]) for g in c["workerGroupSpecs"]]:
        docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{d['metadata']['name']}-{role}",
                     "namespace": "gpt-oss", **t["metadata"]}, "spec": t["spec"]})
for d in docs:
    d.setdefault("metadata", {}).setdefault("namespace", "gpt-oss")
print(yaml.safe_dump_all(docs))
PY
  echo "== checkov ${profile:-default values}"
  "$venv/bin/checkov" -f "$out/rendered.yaml" --framework kubernetes --skip-download --quiet --compact \
    ${skips:+--skip-check "$skips"} || failed=1
  rm -rf "$out"
done
exit "${failed:-0}"
