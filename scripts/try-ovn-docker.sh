#!/usr/bin/env bash
# Debian's ovn-docker-overlay-driver (a NetworkDriver nobody here wrote) driven through berth:
# create a network, connect two network namespaces, show what OVN and the namespaces got,
# disconnect, remove, and check that OVN, OVS and the host are clean again.
#
#   scripts/try-ovn-docker.sh [BERTH_BINARY]      (default target/debug/berth; needs root)
#
# Needs the Debian packages openvswitch-switch ovn-central ovn-host ovn-docker python3-flask
# (`apt-get install -y ...`; their services are not used). Everything runs privately:
# - a network namespace `berthovn` holds ovsdb-server (OVS, OVN NB and SB databases under
#   /tmp/berth-ovn), ovs-vswitchd with the userspace (netdev) datapath (no openvswitch kernel
#   module is needed), ovn-northd, ovn-controller, the driver and berth itself: the driver
#   listens on 0.0.0.0:5000, which then exists only inside that namespace, and makes its veth
#   pairs there, where berth finds them;
# - the driver runs in a private mount namespace with /tmp/berth-ovn/plugins bound over
#   /etc/docker/plugins, where it writes its spec file (`openvswitch.spec`); berth reads it
#   from there with --legacy-plugin-dir;
# - the driver (OVN 23.03) is Python 2 code at one place (subprocess output read as bytes,
#   used as text): it runs unchanged through a three-line shim that makes that output text.
# The driver's capability scope is `global`; berth keeps such networks on this daemon.
# Everything is stopped (by PID) and deleted at the end, also on errors.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BERTH=${1:-$REPO/target/debug/berth}
D=/tmp/berth-ovn
NS=berthovn
CONSUMERS=(berthovn-a berthovn-b)
export OVS_RUNDIR=$D/run OVS_LOGDIR=$D/log OVS_DBDIR=$D OVS_SYSCONFDIR=$D/etc
export OVN_RUNDIR=$D/run OVN_LOGDIR=$D/log OVN_DBDIR=$D
export DOCKER_HOST=unix://$D/berth.sock

for tool in ovsdb-server ovs-vswitchd ovn-northd ovn-controller ovn-docker-overlay-driver docker; do
  command -v $tool >/dev/null || { echo "try-ovn-docker: $tool is missing" >&2; exit 2; }
done
/usr/bin/python3 -c 'import flask, ovs' 2>/dev/null ||
  { echo "try-ovn-docker: needs python3-flask and python3-openvswitch" >&2; exit 2; }
[ -x "$BERTH" ] || { echo "try-ovn-docker: no berth at $BERTH (cargo build)" >&2; exit 2; }

in_ns() { ip netns exec $NS "$@"; }
nbctl() { in_ns ovn-nbctl --db=unix:$D/run/ovnnb_db.sock "$@"; }

teardown() {
  set +e
  for ns in "${CONSUMERS[@]}"; do ip netns del "$ns" 2>/dev/null; done
  for f in "$D"/*.pid "$D"/run/*.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null
  done
  sleep 1
  ip netns del $NS 2>/dev/null
  rm -rf "$D"
}
trap teardown EXIT
teardown
mkdir -p $D/run $D/log $D/plugins $D/etc

ip netns add $NS
in_ns ip link set lo up
ovsdb-tool create $D/conf.db /usr/share/openvswitch/vswitch.ovsschema
ovsdb-tool create $D/ovnnb.db /usr/share/ovn/ovn-nb.ovsschema
ovsdb-tool create $D/ovnsb.db /usr/share/ovn/ovn-sb.ovsschema
for db in conf ovnnb ovnsb; do
  sock=$D/run/${db}_db.sock
  [ $db = conf ] && sock=$D/run/db.sock
  in_ns ovsdb-server $D/$db.db --remote=punix:$sock --pidfile=$D/run/$db.pid \
    --unixctl=$D/run/$db.ctl --log-file=$D/log/$db.log --detach
done
in_ns ovs-vsctl --no-wait init
in_ns ovs-vswitchd unix:$D/run/db.sock --pidfile=$D/run/ovs-vswitchd.pid \
  --log-file=$D/log/ovs-vswitchd.log --detach
nbctl init
in_ns ovn-sbctl --db=unix:$D/run/ovnsb_db.sock init
in_ns ovn-northd --ovnnb-db=unix:$D/run/ovnnb_db.sock --ovnsb-db=unix:$D/run/ovnsb_db.sock \
  --pidfile=$D/run/ovn-northd.pid --log-file=$D/log/ovn-northd.log --detach
in_ns ovs-vsctl --may-exist add-br br-int -- set bridge br-int datapath_type=netdev \
  external_ids:bridge-id=br-int other-config:disable-in-band=true fail-mode=secure
in_ns ovs-vsctl set open_vswitch . external_ids:ovn-nb=unix:$D/run/ovnnb_db.sock \
  external_ids:ovn-remote=unix:$D/run/ovnsb_db.sock external_ids:ovn-encap-type=geneve \
  external_ids:ovn-encap-ip=127.0.0.1 external_ids:system-id=berth-ovn \
  external_ids:ovn-bridge-datapath-type=netdev
in_ns ovn-controller unix:$D/run/db.sock --pidfile=$D/run/ovn-controller.pid \
  --log-file=$D/log/ovn-controller.log --detach

cat >$D/driver-shim.py <<'PY'
import runpy, subprocess
class TextPopen(subprocess.Popen):
    def __init__(self, *a, **k): k.setdefault("universal_newlines", True); super().__init__(*a, **k)
subprocess.Popen = TextPopen
runpy.run_path("/usr/bin/ovn-docker-overlay-driver", run_name="__main__")
PY
in_ns unshare -m sh -c "mount --bind $D/plugins /etc/docker/plugins && exec /usr/bin/python3 \
  $D/driver-shim.py --pidfile=$D/run/driver.pid --log-file=$D/log/driver.log" \
  >$D/log/driver.out 2>&1 &
for _ in $(seq 100); do [ -s $D/plugins/openvswitch.spec ] && break; sleep 0.1; done
echo "driver spec: $(cat $D/plugins/openvswitch.spec)"
in_ns "$BERTH" daemon --host unix://$D/berth.sock --data-root $D/data --exec-root $D/x \
  --config-file /nonexistent --legacy-plugin-dir $D/plugins >$D/log/berth.log 2>&1 &
echo $! >$D/berth.pid
for _ in $(seq 100); do docker version >/dev/null 2>&1 && break; sleep 0.1; done

set -x
docker network create -d openvswitch --subnet 10.200.0.0/24 ovnnet
docker network ls --filter driver=openvswitch
nbctl show
for ns in "${CONSUMERS[@]}"; do
  ip netns add "$ns"
  docker network connect ovnnet "$ns"
  ip netns exec "$ns" ip -br addr
done
docker network inspect -f '{{json .Containers}}' ovnnet
in_ns ovs-vsctl list-ports br-int
nbctl show
for ns in "${CONSUMERS[@]}"; do docker network disconnect ovnnet "$ns"; done
docker network rm ovnnet
set +x
left=$( (nbctl show; in_ns ovs-vsctl list-ports br-int; in_ns ip -br link | grep -v -E '^(lo|ovs-netdev|br-int) ') || true)
if [ -n "$left" ]; then
  echo "try-ovn-docker: left behind:" >&2
  echo "$left" >&2
  exit 1
fi
echo "try-ovn-docker: create, connect, disconnect and remove through berth: OK (nothing left)"
