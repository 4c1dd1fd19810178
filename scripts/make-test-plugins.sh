#!/usr/bin/env bash
# Build managed-plugin directories (config.json + rootfs/) for berth's runtime and volume tests,
# from Debian-packaged binaries and the in-tree test plugin. No network access is needed.
#
#   scripts/make-test-plugins.sh OUTDIR [NAME...]
#
# NAME is any of (default: all):
#   testdriver             src/bin/berth-test-plugin/ as an unprivileged volume plugin
#                          (socket testdriver.sock, PropagatedMount /data, every TEST_* knob as a
#                          settable Env entry, settable Args)
#   testdriver-privileged  the same binary with CAP_SYS_ADMIN and device /dev/fuse
#   netdriver              the same binary as a network and IPAM plugin (types
#                          docker.networkdriver/1.0 and docker.ipamdriver/1.0, socket
#                          netdriver.sock, host network and CAP_NET_ADMIN so that TEST_NET_VETH=1
#                          makes veth pairs where the daemon finds them, PropagatedMount /data)
#   authz                  the same binary as an authorization plugin (docker.authz/1.0, socket
#                          authz.sock): settable TEST_AUTHZ_RULES, TEST_AUTHZ_LOG (default
#                          /tmp/authz.log, i.e. <rootfs>/tmp/authz.log on the host),
#                          TEST_SLOW_CALL_MS, TEST_HANG_ON
#   metrics-collector      the same binary as a MetricsCollector plugin (and volume driver): after
#                          StartMetrics it scrapes the daemon's metrics socket (bound at
#                          /run/docker/metrics.sock inside) and keeps the last scrape in
#                          /data/metrics.txt (the propagated mount)
#   rclone                 Debian's rclone with rclone's published managed-plugin config.json
#                          (cmd/serve/docker/contrib/plugin/config.json, verbatim): `rclone serve
#                          docker`, rclone.sock, CAP_SYS_ADMIN, /dev/fuse, host network, settable
#                          mounts config/cache, PropagatedMount /mnt
#   rclone-noprivs         rclone without any privilege: no capabilities, no devices, private
#                          network, no mounts (config/cache live in the rootfs). It still starts
#                          and answers Plugin.Activate, Capabilities, List, Create, Get, Path and
#                          Remove (volume records only; a remote is validated, not contacted);
#                          Mount fails because FUSE is unavailable.
#
# Each OUTDIR/NAME is deleted and rebuilt on every run.
#
# Environment:
#   BERTH_TEST_PLUGIN_BIN   use this berth-test-plugin binary instead of building one
#   BERTH_TEST_PLUGIN_OPTIMIZE=1  build the test plugin optimised (the benchmarks: an
#                           unoptimised plugin spends more time per call than either daemon)
#                           (a dynamic binary gets its shared libraries copied, found with ldd)
#   BERTH_RCLONE_STATE_DIR  host directory whose config/ and cache/ subdirectories (created here)
#                           become the Source of rclone's `config` and `cache` mounts, instead of
#                           rclone's defaults /var/lib/docker-plugins/rclone/{config,cache}
#                           (which this script never creates; `docker plugin set
#                           config.source=... cache.source=...` changes them too)
#
# Needs: cargo (for the test plugin); for the rclone plugins the Debian packages rclone and fuse3.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  usage >&2
  exit 2
fi
OUTDIR=$1
shift
ALL=(testdriver testdriver-privileged netdriver metrics-collector authz rclone rclone-noprivs)
if [ $# -gt 0 ]; then NAMES=("$@"); else NAMES=("${ALL[@]}"); fi
for n in "${NAMES[@]}"; do
  case " ${ALL[*]} " in
    *" $n "*) ;;
    *) echo "make-test-plugins: unknown plugin $n (known: ${ALL[*]})" >&2; exit 2 ;;
  esac
done
want() { case " ${NAMES[*]} " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)

# --- prerequisites ---------------------------------------------------------------------------
if want rclone || want rclone-noprivs; then
  missing=()
  command -v rclone >/dev/null 2>&1 || missing+=(rclone)
  command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "make-test-plugins: missing ${missing[*]}; install with: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  if ! rclone serve docker --help >/dev/null 2>&1; then
    echo "make-test-plugins: $(command -v rclone) has no 'serve docker' (need rclone >= 1.56)" >&2
    exit 1
  fi
fi

# --- helpers ---------------------------------------------------------------------------------

# copy_libs ROOTFS BINARY: copy the shared libraries BINARY needs (per ldd), at their host paths.
copy_libs() {
  local rootfs=$1 bin=$2 out lib
  out=$(ldd "$bin" 2>&1) || return 0 # "not a dynamic executable": nothing to copy
  case "$out" in *"statically linked"*) return 0 ;; esac
  while read -r lib; do
    [ -n "$lib" ] || continue
    [ -e "$rootfs$lib" ] && continue
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done < <(printf '%s\n' "$out" | awk '
    $2 == "=>" && $3 ~ /^\// { print $3; next }
    $1 ~ /^\// { print $1 }')
}

