#!/usr/bin/env python3
"""Network benchmark: berth against a private dockerd 20.10, side by side in one run.

    scripts/bench-networks.sh [--iterations N] [--quick] [--networks N] [--json FILE]
                              [--no-build] [--keep-tmp]

Every timed request is raw HTTP/1.1 on a keep-alive connection to the daemon's unix socket
(benchlib.RawClient); the clock runs from writing the request to the last byte of the answer.

  create + remove   POST /v1.41/networks/create {"Driver": "bench/nd:latest", one /24} and
                    DELETE /v1.41/networks/<id>, through the project's test network plugin
                    (managed, the same binary on both daemons), with the built-in IPAM and with
                    the plugin's IPAM; alternating which daemon goes first
  list              GET /v1.41/networks with 1, 100 and --networks (1000) user networks
  RSS               VmRSS of each daemon with --networks user networks (dockerd: dockerd alone,
                    its containerd listed apart)
  connect           berth only (dockerd connects containers): POST /networks/<id>/connect and
                    /disconnect of a network namespace (`ip netns add`), the plugin making a
                    real veth pair; the plugin's part is the same calls (CreateEndpoint, Join,
                    ProgramExternalConnectivity, EndpointOperInfo / RevokeExternalConnectivity,
                    Leave, DeleteEndpoint) made straight to its socket

Setup: `cargo build --release` (skip with --no-build), scripts/make-test-plugins.sh netdriver
(optimised), `docker plugin create bench/nd` on both daemons. Everything lives in a private temp
directory and is removed afterwards (also on Ctrl-C); the namespace is deleted. Needs root.
Targets are reported, never enforced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Callable

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (  # noqa: E402 - the shared benchmark helpers
    API, Bench, BenchError, Berth, Daemon, RawClient, add_options, alternating,
    argument_parser, check, fmt3, loadavg, log, machine_facts, parse_options, print_setting,
    round_options, run_benchmark, sample_rss, summary,
)

PLUGIN = "bench/nd:latest"
TARGET_TIME = 1 / 2   # berth / dockerd of medians: create + remove and list
TARGET_RSS = 1 / 4    # berth / dockerd with --networks networks
QUICK = {"iterations": 10, "warmup": 2, "rss_samples": 3}
DEFAULTS = {"iterations": 50, "warmup": 3, "rss_samples": 5}


def subnet(i: int) -> str:
    return f"10.{100 + i // 256}.{i % 256}.0/24"


def create_body(name: str, i: int, plugin_ipam: bool) -> dict:
    if plugin_ipam:
        return {"Name": name, "Driver": PLUGIN, "IPAM": {"Driver": PLUGIN}}
    return {"Name": name, "Driver": PLUGIN, "IPAM": {"Config": [{"Subnet": subnet(i)}]}}


def create_remove(daemons, clients, args, body: Callable[[str, int], dict]) -> dict:
    """Per daemon: the latencies of a network create (`body(name, round)`) plus its remove."""
    def cycle(d: Daemon, i: int) -> float:
        c = clients[d.name]
        status, payload, t_create = c.request("POST", API + "/networks/create", body(f"cr{i}", i))
        check(d, "network create", status, payload, (201,))
        nid = json.loads(payload)["Id"]
        status, payload, t_remove = c.request("DELETE", f"{API}/networks/{nid}")
        check(d, "network rm", status, payload, (204,))
        return t_create + t_remove
    return alternating(daemons, args.warmup, args.iterations, cycle)


def fill(d: Daemon, client: RawClient, start: int, end: int) -> None:
    for i in range(start, end):
        status, body, _ = client.request("POST", API + "/networks/create",
                                         create_body(f"n{i:05d}", i, False))
        check(d, f"network create n{i:05d}", status, body, (201,))


def list_latency(daemons, clients, args) -> dict:
    def list_networks(d: Daemon, _i: int) -> float:
        status, body, t = clients[d.name].request("GET", API + "/networks")
        check(d, "network ls", status, body, (200,))
        return t
    return alternating(daemons, args.warmup, args.iterations, list_networks)


def plugin_part(berth: Berth, ns_path: str, iterations: int) -> list[float]:
    """The plugin's share of a connect + disconnect: its calls, made straight to its socket."""
    sock = berth.socket_path(PLUGIN)
    c = RawClient(sock)
    nid = "b" * 64
    out = []
    status, body, _ = c.request("POST", "/NetworkDriver.CreateNetwork", {
        "NetworkID": nid, "Options": {}, "IPv4Data": [{"AddressSpace": "x", "Pool": "10.99.0.0/24",
                                                        "Gateway": "10.99.0.1/24"}],
        "IPv6Data": []})
    if status != 200:
        raise BenchError(f"plugin CreateNetwork -> {status}: {body[:200]!r}")
    for i in range(iterations):
        eid = f"{i:064x}"
        ep = {"NetworkID": nid, "EndpointID": eid}
        total = 0.0
        for method, req in (
                ("CreateEndpoint", {**ep, "Interface": {"Address": "10.99.0.2/24",
                                                        "AddressIPv6": "", "MacAddress": ""},
                                    "Options": {}}),
                ("Join", {**ep, "SandboxKey": ns_path, "Options": {}}),
                ("ProgramExternalConnectivity", {**ep, "Options": {}}),
                ("EndpointOperInfo", ep),
                ("RevokeExternalConnectivity", ep),
                ("Leave", ep),
                ("DeleteEndpoint", ep)):
            status, body, t = c.request("POST", f"/NetworkDriver.{method}", req)
            if status != 200:
                raise BenchError(f"plugin {method} -> {status}: {body[:200]!r}")
            total += t
        out.append(total)
    c.request("POST", "/NetworkDriver.DeleteNetwork", {"NetworkID": nid})
    c.close()
    return out


