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

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (  # noqa: E402 - the shared benchmark helpers
    build_berth, unwind_on_signals,
    API, DOCKER_CLI, REPO, BenchError, Berth, Daemon, Dockerd, RawClient, check, cleanup,
    cpu_model, fmt3, loadavg, log, mem_total, sample_rss, source_state, summary,
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


def create_remove(daemons, clients, args, plugin_ipam: bool) -> dict:
    times = {d.name: [] for d in daemons}
    for i in range(args.warmup + args.iterations):
        order = daemons if i % 2 == 0 else daemons[::-1]
        for d in order:
            c = clients[d.name]
            status, body, t_create = c.request("POST", API + "/networks/create",
                                               create_body(f"cr{i}", 4000 + i, plugin_ipam))
            check(d, "network create", status, body, (201,))
            nid = json.loads(body)["Id"]
            status, body, t_remove = c.request("DELETE", f"{API}/networks/{nid}")
            check(d, "network rm", status, body, (204,))
            if i >= args.warmup:
                times[d.name].append(t_create + t_remove)
    return times


def fill(d: Daemon, client: RawClient, start: int, end: int) -> None:
    for i in range(start, end):
        status, body, _ = client.request("POST", API + "/networks/create",
                                         create_body(f"n{i:05d}", i, False))
        check(d, f"network create n{i:05d}", status, body, (201,))


def list_latency(daemons, clients, args) -> dict:
    times = {d.name: [] for d in daemons}
    for i in range(args.warmup + args.iterations):
        for d in (daemons if i % 2 == 0 else daemons[::-1]):
            status, body, t = clients[d.name].request("GET", API + "/networks")
            check(d, "network ls", status, body, (200,))
            if i >= args.warmup:
                times[d.name].append(t)
    return times


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


def connect_cycle(berth: Berth, client: RawClient, args) -> dict:
    ns = f"bench{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        status, body, _ = client.request("POST", API + "/networks/create",
                                         {"Name": "cn", "Driver": PLUGIN,
                                          "IPAM": {"Config": [{"Subnet": "10.98.0.0/24"}]}})
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
        plugin = plugin_part(berth, f"/run/netns/{ns}", args.iterations)
        client.request("DELETE", API + "/networks/cn")
        return {"connect": connects, "disconnect": disconnects, "plugin": plugin}
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def bench(args, tmp: str, berth: Berth, dockerd: Dockerd, daemons: list[Daemon]) -> dict:
    plugin_dir = os.path.join(tmp, "tp")
    log("scripts/make-test-plugins.sh netdriver (optimised)")
    subprocess.run([os.path.join(REPO, "scripts", "make-test-plugins.sh"), plugin_dir,
                    "netdriver"], check=True, env=dict(os.environ, BERTH_TEST_PLUGIN_OPTIMIZE="1"),
                   stdout=subprocess.DEVNULL)
    for d in daemons:
        d.start()
        d.docker("plugin", "create", "bench/nd", os.path.join(plugin_dir, "netdriver"))
        if d is berth:
            d.docker("plugin", "set", "bench/nd", "TEST_NET_VETH=1")
        d.load_plugins()
        d.enable(PLUGIN)
    clients = {d.name: RawClient(d.sock) for d in daemons}
    timings = {}
    for label, plugin_ipam in (("create + remove, built-in IPAM", False),
                               ("create + remove, plugin IPAM", True)):
        log(f"{label}: {args.warmup} warm-up + {args.iterations} timed each")
        timings[label] = create_remove(daemons, clients, args, plugin_ipam)
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
    connect = connect_cycle(berth, clients["berth"], args)
    for c in clients.values():
        c.close()
    return report(args, timings, rss, connect)


def report(args, timings, rss, connect) -> dict:
    print(f"\nmachine: {cpu_model()}, {mem_total()}, load {loadavg()}")
    print(f"source: {source_state()}")
    print(f"\nLatency (ms): min / median / max of {args.iterations} requests, ratio of medians "
          f"berth/dockerd (target <= {TARGET_TIME:g})")
    out = {"timings": {}, "rss": {}, "connect": {}}
    for label, per in timings.items():
        b, d = summary(per["berth"]), summary(per["dockerd"])
        ratio = b["median"] / d["median"] if d["median"] else float("nan")
        met = "met" if ratio <= TARGET_TIME else "NOT met"
        print(f"  {label:36} berth {fmt3(b, 1e3, 2):>22}  dockerd {fmt3(d, 1e3, 2):>22}"
              f"  {ratio:6.3f} {met}")
        out["timings"][label] = {"berth": b, "dockerd": d, "ratio": ratio}
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--iterations", type=int, help="timed requests per figure (default "
                    f"{DEFAULTS['iterations']}, --quick {QUICK['iterations']})")
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--rss-samples", type=int)
    ap.add_argument("--quick", action="store_true", help="fewer iterations and RSS samples")
    ap.add_argument("--networks", type=int, default=1000, help="the large network count")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON here")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build --release")
    ap.add_argument("--berth-bin", default=os.path.join(REPO, "target", "release", "berth"))
    ap.add_argument("--dockerd-bin", default=os.environ.get("DOCKERD_BIN", "dockerd"))
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp directory (logs)")
    args = ap.parse_args()
    for k, v in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.iterations < 1 or args.networks < 100 or args.networks > 1000 * 60:
        ap.error("--iterations >= 1, 100 <= --networks")
    if os.geteuid() != 0:
        print("bench-networks: needs root", file=sys.stderr)
        return 2
    dockerd_bin = shutil.which(args.dockerd_bin)
    if not dockerd_bin or not shutil.which(DOCKER_CLI) or not shutil.which("ip"):
        print("bench-networks: needs dockerd, the docker CLI and ip", file=sys.stderr)
        return 2
    unwind_on_signals()
    stop = build_berth("bench-networks", args.no_build, args.berth_bin)
    if stop is not None:
        return stop
    tmp = tempfile.mkdtemp(prefix="b", dir="/tmp")
    berth, dockerd = Berth(tmp, args.berth_bin), Dockerd(tmp, dockerd_bin)
    daemons: list[Daemon] = [berth, dockerd]
    outcome, results = "error", {}
    try:
        results = bench(args, tmp, berth, dockerd, daemons)
        outcome = "ok"
    except KeyboardInterrupt:
        outcome = "interrupted"
    except (BenchError, subprocess.CalledProcessError) as e:
        log(f"error: {e}")
    finally:
        wind_down(args, tmp, daemons, dockerd, outcome)
    return conclude(args, outcome, results)


def wind_down(args, tmp: str, daemons: list[Daemon], dockerd: Dockerd, outcome: str) -> None:
    """Removes the user networks of the daemons still running (first, while their plugins
    still answer), then stops the daemons and removes the temp directory."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for d in daemons:
        if d.proc is not None and d.proc.poll() is None:
            try:
                for n in d.api("GET", "/networks"):
                    if n["Name"] not in ("host", "none"):
                        d.api("DELETE", f"/networks/{n['Id']}")
            except (BenchError, OSError) as e:
                log(f"{d.name}: removing networks: {e}")
    cleanup(args, tmp, daemons, dockerd, keep=args.keep_tmp or outcome == "error")


def conclude(args, outcome: str, results: dict) -> int:
    """The exit status; the results written to --json when the run went through."""
    if outcome != "ok":
        return 130 if outcome == "interrupted" else 1
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