# install_bin ROOTFS SRC DEST: copy an executable into the rootfs with its libraries.
install_bin() {
  local rootfs=$1 src=$2 dest=$3
  mkdir -p "$rootfs$(dirname "$dest")"
  cp --reflink=auto -L "$src" "$rootfs$dest"
  chmod 0755 "$rootfs$dest"
  copy_libs "$rootfs" "$src"
}

# skeleton ROOTFS: the directories and files every plugin rootfs gets.
skeleton() {
  local rootfs=$1
  mkdir -p "$rootfs"/{dev,proc,sys,etc,root,run/docker/plugins,tmp,mnt,data}
  chmod 1777 "$rootfs/tmp"
  chmod 0700 "$rootfs/root"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' \
    >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
  ln -sfn /proc/mounts "$rootfs/etc/mtab"
}

# fresh NAME: delete and recreate OUTDIR/NAME; prints its rootfs path.
fresh() {
  rm -rf "${OUTDIR:?}/$1"
  mkdir -p "$OUTDIR/$1/rootfs"
  echo "$OUTDIR/$1/rootfs"
}

report() {
  local dir=$OUTDIR/$1
  printf 'built %-40s rootfs %s\n' "$dir" "$(du -sh "$dir/rootfs" | cut -f1)"
}

# --- the test plugin binary ------------------------------------------------------------------
TEST_BIN=
test_plugin_bin() {
  [ -n "$TEST_BIN" ] && return 0
  if [ -n "${BERTH_TEST_PLUGIN_BIN:-}" ]; then
    [ -x "$BERTH_TEST_PLUGIN_BIN" ] || {
      echo "make-test-plugins: BERTH_TEST_PLUGIN_BIN=$BERTH_TEST_PLUGIN_BIN is not executable" >&2
      exit 1
    }
    TEST_BIN=$BERTH_TEST_PLUGIN_BIN
    return 0
  fi
  # A static, stripped, unoptimised build in its own target dir: static glibc needs nothing in
  # the rootfs, and skipping optimisation halves the first build (the berth library comes along).
  local triple=x86_64-unknown-linux-gnu profile=test-plugin inherits=dev
  if [ "${BERTH_TEST_PLUGIN_OPTIMIZE:-}" = 1 ]; then
    profile=test-plugin-opt inherits=release
  fi
  if (cd "$REPO" && RUSTFLAGS='-C target-feature=+crt-static' cargo build -q \
    --bin berth-test-plugin --target "$triple" --target-dir target/static \
    --config "profile.$profile.inherits=\"$inherits\"" --config "profile.$profile.debug=0" \
    --config "profile.$profile.strip=true" --profile "$profile") >&2; then
    TEST_BIN=$REPO/target/static/$triple/$profile/berth-test-plugin
  else
    echo "make-test-plugins: static build failed; using a dynamic release build" >&2
    (cd "$REPO" && cargo build -q --release --bin berth-test-plugin) >&2
    TEST_BIN=$REPO/target/release/berth-test-plugin
  fi
}

# testdriver_config PRIVILEGED(0|1|net) [TYPES]
testdriver_config() {
  local linux types=${2:-'"docker.volumedriver/1.0"'} socket=testdriver.sock network='' description=volume
  if [ "$1" = net ]; then
    linux='{"AllowAllDevices": false, "Capabilities": ["CAP_NET_ADMIN"], "Devices": null}'
    types='"docker.networkdriver/1.0", "docker.ipamdriver/1.0"'
    socket=netdriver.sock
    network=host
    description=network
  elif [ "$1" = 1 ]; then
    linux='{
    "AllowAllDevices": false,
    "Capabilities": ["CAP_SYS_ADMIN"],
    "Devices": [{"Description": "FUSE", "Name": "fuse", "Path": "/dev/fuse", "Settable": ["path"]}]
  }'
  else
    linux='{"AllowAllDevices": false, "Capabilities": null, "Devices": null}'
  fi
  local env='' name value desc
  while IFS='|' read -r name value desc; do
    [ -n "$name" ] || continue
    # The socket the plugin makes must be the one its Interface names.
    [ "$name" = TEST_SOCKET ] && [ "$socket" != testdriver.sock ] && value="\"$socket\""
    [ -n "$env" ] && env+=$',\n'
    env+="    {\"Description\": \"$desc\", \"Name\": \"$name\", \"Settable\": [\"value\"], \"Value\": $value}"
  done <<'EOF'
