#!/usr/bin/env bash
# The Debian package, end to end: build it with cargo-deb, install it with apt, run the
# installed units under a real systemd (scripts/systemd-user.sh: this machine's PID 1 need not
# be systemd), use the service as the README says, purge it, and check that nothing is left
# but what the package's policy keeps (/var/lib/berth and the docker group).
#
#   scripts/test-package.sh
#
# Needs root, cargo-deb (`cargo install cargo-deb --locked`; scripts/test.sh installs it), the
# docker CLI and curl. Reuses target/release when it is up to date. Refuses to run when a berth
# package is installed already or /run/berth/berth.sock answers (it would replace them).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

step() { printf '\n== %s\n' "$*"; }
fail() { echo "test-package: FAILED: $*" >&2; exit 1; }

if dpkg-query -W -f='${Status}' berth 2>/dev/null | grep -q 'install ok'; then
  fail "a berth package is installed already; remove it first"
fi
if curl -s --max-time 2 --unix-socket /run/berth/berth.sock http://x/_ping >/dev/null 2>&1; then
  fail "something already serves /run/berth/berth.sock"
fi
var_lib_existed=0
[ -e /var/lib/berth ] && var_lib_existed=1

step "cargo deb"
cargo deb --quiet
deb=$(ls -t target/debian/berth_*.deb | head -1)
dpkg-deb --info "$deb" | sed -n '/Package:/,/Description:/p'
dpkg-deb --contents "$deb" | awk '{print $6}'

step "apt-get install $deb"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$REPO/$deb" >/dev/null
purged=0
purge() {
  if [ "$purged" = 0 ]; then
    purged=1
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq berth >/dev/null || true
  fi
}
trap purge EXIT
for f in /usr/bin/berth /lib/systemd/system/berth.service /lib/systemd/system/berth.socket \
         /etc/berth/daemon.json /usr/share/doc/berth/README.md; do
  [ -e "$f" ] || fail "$f not installed"
done
getent group docker >/dev/null || fail "no docker group after install"
[ -d /var/lib/berth ] || fail "/var/lib/berth not created"
/usr/bin/berth version

step "the installed units under systemd"
cat >"$REPO/target/package-walkthrough.sh" <<'EOF'
set -euo pipefail
systemctl --user link /lib/systemd/system/berth.socket /lib/systemd/system/berth.service
# As the README says it: the socket first, berth starts on first use.
systemctl --user enable --now berth.socket
systemctl --user is-active berth.socket
[ "$(systemctl --user is-active berth.service || true)" = inactive ]
export DOCKER_HOST=unix:///run/berth/berth.sock
docker plugin ls
# Type=notify: active means plugins were restored and the API answered.
[ "$(systemctl --user is-active berth.service)" = active ]
stat -c '%a %G' /run/berth/berth.sock | grep -qx '660 docker'
docker volume create pkgvol >/dev/null
docker volume ls --format '{{.Name}}' | grep -qx pkgvol
curl -s --unix-socket /run/berth/metrics.sock http://x/metrics >"$SYSTEMD_HARNESS_LOG.metrics"
grep -q '^berth_api_requests_total{method="POST",route="/volumes/create",status="201"} 1$' \
  "$SYSTEMD_HARNESS_LOG.metrics"
grep -q '^berth_volumes{driver="local"} 1$' "$SYSTEMD_HARNESS_LOG.metrics"
systemctl --user reload berth.service
grep -q 'Got signal to reload configuration' "$SYSTEMD_HARNESS_LOG"
docker volume rm pkgvol >/dev/null
systemctl --user stop berth.service berth.socket
grep -q 'daemon stopped' "$SYSTEMD_HARNESS_LOG"
echo "service log:"; sed 's/^/  /' "$SYSTEMD_HARNESS_LOG"
EOF
scripts/systemd-user.sh bash "$REPO/target/package-walkthrough.sh"

step "apt-get purge berth"
purge
for f in /usr/bin/berth /lib/systemd/system/berth.service /lib/systemd/system/berth.socket \
         /etc/berth /usr/share/doc/berth /run/berth; do
  [ ! -e "$f" ] || fail "$f is still there after purge"
done
if dpkg-query -W berth >/dev/null 2>&1 && dpkg-query -W -f='${Status}' berth | grep -vq 'not-installed'; then
  fail "dpkg still knows berth: $(dpkg-query -W -f='${Status}' berth)"
fi
# What the policy keeps: the state (plugins, volumes) and the shared docker group.
[ -d /var/lib/berth ] || fail "/var/lib/berth should be kept by a purge"
getent group docker >/dev/null || fail "the docker group should be kept"
if [ "$var_lib_existed" = 0 ]; then rm -rf /var/lib/berth; fi
echo "test-package: 1 passed, 0 failed"
