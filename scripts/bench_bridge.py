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

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (  # noqa: E402 - the shared benchmark frame and helpers
    API, Bench, RawClient, add_options, argument_parser, check, fmt3, log, parse_options,
    round_options, run_benchmark, summary,
)
from bench_networks import (  # noqa: E402 - shared with it
    connect_cycle, create_remove, list_latency, print_timings, remove_networks,
)

TARGET_TIME = 1 / 2   # berth / dockerd of medians
QUICK = {"iterations": 10, "warmup": 2}
DEFAULTS = {"iterations": 50, "warmup": 3}


def create_body(name: str, i: int) -> dict:
    return {"Name": name, "IPAM": {"Config": [{"Subnet": f"10.{180 + i // 256}.{i % 256}.0/24"}]}}


def bench(run: Bench) -> dict:
    args, berth, daemons = run.args, run.berth, run.daemons
    run.start_daemons()
    run.undo.append(lambda: remove_networks(daemons))
    clients = {d.name: RawClient(d.sock) for d in daemons}
    timings = {}
    label = "create + remove"
    log(f"{label}: {args.warmup} warm-up + {args.iterations} timed each")
    timings[label] = create_remove(daemons, clients, args,
                                   lambda name, i: create_body(name, 2000 + i))
    for d in daemons:
        for i in range(args.networks):
            status, body, _ = clients[d.name].request("POST", API + "/networks/create",
                                                      create_body(f"n{i:05d}", i))
            check(d, f"network create n{i:05d}", status, body, (201,))
    label = f"GET /networks, {args.networks} networks"
    log(label)
    timings[label] = list_latency(daemons, clients, args)
    log("connect + disconnect of a namespace (berth)")
    connect = connect_cycle(berth, clients["berth"], args, f"bbench{os.getpid()}",
                            {"IPAM": {"Config": [{"Subnet": "10.179.0.0/24"}]}})
    for c in clients.values():
        c.close()
    out = {"timings": print_timings(args, timings, TARGET_TIME, 30), "connect": {}}
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
        *round_options("requests", "per figure"),
        ("--networks", int, 100, "bridge networks for the list figure"),
    ), QUICK, DEFAULTS)
    args = parse_options(ap, QUICK, DEFAULTS)
    if args.iterations < 1 or args.warmup < 0 or not 1 <= args.networks <= 2000:
        ap.error("--iterations >= 1, --warmup >= 0, 1 <= --networks <= 2000")
    return run_benchmark("bench-bridge", args, bench, tools=(("ip", "iproute2"),))


if __name__ == "__main__":
    sys.exit(main())
