#!/usr/bin/env bash
# A real one-node Kubernetes on this machine, for the node tests (test/node) and by hand:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy (nftables mode) and a kubelet on a private
# containerd + runc (Debian's), pods on a CNI bridge with their own IPs. Nothing is pulled: the sandbox image is built
# here (a static Go pause), every other image is built by scripts/k8s-node/image.sh and used with imagePullPolicy Never.
# Adapted from ../shared/k8s-node (tried on these machines); what bites is in README.md, section "Real-cluster tests".
#
# usage: cluster.sh up [PID]        start everything (idempotent: running parts are left alone), wait for Node Ready;
#                                   with PID, everything is taken down (as by `down`) once that process has ended
#        cluster.sh down            stop everything this script started and undo its host changes
#        cluster.sh kubelet-stop    stop the kubelet (SIGTERM, by its recorded pid)
#        cluster.sh kubelet-start   start the kubelet again and wait for Node Ready
# env:   KN      work root (default ${TMPDIR:-/tmp}/pkm-k8s-node); everything lives under it, pids in $KN/state
#        BIN     directory with the binaries of scripts/k8s-node/build.sh (default: its cache, built if missing)
#        NODE_MONITOR_GRACE=20s   kube-controller-manager's node-monitor-grace-period
# Host changes, all undone by `down`: bridge kn-br0 (10.88.77.1/24) with forwarding on that interface only, the nftables
# table kube-proxy makes (ip kube-proxy), the sysctls the kubelet sets (saved and restored), the fixed host paths the
# kubelet and CNI use when they did not exist (removed when empty), kubepods cgroups. One cluster per machine at a time
# (the bridge, the fixed host paths): up takes /run/pkm-k8s-node.lock for as long as the cluster runs.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KN=${KN:-${TMPDIR:-/tmp}/pkm-k8s-node}
STATE=$KN/state
LOGS=$KN/logs
PKI=$KN/pki
NODE_NAME=localhost
BRIDGE=kn-br0
SUBNET=10.88.77.0/24
GW=10.88.77.1
SERVICE_CIDR=10.0.0.0/24
NODE_MONITOR_GRACE=${NODE_MONITOR_GRACE:-20s}
LOCK=/run/pkm-k8s-node.lock
T0=$(date +%s)
log() { printf '== k8s-node [%3ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }
die() { log "$*"; exit 1; }
running() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }
start() { # name cmd...: own session, output in $LOGS/name.log, pid in $STATE/name.pid
  local n=$1; shift
  if running "$n"; then return; fi
  # 8>&-: the cluster lock's descriptor stays with the holder (see up)
  setsid "$@" >>"$LOGS/$n.log" 2>&1 < /dev/null 8>&- &
  echo $! > "$STATE/$n.pid"
  log "$n started (pid $!)"
}
stop_pid() { # name [timeout_s]
  local f=$STATE/$1.pid p i
  [ -f "$f" ] || return 0
  p=$(cat "$f")
  if kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p"
    for i in $(seq 1 $(( ${2:-10} * 10 ))); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then kill -KILL "$p"; log "$1 ($p) killed"; else log "$1 ($p) stopped"; fi
  fi
  rm -f "$f"
}
waitfor() { # seconds description command...
  local n=$1 d=$2 end; shift 2; end=$((SECONDS + n))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -ge $end ] && die "TIMEOUT (${n}s) waiting for: $d"
    sleep 0.2
  done
}
bins() {
  if [ -z "${BIN:-}" ]; then BIN=$(bash "$ROOT/scripts/k8s-node/build.sh"); fi
  for b in kube-apiserver etcd kubectl kubelet kube-controller-manager kube-scheduler kube-proxy crictl; do
    [ -x "$BIN/$b" ] || die "no $b in $BIN (scripts/k8s-node/build.sh builds it)"
  done
  KC=("$BIN/kubectl" --kubeconfig "$KN/kubeconfig/admin.kubeconfig")
}
# remember a fixed host path that does not exist yet, so down removes exactly those (when empty)
note_host_path() { [ -e "$1" ] || grep -qx "$1" "$STATE/host-paths-created" 2>/dev/null || echo "$1" >> "$STATE/host-paths-created"; }

