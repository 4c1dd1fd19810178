#!/usr/bin/env python3
"""Cold start under socket activation: berth and a private dockerd 20.10, side by side in one
run, each started by `systemd-socket-activate` on the first connection to its API socket, as
their socket units start them (berth: `-H fd://berth-api`; dockerd: `-H fd://`, its
docker.socket way).

    scripts/bench-activation.sh [--iterations N] [--quick] [--json FILE] [--no-build]
                                [--keep-tmp]

Each iteration, for each daemon (alternating which goes first): the activator listens; the
clock starts when the client connects and sends `GET /_ping`, which makes the activator exec
the daemon with the socket; it stops when the answer has arrived. Then the daemon is stopped
(SIGTERM) and waited for. State directories are kept across iterations (a service restart, not
a first install; the first iteration of each daemon initialises its state and is reported apart).
dockerd's containerd (a private one) runs throughout, as containerd.service does before
docker.socket starts dockerd.

Needs root, systemd-socket-activate (package systemd), dockerd (package docker.io), cargo.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (  # noqa: E402 - the shared benchmark helpers
    Bench, BenchError, Berth, Dockerd, add_common_options, add_options, apply_defaults,
    argument_parser, fmt3, log, machine_facts, loadavg, run_benchmark, source_state, spawn,
    summary,
)

QUICK = {"iterations": 3}
DEFAULTS = {"iterations": 10}


def activated(argv: list[str], sock: str, fdname: str) -> list[str]:
    return ["systemd-socket-activate", "-l", sock, f"--fdname={fdname}"] + argv


class ActivatedBerth(Berth):
    def argv(self) -> list[str]:
        inner = super().argv()
        i = inner.index("--host")
        inner[i:i + 2] = ["--host", "fd://berth-api"]
        return activated(inner, self.sock, "berth-api")


class ActivatedDockerd(Dockerd):
    def __init__(self, tmp: str, binary: str):
        super().__init__(tmp, binary)
        # its containerd outlives every cold start (the frame's cleanup stops it at the end):
        # what is left after a start is reaped by the paths of dockerd's own directories only
        self.own_paths.remove(self.containerd.dir)

    def argv(self) -> list[str]:
        inner = super().argv()
        i = inner.index("-H")
        inner[i:i + 2] = ["-H", "fd://"]
        return activated(inner, self.sock, "docker.socket")


def first_ping(sock: str, timeout: float = 120.0) -> float:
    """Seconds from connect to the end of the `/_ping` answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    t0 = time.perf_counter()
    s.connect(sock)
    s.sendall(b"GET /_ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    t1 = time.perf_counter()
    s.close()
    if not data.startswith(b"HTTP/1.1 200"):
        raise BenchError(f"{sock}: /_ping answered {data[:80]!r}")
    return t1 - t0


def activator_listens(log_path: str, offset: int) -> bool:
    with open(log_path, "rb") as f:
        f.seek(offset)
        return b"Listening on " in f.read()


def cold_start(d, grace: float) -> float:
    if os.path.exists(d.sock):
        os.unlink(d.sock)
    logged = os.path.getsize(d.log_path) if os.path.exists(d.log_path) else 0
    d.proc = spawn(d.argv(), d.log_path, cwd=d.tmp)
    # The socket file exists from bind(), before listen(): a connection then is refused. The
    # activator says when it listens (a probe connection would start the daemon).
    deadline = time.monotonic() + 10
    while not activator_listens(d.log_path, logged):
        if time.monotonic() > deadline or d.proc.poll() is not None:
            raise BenchError(f"{d.name}: the activator did not listen\n{d.log_tail()}")
        time.sleep(0.005)
    took = first_ping(d.sock)
    # the activator exec'd the daemon: same pid
    d.proc.send_signal(signal.SIGTERM)
    try:
        d.proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        d.proc.kill()
        d.proc.wait(10)
    d.reap_leftovers()
    return took


def main() -> int:
    ap = argument_parser(__doc__, quick="fewer cold starts")
    add_options(ap, (("--iterations", int, None, "cold starts per daemon after the first"),),
                QUICK, DEFAULTS)
    add_common_options(ap)
    args = ap.parse_args()
    apply_defaults(args, QUICK, DEFAULTS)
    if args.iterations < 1:
        ap.error("--iterations must be >= 1")
    return run_benchmark("bench-activation", args, bench,
                         tools=(("systemd-socket-activate", "systemd"),),
                         daemons=(ActivatedBerth, ActivatedDockerd))


def bench(run: Bench) -> dict:
    daemons = run.daemons
    run.dockerd.containerd.start()
    report: dict = {"machine": machine_facts(), "source": source_state()}
    samples: dict[str, list[float]] = {d.name: [] for d in daemons}
    first: dict[str, float] = {}
    for i in range(run.args.iterations + 1):
        for d in (daemons if i % 2 == 0 else daemons[::-1]):
            took = cold_start(d, 60.0)
            if i == 0:
                first[d.name] = took
            else:
                samples[d.name].append(took)
            log(f"{d.name} iteration {i}: {took * 1e3:.0f} ms")
    report["first_start_s"] = first
    report["cold_start_s"] = {k: summary(v) for k, v in samples.items()}
    report["machine"]["loadavg_at_end"] = loadavg()
    print(f"\ncold start under socket activation, connect to /_ping answered, ms "
          f"(min/median/max of {run.args.iterations}; release build; load average "
          f"{report['machine']['loadavg_at_start']} -> {report['machine']['loadavg_at_end']})")
    for d in daemons:
        s = report["cold_start_s"][d.name]
        print(f"  {d.name:8} {fmt3(s, 1e3, 0):>20}   (first start, empty state: "
              f"{first[d.name] * 1e3:.0f})")
    medians = {k: v["median"] for k, v in report["cold_start_s"].items()}
    ratio = medians["berth"] / medians["dockerd"]
    report["ratio_berth_to_dockerd"] = ratio
    print(f"  berth / dockerd (medians): {ratio:.3f}")
    return report


if __name__ == "__main__":
    sys.exit(main())
