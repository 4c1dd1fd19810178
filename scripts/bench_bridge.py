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

import json
import os
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (  # noqa: E402 - the shared benchmark frame and helpers
    API, Bench, Berth, RawClient, add_common_options, add_options, apply_defaults,
    argument_parser, check, fmt3, log, run_benchmark, summary,
)
from bench_networks import list_latency, remove_networks  # noqa: E402 - shared with it

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


def bench(run: Bench) -> dict:
    args, berth, daemons = run.args, run.berth, run.daemons
    run.start_daemons()
    run.undo.append(lambda: remove_networks(daemons))
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
    ap = argument_parser(__doc__, quick="fewer iterations")
    add_options(ap, (
        ("--iterations", int, None, "timed requests per figure"),
        ("--warmup", int, None, "untimed requests first"),
        ("--networks", int, 100, "bridge networks for the list figure"),
    ), QUICK, DEFAULTS)
    add_common_options(ap)
    args = ap.parse_args()
    apply_defaults(args, QUICK, DEFAULTS)
    if args.iterations < 1 or args.warmup < 0 or not 1 <= args.networks <= 2000:
        ap.error("--iterations >= 1, --warmup >= 0, 1 <= --networks <= 2000")
    return run_benchmark("bench-bridge", args, bench, tools=(("ip", "iproute2"),))


if __name__ == "__main__":
    sys.exit(main())
