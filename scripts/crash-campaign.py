#!/usr/bin/env python3
"""Crash-consistency campaign: N trials of concurrent plugin create / enable / disable / install
(from Debian's docker-registry on loopback) and volume create (local driver and a plugin
driver), each ended by `kill -9` of berth at a random moment; berth is restarted each time and
checked:

* every acknowledged record is there (plugins created or installed, volumes created), and a
  plugin whose enable or disable was acknowledged is in that state (one still in flight may be
  in either);
* nothing half-made: every listed plugin and volume inspects, every plugin has its rootfs;
* nothing leaked: no staging directory, spool or ingest file once berth is back, no process
  rooted in the data root that the running berth did not start, no mount below the roots but
  those of enabled plugins, and none at all once berth is stopped at the end.

    scripts/crash-campaign.py [--trials N] [--seed S] [--berth PATH] [--test-plugin PATH]

Prints one line per trial and a summary (trials, acknowledged operations, records lost, leaks);
exits 1 on any loss or leak. Standard library only (plus scripts/testbed.py); needs root, the
`docker-registry` package and a built berth and berth-test-plugin (target/debug by default).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import testbed  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API = "/v1.41"
DRIVER = "crashdrv"


def request(sock: str, method: str, path: str, body: bytes = b"",
            headers: dict | None = None, timeout: float = 60.0) -> tuple[int, bytes]:
    conn = testbed.UnixHTTPConnection(sock, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def tiny_context(description: str) -> bytes:
    """A create context: config.json and a one-file rootfs (never enabled)."""
    config = json.dumps({"Description": description, "Entrypoint": ["/plugin"],
                         "Interface": {"Socket": "p.sock",
                                       "Types": ["docker.volumedriver/1.0"]}}).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data, mode in (("config.json", config, 0o644),
                                 ("rootfs/plugin", b"#!/bin/sh\n" * 200, 0o755)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def dir_context(plugin_dir: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        tar.add(os.path.join(plugin_dir, "config.json"), "config.json")
        tar.add(os.path.join(plugin_dir, "rootfs"), "rootfs")
    return out.getvalue()


class Berth(benchlib.Berth):
    """The daemon under test (benchlib's frame), with a crash and a few API shortcuts."""

    def start(self, ready_timeout: float = 60.0) -> None:
        super().start(ready_timeout)
        self.starttime = testbed.pid_starttime(self.pid)

    def kill9(self) -> None:
        assert self.proc is not None
        if testbed.pid_starttime(self.proc.pid) == self.starttime:
            self.proc.kill()
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        testbed.stop_process(self.proc, self.starttime, grace=30)
        self.proc = None

    def call(self, method: str, path: str, body: bytes = b"", headers: dict | None = None,
             timeout: float = 60.0) -> tuple[int, bytes]:
        return request(self.sock, method, path, body, headers, timeout)

    def ok(self, method: str, path: str, body: bytes = b"", headers: dict | None = None,
           want: tuple[int, ...] = (200, 201, 204)) -> bytes:
        status, out = self.call(method, path, body, headers)
        if status not in want:
            raise RuntimeError(f"{method} {path}: {status} {out[:300]!r}")
        return out

    def plugin_map(self) -> dict[str, dict]:
        return {p["Name"].removesuffix(":latest"): p
                for p in json.loads(self.ok("GET", f"{API}/plugins"))}

    def volume_names(self) -> set[str]:
        out = json.loads(self.ok("GET", f"{API}/volumes"))
        return {v["Name"] for v in out.get("Volumes") or []}


JSON = {"Content-Type": "application/json"}
NO_AUTH = {"X-Registry-Auth": "e30=", **JSON}


class Ledger:
    """What berth acknowledged, and plugin states that may be either way (in flight)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.plugins: set[str] = set()
        self.volumes: set[str] = set()
        self.enabled: dict[str, set[bool]] = {}
        self.acks = 0

    def ack(self, kind: str, name: str) -> None:
        with self.lock:
            getattr(self, kind).add(name)
            self.acks += 1


def worker(b: Berth, ledger: Ledger, stop: threading.Event, kind: str, trial: int, rng: random.Random,
           context: bytes, remote: str) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        name = f"t{trial}{kind[0]}{n}"
        try:
            if kind == "create":
                if b.call("POST", f"{API}/plugins/create?name={name}", context,
                          {"Content-Type": "application/x-tar"})[0] == 204:
                    ledger.ack("plugins", name)
            elif kind == "install":
                q = urllib.parse.urlencode({"remote": remote, "name": name})
                status, out = b.call("POST", f"{API}/plugins/pull?{q}", b"[]", NO_AUTH)
                if status == 200 and b'"errorDetail"' not in out:
                    ledger.ack("plugins", name)
            elif kind == "local-volume":
                body = json.dumps({"Name": name, "Driver": "local"}).encode()
                if b.call("POST", f"{API}/volumes/create", body, JSON)[0] == 201:
                    ledger.ack("volumes", name)
            elif kind == "plugin-volume":
                body = json.dumps({"Name": name, "Driver": DRIVER}).encode()
                if b.call("POST", f"{API}/volumes/create", body, JSON)[0] == 201:
                    ledger.ack("volumes", name)
            elif kind == "toggle":
                want = rng.random() < 0.5
                with ledger.lock:
                    ledger.enabled[DRIVER] = ledger.enabled[DRIVER] | {want}
                path = (f"{API}/plugins/{DRIVER}/enable?timeout=30" if want
                        else f"{API}/plugins/{DRIVER}/disable?force=1")
                status, _ = b.call("POST", path)
                if status == 200 or (status in (304, 500) and _already(b, want)):
                    with ledger.lock:
                        ledger.enabled[DRIVER] = {want}
        except (OSError, http.client.HTTPException):
            return  # berth was killed


def _already(b: Berth, want: bool) -> bool:
    try:
        return b.plugin_map()[DRIVER]["Enabled"] == want
    except (OSError, KeyError, RuntimeError):
        return False


def peak_rss(pid: int) -> int:
    """VmHWM of `pid` in KiB (0 when gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def processes_rooted_in(prefix: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/root").startswith(prefix + "/"):
                    found.append(int(entry))
            except OSError:
                pass
    return found


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = testbed.proc_stat(int(entry))
            if st:
                children.setdefault(st[1], []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def check(b: Berth, ledger: Ledger) -> list[str]:
    """Losses and leaks after a restart."""
    problems = []
    plugins = b.plugin_map()
    for name in sorted(ledger.plugins - plugins.keys()):
        problems.append(f"lost plugin {name}")
    states = ledger.enabled.get(DRIVER, set())
    if DRIVER in plugins and states and plugins[DRIVER]["Enabled"] not in states:
        problems.append(f"{DRIVER} enabled={plugins[DRIVER]['Enabled']}, acknowledged {states}")
    if DRIVER in plugins and not plugins[DRIVER]["Enabled"]:
        # A disabled driver's volumes are not listed: enable it to see them.
        b.ok("POST", f"{API}/plugins/{DRIVER}/enable?timeout=30")
        plugins[DRIVER]["Enabled"] = True
        with ledger.lock:
            ledger.enabled[DRIVER] = {True}
    volumes = b.volume_names()
    for name in sorted(ledger.volumes - volumes):
        problems.append(f"lost volume {name}")
    for name, p in plugins.items():
        if b.call("GET", f"{API}/plugins/{name}/json")[0] != 200:
            problems.append(f"plugin {name} lists but does not inspect")
        if not os.path.isdir(os.path.join(b.data_root, "plugins", p["Id"], "rootfs")):
            problems.append(f"plugin {name} has no rootfs")
    for name in volumes:
        if b.call("GET", f"{API}/volumes/{name}")[0] != 200:
            problems.append(f"volume {name} lists but does not inspect")
    plugins_root = os.path.join(b.data_root, "plugins")
    for sub in ("tmp", os.path.join("storage", "ingest")):
        d = os.path.join(plugins_root, sub)
        if os.path.isdir(d) and os.listdir(d):
            problems.append(f"leak: {sub} holds {os.listdir(d)}")
    staging = [e for e in os.listdir(plugins_root) if e.startswith(".")]
    if staging:
        problems.append(f"leak: staging entries {staging}")
    assert b.proc is not None
    ours = descendants(b.proc.pid)
    strays = [p for p in processes_rooted_in(b.data_root) if p not in ours]
    if strays:
        problems.append(f"leak: processes {strays} from an earlier berth")
    enabled_ids = [p["Id"] for p in plugins.values() if p["Enabled"]]
    for root in (b.data_root, b.exec_root):
        for mp in testbed.mountpoints_below(root):
            if not any(i in mp for i in enabled_ids):
                problems.append(f"leak: mount {mp}")
    return problems


def tidy(b: Berth, ledger: Ledger) -> None:
    """Removes what a trial made (the driver's volumes first), so the store stays small."""
    for name in sorted(b.volume_names()):
        b.call("DELETE", f"{API}/volumes/{name}?force=1")
    for name in sorted(b.plugin_map()):
        if name != DRIVER:
            b.call("DELETE", f"{API}/plugins/{name}?force=1")
    with ledger.lock:
        ledger.plugins.clear()
        ledger.volumes.clear()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--berth", default=os.path.join(REPO, "target/debug/berth"))
    ap.add_argument("--test-plugin", default=os.path.join(REPO, "target/debug/berth-test-plugin"))
    ap.add_argument("--max-delay", type=float, default=1.5,
                    help="kill -9 at a random moment up to this many seconds into a trial")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="crash", dir="/tmp")
    b = Berth(tmp, os.path.abspath(args.berth))
    registry = testbed.DockerRegistry(tmp, os.path.join(tmp, "reg"))
    ledger = Ledger()
    lost = leaks = peak_rss_kb = 0
    started = time.monotonic()
    try:
        subprocess.run([os.path.join(REPO, "scripts/make-test-plugins.sh"),
                        os.path.join(tmp, "p"), "testdriver"], check=True,
                       stdout=subprocess.DEVNULL,
                       env=dict(os.environ, BERTH_TEST_PLUGIN_BIN=os.path.abspath(args.test_plugin)))
        registry.start()
        remote = f"{registry.host}/crash/tiny:latest"
        b.start()
        b.ok("POST", f"{API}/plugins/create?name={DRIVER}",
             dir_context(os.path.join(tmp, "p", "testdriver")),
             {"Content-Type": "application/x-tar"})
        b.ok("POST", f"{API}/plugins/{DRIVER}/enable?timeout=30")
        ledger.plugins.add(DRIVER)
        ledger.enabled[DRIVER] = {True}
        context = tiny_context("crash campaign")
        # The plugin `install` pulls: made here, pushed, removed again.
        quoted = urllib.parse.quote(remote, safe="")
        b.ok("POST", f"{API}/plugins/create?name={quoted}", context,
             {"Content-Type": "application/x-tar"})
        pushed = b.ok("POST", f"{API}/plugins/{quoted}/push", b"", NO_AUTH)
        if b'"errorDetail"' in pushed:
            raise RuntimeError(f"push to the registry failed: {pushed[-300:]!r}")
        b.ok("DELETE", f"{API}/plugins/{quoted}")
        kinds = ["create", "install", "local-volume", "plugin-volume", "toggle"]
        for trial in range(1, args.trials + 1):
            stop = threading.Event()
            threads = [threading.Thread(target=worker, daemon=True,
                                        args=(b, ledger, stop, k, trial,
                                              random.Random(rng.random()), context, remote))
                       for k in kinds]
            for t in threads:
                t.start()
            delay = rng.uniform(0.05, args.max_delay)
            time.sleep(delay)
            peak_rss_kb = max(peak_rss_kb, peak_rss(b.pid))
            b.kill9()
            stop.set()
            for t in threads:
                t.join(timeout=60)
            acks = ledger.acks
            b.start()
            problems = check(b, ledger)
            lost += sum(p.startswith("lost") for p in problems)
            leaks += sum(p.startswith("leak") for p in problems)
            print(f"trial {trial}: killed at {delay:.2f}s, {acks} acknowledged so far, "
                  f"{'ok' if not problems else '; '.join(problems)}", flush=True)
            tidy(b, ledger)
            with ledger.lock:
                ledger.plugins.add(DRIVER)
        b.stop()
        for root in (b.data_root, b.exec_root):
            for mp in testbed.mountpoints_below(root):
                leaks += 1
                print(f"leak after a clean stop: mount {mp}")
        strays = processes_rooted_in(b.data_root)
        if strays:
            leaks += 1
            print(f"leak after a clean stop: processes {strays}")
    finally:
        if b.proc is not None:
            b.stop()
        registry.stop()
        testbed.unmount_below(tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"crash campaign: {args.trials} trials (seed {seed}), {ledger.acks} operations "
          f"acknowledged, {lost} records lost, {leaks} leaks, "
          f"peak RSS {peak_rss_kb // 1024} MiB, "
          f"{time.monotonic() - started:.0f}s")
    return 1 if lost or leaks else 0


if __name__ == "__main__":
    sys.exit(main())