prereqs() {
  [ "$(id -u)" = 0 ] || die "needs root (containerd, runc, the kubelet's cgroups and mounts, a bridge)"
  local p
  for p in containerd ctr runc nft; do command -v "$p" >/dev/null || die "no $p on PATH: run scripts/k8s-node/prereqs.sh"; done
  for p in bridge host-local loopback; do [ -x "/usr/lib/cni/$p" ] || die "no CNI plugin /usr/lib/cni/$p: run scripts/k8s-node/prereqs.sh"; done
  grep -qw overlay /proc/filesystems || die "no overlayfs in this kernel"
  [ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] || die "no cgroup memory controller mounted"
}

pause_image() { # a static Go pause, as a hand-made OCI layout (scripts/k8s-node/image.sh)
  local src=$KN/images/src/pause rootfs=$KN/images/rootfs-pause
  mkdir -p "$src" "$rootfs"
  printf 'module kn/pause\n\ngo 1.22\n' > "$src/go.mod"
  cat > "$src/main.go" <<'EOF'
// pause: the pod sandbox process (PID 1 of the pod): sleeps until SIGINT/SIGTERM and reaps zombies.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 8)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range c {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
EOF
  (cd "$src" && GOWORK=off CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags '-s -w' -o "$rootfs/pause" .)
  bash "$ROOT/scripts/k8s-node/image.sh" localhost/pkm-pause:1 "$rootfs" "$KN/images/pause.oci.tar" --entrypoint '["/pause"]' >/dev/null
}

bridge() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$GW/${SUBNET#*/}" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    log "bridge $BRIDGE $GW created"
  fi
  # pod -> Service -> pod on the same bridge is routed through the host: forwarding on this interface only (the
  # global net.ipv4.ip_forward stays as it is; the CNI plugin's isGateway would set it, so the address is set here)
  sysctl -qw "net.ipv4.conf.$BRIDGE.forwarding=1"
  mkdir -p "$KN/cni/net.d" "$KN/cni/ipam"
  cat > "$KN/cni/net.d/10-kn-bridge.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "kn-bridge", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": false, "isDefaultGateway": false, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$KN/cni/ipam", "ranges": [[{"subnet": "$SUBNET", "gateway": "$GW"}]],
            "routes": [{"dst": "0.0.0.0/0", "gw": "$GW"}]}}
]}
EOF
}

containerd_up() {
  local c=$KN/containerd
  mkdir -p "$c"/{root,state,runc,opt} "$LOGS"
  SOCK=$c/containerd.sock
  cat > "$c/config.toml" <<EOF
version = 2
root = "$c/root"
state = "$c/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$c/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pkm-pause:1"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  # root in these VMs lacks CAP_SYS_RESOURCE: a negative oom_score_adj fails inside runc ("can't get final child's
  # PID from pipe: EOF"); true clamps it to containerd's own
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    discard_unpacked_layers = false
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$c/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$KN/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""
EOF
  note_host_path /var/lib/cni
  note_host_path /var/run/netns
  note_host_path /run/containerd
  if ! running containerd; then
    # no sbin on PATH: nothing containerd runs finds iptables
    start containerd env PATH=/usr/bin:/bin containerd --config "$c/config.toml"
    waitfor 20 "containerd socket" ctr --address "$SOCK" version
  fi
  echo "CONTAINERD_SOCK=$SOCK" > "$STATE/containerd.env"
  printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 20\n' "$SOCK" "$SOCK" > "$c/crictl.yaml"
  ctr --address "$SOCK" -n k8s.io images import --snapshotter overlayfs "$KN/images/pause.oci.tar" >/dev/null
}

