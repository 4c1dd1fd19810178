#!/usr/bin/env python3
"""`berth conformance` benchmark: the wall time of a full run (start to exit, setup and
cleanup included) against each kind of target.

    scripts/bench-conformance.sh [--iterations N] [--quick] [--json FILE] [--no-build] [--keep-tmp]

Targets, each run --iterations times after one warm-up:

  rclone socket           `rclone serve docker` on the host (Debian's rclone), --socket,
                          volumes with type=local (FUSE mounts)
  test plugin socket      the project's test plugin (optimised build) as a VolumeDriver, --socket
  test plugin log socket  the same plugin in its LogDriver mode, --socket
  rclone directory        `scripts/make-test-plugins.sh rclone`: berth creates the plugin in a
                          private store, runs it in its namespaces, checks it (the restart check
                          included) and removes it
  test plugin directory   the same with `make-test-plugins.sh testdriver`

The issue's target is under 10 s for a full run against rclone and against the test plugin.
dockerd has no such tool, so there is nothing to run side by side: the figures stand alone
(the shared frame still checks that dockerd is installed). Nothing here asserts on a timing:
the target is reported, never enforced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (  # noqa: E402 - the shared benchmark helpers
    Bench, BenchError, add_common_options, add_options, apply_defaults, argument_parser,
    fmt3, loadavg, log, machine_facts, run_benchmark, source_state, summary, wait_socket,
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


def bench(run: Bench) -> dict:
    args, tmp = run.args, run.tmp
    test_plugin = os.path.join(os.path.dirname(args.berth_bin), "berth-test-plugin")
    if not os.access(test_plugin, os.X_OK):
        raise BenchError(f"no optimised test plugin at {test_plugin}")
    dirs = run.make_test_plugins(["rclone", "testdriver"], {
        "BERTH_TEST_PLUGIN_BIN": test_plugin,
        "BERTH_RCLONE_STATE_DIR": os.path.join(tmp, "rclone-state")})
    rclone_dir = os.path.join(tmp, "rclone-host")
    os.makedirs(rclone_dir)
    plugins: dict = {}
    run.after.append(lambda: [p.stop() for p in plugins.values()])
    plugins.update({
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
    })
    targets = {
        "rclone socket": ["--socket", plugins["rclone socket"].socket,
                          "--volume-opt", "type=local"],
        "test plugin socket": ["--socket", plugins["test plugin socket"].socket],
        "test plugin log socket": ["--socket", plugins["test plugin log socket"].socket],
        "rclone directory": [os.path.join(dirs, "rclone"), "--volume-opt", "type=local"],
        "test plugin directory": [os.path.join(dirs, "testdriver")],
    }
    results: dict = {"machine": machine_facts(), "source": source_state(),
                     "iterations": args.iterations, "target_seconds": TARGET_SECONDS,
                     "targets": {}}
    for name, target_args in targets.items():
        log(f"{name}: 1 warm-up + {args.iterations} runs")
        run_conformance(args.berth_bin, target_args)
        walls, checks = [], []
        for _ in range(args.iterations):
            wall, answer = run_conformance(args.berth_bin, target_args)
            walls.append(wall)
            checks.append(answer["duration_ms"] / 1000)
            outcome = answer["summary"]
        results["targets"][name] = {"wall_s": summary(walls), "checks_s": summary(checks),
                                    "summary": outcome, "load": loadavg()}
    report(results)
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
    ap = argument_parser(__doc__, quick="2 runs per target")
    add_options(ap, (("--iterations", int, None, "timed runs per target"),),
                {"iterations": 2}, {"iterations": 5})
    add_common_options(ap)
    args = ap.parse_args()
    apply_defaults(args, {"iterations": 2}, {"iterations": 5})
    if args.iterations < 1:
        ap.error("--iterations must be >= 1")
    return run_benchmark("bench-conformance", args, bench, tools=(("rclone", "rclone"),))


if __name__ == "__main__":
    sys.exit(main())