TEST_ROOT|"/data"|directory holding the volume directories (Mountpoint root)
TEST_SOCKET|null|socket file name in /run/docker/plugins (default testdriver.sock)
TEST_START_DELAY_MS|null|sleep this long before listening
TEST_CRASH_AFTER_MS|null|exit with status 3 this long after start
TEST_NEVER_LISTEN|null|1: never create the socket
TEST_STDERR_LINES|null|print N numbered lines to stderr at start
TEST_REPORT|null|1: print capabilities, pid, hostname, uid, cwd and args to stdout at start
TEST_TRY_MOUNT|null|mount a tmpfs on this directory at start and print the result
TEST_OPEN_DEVICE|null|open this path read-write at start and print the result
TEST_MKNOD_FUSE|null|mknod c 10:229 at this path, open it, print the results
TEST_SLOW_CALL_MS|null|delay every RPC answer
TEST_HANG_ON|null|never answer these methods (comma list; VolumeDriver.List, List or *)
TEST_IGNORE_SIGTERM|null|1: ignore SIGTERM
TEST_IMPLEMENTS|null|Plugin.Activate Implements list (comma list, default VolumeDriver)
TEST_SCOPE|null|VolumeDriver.Capabilities scope (default local)
TEST_GET_NULL|null|1: Get of an unknown volume answers Volume null instead of an error
TEST_CALL_LOG|null|append one line per RPC to this file (- for stdout)
TEST_FAIL_ON|null|network/IPAM methods answering 500 (comma list; NetworkDriver.Join or Join)
TEST_NET_SCOPE|null|NetworkDriver.GetCapabilities scope (default local)
TEST_NET_VETH|null|1: Join makes a veth pair and answers its name
TEST_NET_PREFIX|null|Join DstPrefix (default eth)
TEST_NET_ROUTES|null|Join StaticRoutes (dest>nexthop or dest, comma list)
TEST_NET_MAC|null|CreateEndpoint answers this MacAddress
TEST_NET_ADDRESS|null|CreateEndpoint answers this Address
TEST_NET_NO_EXT|null|1: external connectivity calls answer 404
TEST_SCRAPE_INTERVAL_MS|null|MetricsCollector mode: between scrapes of the metrics socket (default 100)
EOF
  cat <<EOF
{
  "Args": {"Description": "TEST_X=value arguments override the environment", "Name": "args", "Settable": ["value"], "Value": []},
  "Description": "berth test $description plugin",
  "Documentation": "src/bin/berth-test-plugin/",
  "Entrypoint": ["/berth-test-plugin"],
  "Env": [
$env
  ],
  "Interface": {"Socket": "$socket", "Types": [$types]},
  "IpcHost": false,
  "Linux": $linux,
  "Mounts": null,
  "Network": {"Type": "$network"},
  "PidHost": false,
  "PropagatedMount": "/data",
  "User": {},
  "WorkDir": ""
}
EOF
}

# build_testdriver NAME PRIVILEGED(0|1) [TYPES]
build_testdriver() {
  local name=$1 privileged=$2 types=${3:-} rootfs
  test_plugin_bin
  rootfs=$(fresh "$name")
  skeleton "$rootfs"
  install_bin "$rootfs" "$TEST_BIN" /berth-test-plugin
  testdriver_config "$privileged" "$types" >"$OUTDIR/$name/config.json"
  report "$name"
}

# authz_config: the test plugin as an authorization plugin.
authz_config() {
  cat <<'EOF'
{
  "Args": {"Description": "TEST_X=value arguments override the environment", "Name": "args", "Settable": ["value"], "Value": []},
  "Description": "berth test authorization plugin",
  "Documentation": "src/bin/berth-test-plugin/authz.rs",
  "Entrypoint": ["/berth-test-plugin"],
  "Env": [
    {"Description": "socket file name in /run/docker/plugins", "Name": "TEST_SOCKET", "Value": "authz.sock"},
    {"Description": "AuthZ rules (see berth-test-plugin --help)", "Name": "TEST_AUTHZ_RULES", "Settable": ["value"], "Value": ""},
    {"Description": "where every AuthZ call is logged", "Name": "TEST_AUTHZ_LOG", "Settable": ["value"], "Value": "/tmp/authz.log"},
    {"Description": "delay every RPC answer", "Name": "TEST_SLOW_CALL_MS", "Settable": ["value"], "Value": null},
    {"Description": "never answer these methods", "Name": "TEST_HANG_ON", "Settable": ["value"], "Value": null}
  ],
  "Interface": {"Socket": "authz.sock", "Types": ["docker.authz/1.0"]},
  "Linux": {"AllowAllDevices": false, "Capabilities": null, "Devices": null},
  "Mounts": null,
  "Network": {"Type": ""},
  "User": {},
  "WorkDir": ""
}
EOF
}