pki() {
  [ -f "$PKI/ca.crt" ] && return
  mkdir -p "$PKI"
  (
  cd "$PKI"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -days 30 \
    -subj "/CN=kn-ca" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  cert() { # name subject extendedKeyUsage [subjectAltName]
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
    { echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature,keyEncipherment"; echo "extendedKeyUsage=$3"
      [ -n "${4:-}" ] && echo "subjectAltName=$4"; } > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -out "$1.crt" -extfile "$1.ext" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
  }
  cert apiserver "/CN=kube-apiserver" serverAuth \
    "IP:$GW,IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert admin "/O=system:masters/CN=kn-admin" clientAuth
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
  cert kubelet-serving "/CN=$NODE_NAME" serverAuth "IP:127.0.0.1,DNS:localhost,DNS:$NODE_NAME"
  cert kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
  cert kube-scheduler "/CN=system:kube-scheduler" clientAuth
  cert kube-proxy "/CN=system:kube-proxy" clientAuth
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  chmod 600 ./*.key
  )
}

free_port() { # first free TCP port from $1 not in $TAKEN
  local p
  for p in $(seq "$1" $(( $1 + 300 ))); do
    if ! ss -Htln "sport = :$p" | grep -q . && [[ " ${TAKEN:-} " != *" $p "* ]]; then TAKEN+=" $p"; echo "$p"; return; fi
  done
  return 1
}

control_plane() {
  mkdir -p "$KN/etcd" "$KN/kubeconfig"
  if [ ! -f "$STATE/ports.env" ] || ! running kube-apiserver; then
    TAKEN=""
    local e ep a k kh
    e=$(free_port 23790); ep=$(free_port 23800); a=$(free_port 26443); k=$(free_port 20250); kh=$(free_port 20248)
    printf 'ETCD_PORT=%s\nETCD_PEER_PORT=%s\nAPISERVER_PORT=%s\nKUBELET_PORT=%s\nKUBELET_HEALTHZ_PORT=%s\nNODE_NAME=%s\nGW=%s\nSUBNET=%s\n' \
      "$e" "$ep" "$a" "$k" "$kh" "$NODE_NAME" "$GW" "$SUBNET" > "$STATE/ports.env"
  fi
  . "$STATE/ports.env"
  SERVER=https://$GW:$APISERVER_PORT
  local k
  for k in admin kube-controller-manager kube-scheduler kube-proxy kubelet-client; do
    local user=$k
    [ "$k" = kubelet-client ] && user="system:node:$NODE_NAME"
    cat > "$KN/kubeconfig/$k.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kn
  cluster: {server: "$SERVER", certificate-authority: "$PKI/ca.crt"}
users:
- name: $user
  user: {client-certificate: "$PKI/$k.crt", client-key: "$PKI/$k.key"}
contexts:
- name: kn
  context: {cluster: kn, user: $user, namespace: default}
current-context: kn
EOF
  done
  start etcd "$BIN/etcd" --name kn --data-dir "$KN/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "kn=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --listen-metrics-urls "" \
    --quota-backend-bytes 1073741824
  # on the bridge address: pods reach it through the kubernetes Service (kube-proxy), components and tests directly
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$GW" --advertise-address "$GW" --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types Hostname,InternalIP \
    --allow-privileged=true --profiling=false --v=1
  local deadline=$((SECONDS + 90))
  until "${KC[@]}" get --raw /readyz >/dev/null 2>&1; do
    running kube-apiserver || { tail -30 "$LOGS/kube-apiserver.log" >&2; die "kube-apiserver exited"; }
    [ $SECONDS -ge $deadline ] && { tail -30 "$LOGS/kube-apiserver.log" >&2; die "kube-apiserver not ready after 90s"; }
    sleep 0.2
  done
  log "kube-apiserver ready on $SERVER"
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$KN/kubeconfig/kube-controller-manager.kubeconfig" \
    --secure-port 0 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --node-monitor-period 2s --node-monitor-grace-period "$NODE_MONITOR_GRACE" \
    --controllers '*' --v=1
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$KN/kubeconfig/kube-scheduler.kubeconfig" --secure-port 0 --leader-elect=false --v=1
  deadline=$((SECONDS + 90))
  until "${KC[@]}" -n default get serviceaccount default >/dev/null 2>&1 && \
      "${KC[@]}" -n default get configmap kube-root-ca.crt >/dev/null 2>&1; do
    running kube-controller-manager || { tail -30 "$LOGS/kube-controller-manager.log" >&2; die "kube-controller-manager exited"; }
    [ $SECONDS -ge $deadline ] && die "kube-controller-manager made no default ServiceAccount in 90s"
    sleep 0.3
  done
  running kube-scheduler || { tail -30 "$LOGS/kube-scheduler.log" >&2; die "kube-scheduler exited"; }
  log "controller manager and scheduler work"
}

kube_proxy() {
  . "$STATE/ports.env"
  cat > "$KN/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: $KN/kubeconfig/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
clusterCIDR: $SUBNET
# pod -> Service -> pod on one bridge: SNAT so that replies come back through the host (no br_netfilter needed)
masqueradeAll: true
nodePortAddresses: ["$GW/32"]
healthzBindAddress: ""
metricsBindAddress: ""
# 0: leave the host's conntrack settings as they are
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s, udpTimeout: 0s, udpStreamTimeout: 0s}
EOF
  start kube-proxy "$BIN/kube-proxy" --config "$KN/kube-proxy.yaml" --v=1
}

kubelet_start() {
  . "$STATE/ports.env"
  . "$STATE/containerd.env"
  local kl=$KN/kubelet
  mkdir -p "$kl/pki" "$KN/pod-logs"
  cat > "$kl/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: 127.0.0.1
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
failSwapOn: false
podLogsDir: $KN/pod-logs
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
maxPods: 40
nodeStatusUpdateFrequency: 4s
nodeStatusReportFrequency: 20s
nodeLeaseDurationSeconds: 10
syncFrequency: 10s
fileCheckFrequency: 5s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%", imagefs.inodesFree: "1%"}
evictionPressureTransitionPeriod: 10s
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
protectKernelDefaults: false
shutdownGracePeriod: 0s
volumePluginDir: $kl/volume-plugins
EOF
  note_host_path /var/lib/kubelet
  note_host_path /var/log/containers
  if [ ! -f "$STATE/sysctl.orig" ]; then
    local s
    for s in vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes; do
      echo "$s=$(sysctl -n "$s")"
    done > "$STATE/sysctl.orig"
  fi
  # PATH without sbin: the kubelet finds no iptables and adds no chains
  start kubelet env -i PATH=/usr/bin:/bin HOME="$HOME" "$BIN/kubelet" --config "$kl/config.yaml" \
    --kubeconfig "$KN/kubeconfig/kubelet-client.kubeconfig" \
    --root-dir "$kl/root" --cert-dir "$kl/pki" --hostname-override "$NODE_NAME" --node-ip "$GW" --v=1
  local deadline=$((SECONDS + 120)) st
  while :; do
    st=$("${KC[@]}" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
    [ "$st" = True ] && break
    running kubelet || { tail -40 "$LOGS/kubelet.log" >&2; die "kubelet exited"; }
    [ $SECONDS -ge $deadline ] && die "node not Ready 120s after the kubelet started"
    sleep 0.2
  done
  log "node $NODE_NAME Ready"
}

up() { # [owner pid]
  prereqs
  mkdir -p "$STATE" "$LOGS"
  exec 8>"$LOCK"
  flock -n 8 || die "another real-cluster run holds $LOCK (one cluster per machine)"
  bins
  echo "BIN=$BIN" > "$STATE/bin.env"
  # The holder keeps the lock (it inherits descriptor 8) for as long as the cluster runs. With an owner (the test
  # process) it also waits for that process to end and then takes everything down: a test killed by its timeout or
  # a signal leaves nothing running and no host change behind.
  if ! running holder; then
    setsid bash "$0" _hold "${1:-}" >>"$LOGS/holder.log" 2>&1 < /dev/null &
    echo $! > "$STATE/holder.pid"
  fi
  exec 8>&-
  pause_image
  bridge
  containerd_up
  pki
  control_plane
  kube_proxy
  kubelet_start
  log "up: kubectl --kubeconfig $KN/kubeconfig/admin.kubeconfig"
}

hold() { # owner pid (empty: hold until down)
  if [ -z "$1" ]; then exec sleep infinity; fi
  while kill -0 "$1" 2>/dev/null; do sleep 1; done
  log "owner $1 exited: taking the cluster down"
  down
}

down() {
  mkdir -p "$STATE"
  [ -f "$STATE/bin.env" ] && . "$STATE/bin.env"
  stop_pid kubelet 15
  if [ -f "$STATE/containerd.env" ]; then
    . "$STATE/containerd.env"
    if [ -S "$CONTAINERD_SOCK" ] && [ -x "${BIN:-}/crictl" ]; then
      local C=("$BIN/crictl" --config "$KN/containerd/crictl.yaml") p c
      for p in $("${C[@]}" pods -q 2>/dev/null); do "${C[@]}" stopp "$p" >/dev/null 2>&1; "${C[@]}" rmp -f "$p" >/dev/null 2>&1; done
      for c in $("${C[@]}" ps -aq 2>/dev/null); do "${C[@]}" rm -f "$c" >/dev/null 2>&1; done
    fi
  fi
  stop_pid kube-proxy
  nft delete table ip kube-proxy 2>/dev/null || true
  nft delete table ip6 kube-proxy 2>/dev/null || true
  stop_pid kube-scheduler
  stop_pid kube-controller-manager
  stop_pid kube-apiserver 20
  stop_pid etcd
  stop_pid containerd 15
  local f p m d
  # runc shims of this containerd write their pid under its state directory
  for f in "$KN"/containerd/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f"); kill -0 "$p" 2>/dev/null && kill -TERM "$p"
  done
  for m in $(awk -v k="$KN/" 'index($2, k) == 1 {print $2}' /proc/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  for f in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    [ -d "$f/kubepods" ] || [ -d "$f/kubepods.slice" ] || continue
    find "$f"kubepods* -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  if [ -f "$STATE/sysctl.orig" ]; then
    while IFS='=' read -r k v; do sysctl -qw "$k=$v"; done < "$STATE/sysctl.orig"
    rm -f "$STATE/sysctl.orig"
  fi
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE"; log "bridge $BRIDGE removed"; fi
  if [ -f "$STATE/host-paths-created" ]; then
    rm -f /var/lib/kubelet/device-plugins/kubelet.sock /var/lib/kubelet/device-plugins/kubelet_internal_checkpoint
    for d in $(tac "$STATE/host-paths-created"); do
      [ -d "$d" ] && find "$d" -depth -type d -empty -delete 2>/dev/null
    done
    rm -f "$STATE/host-paths-created"
  fi
  # the holder (unless this is it) last: the lock is free once everything is gone
  if [ "$(cat "$STATE/holder.pid" 2>/dev/null)" != "$$" ]; then stop_pid holder 2; else rm -f "$STATE/holder.pid"; fi
  rm -rf "$KN/etcd" "$KN/containerd/root" "$KN/containerd/state" "$KN/containerd/runc" "$KN/kubelet/root" \
    "$KN/pod-logs" "$KN/cni/ipam" "$STATE/ports.env" 2>/dev/null || true
  log "down"
}

case ${1:-} in
  up) up "${2:-}" ;;
  _hold) hold "${2:-}" ;;
  down) down ;;
  kubelet-stop) stop_pid kubelet 15 ;;
  kubelet-start) if [ -f "$STATE/bin.env" ]; then . "$STATE/bin.env"; fi; bins; kubelet_start ;;
  *) echo "usage: $0 up|down|kubelet-stop|kubelet-start" >&2; exit 2 ;;
esac
