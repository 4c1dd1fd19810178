#!/usr/bin/env python3
"""Events and disk-usage benchmark: what connected `/events` subscribers cost a volume create,
and what `GET /system/df` costs with many local volumes, berth against a private dockerd 20.10
side by side in one run.

    scripts/bench-events.sh [--iterations N] [--quick] [--json FILE] [--no-build] [--keep-tmp]
                            [--subscribers N] [--volumes N] [--df-iterations N]

On each daemon, alternating which goes first:

  create, 0 subscribers   POST /v1.41/volumes/create {"Name"} (local driver, a new name each
                          time, removed untimed afterwards): latency on one keep-alive
                          connection, nobody watching /events
  create, N subscribers   the same with --subscribers (100) clients connected to
                          GET /v1.41/events, all read by one child process that drains every
                          stream (readers that keep up: the cost of publishing, not of a slow
                          reader);
                          every subscriber must have received every create event at the end
  system df               GET /v1.41/system/df with --volumes (1000) local volumes, each with a
                          4 KiB file in its _data (sizes are really measured)

Targets (issue 15): berth at most 1/2 of dockerd's median for the create with subscribers and
for system df.

berth and dockerd (with its own containerd) run on a private temp directory; both are stopped
and everything is deleted, also on Ctrl-C or failure. Needs root.

Nothing here asserts on a timing: targets are reported, never enforced.
"""

from __future__ import annotations

import multiprocessing
import os
import selectors
import socket
import statistics
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (  # noqa: E402 - the shared benchmark frame and helpers
    API, Bench, BenchError, Daemon, RawClient, Table, add_options, alternating,
    argument_parser, check, loadavg, log, machine_facts, parse_options, print_setting,
    round_options, run_benchmark, summary,
)

TARGET = 1 / 2  # berth's median / dockerd's, with subscribers and for system df
EVENT_NEEDLE = b'"Type":"volume"'

QUICK = {"iterations": 30, "warmup": 5, "df_iterations": 5}
DEFAULTS = {"iterations": 200, "warmup": 20, "df_iterations": 20}


# --------------------------------------------------------------------------------------------
# Subscribers


class Subscribers:
    """`count` connections to GET /events on each daemon, drained by a child process (so the
    timing client never waits for the Python lock while 200 streams are read); counts the
    volume events each connection received."""

    def __init__(self, daemons: list[Daemon], count: int):
        self.names = [d.name for d in daemons]
        self.conn, child = multiprocessing.Pipe()
        self.proc = multiprocessing.Process(
            target=drain, args=(child, {d.name: d.sock for d in daemons}, count), daemon=True)
        self.proc.start()
        if self.conn.recv() != "connected":
            raise BenchError("the /events readers could not connect")

    def min_received(self) -> dict[str, int]:
        """Per daemon: the fewest volume events any of its subscribers received so far."""
        self.conn.send("count")
        return self.conn.recv()

    def close(self) -> None:
        if self.proc.is_alive():
            self.conn.send("stop")
            self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


