#!/usr/bin/env python3
"""Metrics cost: two berths side by side in one run, one with --metrics-addr and one without,
serving the same GET /volumes.

    scripts/bench-metrics.sh [--quick] [--json FILE] [--no-build] [--keep-tmp]
                             [--volumes N] [--threads N] [--load-seconds S] [--rounds N]
                             [--iterations N] [--plugin-bin FILE]

Both berths list --volumes (100) local volumes and --volumes volumes of one legacy plugin (the
project's test driver, optimised, on the host; one plugin process serves both daemons), so
each request is counted by the API dispatcher and makes one counted plugin call.

  latency       GET /v1.41/volumes on a keep-alive connection, --iterations per daemon,
                alternating which daemon goes first
  CPU/request   --threads client threads for --load-seconds, --rounds rounds per daemon
                alternating; the daemon's utime+stime (from /proc) divided by the requests
                answered: what counting costs the daemon per request

Target (issue 14): with metrics, under 5 % more CPU per request. Reported, never enforced.
dockerd is not part of this one: the question is berth with against berth without.
Needs root (the daemons) and cargo.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (  # noqa: E402 - the shared benchmark helpers
    API, REPO, Bench, BenchError, Berth, RawClient, add_common_options, add_options,
    apply_defaults, argument_parser, check, cpu_seconds, fmt3, loadavg, log, machine_facts,
    run_benchmark, source_state, spawn, summary, wait_socket,
)

TARGET_CPU_RATIO = 1.05
QUICK = {"iterations": 30, "load_seconds": 1.0, "rounds": 2}
DEFAULTS = {"iterations": 200, "load_seconds": 3.0, "rounds": 4}


class MetricsBerth(Berth):
    def __init__(self, tmp: str, binary: str, name: str, extra: list[str]):
        self.name = name
        os.makedirs(os.path.join(tmp, name), exist_ok=True)
        super().__init__(os.path.join(tmp, name), binary)
        self.extra = extra

    def argv(self) -> list[str]:
        return super().argv() + self.extra


def load(d: MetricsBerth, threads: int, seconds: float) -> tuple[int, float]:
    """Requests answered and daemon CPU seconds spent during `seconds` of load."""
    stop = threading.Event()
    counts = [0] * threads
    errors: list[str] = []

    def worker(i: int) -> None:
        c = RawClient(d.sock)
        try:
            while not stop.is_set():
                status, body, _ = c.request("GET", f"{API}/volumes")
                check(d, "volume ls", status, body, (200,))
                counts[i] += 1
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(str(e))
        finally:
            c.close()

    cpu0 = cpu_seconds(d.pid)
    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join(30)
    cpu1 = cpu_seconds(d.pid)
    if errors:
        raise BenchError(f"{d.name}: {errors[0]}")
    return sum(counts), cpu1 - cpu0


def main() -> int:
    ap = argument_parser(__doc__, quick="fewer latency samples, shorter and fewer load rounds")
    add_options(ap, (
        ("--iterations", int, None, "timed requests per daemon"),
        ("--load-seconds", float, None, "seconds of each load round"),
        ("--rounds", int, None, "load rounds per daemon"),
        ("--volumes", int, 100, "local volumes, and as many plugin volumes, on each berth"),
        ("--threads", int, 2, "client threads under load"),
    ), QUICK, DEFAULTS)
    ap.add_argument("--plugin-bin", help="the test plugin binary (default: berth-test-plugin "
                    "beside --berth-bin, built with it)")
    add_common_options(ap)
    args = ap.parse_args()
    apply_defaults(args, QUICK, DEFAULTS)
    if min(args.iterations, args.rounds, args.threads) < 1 or args.volumes < 0 \
            or args.load_seconds <= 0:
        ap.error("counts must be >= 1 (--volumes >= 0), --load-seconds > 0")
    if args.plugin_bin is None:
        args.plugin_bin = os.path.join(os.path.dirname(args.berth_bin), "berth-test-plugin")
    if not args.no_build:
        log("cargo build --release --bin berth-test-plugin")
        subprocess.run(["cargo", "build", "--release", "-q", "--bin", "berth-test-plugin"],
                       cwd=REPO, check=True)
    return run_benchmark("bench-metrics", args, bench)


def bench(run: Bench) -> dict:
    args = run.args
    plugins_dir = os.path.join(run.tmp, "plugins")
    os.makedirs(plugins_dir)
    plugin_socket = os.path.join(plugins_dir, "tv.sock")
    plugin = spawn([args.plugin_bin], os.path.join(run.tmp, "plugin.log"),
                   env=dict(os.environ, TEST_SOCKET_PATH=plugin_socket,
                            TEST_ROOT=os.path.join(run.tmp, "tv")))

    def stop_plugin() -> None:
        plugin.terminate()
        plugin.wait(10)
    run.after.append(stop_plugin)
    wait_socket(plugin_socket)
    common = ["--legacy-plugin-dir", plugins_dir]
    without = MetricsBerth(run.tmp, args.berth_bin, "without", common)
    with_metrics = MetricsBerth(run.tmp, args.berth_bin, "with",
                                common + ["--metrics-addr", "127.0.0.1:0"])
    # the frame stops what is in run.daemons; dockerd is not part of this benchmark
    daemons = run.daemons = [without, with_metrics]
    report: dict = {"machine": machine_facts(), "source": source_state(),
                    "args": vars(args)}
    for d in daemons:
        d.start()
        c = RawClient(d.sock)
        for i in range(args.volumes):
            for name, driver in ((f"{d.name}-l{i}", None), (f"{d.name}-p{i}", "tv")):
                body = {"Name": name} if driver is None else {"Name": name, "Driver": driver}
                status, payload, _ = c.request("POST", f"{API}/volumes/create", body)
                check(d, "volume create", status, payload, (201,))
        c.close()
    log(f"{args.volumes} local + {args.volumes} plugin volumes on each berth")

    latency: dict[str, list[float]] = {d.name: [] for d in daemons}
    clients = {d.name: RawClient(d.sock) for d in daemons}
    for i in range(args.iterations):
        for d in (daemons if i % 2 == 0 else daemons[::-1]):
            status, body, dt = clients[d.name].request("GET", f"{API}/volumes")
            check(d, "volume ls", status, body, (200,))
            latency[d.name].append(dt)
    for c in clients.values():
        c.close()

    per_request: dict[str, list[float]] = {d.name: [] for d in daemons}
    for r in range(args.rounds):
        for d in (daemons if r % 2 == 0 else daemons[::-1]):
            n, cpu = load(d, args.threads, args.load_seconds)
            per_request[d.name].append(cpu / max(n, 1))
            log(f"round {r + 1} {d.name}: {n} requests, {cpu:.2f} s CPU")

    report["latency_s"] = {k: summary(v) for k, v in latency.items()}
    report["cpu_per_request_s"] = {k: summary(v) for k, v in per_request.items()}
    lat_ratio = report["latency_s"]["with"]["median"] / report["latency_s"]["without"]["median"]
    cpu = report["cpu_per_request_s"]
    cpu_ratio = cpu["with"]["median"] / cpu["without"]["median"]
    report["ratios"] = {"latency_median": lat_ratio, "cpu_per_request_median": cpu_ratio,
                        "target_cpu": TARGET_CPU_RATIO}
    report["machine"]["loadavg_at_end"] = loadavg()

    print(f"\nGET {API}/volumes, {args.volumes} local + {args.volumes} plugin volumes "
          f"(release build; load average {report['machine']['loadavg_at_start']} -> "
          f"{report['machine']['loadavg_at_end']})")
    print(f"{'':28} {'without metrics':>24} {'with metrics':>24} {'ratio':>7}")
    print(f"{'latency ms (min/med/max)':28} "
          f"{fmt3(report['latency_s']['without'], 1e3, 2):>24} "
          f"{fmt3(report['latency_s']['with'], 1e3, 2):>24} {lat_ratio:7.3f}")
    print(f"{'CPU us/request (min/med/max)':28} "
          f"{fmt3(cpu['without'], 1e6, 0):>24} {fmt3(cpu['with'], 1e6, 0):>24} "
          f"{cpu_ratio:7.3f}")
    verdict = "met" if cpu_ratio < TARGET_CPU_RATIO else "NOT met"
    print(f"target: CPU per request with metrics < {TARGET_CPU_RATIO:.2f} x without: {verdict}")
    return report


if __name__ == "__main__":
    sys.exit(main())
