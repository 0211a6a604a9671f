#!/usr/bin/env bash
# `make image`: the appliance's OCI image with no Docker engine, on the connected staging machine (as root).
#
#   scripts/image.sh [--gpu] [--media DIR]
#
# 1. A Debian bookworm minbase rootfs from debootstrap, cached in var/cache/image (reruns skip it).
# 2. The serving install (appliance[cpu], or [gpu], and [postgres] for the chart's database.urlSecret) into /opt/appliance/venv by pip inside a chroot with no
#    network at all (`unshare -n`, --no-index), from the wheels of offline media (--media) or a wheelhouse
#    built with the media's code (appliance/media/image.py). Never torch or transformers.
# 3. The non-root user appliance (10001:10001), setuid bits stripped, apt's caches dropped.
# 4. `buildah commit` from scratch (vfs storage: no daemon, no overlay mounts), user 10001, PATH, labels with
#    the version and the SHA-256 of the CycloneDX SBOM of the installed wheels; smoke-checked as user 10001.
# 5. var/image/appliance-VERSION[-gpu].oci.tar (+ .sbom.cdx.json); prints the digest, sizes and build time.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
START=$(date +%s)
GPU=""
MEDIA=""
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu) GPU=--gpu ;;
    --media) MEDIA=$(realpath "$2"); shift ;;
    *) echo "error: unknown argument $1 (use --gpu, --media DIR)" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "error: make image runs as root (debootstrap, chroot, buildah vfs)" >&2; exit 1; }
for tool in debootstrap buildah unshare; do
  command -v "$tool" >/dev/null || { echo "error: $tool missing: apt-get install buildah skopeo umoci debootstrap" >&2; exit 1; }
done

PY=${PYTHON:-$REPO/.venv/bin/python}
VERSION=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
EXTRA=${GPU:+gpu}; EXTRA=${EXTRA:-cpu}
NAME=appliance-$VERSION${GPU:+-gpu}
SDE=$(git log -1 --format=%ct 2>/dev/null || echo 0)  # SOURCE_DATE_EPOCH: the commit's time
CACHE=$REPO/var/cache/image
OUT=$REPO/var/image
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# bash: KubeRay runs `ray start` and its probes under bash; wget: its worker readiness probe (Serve proxy).
PACKAGES=python3,python3-venv,bash,ca-certificates,wget
BASE=$CACHE/rootfs-$SUITE-$(echo "$MIRROR $PACKAGES" | sha256sum | cut -c1-12)
STORE=(--storage-driver vfs --root "$CACHE/containers" --runroot "$CACHE/run")
mkdir -p "$CACHE" "$OUT"

step() { echo "[$(( $(date +%s) - START ))s] $*"; }

if [ ! -d "$BASE" ]; then
  step "debootstrap $SUITE minbase ($PACKAGES), cached in $BASE"
  rm -rf "$BASE.partial"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$BASE.partial" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -5 "$CACHE/debootstrap.log" >&2; echo "error: debootstrap failed (log: $CACHE/debootstrap.log)" >&2; exit 1; }
  rm -rf "$BASE.partial"/var/cache/apt/archives/*.deb "$BASE.partial"/var/lib/apt/lists/* "$BASE.partial"/var/log/*.log
  mv "$BASE.partial" "$BASE"
fi

step "wheelhouse (${MEDIA:-built here})"
WHEELS=$(PYTHONPATH=$REPO "$PY" -m appliance.media.image wheels --repo "$REPO" --cache "$CACHE" \
  ${MEDIA:+--media "$MEDIA"} $GPU --source-date-epoch "$SDE")

CTR=$(buildah "${STORE[@]}" from --name "$NAME-build-$$" scratch)
MNT=$(buildah "${STORE[@]}" mount "$CTR")
cleanup() {
  umount -R "$MNT/proc" "$MNT/tmp/wheels" 2>/dev/null || true
  buildah "${STORE[@]}" rm "$CTR" >/dev/null 2>&1 || true
}
trap cleanup EXIT
step "rootfs copied into the working container"
cp -a "$BASE/." "$MNT/"

step "offline install of appliance[$EXTRA]==$VERSION (no network, --no-index)"
mkdir -p "$MNT/tmp/wheels" "$MNT/proc"
mount --bind "$WHEELS" "$MNT/tmp/wheels"
mount -o remount,bind,ro "$MNT/tmp/wheels"
mount -t proc proc "$MNT/proc"
REQS=$(PYTHONPATH=$REPO "$PY" -m appliance.media.image requirements --version "$VERSION" --wheels "$WHEELS" $GPU \
  | sed "s/.*/'&'/" | tr '\n' ' ')
unshare -n chroot "$MNT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root PIP_CONFIG_FILE=/dev/null \
  LANG=C.UTF-8 SOURCE_DATE_EPOCH="$SDE" bash -ec "
    python3 -m venv /opt/appliance/venv
    /opt/appliance/venv/bin/python -m pip --disable-pip-version-check --no-cache-dir install -q --no-index \
      --find-links /tmp/wheels --only-binary=:all: --report /tmp/report.json $REQS
    /opt/appliance/venv/bin/python -m pip --disable-pip-version-check uninstall -q -y pip"
umount "$MNT/tmp/wheels" "$MNT/proc"
mv "$MNT/tmp/report.json" "$CACHE/report-$EXTRA.json"
rm -rf "$MNT/tmp/wheels"

step "SBOM of the installed wheels"
SBOM=$OUT/$NAME.sbom.cdx.json
SBOM_SHA=$(PYTHONPATH=$REPO "$PY" -m appliance.media.image sbom --report "$CACHE/report-$EXTRA.json" \
  --wheels "$WHEELS" --out "$SBOM" --version "$VERSION" --source-date-epoch "$SDE")
install -m 0644 "$SBOM" "$MNT/opt/appliance/sbom.cdx.json"

step "user appliance (10001:10001), hardening"
echo 'appliance:x:10001:10001:gpt-oss appliance:/home/appliance:/usr/sbin/nologin' >>"$MNT/etc/passwd"
echo 'appliance:x:10001:' >>"$MNT/etc/group"
echo 'appliance:!:19000::::::' >>"$MNT/etc/shadow"
install -d -m 0750 -o 10001 -g 10001 "$MNT/home/appliance" "$MNT/var/lib/appliance" \
  "$MNT/var/run/appliance" "$MNT/var/run/appliance/keys"
install -d -m 0755 "$MNT/etc/appliance/trust" "$MNT/etc/appliance/policies"
# KubeRay's container command is `bash -lc`: Debian's /etc/profile resets PATH, this puts the venv back.
echo 'export PATH=/opt/appliance/venv/bin:$PATH' >"$MNT/etc/profile.d/appliance.sh"
find "$MNT" -xdev -type f -perm /6000 -exec chmod a-s {} +  # no setuid/setgid: nothing to escalate through
rm -rf "$MNT"/var/cache/apt/*.bin "$MNT"/var/lib/apt/lists/* "$MNT"/root/.cache "$MNT"/tmp/* "$MNT"/var/log/*.log

step "smoke check as user 10001 (no network)"
mount -t proc proc "$MNT/proc"  # what the container runtime gives: onnxruntime reads /proc/cpuinfo
unshare -n chroot --userspec=10001:10001 "$MNT" /usr/bin/env -i HOME=/home/appliance LANG=C.UTF-8 \
  PATH=/usr/bin:/bin APPLIANCE_DATA_DIR=/tmp/smoke RAY_USAGE_STATS_ENABLED=0 /bin/bash -lc -- '
    set -e
    appliance --help >/dev/null
    python -c "import ray, onnxruntime, appliance; print(\"imports ok: ray\", ray.__version__, \"onnxruntime\", onnxruntime.__version__)"
    appliance db upgrade >/dev/null
    appliance bundle verify --active
    python -c "import importlib.util as u; print(\"psycopg:\", \"yes\" if u.find_spec(\"psycopg\") else \"no (SQLite only)\")"
    ray --version
    wget --version | head -1
    rm -rf /tmp/smoke'
umount "$MNT/proc"
rm -rf "$MNT"/tmp/* "$MNT"/home/appliance/.cache
UNPACKED=$(du -sb "$MNT" | cut -f1)

step "commit (buildah, vfs)"
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
buildah "${STORE[@]}" config \
  --user 10001:10001 --workingdir /home/appliance \
  --env PATH=/opt/appliance/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env HOME=/home/appliance --env LANG=C.UTF-8 --env PYTHONDONTWRITEBYTECODE=1 \
  --env RAY_USAGE_STATS_ENABLED=0 \
  --cmd '["appliance", "--help"]' \
  --label org.opencontainers.image.title="gpt-oss appliance" \
  --label org.opencontainers.image.description="Air-gapped gpt-oss serving: ONNX Runtime, Ray Serve, audited OpenAI-compatible API ($EXTRA)" \
  --label org.opencontainers.image.version="$VERSION" \
  --label org.opencontainers.image.revision="$REVISION" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --label org.opencontainers.image.base.name="debian:$SUITE (debootstrap minbase)" \
  --label io.gpt-oss.appliance.sbom.digest="sha256:$SBOM_SHA" \
  --label io.gpt-oss.appliance.onnxruntime="$EXTRA" \
  "$CTR"
IMG=localhost/gpt-oss-appliance:$VERSION${GPU:+-gpu}
buildah "${STORE[@]}" umount "$CTR" >/dev/null
buildah "${STORE[@]}" commit -q --rm --format oci --timestamp "$SDE" "$CTR" "$IMG" >/dev/null
trap - EXIT

step "OCI archive"
ARCHIVE=$OUT/$NAME.oci.tar
rm -f "$ARCHIVE"
buildah "${STORE[@]}" push -q --digestfile "$CACHE/digest" "$IMG" "oci-archive:$ARCHIVE:$IMG"
DIGEST=$(cat "$CACHE/digest")
buildah "${STORE[@]}" rmi --prune >/dev/null 2>&1 || true  # the previous build's image, untagged now
if command -v skopeo >/dev/null; then  # the digest a registry will hold, read back from the archive itself
  DIGEST=$(skopeo inspect --format '{{.Digest}}' "oci-archive:$ARCHIVE")
fi
ROOTFS=$(du -sb "$BASE" | cut -f1)
echo "image   $IMG"
echo "digest  $DIGEST"
echo "archive $ARCHIVE ($(( $(stat -c %s "$ARCHIVE") / 1048576 )) MiB, layers gzip-compressed)"
echo "sbom    $SBOM (sha256:$SBOM_SHA, labelled io.gpt-oss.appliance.sbom.digest)"
echo "size    unpacked $(( UNPACKED / 1048576 )) MiB (debootstrap base $(( ROOTFS / 1048576 )) MiB)"
echo "built in $(( $(date +%s) - START )) s"
echo "load:   skopeo copy oci-archive:$ARCHIVE docker://REGISTRY/gpt-oss-appliance:$VERSION${GPU:+-gpu}; helm: image.digest=$DIGEST"
