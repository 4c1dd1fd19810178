#!/usr/bin/env python3
"""Runtime benchmark: berth against a private dockerd 20.10, side by side in one run.

    scripts/bench-runtime.sh [--iterations N] [--warmup N] [--plugins N] [--idle S]
                             [--json FILE] [--no-build] [--keep-tmp] [--show-procs]

Measures the daemons, not the CLI: every timed request is raw HTTP on the daemon's unix socket.

  enable -> socket ready  from sending POST /v1.41/plugins/<name>/enable?timeout=30 until a
                          connect() to the plugin's socket succeeds (polled right after the
                          enable response arrives; the socket is berth's
                          <exec-root>/plugins/<id>/<socket>, dockerd's
                          /run/docker/plugins/<id>/<socket>)
  enable response         from sending enable until its response arrived (informational)
  disable                 from sending POST /v1.41/plugins/<name>/disable until its response
  enable+disable cycle    from sending enable until the disable response (socket polled between)
  idle RSS                VmRSS (/proc/<pid>/status) of the daemon with 1 and N plugins enabled,
                          sampled after the system was idle for --idle seconds; also the daemon
                          with its runtime helpers (berth: its `plugin-init` children; dockerd:
                          containerd and the containerd shims) and the plugins' own RSS.

Setup: `cargo build --release` (skip with --no-build), scripts/make-test-plugins.sh testdriver,
--plugins unique copies of it (bench/p0..), created on both daemons with the stock docker CLI.
berth and dockerd run on private temp directories; both are stopped, and everything mounted
below the temp directory is unmounted, before it is deleted, also on Ctrl-C or failure.
Cycles alternate which daemon goes first, after --warmup cycles each. Needs root.

Nothing here asserts on a timing: targets are reported, never enforced.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (  # noqa: E402 - the shared benchmark helpers
    add_run_options,
    build_berth,
    unwind_on_signals,
    DOCKER_CLI, REPO, BenchError, Berth, Daemon, Dockerd, cleanup, cpu_model, finish, fmt3,
    log, mem_kb, mem_total, proc_table, run_cmd_out, run_then_unwind, sample_rss, summary,
)


# Targets from the issue: berth / dockerd of medians at most this.
TARGET_ENABLE = 1 / 5
TARGET_RSS = 1 / 4


# --------------------------------------------------------------------------------------------
# Benchmark


def make_plugin_dirs(tmp: str, count: int) -> list[str]:
    base = os.path.join(tmp, "plugins")
    log("building the testdriver plugin directory (scripts/make-test-plugins.sh)")
    r = subprocess.run([os.path.join(REPO, "scripts", "make-test-plugins.sh"), base,
                        "testdriver"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if r.returncode != 0:
        raise BenchError(f"make-test-plugins.sh failed:\n{r.stdout}")
    src = os.path.join(base, "testdriver")
    dirs = []
    for i in range(count):
        d = os.path.join(base, f"p{i}")
        shutil.copytree(src, d, symlinks=True)
        # dockerd 20.10 refuses a second plugin whose rootfs blob is byte-identical
        # ("content sha256:... already exists"): one distinct file per copy
        with open(os.path.join(d, "rootfs", "etc", "bench-copy"), "w") as f:
            f.write(f"bench plugin copy {i}\n")
        dirs.append(d)
    return dirs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--iterations", type=int, default=20, help="timed enable/disable cycles "
                    "per daemon (default 20)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed cycles first (default 2)")
    ap.add_argument("--plugins", type=int, default=10, help="plugins enabled for the second "
                    "RSS figure (default 10)")
    ap.add_argument("--idle", type=float, default=2.0, help="idle seconds before RSS is "
                    "sampled (default 2)")
    ap.add_argument("--rss-samples", type=int, default=5, help="RSS samples, 0.5 s apart "
                    "(default 5)")
    add_run_options(ap)
    ap.add_argument("--show-procs", action="store_true", help="print the process trees "
                    "with all plugins enabled")
    args = ap.parse_args()
    if args.iterations < 1 or args.plugins < 1 or args.warmup < 0:
        ap.error("--iterations and --plugins must be >= 1, --warmup >= 0")
    if os.geteuid() != 0:
        print("bench-runtime: needs root (both daemons run plugins in namespaces)",
              file=sys.stderr)
        return 2
    dockerd_bin = shutil.which(args.dockerd_bin)
    if not dockerd_bin:
        print(f"bench-runtime: {args.dockerd_bin} not found", file=sys.stderr)
        return 2
    if not shutil.which(DOCKER_CLI):
        print(f"bench-runtime: the docker CLI ({DOCKER_CLI}) is not installed", file=sys.stderr)
        return 2

    started = time.monotonic()
    unwind_on_signals()
    stop = build_berth("bench-runtime", args.no_build, args.berth_bin)
    if stop is not None:
        return stop

    # short: plugin sockets live several levels below the exec roots (108-byte limit)
    tmp = tempfile.mkdtemp(prefix="b", dir="/tmp")
    berth = Berth(tmp, args.berth_bin)
    dockerd = Dockerd(tmp, dockerd_bin)
    daemons: list[Daemon] = [berth, dockerd]

    def unwind(outcome: str) -> None:
        cleanup(args, tmp, daemons, dockerd, keep=args.keep_tmp or outcome == "error")

    outcome, results = run_then_unwind(
        lambda: bench(args, tmp, berth, dockerd, daemons, dockerd_bin, started), unwind)
    return finish(outcome, results, started, args.json,
                  f"{'' if args.no_build else 'cargo build, '}setup, cycles, RSS, cleanup")


def bench(args, tmp: str, berth: Berth, dockerd: Dockerd, daemons: list[Daemon],
          dockerd_bin: str, started: float) -> dict:
    names = [f"bench/p{i}:latest" for i in range(args.plugins)]
    dirs = make_plugin_dirs(tmp, args.plugins)

    log(f"starting berth and a private dockerd in {tmp}")
    berth.start()
    dockerd.start()
    for d in daemons:
        d.remember(sum(d.processes().values(), []))

    machine = {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu": cpu_model(),
               "memory": mem_total()}
    versions = {
        "berth": run_cmd_out([berth.binary, "--version"]),
        "dockerd": run_cmd_out([dockerd_bin, "--version"]),
        "containerd": run_cmd_out(["containerd", "--version"]),
        "runc": run_cmd_out(["runc", "--version"]),
        "docker CLI": run_cmd_out([DOCKER_CLI, "--version"]),
        "python": platform.python_version(),
    }
    for d in daemons:
        v = d.api("GET", "/version")
        versions[f"{d.name} /version"] = f"{v.get('Version')} (API {v.get('ApiVersion')})"

    log(f"creating {len(names)} plugins on each daemon with the docker CLI")
    for d in daemons:
        for name, pdir in zip(names, dirs):
            d.docker("plugin", "create", name, pdir)
        d.load_plugins()
        missing = [n for n in names if n not in d.plugins]
        if missing:
            raise BenchError(f"{d.name}: created plugins not listed: {missing}")
        for n in names:
            if len(d.socket_path(n).encode()) > 107:
                raise BenchError(f"{d.name}: plugin socket path too long: {d.socket_path(n)}")

    # -- enable/disable cycles ------------------------------------------------------------
    cyc = names[0]
    timings = {d.name: {"ready": [], "response": [], "disable": [], "cycle": [],
                        "ready_at_response": 0, "polls": []} for d in daemons}
    total = args.warmup + args.iterations
    log(f"{args.warmup} warm-up + {args.iterations} timed enable/disable cycles of {cyc}, "
        "alternating which daemon goes first")
    for i in range(total):
        order = daemons if i % 2 == 0 else daemons[::-1]
        for d in order:
            e = d.enable(cyc)
            x = d.disable(cyc)
            if i < args.warmup:
                continue
            t = timings[d.name]
            t["ready"].append(e["ready"])
            t["response"].append(e["response"])
            t["disable"].append(x["response"])
            t["cycle"].append(x["t1"] - e["t0"])
            t["ready_at_response"] += int(e["ready_at_response"])
            t["polls"].append(e["polls"])
        if i >= args.warmup and ((i - args.warmup + 1) % 5 == 0 or i == total - 1):
            log(f"  cycle {i - args.warmup + 1}/{args.iterations}: " + ", ".join(
                f"{d.name} ready {timings[d.name]['ready'][-1] * 1000:.1f} ms"
                for d in daemons))

    # -- idle RSS -----------------------------------------------------------------------------
    rss: dict = {}
    for count in sorted({0, 1, args.plugins}):
        for d in daemons:
            want = set(names[:count])
            for n in names[:count]:
                if n not in d.enabled():
                    d.enable(n)
            if set(d.enabled()) != want:
                raise BenchError(f"{d.name}: enabled plugins {d.enabled()}, expected {want}")
        log(f"{count} plugin(s) enabled on each daemon; idle {args.idle:.1f} s, then "
            f"{args.rss_samples} RSS samples")
        time.sleep(args.idle)
        rss[count] = sample_rss(daemons, args.rss_samples, 0.5)
        for d in daemons:
            c = rss[count][d.name]["counts"]
            if c["plugins"] < count:
                log(f"warning: {d.name}: {count} plugins enabled but only {c['plugins']} "
                    "plugin processes found")
    if args.show_procs:
        for d in daemons:
            table = proc_table()
            print(f"\n{d.name} processes with {args.plugins} plugins enabled:")
            for k, pids in d.processes().items():
                for p in pids:
                    print(f"  {k:10} {p:>7} {mem_kb(p)[0]:>8} kB  {table.get(p, (0, '?'))[1]}")

    return report(args, machine, versions, timings, rss, daemons)


def report(args, machine, versions, timings, rss, daemons) -> dict:
    b, d = (x.name for x in daemons)
    out = {"machine": machine, "versions": versions,
           "settings": {"iterations": args.iterations, "warmup": args.warmup,
                        "plugins": args.plugins, "idle_s": args.idle,
                        "rss_samples": args.rss_samples},
           "timings_ms": {}, "rss_kb": {}}
    print()
    print(f"machine   nproc {machine['nproc']}, kernel {machine['kernel']}, "
          f"{machine['cpu']}, {machine['memory']}")
    for k, v in versions.items():
        print(f"{k:<18}{v}")
    print(f"settings  {args.iterations} timed cycles per daemon after {args.warmup} warm-up, "
          f"alternating order; RSS after {args.idle:g} s idle, {args.rss_samples} samples")

    def row(label, bs, ds, unit_scale, prec, target):
        ratio = bs["median"] / ds["median"] if ds["median"] else None
        met = None if target is None or ratio is None else ratio <= target
        verdict = "" if met is None else f"<= 1/{round(1 / target)}: {'met' if met else 'NOT met'}"
        shown = "-" if ratio is None else f"{ratio:.3f}"
        print(f"{label:<34} {fmt3(bs, unit_scale, prec):>26} {fmt3(ds, unit_scale, prec):>26}"
              f" {shown:>7}  {verdict}".rstrip())
        return {b: dict(bs), d: dict(ds), "ratio_of_medians": ratio, "target": target,
                "target_met": met}

    hdr = (f"{'':<34} {b + ' min / median / max':>26} {d + ' min / median / max':>26}"
           f" {'ratio':>7}  target (ratio = {b}/{d} of medians)")
    print(f"\nTimings (ms), {args.iterations} cycles each")
    print(hdr)
    tb, td = timings[b], timings[d]
    for key, label, target in (("ready", "enable -> plugin socket answers", TARGET_ENABLE),
                               ("response", "  (enable HTTP response only)", None),
                               ("disable", "disable", None),
                               ("cycle", "enable + disable cycle", None)):
        out["timings_ms"][key] = row(label, summary([x * 1000 for x in tb[key]]),
                                     summary([x * 1000 for x in td[key]]), 1, 2, target)
    for n in (b, d):
        out["timings_ms"].setdefault("socket_ready_at_enable_response", {})[n] = \
            timings[n]["ready_at_response"]
        out["timings_ms"].setdefault("median_connect_polls", {})[n] = \
            statistics.median(timings[n]["polls"])
    print("socket already answering when enable returned: " + ", ".join(
        f"{n} {timings[n]['ready_at_response']}/{args.iterations}" for n in (b, d)))

    print(f"\nIdle RSS (MiB), {args.rss_samples} samples each")
    print(hdr)
    helper_desc = {b: "plugin-init", d: "containerd+shims"}
    for count in sorted(rss):
        rb, rd = rss[count][b], rss[count][d]
        sfx = f"{count} plugin{'s' if count != 1 else ''}"
        entries = [
            (f"daemon alone, {sfx}", rb["daemon"], rd["daemon"],
             None if count == 0 else TARGET_RSS),
            (f"daemon + helpers, {sfx}", [x + y for x, y in zip(rb["daemon"], rb["helpers"])],
             [x + y for x, y in zip(rd["daemon"], rd["helpers"])],
             None if count == 0 else TARGET_RSS),
            (f"  helpers only, {sfx}", rb["helpers"], rd["helpers"], None),
        ]
        if count:
            entries.append((f"  plugins' own RSS, {sfx}", rb["plugins"], rd["plugins"], None))
            entries.append((f"all processes, PSS, {sfx}",
                            [x + y + z for x, y, z in zip(rb["daemon_pss"], rb["helpers_pss"],
                                                          rb["plugins_pss"])],
                            [x + y + z for x, y, z in zip(rd["daemon_pss"], rd["helpers_pss"],
                                                          rd["plugins_pss"])], None))
        for label, xs, ys, target in entries:
            out["rss_kb"][label.strip()] = row(label, summary(xs), summary(ys), 1 / 1024, 1,
                                               target)
        out["rss_kb"][f"process counts, {sfx}"] = {b: rb["counts"], d: rd["counts"]}
        print(f"{'':<2}processes: {b} 1 + {rb['counts']['helpers']} {helper_desc[b]}, "
              f"{rb['counts']['plugins']} plugin; {d} 1 + "
              f"{rd['counts'].get('containerd', 0)} containerd + {rd['counts'].get('shims', 0)}"
              f" shims, {rd['counts']['plugins']} plugin")
    return out


if __name__ == "__main__":
    sys.exit(main())
