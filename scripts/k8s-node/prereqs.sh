#!/usr/bin/env bash
# Installs what the real one-node cluster (scripts/k8s-node/cluster.sh) needs from Debian: containerd, runc, the CNI
# plugins and nftables (for kube-proxy's nftables mode). No service is started: cluster.sh runs a private containerd.
# Needs root (or sudo); does nothing when everything is there.
set -euo pipefail
need=()
for p in containerd runc containernetworking-plugins nftables; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
[ ${#need[@]} -eq 0 ] && exit 0
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi; }
echo "== k8s-node/prereqs: installing ${need[*]} (Debian packages)" >&2
as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
