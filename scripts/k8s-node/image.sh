#!/usr/bin/env bash
# Packs a root filesystem directory into a single-layer OCI image layout tar that `ctr images import` reads, without
# any image tool or registry. Reproducible: the same files (content, mode) give the same digests (sorted entries,
# mtime 0, owner 0:0, fixed config with created 1970-01-01).
#
# usage: image.sh REF ROOTFS OUT.tar [--entrypoint JSON] [--cmd JSON] [--user UID:GID] [--env JSON] [--ports JSON]
#   e.g. image.sh localhost/pkmanager:test rootfs/ pkmanager.oci.tar --entrypoint '["/usr/local/bin/pkmanager"]' \
#          --cmd '["serve"]' --user 65532:65532 --ports '{"8000/tcp":{},"8080/tcp":{}}'
# prints the manifest digest (sha256:...).
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,10p' "$0" >&2; exit 2; }
REF=$1 ROOTFS=$2 OUT=$3; shift 3
ENTRY='null' CMD='null' USER_='' ENV_='["PATH=/usr/local/bin:/usr/bin:/bin"]' PORTS='{}'
while [ $# -gt 0 ]; do
  case $1 in
    --entrypoint) ENTRY=$2 ;; --cmd) CMD=$2 ;; --user) USER_=$2 ;; --env) ENV_=$2 ;; --ports) PORTS=$2 ;;
    *) echo "image.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
d=$(mktemp -d "${TMPDIR:-/tmp}/oci.XXXXXX")
trap 'rm -rf "$d"' EXIT
mkdir -p "$d/blobs/sha256"
blob() { # file -> moves it to blobs, prints "digest size"
  local h s; h=$(sha256sum "$1" | cut -d' ' -f1); s=$(stat -c %s "$1"); mv "$1" "$d/blobs/sha256/$h"; echo "$h $s"
}
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -C "$ROOTFS" -cf "$d/layer.tar" .
read -r LD LS < <(blob "$d/layer.tar")
printf '{"architecture":"amd64","os":"linux","config":{"User":"%s","Env":%s,"Entrypoint":%s,"Cmd":%s,"ExposedPorts":%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"scripts/k8s-node/image.sh"}]}' \
  "$USER_" "$ENV_" "$ENTRY" "$CMD" "$PORTS" "$LD" > "$d/config.json"
read -r CD CS < <(blob "$d/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
  "$CD" "$CS" "$LD" "$LS" > "$d/manifest.json"
read -r MD MS < <(blob "$d/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
  "$MD" "$MS" "$REF" "${REF##*:}" > "$d/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$d/oci-layout"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$d" -cf "$OUT.tmp" oci-layout index.json blobs
mv "$OUT.tmp" "$OUT"
echo "sha256:$MD"
