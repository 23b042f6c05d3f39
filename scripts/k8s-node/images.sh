#!/usr/bin/env bash
# Builds the images the node tests run, without pulling anything, as OCI layout tars in OUTDIR (image.sh):
#   localhost/pkmanager:test        the pkmanager binary (static: cgo for blst, glibc linked in; netgo/osusergo), run as
#                                   65532:65532, entrypoint /usr/local/bin/pkmanager, cmd serve, ports 8000 and 8080:
#                                   the same binary, user, entrypoint and ports as the Dockerfile's image (which
#                                   links glibc dynamically from distroless/base-debian12 and carries its CA
#                                   certificates and tzdata; this one has /etc/passwd, /etc/group and /tmp only)
#   localhost/pkm-keyholder:test    test/node/keyholder, the tests' validator container (same static build)
#   localhost/pkm-hostusr:test      no program of its own: mount points for the host's /usr (read-only hostPath) and
#                                   the merged-/usr links (bin, lib, lib64, sbin -> usr/...), for the Lodestar
#                                   validator client the node tests run on the host's Node.js and Lodestar install
#                                   (hostPath mounts; baking their ~330 MB in would cost a pack and an import per run)
# usage: images.sh OUTDIR   prints one "REF DIGEST TAR" line per image; reproducible (same sources, same digests)
# The result is cached under ${PKM_K8S_NODE_CACHE:-~/.cache/pkmanager/k8s-node}/images/<hash> (the hash of every Go
# file and go.mod/go.sum of the module, these scripts and the Go version) and copied to OUTDIR when it is there.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:?usage: images.sh OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
HASH=$( { cd "$ROOT" && find . -name '*.go' -not -path './test/*/tools/*' -not -path './.git/*' -print0 | sort -z |
  xargs -0 sha256sum; sha256sum go.mod go.sum scripts/k8s-node/images.sh scripts/k8s-node/image.sh; go version
  echo "${VERSION:-test}"; } | sha256sum | cut -c1-16)
CACHE=${PKM_K8S_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pkmanager/k8s-node}/images/$HASH
if [ -f "$CACHE/images.txt" ]; then
  cp -a "$CACHE"/. "$OUT"/
  sed "s#@OUT@#$OUT#" "$CACHE/images.txt"
  exit 0
fi
export GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=1 CGO_CFLAGS="-O2 -D__BLST_PORTABLE__"
static() { # pkg out
  (cd "$ROOT" && go build -trimpath -tags netgo,osusergo \
    -ldflags "-s -w -X main.version=${VERSION:-test} -linkmode external -extldflags -static" -o "$2" "$1")
}
rootfs() { # dir: the files every image here has
  rm -rf "$1"; mkdir -p "$1/etc" "$1/tmp" "$1/usr/local/bin"
  chmod 1777 "$1/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$1/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$1/etc/group"
  chmod 0644 "$1/etc/passwd" "$1/etc/group"
}
{
rootfs "$OUT/rootfs-pkmanager"
static ./cmd/pkmanager "$OUT/rootfs-pkmanager/usr/local/bin/pkmanager"
d=$(bash "$ROOT/scripts/k8s-node/image.sh" localhost/pkmanager:test "$OUT/rootfs-pkmanager" "$OUT/pkmanager.oci.tar" \
  --entrypoint '["/usr/local/bin/pkmanager"]' --cmd '["serve"]' --user 65532:65532 --ports '{"8000/tcp":{},"8080/tcp":{}}')
echo "localhost/pkmanager:test $d $OUT/pkmanager.oci.tar"
rootfs "$OUT/rootfs-keyholder"
static ./test/node/keyholder "$OUT/rootfs-keyholder/usr/local/bin/keyholder"
d=$(bash "$ROOT/scripts/k8s-node/image.sh" localhost/pkm-keyholder:test "$OUT/rootfs-keyholder" "$OUT/keyholder.oci.tar" \
  --entrypoint '["/usr/local/bin/keyholder"]' --user 65532:65532)
echo "localhost/pkm-keyholder:test $d $OUT/keyholder.oci.tar"
rootfs "$OUT/rootfs-hostusr"
rm -rf "$OUT/rootfs-hostusr/usr/local"
mkdir -p "$OUT/rootfs-hostusr/lodestar" "$OUT/rootfs-hostusr/chain" "$OUT/rootfs-hostusr/data"
for l in bin lib lib64 sbin; do ln -s "usr/$l" "$OUT/rootfs-hostusr/$l"; done
d=$(bash "$ROOT/scripts/k8s-node/image.sh" localhost/pkm-hostusr:test "$OUT/rootfs-hostusr" "$OUT/hostusr.oci.tar" \
  --entrypoint '["/usr/bin/node"]' --user 65532:65532)
echo "localhost/pkm-hostusr:test $d $OUT/hostusr.oci.tar"
} | tee "$OUT/images.out"
# cache the result (keep the last few); a concurrent run writing the same hash is harmless (same bytes)
mkdir -p "$CACHE.tmp.$$"
cp -a "$OUT/rootfs-pkmanager" "$OUT/rootfs-keyholder" "$OUT/rootfs-hostusr" "$OUT/pkmanager.oci.tar" "$OUT/keyholder.oci.tar" \
  "$OUT/hostusr.oci.tar" "$CACHE.tmp.$$/"
sed "s#$OUT#@OUT@#" "$OUT/images.out" > "$CACHE.tmp.$$/images.txt"
rm -f "$OUT/images.out"
rm -rf "$CACHE" && mv "$CACHE.tmp.$$" "$CACHE"
# shellcheck disable=SC2012
ls -dt "${CACHE%/*}"/*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf
