#!/usr/bin/env python3
"""Authorization benchmark: what a chain of AuthZ plugins costs berth and a private dockerd 20.10,
side by side in one run.

    scripts/bench-authz.sh [--iterations N] [--quick] [--json FILE] [--no-build] [--keep-tmp]
                           [--threads N] [--load-seconds S] [--load-rounds N] [--volumes N]

For chains of 0 (no authorization), 1 and 3 allow-all plugins, on each daemon:

  GET /volumes          GET /v1.41/volumes with --volumes (10) local volumes: latency on one
                        keep-alive connection (alternating which daemon goes first), then
                        requests/s from --threads client threads (own keep-alive connection
                        each) for --load-seconds, --load-rounds rounds per daemon, with the
                        daemon's and the plugins' CPU time per request (utime+stime, /proc)
  create + remove       POST /v1.41/volumes/create {"Name"} (local driver) then
                        DELETE /v1.41/volumes/<name>: latency of the pair

Every request goes through the whole chain twice (AuthZReq, AuthZRes); a create also shows the
plugins its JSON body. The added cost per request is the median with the chain minus the
median without it, per daemon. Targets (issue 11): berth's added cost at most 1/2 of dockerd's,
and berth's requests/s under load with a chain at least 2x dockerd's.

The plugins are the project's test plugin in its AuthZ mode (an optimised build of
src/bin/berth-test-plugin, no call log), run on the host as legacy plugins: the same three
processes answer both daemons. dockerd finds them by spec files
/etc/docker/plugins/<name>.spec (names unique to the run, removed at the end), berth by
--legacy-plugin-dir. The chain is changed as a user would: `authorization-plugins` in each
daemon's configuration file, then SIGHUP; a probe request every plugin refuses
(GET /v1.41/volumes/authz-probe) shows the chain in place before anything is timed.

berth and dockerd (with its own containerd) run on a private temp directory; both are stopped,
the plugins too, and everything is deleted, also on Ctrl-C or failure. Needs root.

Nothing here asserts on a timing: targets are reported, never enforced.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (  # noqa: E402 - the shared benchmark frame and helpers
    API, Bench, BenchError, Berth, Daemon, Dockerd, RawClient, Table, add_options, alternating,
    argument_parser, check, load_options, load_round, loadavg, log, machine_facts,
    parse_options, print_setting, round_options, run_benchmark, summary,
)
from testbed import LegacyAuthzPlugin  # noqa: E402

CHAINS = (0, 1, 3)
PLUGIN_COUNT = max(CHAINS)
PROBE = f"{API}/volumes/authz-probe"
# Targets from the issue.
TARGET_ADDED = 1 / 2     # berth's added cost / dockerd's, medians
TARGET_RPS = 2.0         # berth's requests/s / dockerd's, medians, with a chain

QUICK = {"iterations": 20, "warmup": 3, "load_seconds": 1.0, "load_rounds": 2}
DEFAULTS = {"iterations": 100, "warmup": 10, "load_seconds": 2.0, "load_rounds": 3}
# the plugins' sockets, in the temp directory (berth's --legacy-plugin-dir)
PLUGIN_DIR = "lp"


# --------------------------------------------------------------------------------------------
# Daemons and plugins


class AuthzBerth(Berth):
    """berth finding the plugins in their directory."""

    def argv(self) -> list[str]:
        return super().argv() + ["--legacy-plugin-dir", os.path.join(self.tmp, PLUGIN_DIR)]


def authz_plugins(tmp: str, binary: str) -> list[LegacyAuthzPlugin]:
    """PLUGIN_COUNT allow-all test plugins on `<tmp>/lp/<name>.sock`, each refusing only the
    probe, with names unique to the run (dockerd's spec files are shared by the machine)."""
    names = [f"{os.path.basename(tmp)}-authz{i}" for i in range(PLUGIN_COUNT)]
    return [LegacyAuthzPlugin(binary, name, os.path.join(tmp, PLUGIN_DIR, name + ".sock"),
                              rules="req deny GET /volumes/authz-probe msg=probe")
            for name in names]


def reloads(d: Daemon) -> int:
    try:
        with open(d.log_path, errors="replace") as f:
            return f.read().count("Reloaded configuration")
    except OSError:
        return 0


def set_chain(d: Daemon, names: list[str]) -> None:
    """`authorization-plugins` in the daemon's configuration file, SIGHUP, and the probe to
    show the chain is in place."""
    before = reloads(d)
    with open(d.config_file, "w") as f:
        json.dump({"authorization-plugins": names} if names else {}, f)
    os.kill(d.pid, signal.SIGHUP)
    deadline = time.monotonic() + 30
    while reloads(d) == before:
        if time.monotonic() > deadline or d.proc.poll() is not None:  # type: ignore[union-attr]
            raise BenchError(f"{d.name} did not reload its configuration\n{d.log_tail()}")
        time.sleep(0.02)
    c = RawClient(d.sock)
    try:
        status, payload, _ = c.request("GET", PROBE)
    finally:
        c.close()
    check(d, f"probe with a chain of {len(names)}", status, payload, (403,) if names else (404,))


def empty_chains(daemons: list[Daemon]) -> None:
    """No chain on the daemons still running (best effort)."""
    for d in daemons:
        if d.proc is not None and d.proc.poll() is None:
            try:
                set_chain(d, [])
            except (BenchError, OSError) as e:
                log(f"{d.name}: emptying the chain: {e}")


# --------------------------------------------------------------------------------------------
# Measurements


def create_remove(d: Daemon, c: RawClient, name: str) -> float:
    status, payload, t_create = c.request("POST", f"{API}/volumes/create", {"Name": name})
    check(d, f"volume create {name}", status, payload, (201,))
    status, payload, t_remove = c.request("DELETE", f"{API}/volumes/{name}")
    check(d, f"volume rm {name}", status, payload, (204,))
    return t_create + t_remove


def latencies(daemons: list[Daemon], clients: dict, warmup: int, iterations: int,
              chain: int) -> dict:
    """Per daemon: GET /volumes and create+remove latencies (seconds), alternating order."""
    def both(d: Daemon, i: int) -> tuple[float, float]:
        c = clients[d.name]
        status, payload, t_list = c.request("GET", f"{API}/volumes")
        check(d, "volume ls", status, payload, (200,))
        return t_list, create_remove(d, c, f"c{chain}-{i}")
    rounds = alternating(daemons, warmup, iterations, both)
    return {name: {"list": [t for t, _ in pairs], "create+remove": [t for _, t in pairs]}
            for name, pairs in rounds.items()}


# --------------------------------------------------------------------------------------------
# Main


def main() -> int:
    ap = argument_parser(__doc__, quick="fewer iterations, shorter and fewer load rounds")
    add_options(ap, (
        *round_options("requests", "per daemon and chain"),
        ("--volumes", int, 10, "local volumes GET /volumes lists"),
        *load_options(max_requests=200000),
    ), QUICK, DEFAULTS)
    ap.add_argument("--plugin-bin", help="the test plugin binary (default: berth-test-plugin "
                    "beside --berth-bin, built with it)")
    args = parse_options(ap, QUICK, DEFAULTS)
    if (args.iterations < 1 or args.warmup < 0 or args.volumes < 0 or args.threads < 1
            or args.load_rounds < 1 or args.load_seconds <= 0):
        ap.error("counts must be >= 1 (--warmup, --volumes >= 0), times > 0")
    if args.plugin_bin is None:
        args.plugin_bin = os.path.join(os.path.dirname(args.berth_bin), "berth-test-plugin")
    return run_benchmark("bench-authz", args, bench, daemons=(AuthzBerth, Dockerd))


def bench(run: Bench) -> dict:
    args, daemons = run.args, run.daemons
    plugins = authz_plugins(run.tmp, args.plugin_bin)
    # the daemons' stop and cleanup requests pass the chain: it is emptied first, and the
    # plugins outlive the daemons
    for p in plugins:
        run.after.append(p.stop)
    run.undo.append(lambda: empty_chains(daemons))
    log(f"starting {PLUGIN_COUNT} allow-all authz plugins ({args.plugin_bin})")
    for p in plugins:
        p.start(publish_spec=True)
    run.start_daemons()
    machine = machine_facts()
    versions = run.versions({})
    clients = {d.name: RawClient(d.sock) for d in daemons}
    for d in daemons:
        for i in range(args.volumes):
            status, payload, _ = clients[d.name].request("POST", f"{API}/volumes/create",
                                                         {"Name": f"l{i:02d}"})
            check(d, "volume create", status, payload, (201,))

    timings: dict = {}
    loads: dict = {}
    for chain in CHAINS:
        names = [p.name for p in plugins[:chain]]
        log(f"chain of {chain}: configuration file + SIGHUP on both daemons")
        for d in daemons:
            set_chain(d, names)
        log(f"  {args.warmup} warm-up + {args.iterations} timed GET /volumes and create+remove "
            f"each, then {args.load_rounds} x {args.load_seconds:g} s of GET /volumes from "
            f"{args.threads} threads per daemon")
        timings[chain] = latencies(daemons, clients, args.warmup, args.iterations, chain)
        plugin_pids = [p.proc.pid for p in plugins[:chain]]
        rounds = alternating(daemons, 0, args.load_rounds, lambda d, _i: load_round(
            d, f"{API}/volumes", args.threads, args.load_seconds, args.max_requests,
            plugin_pids))
        loads[chain] = rounds
        log("  median GET /volumes " + ", ".join(
            f"{d.name} {statistics.median(timings[chain][d.name]['list']) * 1000:.3f} ms"
            for d in daemons) + "; median req/s " + ", ".join(
            f"{d.name} {statistics.median(x['rps'] for x in rounds[d.name]):.0f}"
            for d in daemons))
    for c in clients.values():
        c.close()
    machine["loadavg_at_end"] = loadavg()
    return report(args, machine, versions, timings, loads, daemons)


# --------------------------------------------------------------------------------------------
# Report


def report(args, machine, versions, timings, loads, daemons) -> dict:
    b, d = (x.name for x in daemons)
    out: dict = {"machine": machine, "versions": versions,
                 "settings": {k: getattr(args, k) for k in (
                     "iterations", "warmup", "quick", "volumes", "threads", "load_seconds",
                     "load_rounds", "max_requests")},
                 "latency_ms": {}, "added_ms": {}, "throughput": {}}
    print_setting(machine, versions)
    print(f"settings  chains of {', '.join(map(str, CHAINS))} allow-all plugins (the same "
          f"processes for both daemons); {args.iterations} timed requests per daemon and chain "
          f"after {args.warmup} warm-up, alternating order; GET /volumes lists {args.volumes} "
          f"local volumes; throughput {args.threads} threads x {args.load_rounds} rounds x "
          f"{args.load_seconds:g} s")

    width = 30
    table = Table(b, d, width)

    def hdr(title: str, note: str) -> None:
        print(f"\n{title}")
        table.header(note)

    def row(label, bs, ds, prec, target=None, invert=False):
        return table.row(label, bs, ds, 1, prec, target, invert)

    for what, title in (("list", f"GET /volumes ({args.volumes} local volumes)"),
                        ("create+remove", "volume create + remove (local driver)")):
        hdr(f"{title}: latency (ms), one keep-alive connection per daemon",
            f"ratio = {b}/{d} of medians")
        out["latency_ms"][what] = {}
        for chain in CHAINS:
            out["latency_ms"][what][chain] = row(
                f"  chain of {chain}", summary([x * 1000 for x in timings[chain][b][what]]),
                summary([x * 1000 for x in timings[chain][d][what]]), 3)
        print(f"{'  added cost of the chain':<{width}} {b + ' median':>26} {d + ' median':>26}"
              f" {'ratio':>7}  target (added cost {b}/{d})")
        out["added_ms"][what] = {}
        for chain in CHAINS[1:]:
            added = {n: (statistics.median(timings[chain][n][what])
                         - statistics.median(timings[0][n][what])) * 1000 for n in (b, d)}
            ratio = added[b] / added[d] if added[d] > 0 else None
            met = ratio is not None and ratio <= TARGET_ADDED
            shown = "-" if ratio is None else f"{ratio:.3f}"
            print(f"{'    chain of ' + str(chain):<{width}} {added[b]:>26.3f} {added[d]:>26.3f}"
                  f" {shown:>7}  <= 1/{round(1 / TARGET_ADDED)}: {'met' if met else 'NOT met'}")
            out["added_ms"][what][chain] = {**added, "ratio": ratio, "target": TARGET_ADDED,
                                            "target_met": met}

    hdr(f"GET /volumes under load: {args.threads} client threads, {args.load_rounds} rounds of "
        f"{args.load_seconds:g} s per daemon", f"ratio = {b}/{d} of median req/s")
    for chain in CHAINS:
        lb, ld = loads[chain][b], loads[chain][d]
        target = TARGET_RPS if chain else None
        entry = {"rps": row(f"  req/s, chain of {chain}", summary([x["rps"] for x in lb]),
                            summary([x["rps"] for x in ld]), 0, target, invert=True),
                 "rounds": {b: lb, d: ld}}
        for k, label in (("daemon_cpu_ms_per_request", "daemon CPU ms/request"),
                         ("plugin_cpu_ms_per_request", "plugins' CPU ms/request")):
            xs = [x[k] for x in lb if x[k] is not None]
            ys = [x[k] for x in ld if x[k] is not None]
            if xs and ys and (chain or k.startswith("daemon")):
                entry[k] = row(f"    {label}", summary(xs), summary(ys), 3)
        out["throughput"][chain] = entry
    return out


if __name__ == "__main__":
    sys.exit(main())