def connect_cycle(berth: Berth, client: RawClient, args, ns: str, create: dict,
                  more: Callable[[str], dict] = lambda _: {}) -> dict:
    """berth's latencies of connecting the network namespace `ns` (made here, deleted after)
    to network "cn" (`create` its body) and disconnecting it, with what `more` (given the
    namespace's path) measures before the network goes."""
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        status, body, _ = client.request("POST", API + "/networks/create", {"Name": "cn", **create})
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
        out = {"connect": connects, "disconnect": disconnects, **more(f"/run/netns/{ns}")}
        client.request("DELETE", API + "/networks/cn")
        return out
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def print_timings(args, timings: dict, target: float, width: int) -> dict:
    """The latency figures, berth against dockerd with the ratio of medians; their JSON."""
    print(f"\nLatency (ms): min / median / max of {args.iterations} requests, ratio of medians "
          f"berth/dockerd (target <= {target:g})")
    out = {}
    for label, per in timings.items():
        b, d = summary(per["berth"]), summary(per["dockerd"])
        ratio = b["median"] / d["median"] if d["median"] else float("nan")
        met = "met" if ratio <= target else "NOT met"
        print(f"  {label:{width}} berth {fmt3(b, 1e3, 2):>22}  dockerd {fmt3(d, 1e3, 2):>22}"
              f"  {ratio:6.3f} {met}")
        out[label] = {"berth": b, "dockerd": d, "ratio": ratio}
    return out


def remove_networks(daemons: list[Daemon]) -> None:
    """Every user network, while the plugin still answers (before the frame disables it)."""
    for d in daemons:
        if d.proc is None or d.proc.poll() is not None:
            continue
        try:
            for n in d.api("GET", "/networks"):
                if n["Name"] not in ("host", "none"):
                    d.api("DELETE", f"/networks/{n['Id']}")
        except (BenchError, OSError) as e:
            log(f"{d.name}: removing networks: {e}")