build_authz() {
  local rootfs
  test_plugin_bin
  rootfs=$(fresh authz)
  skeleton "$rootfs"
  install_bin "$rootfs" "$TEST_BIN" /berth-test-plugin
  authz_config >"$OUTDIR/authz/config.json"
  report authz
}

# --- rclone ----------------------------------------------------------------------------------

# rclone_config PRIVILEGED(0|1) CONFIG_SOURCE CACHE_SOURCE
# PRIVILEGED=1 is rclone's published config.json verbatim apart from the mount sources.
rclone_config() {
  local linux network mounts
  if [ "$1" = 1 ]; then
    linux='"linux": {
        "capabilities": [
            "CAP_SYS_ADMIN"
        ],
        "devices": [
            {
                "path": "/dev/fuse"
            }
        ]
    },
    "network": {
        "type": "host"
    },
    '
    mounts=',
    "mounts": [
        {
            "name": "config",
            "source": "'"$2"'",
            "destination": "/data/config",
            "type": "bind",
            "options": ["rbind"],
            "settable": ["source"]
        },
        {
            "name": "cache",
            "source": "'"$3"'",
            "destination": "/data/cache",
            "type": "bind",
            "options": ["rbind"],
            "settable": ["source"]
        }
    ]'
  else
    linux=''
    mounts=''
  fi
  local description="Rclone volume plugin for Docker"
  [ "$1" = 1 ] || description="Rclone volume plugin for Docker (no privileges)"
  cat <<EOF
{
    "description": "$description",
    "documentation": "https://rclone.org/",
    "interface": {
        "socket": "rclone.sock",
        "types": ["docker.volumedriver/1.0"]
    },
    $linux"entrypoint": ["/usr/local/bin/rclone", "serve", "docker"],
    "workdir": "/data",
    "args": {
        "name": "args",
        "value": [],
        "settable": ["value"]
    },
    "env": [
        {
            "name": "RCLONE_VERBOSE",
            "value": "0",
            "settable": ["value"]
        },
        {
            "name": "RCLONE_CONFIG",
            "value": "/data/config/rclone.conf"
        },
        {
            "name": "RCLONE_CACHE_DIR",
            "value": "/data/cache"
        },
        {
            "name": "RCLONE_BASE_DIR",
            "value": "/mnt"
        },
        {
            "name": "HTTP_PROXY",
            "value": "",
            "settable": ["value"]
        },
        {
            "name": "HTTPS_PROXY",
            "value": "",
            "settable": ["value"]
        },
        {
            "name": "NO_PROXY",
            "value": "",
            "settable": ["value"]
        }
    ]$mounts,
    "propagatedMount": "/mnt"
}
EOF
}

build_rclone() {
  local name=$1 privileged=$2 rootfs conf_src cache_src
  rootfs=$(fresh "$name")
  skeleton "$rootfs"
  mkdir -p "$rootfs"/data/{config,cache} "$rootfs/usr/bin"
  # rclone's plugin image has it at /usr/local/bin/rclone (its entrypoint); /usr/bin too.
  install_bin "$rootfs" "$(command -v rclone)" /usr/local/bin/rclone
  ln -sfn ../local/bin/rclone "$rootfs/usr/bin/rclone"
  # rclone mounts by running `fusermount` (found on PATH); fuse3 provides fusermount3.
  install_bin "$rootfs" "$(command -v fusermount3)" /usr/bin/fusermount3
  ln -sfn fusermount3 "$rootfs/usr/bin/fusermount"
  [ -f /etc/fuse.conf ] && cp /etc/fuse.conf "$rootfs/etc/fuse.conf"
  if [ -n "${BERTH_RCLONE_STATE_DIR:-}" ]; then
    mkdir -p "$BERTH_RCLONE_STATE_DIR"/{config,cache}
    conf_src=$(cd "$BERTH_RCLONE_STATE_DIR/config" && pwd)
    cache_src=$(cd "$BERTH_RCLONE_STATE_DIR/cache" && pwd)
  else
    conf_src=/var/lib/docker-plugins/rclone/config
    cache_src=/var/lib/docker-plugins/rclone/cache
  fi
  rclone_config "$privileged" "$conf_src" "$cache_src" >"$OUTDIR/$name/config.json"
  report "$name"
}

# --- main ------------------------------------------------------------------------------------
want testdriver && build_testdriver testdriver 0
want testdriver-privileged && build_testdriver testdriver-privileged 1
want netdriver && build_testdriver netdriver net
want authz && build_authz
want metrics-collector &&
  build_testdriver metrics-collector 0 '"docker.volumedriver/1.0", "docker.metricscollector/1.0"'
want rclone && build_rclone rclone 1
want rclone-noprivs && build_rclone rclone-noprivs 0
exit 0
