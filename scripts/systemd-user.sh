#!/usr/bin/env bash
# Run a command next to a real systemd service manager, on a machine whose PID 1 is not systemd
# (containers, CI sandboxes): a systemd user manager for root, in a private mount namespace.
#
#   scripts/systemd-user.sh COMMAND [ARG...]
#
# Inside COMMAND, `systemctl --user` drives the manager: units are loaded, sockets are listened
# on, services started on activation with LISTEN_FDS and NOTIFY_SOCKET, reloads and stops
# delivered, exactly as the system manager would (the unit files are the package's own, linked
# with `systemctl --user link`). Service output goes to $SYSTEMD_HARNESS_LOG (a file) unless the
# unit says otherwise, since no journal runs. The manager is stopped when COMMAND ends; COMMAND's
# exit status is this script's.
#
# How: the manager refuses to start unless /run/systemd/system exists (sd_booted()), so a
# private tmpfs is mounted on /run/systemd in a new mount namespace (nothing outside sees it),
# and the manager starts in a cgroup of its own below the name=systemd hierarchy so that it
# manages only what it starts. Needs root, util-linux's unshare, and the systemd package.
set -euo pipefail

if [ $# -lt 1 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
fi

if [ "${SYSTEMD_HARNESS_INSIDE:-}" != 1 ]; then
  export SYSTEMD_HARNESS_INSIDE=1
  exec unshare --mount --propagation private "$0" "$@"
fi

work=$(mktemp -d /tmp/sdh.XXXXXX)
export XDG_RUNTIME_DIR=$work/run XDG_CONFIG_HOME=$work/config
export SYSTEMD_HARNESS_LOG=${SYSTEMD_HARNESS_LOG:-$work/services.log}
mkdir -p "$XDG_RUNTIME_DIR" "$XDG_CONFIG_HOME/systemd/user/service.d"
chmod 700 "$XDG_RUNTIME_DIR"
mount -t tmpfs -o mode=755 tmpfs /run/systemd
mkdir -p /run/systemd/system

# Services write where the caller can read it (there is no journal): a drop-in for every
# service unit.
cat >"$XDG_CONFIG_HOME/systemd/user/service.d/harness-log.conf" <<EOF
[Service]
StandardOutput=append:$SYSTEMD_HARNESS_LOG
StandardError=append:$SYSTEMD_HARNESS_LOG
EOF

cgroup=""
if [ -d /sys/fs/cgroup/systemd ]; then
  cgroup=/sys/fs/cgroup/systemd/systemd-harness-$$
elif [ -f /sys/fs/cgroup/cgroup.procs ]; then
  cgroup=/sys/fs/cgroup/systemd-harness-$$
fi

manager_pid=""
cleanup() {
  local status=$?
  if [ -n "$manager_pid" ]; then
    kill -TERM "$manager_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$manager_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$manager_pid" 2>/dev/null || true
    wait "$manager_pid" 2>/dev/null || true
  fi
  if [ -n "$cgroup" ] && [ -d "$cgroup" ]; then
    # Deepest first; only empty cgroups can be removed.
    find "$cgroup" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  fi
  umount /run/systemd 2>/dev/null || true
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

# The manager starts in a cgroup of its own (a subshell moves itself there, then execs).
(
  if [ -n "$cgroup" ]; then
    mkdir -p "$cgroup"
    echo "$BASHPID" >"$cgroup/cgroup.procs"
  fi
  exec /lib/systemd/systemd --user --log-target=console --log-level=warning
) >>"$work/manager.log" 2>&1 &
manager_pid=$!

for _ in $(seq 200); do
  if systemctl --user is-system-running >/dev/null 2>&1; then break; fi
  state=$(systemctl --user is-system-running 2>/dev/null || true)
  case "$state" in running | degraded) break ;; esac
  kill -0 "$manager_pid" 2>/dev/null || { cat "$work/manager.log" >&2; exit 1; }
  sleep 0.05
done

"$@"
