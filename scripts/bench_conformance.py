#!/usr/bin/env python3
"""`berth conformance` benchmark: the wall time of a full run (start to exit, setup and
cleanup included) against each kind of target.

    scripts/bench-conformance.sh [--iterations N] [--quick] [--json FILE] [--no-build] [--keep-tmp]

Targets, each run --iterations (5) times after one warm-up:

  rclone socket           `rclone serve docker` on the host (Debian's rclone), --socket,
                          volumes with type=local (FUSE mounts)
  test plugin socket      the project's test plugin (optimised build) as a VolumeDriver, --socket
  test plugin log socket  the same plugin in its LogDriver mode, --socket
  rclone directory        `scripts/make-test-plugins.sh rclone`: berth creates the plugin in a
                          private store, runs it in its namespaces, checks it (the restart check
                          included) and removes it
  test plugin directory   the same with `make-test-plugins.sh testdriver`

The issue's target is under 10 s for a full run against rclone and against the test plugin.
dockerd has no such tool, so there is nothing to run side by side: the figures stand alone.
Nothing here asserts on a timing: the target is reported, never enforced.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (  # noqa: E402 - the shared benchmark helpers
    REPO, BenchError, build_berth, finish, fmt3, loadavg, log, machine_facts,
    parse_with_defaults, run_then_unwind, source_state, summary, unmount_below, unwind_on_signals,
    wait_socket,
)

TARGET_SECONDS = 10.0


class HostPlugin:
    """A plugin process on the host, in a process group of its own."""

    def __init__(self, argv: list[str], socket: str, env: dict, log_path: str):
        self.socket = socket
        with open(log_path, "wb") as out:
            self.proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        wait_socket(socket)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
        self.proc.wait()


def run_conformance(berth: str, args: list[str]) -> tuple[float, dict]:
    """One full run: wall seconds and the JSON report."""
    start = time.monotonic()
    r = subprocess.run([berth, "conformance", *args, "--format", "json"],
                       capture_output=True)
    wall = time.monotonic() - start
    try:
        report = json.loads(r.stdout)
    except json.JSONDecodeError:
        raise BenchError(f"berth conformance {' '.join(args)} exited {r.returncode}: "
                         f"{r.stderr.decode(errors='replace').strip()}")
    return wall, report


def bench(args) -> dict:
    tmp = args.tmp
    test_plugin = os.path.join(REPO, "target", "release", "berth-test-plugin")
    if not os.access(test_plugin, os.X_OK):
        raise BenchError(f"no optimised test plugin at {test_plugin}")
    log("make-test-plugins.sh rclone testdriver")
    subprocess.run([os.path.join(REPO, "scripts", "make-test-plugins.sh"),
                    os.path.join(tmp, "dirs"), "rclone", "testdriver"], check=True,
                   stdout=subprocess.DEVNULL,
                   env={**os.environ, "BERTH_TEST_PLUGIN_BIN": test_plugin,
                        "BERTH_RCLONE_STATE_DIR": os.path.join(tmp, "rclone-state")})
    rclone_dir = os.path.join(tmp, "rclone-host")
    os.makedirs(rclone_dir)
    plugins = {
        "rclone socket": HostPlugin(
            ["rclone", "serve", "docker", "--base-dir", f"{rclone_dir}/volumes",
             "--socket-addr", f"{rclone_dir}/rclone.sock", "--cache-dir", f"{rclone_dir}/cache",
             "--config", f"{rclone_dir}/rclone.conf"],
            f"{rclone_dir}/rclone.sock", {}, f"{tmp}/rclone.log"),
        "test plugin socket": HostPlugin(
            [test_plugin], f"{tmp}/tv.sock",
            {"TEST_SOCKET_PATH": f"{tmp}/tv.sock", "TEST_ROOT": f"{tmp}/tv-root"},
            f"{tmp}/tv.log"),
        "test plugin log socket": HostPlugin(
            [test_plugin], f"{tmp}/tl.sock",
            {"TEST_SOCKET_PATH": f"{tmp}/tl.sock", "TEST_ROOT": f"{tmp}/tl-root",
             "TEST_IMPLEMENTS": "LogDriver"},
            f"{tmp}/tl.log"),
    }
    args.started_plugins = list(plugins.values())
    targets = {
        "rclone socket": ["--socket", plugins["rclone socket"].socket,
                          "--volume-opt", "type=local"],
        "test plugin socket": ["--socket", plugins["test plugin socket"].socket],
        "test plugin log socket": ["--socket", plugins["test plugin log socket"].socket],
        "rclone directory": [os.path.join(tmp, "dirs", "rclone"), "--volume-opt", "type=local"],
        "test plugin directory": [os.path.join(tmp, "dirs", "testdriver")],
    }
    results: dict = {"machine": machine_facts(), "source": source_state(),
                     "iterations": args.iterations, "target_seconds": TARGET_SECONDS,
                     "targets": {}}
    for name, target_args in targets.items():
        log(f"{name}: 1 warm-up + {args.iterations} runs")
        run_conformance(args.berth_bin, target_args)
        walls, checks = [], []
        for _ in range(args.iterations):
            wall, report = run_conformance(args.berth_bin, target_args)
            walls.append(wall)
            checks.append(report["duration_ms"] / 1000)
            outcome = report["summary"]
        results["targets"][name] = {"wall_s": summary(walls), "checks_s": summary(checks),
                                    "summary": outcome, "load": loadavg()}
    return results


def report(results: dict) -> None:
    print(f"\n{'target':24} {'wall s (min / median / max)':30} {'checks s (median)':18} "
          f"{'target':8} results")
    for name, r in results["targets"].items():
        within = "ok" if r["wall_s"]["median"] < TARGET_SECONDS else "OVER"
        s = r["summary"]
        print(f"{name:24} {fmt3(r['wall_s'], 1, 2):30} {r['checks_s']['median']:<18.2f} "
              f"{within:8} {s['pass']} pass, {s['fail']} fail, {s['warn']} warn, "
              f"{s['skip']} skip")
    print(f"\nmachine: {results['machine']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int)
    ap.add_argument("--quick", action="store_true", help="2 runs per target")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON here")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build --release")
    ap.add_argument("--berth-bin", default=os.path.join(REPO, "target", "release", "berth"))
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp directory (logs)")
    args = parse_with_defaults(ap, {"iterations": 2}, {"iterations": 5})
    if os.geteuid() != 0:
        print("bench-conformance: needs root (plugins run in namespaces)", file=sys.stderr)
        return 2
    if not shutil.which("rclone"):
        print("bench-conformance: rclone not found (apt-get install rclone)", file=sys.stderr)
        return 2
    unwind_on_signals()
    code = build_berth("bench-conformance", args.no_build, args.berth_bin)
    if code is not None:
        return code
    started = time.monotonic()
    args.tmp = tempfile.mkdtemp(prefix="bcb", dir="/tmp")
    args.started_plugins = []

    def unwind(_outcome: str) -> None:
        for p in args.started_plugins:
            p.stop()
        unmount_below(args.tmp)
        if args.keep_tmp:
            log(f"kept {args.tmp}")
        else:
            shutil.rmtree(args.tmp, ignore_errors=True)

    outcome, results = run_then_unwind(lambda: bench(args), unwind)
    if outcome == "ok":
        report(results)
    return finish(outcome, results, started, args.json, "setup, warm-ups and runs")


if __name__ == "__main__":
    sys.exit(main())