def drain(conn, socks: dict[str, str], count: int) -> None:
    """The child of Subscribers: connects, then reads every stream until told to stop,
    answering "count" with the fewest events per daemon."""
    selector = selectors.DefaultSelector()
    received: dict[socket.socket, int] = {}
    of: dict[str, list[socket.socket]] = {name: [] for name in socks}
    for name, path in socks.items():
        for _ in range(count):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            s.sendall(f"GET {API}/events HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            s.setblocking(False)
            selector.register(s, selectors.EVENT_READ, b"")
            received[s] = 0
            of[name].append(s)
    selector.register(conn, selectors.EVENT_READ, None)
    conn.send("connected")
    keep = len(EVENT_NEEDLE) - 1
    while True:
        for key, _ in selector.select():
            if key.fileobj is conn:
                if conn.recv() == "stop":
                    return
                conn.send({name: min(received[s] for s in socks) for name, socks in of.items()})
                continue
            s = key.fileobj
            try:
                data = s.recv(65536)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(s)
                continue
            # the end of the previous read, for a needle cut between two reads
            tail = key.data + data
            received[s] += tail.count(EVENT_NEEDLE)  # type: ignore[index]
            last = tail.rfind(EVENT_NEEDLE)
            rest = tail[last + len(EVENT_NEEDLE):] if last >= 0 else tail
            selector.modify(s, selectors.EVENT_READ, rest[-keep:])


def listeners(d: Daemon) -> int:
    return int(d.api("GET", "/info").get("NEventsListener", 0))


def wait_listeners(d: Daemon, want: int) -> None:
    deadline = time.monotonic() + 60
    while (n := listeners(d)) != want:
        if time.monotonic() > deadline:
            raise BenchError(f"{d.name}: {n} events listeners, expected {want}")
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# Measurements


def creates(daemons: list[Daemon], clients: dict, warmup: int, iterations: int,
            prefix: str) -> dict:
    """Per daemon: latencies (seconds) of creates of new volumes, each removed untimed."""
    def create(d: Daemon, i: int) -> float:
        c = clients[d.name]
        name = f"{prefix}{i}"
        status, payload, took = c.request("POST", f"{API}/volumes/create", {"Name": name})
        check(d, f"volume create {name}", status, payload, (201,))
        status, payload, _ = c.request("DELETE", f"{API}/volumes/{name}")
        check(d, f"volume rm {name}", status, payload, (204,))
        return took
    return alternating(daemons, warmup, iterations, create)


def fill_volumes(d: Daemon, c: RawClient, count: int) -> None:
    """`count` local volumes, each with a 4 KiB file."""
    block = b"x" * 4096
    for i in range(count):
        status, payload, _ = c.request("POST", f"{API}/volumes/create", {"Name": f"df{i:04d}"})
        check(d, "volume create", status, payload, (201,))
        with open(os.path.join(d.data_root, "volumes", f"df{i:04d}", "_data", "f"), "wb") as f:
            f.write(block)


def disk_usage(daemons: list[Daemon], clients: dict, iterations: int, volumes: int) -> dict:
    def df(d: Daemon, _i: int) -> float:
        status, payload, took = clients[d.name].request("GET", f"{API}/system/df")
        check(d, "system df", status, payload, (200,))
        if payload.count(b'"Size":4096') != volumes:
            raise BenchError(f"{d.name}: system df does not show {volumes} volumes of 4 KiB"
                             f": {payload[:300]!r}")
        return took
    # the untimed first round warms the page cache
    return alternating(daemons, 1, iterations, df)


# --------------------------------------------------------------------------------------------
# Main


def main() -> int:
    ap = argument_parser(__doc__, quick="fewer iterations")
    add_options(ap, (
        *round_options("creates", "per daemon, with and without subscribers"),
        ("--df-iterations", int, None, "timed system df per daemon"),
        ("--subscribers", int, 100, "connected /events readers per daemon"),
        ("--volumes", int, 1000, "local volumes system df reports"),
    ), QUICK, DEFAULTS)
    args = parse_options(ap, QUICK, DEFAULTS)
    if (args.iterations < 1 or args.warmup < 0 or args.df_iterations < 1
            or args.subscribers < 1 or args.volumes < 1):
        ap.error("counts must be >= 1 (--warmup >= 0)")
    return run_benchmark("bench-events", args, bench)


def bench(run: Bench) -> dict:
    args, daemons = run.args, run.daemons
    run.start_daemons()
    machine = machine_facts()
    versions = run.versions({})
    clients = {d.name: RawClient(d.sock) for d in daemons}
    run.undo.append(lambda: [c.close() for c in clients.values()])

    log(f"{args.warmup} warm-up + {args.iterations} timed creates per daemon, no subscribers")
    alone = creates(daemons, clients, args.warmup, args.iterations, "a")

    log(f"connecting {args.subscribers} /events readers to each daemon")
    subscribers = Subscribers(daemons, args.subscribers)
    run.undo.append(subscribers.close)
    for d in daemons:
        wait_listeners(d, args.subscribers)
    log(f"{args.warmup} warm-up + {args.iterations} timed creates per daemon, "
        f"{args.subscribers} subscribers each")
    watched = creates(daemons, clients, args.warmup, args.iterations, "w")
    # every create and destroy reached every subscriber
    expected = 2 * (args.warmup + args.iterations)
    deadline = time.monotonic() + 30
    while True:
        delivered = subscribers.min_received()
        if all(n >= expected for n in delivered.values()):
            break
        if time.monotonic() > deadline:
            raise BenchError("subscribers missed events: " + ", ".join(
                f"{name} {n}/{expected}" for name, n in delivered.items()))
        time.sleep(0.05)
    subscribers.close()
    run.undo.remove(subscribers.close)
    for d in daemons:
        wait_listeners(d, 0)

    log(f"{args.volumes} local volumes of 4 KiB on each daemon")
    for d in daemons:
        fill_volumes(d, clients[d.name], args.volumes)
    log(f"1 warm-up + {args.df_iterations} timed GET /system/df per daemon")
    df = disk_usage(daemons, clients, args.df_iterations, args.volumes)
    machine["loadavg_at_end"] = loadavg()
    return report(args, machine, versions, alone, watched, delivered, df, daemons)


# --------------------------------------------------------------------------------------------
# Report


def report(args, machine, versions, alone, watched, delivered, df, daemons) -> dict:
    b, d = (x.name for x in daemons)
    print_setting(machine, versions)
    print(f"settings  {args.iterations} timed creates per daemon after {args.warmup} warm-up, "
          f"alternating order, one keep-alive connection each; {args.subscribers} /events "
          f"readers per daemon (each got {delivered[b]} on {b}, {delivered[d]} on {d} volume "
          f"events); system df over {args.volumes} local volumes of 4 KiB, "
          f"{args.df_iterations} timed after 1 warm-up")
    table = Table(b, d, 34)
    out: dict = {"machine": machine, "versions": versions,
                 "settings": {k: getattr(args, k) for k in (
                     "iterations", "warmup", "quick", "subscribers", "volumes",
                     "df_iterations")},
                 "events_delivered_per_subscriber": delivered, "latency_ms": {}}
    print("\nlatency (ms)")
    table.header(f"ratio = {b}/{d} of medians")
    ms = lambda xs: summary([x * 1000 for x in xs])  # noqa: E731
    out["latency_ms"]["create, 0 subscribers"] = table.row(
        "volume create, 0 subscribers", ms(alone[b]), ms(alone[d]), 1, 3)
    out["latency_ms"][f"create, {args.subscribers} subscribers"] = table.row(
        f"volume create, {args.subscribers} subscribers", ms(watched[b]), ms(watched[d]), 1, 3,
        TARGET)
    out["latency_ms"][f"system df, {args.volumes} volumes"] = table.row(
        f"system df, {args.volumes} volumes", ms(df[b]), ms(df[d]), 1, 3, TARGET)
    added = {n: (statistics.median(watched[n]) - statistics.median(alone[n])) * 1000
             for n in (b, d)}
    print(f"{'added by the subscribers (median)':<34} {added[b]:>26.3f} {added[d]:>26.3f}")
    out["added_by_subscribers_ms"] = added
    return out


if __name__ == "__main__":
    sys.exit(main())
