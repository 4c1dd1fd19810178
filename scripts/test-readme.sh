#!/usr/bin/env bash
# The README as a test: every ```sh block of README.md, in order, run as one bash script from
# the repository root (errors stop it: `set -euo pipefail`), the way a newcomer types them.
#
#   scripts/test-readme.sh [README]
#
# A block directly preceded by `<!-- not run by scripts/test-readme.sh: REASON -->` is left
# out (the command that runs this test, the one that runs berth in the foreground, the steps
# that need systemd as PID 1, which scripts/test-package.sh runs under a user manager instead).
# The walkthrough keeps its files under /tmp/b, which is emptied first; background jobs it
# started (berth, a registry) are stopped at the end, whatever happened. Needs what
# scripts/test.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
README=${1:-README.md}
script=target/readme-walkthrough.sh
mkdir -p target

awk -v readme="$README" '
  BEGIN { skip = 0; inblock = 0; n = 0 }
  /^<!-- not run by scripts\/test-readme.sh:/ { skip = 1; next }
  inblock && /^```/ { inblock = 0; skip = 0; next }
  inblock { if (!skip) print; next }
  /^```sh[[:space:]]*$/ {
    inblock = 1
    if (!skip) { n++; printf "\necho \"### %s line %d (block %d)\" >&2\n", readme, NR, n }
    next
  }
  /^[[:space:]]*$/ { next }
  { skip = 0 }
' "$README" >"$script.body"

blocks=$(grep -c '^echo "### ' "$script.body" || true)
[ "$blocks" -gt 0 ] || { echo "test-readme: no runnable block in $README" >&2; exit 1; }

{
  echo 'set -euo pipefail'
  echo 'stop_jobs() { local j; j=$(jobs -p); [ -z "$j" ] || { kill $j 2>/dev/null; wait $j 2>/dev/null; } || true; }'
  echo 'trap stop_jobs EXIT'
  cat "$script.body"
} >"$script"
rm -f "$script.body"

# A clean /tmp/b: unmount what a crashed earlier run may have left mounted below it.
if [ -d /tmp/b ]; then
  findmnt -rn -o TARGET | grep '^/tmp/b/' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf /tmp/b
fi

# What the walkthrough makes on the host beside /tmp/b (network namespaces, the bridges berth
# made, alias berth:<network id>) is removed after it, also when a block failed half-way.
netns_names() { ip netns list 2>/dev/null | awk '{print $1}' | sort; }
berth_bridges() {
  ip -d -o link show type bridge 2>/dev/null |
    awk '/alias berth:/ { sub(":$", "", $2); sub("@.*", "", $2); print $2 }' | sort
}
netns_before=$(netns_names)
bridges_before=$(berth_bridges)
host_cleanup() {
  comm -13 <(echo "$netns_before") <(netns_names) | xargs -r -n1 ip netns del 2>/dev/null || true
  comm -13 <(echo "$bridges_before") <(berth_bridges) | xargs -r -n1 ip link del 2>/dev/null || true
}
trap host_cleanup EXIT

echo "test-readme: running $blocks blocks of $README ($script)"
started=$(date +%s)
if bash "$script"; then
  echo "test-readme: all $blocks blocks ran in $(($(date +%s) - started)) s"
  echo "1 passed, 0 failed"
else
  status=$?
  echo "test-readme: FAILED (exit $status); the last '### line' above is the failing block" >&2
  [ -f /tmp/b/berth.log ] && tail -30 /tmp/b/berth.log >&2
  echo "0 passed, 1 failed"
  exit 1
fi
