#!/usr/bin/env python3
"""Runtime benchmark: berth (under each executor) against a private dockerd 20.10, side by side in one run.

    scripts/bench-runtime.sh [--iterations N] [--warmup N] [--plugins N] [--idle S]
                             [--runtimes builtin,runc,crun] [--exec-iterations N]
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
  exec round trip         `berth plugin exec <plugin> true` (the CLI asks the daemon, joins the
                          plugin, runs /bin/true, exits) against `runc --root
                          <exec-root>/runtime-runc/plugins.moby exec <id> true` on the same
                          plugin (run by berth-runc); also berth plugin exec into the plugin
                          run by the built-in executor
  idle RSS                VmRSS (/proc/<pid>/status) of the daemon with 1 and N plugins enabled,
                          sampled after the system was idle for --idle seconds; also the daemon
                          with its runtime helpers (berth: its `plugin-init` children; dockerd:
                          containerd and the containerd shims) and the plugins' own RSS.

The timings run for one berth daemon per --runtimes entry (builtin, runc, crun; those whose
binary is missing are skipped) beside dockerd; RSS compares the built-in berth with dockerd.

Setup: `cargo build --release` (skip with --no-build), scripts/make-test-plugins.sh testdriver
(plus /bin/true and its libraries in the rootfs, for the exec round trip),
--plugins unique copies of it (bench/p0..), created on every daemon with the stock docker CLI.
berth and dockerd run on private temp directories; all are stopped, and everything mounted
below the temp directory is unmounted, before it is deleted, also on Ctrl-C or failure.
Cycles alternate which daemon goes first, after --warmup cycles each. Needs root.

Nothing here asserts on a timing: targets are reported, never enforced.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (  # noqa: E402 - the shared benchmark frame and helpers
    Bench, BenchError, Berth, Table, add_common_options, add_options, argument_parser, fmt3,
    loadavg, log, machine_facts, mem_kb, print_setting, proc_table, rss_options, run_benchmark,
    sample_rss, summary,
)


# Targets from the issue: berth / dockerd of medians at most this.
TARGET_ENABLE = 1 / 5
TARGET_RSS = 1 / 4


# --------------------------------------------------------------------------------------------
# Benchmark


def add_true(rootfs: str) -> None:
    """/bin/true and its shared libraries, for the exec round trip."""
    true = os.path.realpath(shutil.which("true") or "/bin/true")
    files = [(true, "bin/true")]
    out = subprocess.run(["ldd", true], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split("=>")[-1].split()
        if parts and parts[0].startswith("/"):
            files.append((os.path.realpath(parts[0]), parts[0].lstrip("/")))
    for host, inside in files:
        dest = os.path.join(rootfs, inside)
        if not os.path.exists(dest):
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copy2(host, dest)


def make_plugin_dirs(run: Bench, count: int) -> list[str]:
    base = run.make_test_plugins(["testdriver"])
    src = os.path.join(base, "testdriver")
    add_true(os.path.join(src, "rootfs"))
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
    ap = argument_parser(__doc__)
    add_options(ap, (
        ("--iterations", int, 20, "timed enable/disable cycles per daemon"),
        ("--warmup", int, 2, "untimed cycles first"),
        ("--plugins", int, 10, "plugins enabled for the second RSS figure"),
        *rss_options(idle=2.0, samples=5),
        ("--exec-iterations", int, 20, "timed exec round trips per command"),
    ))
    ap.add_argument("--runtimes", default="builtin,runc,crun", help="berth executors to time "
                    "beside dockerd, comma-separated (default builtin,runc,crun)")
    ap.add_argument("--show-procs", action="store_true", help="print the process trees "
                    "with all plugins enabled")
    add_common_options(ap)
    args = ap.parse_args()
    if args.iterations < 1 or args.plugins < 1 or args.warmup < 0:
        ap.error("--iterations and --plugins must be >= 1, --warmup >= 0")
    return run_benchmark("bench-runtime", args, bench)


def add_berths(run: Bench) -> list[Berth]:
    """A berth per other --runtimes entry beside the built-in one (run.berth), in
    run.daemons (so the frame stops them); returns every berth, the built-in one first."""
    berths = [run.berth]
    for r in (r for r in run.args.runtimes.split(",") if r and r != "builtin"):
        if not shutil.which(r):
            log(f"{r} not installed: berth-{r} skipped")
            continue
        b = Berth(run.tmp, run.berth.binary, r)
        berths.append(b)
        run.daemons.insert(len(berths) - 1, b)
    return berths


def bench(run: Bench) -> dict:
    args, daemons = run.args, run.daemons
    names = [f"bench/p{i}:latest" for i in range(args.plugins)]
    dirs = make_plugin_dirs(run, args.plugins)
    berths = add_berths(run)
    run.start_daemons()
    machine = machine_facts()
    versions = run.versions({"crun": "crun"})

    log(f"creating {len(names)} plugins on each daemon with the docker CLI")
    for d in daemons:
        d.create_plugins(dict(zip(names, dirs)))

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

    exec_times = exec_round_trips(args, berths, cyc)

    # -- idle RSS (the built-in berth beside dockerd) ------------------------------------------
    rss: dict = {}
    daemons = [run.berth, run.dockerd]
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

    machine["loadavg_at_end"] = loadavg()
    return report(args, machine, versions, timings, rss, run.daemons, exec_times)


def timed_run(argv: list[str]) -> float:
    t0 = time.monotonic()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    if r.returncode != 0:
        raise BenchError(f"{' '.join(argv)} -> {r.returncode}: {r.stderr.strip()[:300]}")
    return elapsed


def exec_round_trips(args, berths: list[Berth], name: str) -> dict:
    """`berth plugin exec <plugin> true` against `runc exec <id> true` on the same plugin."""
    runc_berth = next((b for b in berths if b.runtime == "runc"), None)
    targets = [b for b in berths if b.runtime in ("builtin", "runc")]
    for b in targets:
        b.enable(name)
    commands: dict[str, list[str]] = {}
    for b in targets:
        commands[f"berth plugin exec [{b.runtime}]"] = [
            b.binary, "plugin", "exec", "-H", "unix://" + b.sock, name, "true"]
    if runc_berth is not None:
        state = os.path.join(runc_berth.exec_root, "runtime-runc", "plugins.moby")
        commands["runc exec [runc]"] = ["runc", "--root", state, "exec",
                                        runc_berth.plugins[name]["id"], "true"]
    log(f"{args.warmup} warm-up + {args.exec_iterations} timed exec round trips each: "
        + ", ".join(commands))
    samples: dict[str, list[float]] = {k: [] for k in commands}
    for i in range(args.warmup + args.exec_iterations):
        keys = list(commands) if i % 2 == 0 else list(commands)[::-1]
        for k in keys:
            t = timed_run(commands[k])
            if i >= args.warmup:
                samples[k].append(t)
    for b in targets:
        b.disable(name)
    return {k: summary([x * 1000 for x in xs]) for k, xs in samples.items()}


def report(args, machine, versions, timings, rss, daemons, exec_times) -> dict:
    berth_names = [x.name for x in daemons[:-1]]
    b, d = berth_names[0], daemons[-1].name
    out = {"machine": machine, "versions": versions,
           "settings": {"iterations": args.iterations, "warmup": args.warmup,
                        "plugins": args.plugins, "idle_s": args.idle,
                        "rss_samples": args.rss_samples, "runtimes": berth_names,
                        "exec_iterations": args.exec_iterations},
           "timings_ms": {}, "rss_kb": {}}
    print_setting(machine, versions)
    print(f"settings  {args.iterations} timed cycles per daemon after {args.warmup} warm-up, "
          f"alternating order; RSS after {args.idle:g} s idle, {args.rss_samples} samples")
    hdr = f"target (ratio = {b}/{d} of medians)"
    print(f"\nTimings (ms), {args.iterations} cycles each (ratio = berth under [runtime] / {d})")
    timing_table = Table("berth", d, width=46)
    timing_table.header("target")
    td = timings[d]
    for key, label, target in (("ready", "enable -> plugin socket answers", TARGET_ENABLE),
                               ("response", "  (enable HTTP response only)", None),
                               ("disable", "disable", None),
                               ("cycle", "enable + disable cycle", None)):
        for name in berth_names:
            runtime = name.removeprefix("berth-") if name != "berth" else "builtin"
            out["timings_ms"].setdefault(key, {})[runtime] = timing_table.row(
                f"{label} [{runtime}]", summary([x * 1000 for x in timings[name][key]]),
                summary([x * 1000 for x in td[key]]), 1, 2, target if name == b else None)
    for n in (*berth_names, d):
        out["timings_ms"].setdefault("socket_ready_at_enable_response", {})[n] = \
            timings[n]["ready_at_response"]
        out["timings_ms"].setdefault("median_connect_polls", {})[n] = \
            statistics.median(timings[n]["polls"])
    print("socket already answering when enable returned: " + ", ".join(
        f"{n} {timings[n]['ready_at_response']}/{args.iterations}" for n in (*berth_names, d)))

    if exec_times:
        print(f"\nExec round trip (ms), {args.exec_iterations} runs each, alternating order")
        base = exec_times.get("runc exec [runc]")
        for label, st in exec_times.items():
            ratio = st["median"] / base["median"] if base else None
            shown = "" if ratio is None else f"  {ratio:.2f}x runc exec"
            print(f"{label:<46} {fmt3(st, 1, 2):>26}{shown}")
            out.setdefault("exec_round_trip_ms", {})[label] = {
                **st, "ratio_to_runc_exec": ratio}

    table = Table(b, d)
    print(f"\nIdle RSS (MiB), {args.rss_samples} samples each")
    table.header(hdr)
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
            out["rss_kb"][label.strip()] = table.row(label, summary(xs), summary(ys), 1 / 1024, 1,
                                               target)
        out["rss_kb"][f"process counts, {sfx}"] = {b: rb["counts"], d: rd["counts"]}
        print(f"{'':<2}processes: {b} 1 + {rb['counts']['helpers']} {helper_desc[b]}, "
              f"{rb['counts']['plugins']} plugin; {d} 1 + "
              f"{rd['counts'].get('containerd', 0)} containerd + {rd['counts'].get('shims', 0)}"
              f" shims, {rd['counts']['plugins']} plugin")
    return out


if __name__ == "__main__":
    sys.exit(main())
