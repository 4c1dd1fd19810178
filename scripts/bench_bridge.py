#!/usr/bin/env python3
"""Bridge network benchmark: berth's built-in `bridge` driver against a private dockerd 20.10
(`--iptables=false --bridge=none`), side by side in one run.

    scripts/bench-bridge.sh [--iterations N] [--quick] [--networks N] [--json FILE]
                            [--no-build] [--keep-tmp]

Every timed request is raw HTTP/1.1 on a keep-alive connection to the daemon's unix socket
(benchlib.RawClient); the clock runs from writing the request to the last byte of the answer.

  create + remove   POST /v1.41/networks/create {"Name": ..., one /24} (the default driver,
                    a real Linux bridge) and DELETE /v1.41/networks/<id>; alternating which
                    daemon goes first
  list              GET /v1.41/networks with --networks (100) bridge networks
  connect           berth only (dockerd connects containers): POST /networks/<id>/connect and
                    /disconnect of a network namespace (`ip netns add`): a veth pair made, one
                    end on the bridge, the other moved into the namespace, addressed and routed

Setup: `cargo build --release` (skip with --no-build). Everything lives in a private temp
directory and is removed afterwards (also on Ctrl-C); the namespace is deleted. Needs root.
Targets are reported, never enforced.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (  # noqa: E402 - the shared benchmark helpers
    build_berth, unwind_on_signals,
    API, DOCKER_CLI, REPO, BenchError, Berth, Daemon, Dockerd, RawClient, check,
    cpu_model, fmt3, loadavg, log, source_state, summary,
)
from bench_networks import conclude, list_latency, wind_down  # noqa: E402 - shared with it

TARGET_TIME = 1 / 2   # berth / dockerd of medians
QUICK = {"iterations": 10, "warmup": 2}
DEFAULTS = {"iterations": 50, "warmup": 3}


def create_body(name: str, i: int) -> dict:
    return {"Name": name, "IPAM": {"Config": [{"Subnet": f"10.{180 + i // 256}.{i % 256}.0/24"}]}}


def create_remove(daemons, clients, args) -> dict:
    times = {d.name: [] for d in daemons}
    for i in range(args.warmup + args.iterations):
        for d in (daemons if i % 2 == 0 else daemons[::-1]):
            c = clients[d.name]
            status, body, t_create = c.request("POST", API + "/networks/create",
                                               create_body(f"cr{i}", 2000 + i))
            check(d, "network create", status, body, (201,))
            nid = json.loads(body)["Id"]
            status, body, t_remove = c.request("DELETE", f"{API}/networks/{nid}")
            check(d, "network rm", status, body, (204,))
            if i >= args.warmup:
                times[d.name].append(t_create + t_remove)
    return times


def connect_cycle(berth: Berth, client: RawClient, args) -> dict:
    ns = f"bbench{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        status, body, _ = client.request("POST", API + "/networks/create",
                                         {"Name": "cn", "IPAM": {"Config": [
                                             {"Subnet": "10.179.0.0/24"}]}})
        check(berth, "network create cn", status, body, (201,))
        connects, disconnects = [], []
        for i in range(args.warmup + args.iterations):
            status, body, t_c = client.request("POST", API + "/networks/cn/connect",
                                               {"Container": ns})
            check(berth, "connect", status, body, (200,))
            status, body, t_d = client.request("POST", API + "/networks/cn/disconnect",
                                               {"Container": ns, "Force": False})
            check(berth, "disconnect", status, body, (200,))
            if i >= args.warmup:
                connects.append(t_c)
                disconnects.append(t_d)
        client.request("DELETE", API + "/networks/cn")
        return {"connect": connects, "disconnect": disconnects}
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def bench(args, berth: Berth, daemons: list[Daemon]) -> dict:
    for d in daemons:
        d.start()
    clients = {d.name: RawClient(d.sock) for d in daemons}
    timings = {}
    label = "create + remove"
    log(f"{label}: {args.warmup} warm-up + {args.iterations} timed each")
    timings[label] = create_remove(daemons, clients, args)
    for d in daemons:
        for i in range(args.networks):
            status, body, _ = clients[d.name].request("POST", API + "/networks/create",
                                                      create_body(f"n{i:05d}", i))
            check(d, f"network create n{i:05d}", status, body, (201,))
    label = f"GET /networks, {args.networks} networks"
    log(label)
    timings[label] = list_latency(daemons, clients, args)
    log("connect + disconnect of a namespace (berth)")
    connect = connect_cycle(berth, clients["berth"], args)
    for c in clients.values():
        c.close()
    print(f"\nmachine: {cpu_model()}, load {loadavg()}")
    print(f"source: {source_state()}")
    print(f"\nLatency (ms): min / median / max of {args.iterations} requests, ratio of medians "
          f"berth/dockerd (target <= {TARGET_TIME:g})")
    out = {"timings": {}, "connect": {}}
    for label, per in timings.items():
        b, d = summary(per["berth"]), summary(per["dockerd"])
        ratio = b["median"] / d["median"] if d["median"] else float("nan")
        met = "met" if ratio <= TARGET_TIME else "NOT met"
        print(f"  {label:30} berth {fmt3(b, 1e3, 2):>22}  dockerd {fmt3(d, 1e3, 2):>22}"
              f"  {ratio:6.3f} {met}")
        out["timings"][label] = {"berth": b, "dockerd": d, "ratio": ratio}
    print("\nberth: namespace connect / disconnect (ms), min / median / max")
    connect["connect + disconnect"] = [c + d for c, d in zip(connect["connect"],
                                                             connect["disconnect"])]
    for key, values in connect.items():
        s = summary(values)
        print(f"  {key:22} {fmt3(s, 1e3, 2)}")
        out["connect"][key] = s
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--iterations", type=int, help="timed requests per figure (default "
                    f"{DEFAULTS['iterations']}, --quick {QUICK['iterations']})")
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--quick", action="store_true", help="fewer iterations")
    ap.add_argument("--networks", type=int, default=100, help="networks for the list figure")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON here")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build --release")
    ap.add_argument("--berth-bin", default=os.path.join(REPO, "target", "release", "berth"))
    ap.add_argument("--dockerd-bin", default=os.environ.get("DOCKERD_BIN", "dockerd"))
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp directory (logs)")
    args = ap.parse_args()
    for k, v in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.iterations < 1 or not 1 <= args.networks <= 2000:
        ap.error("--iterations >= 1, 1 <= --networks <= 2000")
    if os.geteuid() != 0:
        print("bench-bridge: needs root", file=sys.stderr)
        return 2
    dockerd_bin = shutil.which(args.dockerd_bin)
    if not dockerd_bin or not shutil.which(DOCKER_CLI) or not shutil.which("ip"):
        print("bench-bridge: needs dockerd, the docker CLI and ip", file=sys.stderr)
        return 2
    unwind_on_signals()
    stop = build_berth("bench-bridge", args.no_build, args.berth_bin)
    if stop is not None:
        return stop
    tmp = tempfile.mkdtemp(prefix="b", dir="/tmp")
    berth, dockerd = Berth(tmp, args.berth_bin), Dockerd(tmp, dockerd_bin)
    daemons: list[Daemon] = [berth, dockerd]
    outcome, results = "error", {}
    try:
        results = bench(args, berth, daemons)
        outcome = "ok"
    except KeyboardInterrupt:
        outcome = "interrupted"
    except (BenchError, subprocess.CalledProcessError) as e:
        log(f"error: {e}")
    finally:
        wind_down(args, tmp, daemons, dockerd, outcome)
    return conclude(args, outcome, results)


if __name__ == "__main__":
    sys.exit(main())