def bench(run: Bench) -> dict:
    args, berth, daemons = run.args, run.berth, run.daemons
    machine = machine_facts()
    # An unoptimised plugin spends more time per call than either daemon; both call the same
    # binary.
    base = run.make_test_plugins(["netdriver"], {"BERTH_TEST_PLUGIN_OPTIMIZE": "1"})
    run.start_daemons()
    versions = run.versions({})
    run.undo.append(lambda: remove_networks(daemons))
    for d in daemons:
        d.create_plugins({PLUGIN: os.path.join(base, "netdriver")})
        if d is berth:
            d.docker("plugin", "set", "bench/nd", "TEST_NET_VETH=1")
        d.enable(PLUGIN)
    clients = {d.name: RawClient(d.sock) for d in daemons}
    timings = {}
    for label, plugin_ipam in (("create + remove, built-in IPAM", False),
                               ("create + remove, plugin IPAM", True)):
        log(f"{label}: {args.warmup} warm-up + {args.iterations} timed each")
        timings[label] = create_remove(
            daemons, clients, args,
            lambda name, i, plugin_ipam=plugin_ipam: create_body(name, 4000 + i, plugin_ipam))
    have = 0
    for count in (1, 100, args.networks):
        for d in daemons:
            fill(d, clients[d.name], have, count)
        have = count
        label = f"GET /networks, {count} networks"
        log(label)
        timings[label] = list_latency(daemons, clients, args)
    log(f"RSS with {args.networks} networks")
    time.sleep(1.0)
    rss = sample_rss(daemons, args.rss_samples, 0.5)
    log("connect + disconnect of a namespace (berth)")
    connect = connect_cycle(
        berth, clients["berth"], args, f"bench{os.getpid()}",
        {"Driver": PLUGIN, "IPAM": {"Config": [{"Subnet": "10.98.0.0/24"}]}},
        lambda ns_path: {"plugin": plugin_part(berth, ns_path, args.iterations)})
    for c in clients.values():
        c.close()
    machine["loadavg_at_end"] = loadavg()
    print_setting(machine, versions)
    results = report(args, timings, rss, connect)
    results.update(machine=machine, versions=versions)
    return results


def report(args, timings, rss, connect) -> dict:
    out = {"timings": print_timings(args, timings, TARGET_TIME, 36), "rss": {}, "connect": {}}
    b_rss = summary([kb / 1024 for kb in rss["berth"]["daemon"]])
    d_rss = summary([kb / 1024 for kb in rss["dockerd"]["daemon"]])
    ratio = b_rss["median"] / d_rss["median"]
    print(f"\nRSS (MiB) with {args.networks} networks: berth {b_rss['median']:.1f}, dockerd "
          f"{d_rss['median']:.1f} (its containerd apart), ratio {ratio:.3f} "
          f"({'met' if ratio <= TARGET_RSS else 'NOT met'}, target <= {TARGET_RSS:g})")
    out["rss"] = {"berth_mib": b_rss, "dockerd_mib": d_rss, "ratio": ratio}
    print("\nberth: namespace connect / disconnect (ms), min / median / max")
    for key in ("connect", "disconnect", "plugin"):
        s = summary(connect[key])
        name = {"plugin": "the plugin's calls of both"}.get(key, key)
        print(f"  {name:28} {fmt3(s, 1e3, 2)}")
        out["connect"][key] = s
    both = summary([c + d for c, d in zip(connect["connect"], connect["disconnect"])])
    share = summary(connect["plugin"])["median"] / both["median"]
    print(f"  connect + disconnect         {fmt3(both, 1e3, 2)}  (plugin's part of the median: "
          f"{share:.0%})")
    return out


def main() -> int:
    ap = argument_parser(__doc__, quick="fewer iterations and RSS samples")
    add_options(ap, (
        *round_options("requests", "per figure"),
        ("--rss-samples", int, None, "RSS samples, 0.5 s apart"),
        ("--networks", int, 1000, "the large network count"),
    ), QUICK, DEFAULTS)
    args = parse_options(ap, QUICK, DEFAULTS)
    if args.iterations < 1 or args.warmup < 0 or args.rss_samples < 1 or args.networks < 100:
        ap.error("--iterations, --rss-samples >= 1, --warmup >= 0, --networks >= 100")
    return run_benchmark("bench-networks", args, bench, tools=(("ip", "iproute2"),))


if __name__ == "__main__":
    sys.exit(main())
