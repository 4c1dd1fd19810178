#!/usr/bin/env python3
"""Metrics cost: two berths side by side in one run, one with --metrics-addr and one without,
serving the same GET /volumes.

    scripts/bench-metrics.sh [--quick] [--json FILE] [--no-build] [--keep-tmp]
                             [--volumes N] [--threads N] [--load-seconds S] [--rounds N]
                             [--iterations N]

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

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (  # noqa: E402 - the shared benchmark helpers
    API, REPO, BenchError, Berth, RawClient, check, cpu_model, cpu_seconds, fmt3, loadavg, log,
    mem_total, source_state, summary, unmount_below, unwind_on_signals, wait_socket,
)

TARGET_CPU_RATIO = 1.05
QUICK = {"iterations": 30, "load_seconds": 1.0, "rounds": 2}
DEFAULTS = {"iterations": 200, "load_seconds": 3.0, "rounds": 4}


class MetricsBerth(Berth):
    def __init__(self, tmp: str, binary: str, name: str, extra: list[str]):
        self.name = name
        super().__init__(os.path.join(tmp, name), binary)
        os.makedirs(self.tmp, exist_ok=True)
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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--keep-tmp", action="store_true")
    p.add_argument("--volumes", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--load-seconds", type=float)
    p.add_argument("--rounds", type=int)
    p.add_argument("--iterations", type=int)
    args = p.parse_args()
    preset = QUICK if args.quick else DEFAULTS
    for k, v in preset.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    unwind_on_signals()
    if not args.no_build:
        log("cargo build --release (berth, berth-test-plugin)")
        subprocess.run(["cargo", "build", "--release", "-q", "--bin", "berth",
                        "--bin", "berth-test-plugin"], cwd=REPO, check=True)
    binary = os.path.join(REPO, "target/release/berth")
    plugin_bin = os.path.join(REPO, "target/release/berth-test-plugin")

    tmp = tempfile.mkdtemp(prefix="bm", dir="/tmp")
    plugins_dir = os.path.join(tmp, "plugins")
    os.makedirs(plugins_dir)
    plugin = subprocess.Popen([plugin_bin], env={
        "TEST_SOCKET_PATH": os.path.join(plugins_dir, "tv.sock"),
        "TEST_ROOT": os.path.join(tmp, "tv")}, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_socket(os.path.join(plugins_dir, "tv.sock"))
    common = ["--legacy-plugin-dir", plugins_dir]
    without = MetricsBerth(tmp, binary, "without", common)
    with_metrics = MetricsBerth(tmp, binary, "with", common + ["--metrics-addr", "127.0.0.1:0"])
    daemons = [without, with_metrics]
    report: dict = {"machine": {"cpu": cpu_model(), "mem": mem_total(),
                                "loadavg_start": loadavg()},
                    "source": source_state(), "args": vars(args)}
    try:
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

        latency = {d.name: [] for d in daemons}
        clients = {d.name: RawClient(d.sock) for d in daemons}
        for i in range(args.iterations):
            for d in (daemons if i % 2 == 0 else daemons[::-1]):
                status, body, dt = clients[d.name].request("GET", f"{API}/volumes")
                check(d, "volume ls", status, body, (200,))
                latency[d.name].append(dt)
        for c in clients.values():
            c.close()

        per_request = {d.name: [] for d in daemons}
        for r in range(args.rounds):
            for d in (daemons if r % 2 == 0 else daemons[::-1]):
                n, cpu = load(d, args.threads, args.load_seconds)
                per_request[d.name].append(cpu / max(n, 1))
                log(f"round {r + 1} {d.name}: {n} requests, {cpu:.2f} s CPU")

        report["latency_s"] = {k: summary(v) for k, v in latency.items()}
        report["cpu_per_request_s"] = {k: summary(v) for k, v in per_request.items()}
        lat_ratio = (report["latency_s"]["with"]["median"]
                     / report["latency_s"]["without"]["median"])
        cpu_ratio = (report["cpu_per_request_s"]["with"]["median"]
                     / report["cpu_per_request_s"]["without"]["median"])
        report["ratios"] = {"latency_median": lat_ratio, "cpu_per_request_median": cpu_ratio,
                            "target_cpu": TARGET_CPU_RATIO}
        report["machine"]["loadavg_end"] = loadavg()

        print(f"\nGET {API}/volumes, {args.volumes} local + {args.volumes} plugin volumes "
              f"(release build; load average {report['machine']['loadavg_start']} -> "
              f"{report['machine']['loadavg_end']})")
        print(f"{'':28} {'without metrics':>24} {'with metrics':>24} {'ratio':>7}")
        print(f"{'latency ms (min/med/max)':28} "
              f"{fmt3(report['latency_s']['without'], 1e3, 2):>24} "
              f"{fmt3(report['latency_s']['with'], 1e3, 2):>24} {lat_ratio:7.3f}")
        print(f"{'CPU us/request (min/med/max)':28} "
              f"{fmt3(report['cpu_per_request_s']['without'], 1e6, 0):>24} "
              f"{fmt3(report['cpu_per_request_s']['with'], 1e6, 0):>24} {cpu_ratio:7.3f}")
        verdict = "met" if cpu_ratio < TARGET_CPU_RATIO else "NOT met"
        print(f"target: CPU per request with metrics < {TARGET_CPU_RATIO:.2f} x without: {verdict}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)
        return 0
    finally:
        for d in daemons:
            try:
                d.stop(grace=15.0)
            except Exception as e:  # noqa: BLE001 - keep cleaning up
                log(f"stopping {d.name}: {e}")
        plugin.terminate()
        plugin.wait(10)
        if not unmount_below(tmp) and not args.keep_tmp:
            subprocess.run(["rm", "-rf", "--one-file-system", tmp])


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench-metrics: {e}", file=sys.stderr)
        sys.exit(1)
