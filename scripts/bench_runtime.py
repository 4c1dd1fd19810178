#!/usr/bin/env python3
"""Runtime benchmark: berth against a private dockerd 20.10, side by side in one run.

    scripts/bench-runtime.sh [--iterations N] [--warmup N] [--plugins N] [--idle S]
                             [--json FILE] [--no-build] [--keep-tmp] [--show-procs]

Measures the daemons, not the CLI: every timed request is raw HTTP on the daemon's unix socket.

  enable -> socket ready  from sending POST /v1.41/plugins/<name>/enable?timeout=30 until a
                          connect() to the plugin's socket succeeds (polled right after the
                          enable response arrives; the socket is berth's
                          <exec-root>/plugins/<id>/<socket>, dockerd's
                          /run/docker/plugins/<id>/<socket>)
  enable response         from sending enable until its response arrived (informational)
  disable                 from sending POST /v1.41/plugins/<name>/disable until its response
  enable+disable cycle    from sending enable until the disable response (socket polled between)
  idle RSS                VmRSS (/proc/<pid>/status) of the daemon with 1 and N plugins enabled,
                          sampled after the system was idle for --idle seconds; also the daemon
                          with its runtime helpers (berth: its `plugin-init` children; dockerd:
                          containerd and the containerd shims) and the plugins' own RSS.

Setup: `cargo build --release` (skip with --no-build), scripts/make-test-plugins.sh testdriver,
--plugins unique copies of it (bench/p0..), created on both daemons with the stock docker CLI.
berth and dockerd run on private temp directories; both are stopped, and everything mounted
below the temp directory is unmounted, before it is deleted, also on Ctrl-C or failure.
Cycles alternate which daemon goes first, after --warmup cycles each. Needs root.

Nothing here asserts on a timing: targets are reported, never enforced.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API = "/v1.41"
DOCKER_CLI = os.environ.get("DOCKER_CLI", "docker")

# Targets from the issue: berth / dockerd of medians at most this.
TARGET_ENABLE = 1 / 5
TARGET_RSS = 1 / 4


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# HTTP on a unix socket


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def http_call(sock: str, method: str, path: str, timeout: float = 60.0) -> tuple[int, bytes]:
    conn = UnixHTTPConnection(sock, timeout)
    try:
        conn.request(method, path, headers={"Content-Length": "0"} if method == "POST" else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def timed_post(sock: str, path: str, timeout: float = 60.0) -> tuple[float, float, int, bytes]:
    """POST with an already connected socket; returns (t_sent, t_answered, status, body).

    The clock starts right before the request is written, so connection setup is not counted.
    """
    conn = UnixHTTPConnection(sock, timeout)
    try:
        conn.connect()
        t0 = time.perf_counter()
        conn.request("POST", path, headers={"Content-Length": "0"})
        resp = conn.getresponse()
        body = resp.read()
        t1 = time.perf_counter()
        return t0, t1, resp.status, body
    finally:
        conn.close()


def socket_answers(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_socket(path: str, timeout: float = 30.0, interval: float = 0.0005) -> tuple[float, int]:
    """Poll connect() until it succeeds; returns (time it succeeded, attempts)."""
    deadline = time.perf_counter() + timeout
    attempts = 0
    while True:
        attempts += 1
        if socket_answers(path):
            return time.perf_counter(), attempts
        if time.perf_counter() > deadline:
            raise BenchError(f"plugin socket {path} did not answer within {timeout}s")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# /proc


def proc_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (ppid, cmdline, starttime) for every process."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        pid = int(d)
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        out[pid] = (int(fields[1]), cmd, int(fields[19]))
    return out


def descendants(table: dict, roots: list[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], list(roots)
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def mem_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, Pss) in kB; (0, 0) if the process is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                    break
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                    break
    except OSError:
        pass
    return rss, pss


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def pid_starttime(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def mountpoints_below(prefix: str) -> list[str]:
    prefix = prefix.rstrip("/")
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            mp = mp.encode().decode("unicode_escape") if "\\" in mp else mp
            if mp == prefix or mp.startswith(prefix + "/"):
                points.append(mp)
    return sorted(set(points), key=lambda p: (p.count("/"), len(p)), reverse=True)


def unmount_below(prefix: str) -> list[str]:
    """Lazily unmount everything at or below prefix; returns what is still mounted."""
    for _ in range(5):
        points = mountpoints_below(prefix)
        if not points:
            return []
        for mp in points:
            subprocess.run(["umount", "-l", mp], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    return mountpoints_below(prefix)


# --------------------------------------------------------------------------------------------
# Daemons


class Daemon:
    name = "?"

    def __init__(self, tmp: str):
        self.tmp = tmp
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(tmp, f"{self.name}.log")
        self.plugins: dict[str, dict] = {}  # name -> {"id", "socket"}
        # (pid, starttime) of every process seen in this daemon's tree, for cleanup
        self.seen: set[tuple[int, int]] = set()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self, ready_timeout: float = 60.0) -> None:
        argv = self.argv()
        with open(self.log_path, "ab") as logf:
            # a session of its own: a Ctrl-C at the terminal reaches only the script, which
            # then stops the daemon in order
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=logf, start_new_session=True, cwd=self.tmp)
        deadline = time.monotonic() + ready_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode} during start"
                                 f"\n{shlex.join(argv)}\n{self.log_tail()}")
            if os.path.exists(self.sock):
                try:
                    status, _ = http_call(self.sock, "GET", "/_ping", timeout=2)
                    if status == 200:
                        return
                    last = f"GET /_ping -> {status}"
                except OSError as e:
                    last = str(e)
            time.sleep(0.05)
        raise BenchError(f"{self.name} did not answer /_ping within {ready_timeout}s ({last})"
                         f"\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f"--- last lines of {self.log_path}:\n" + "".join(f.readlines()[-n:])
        except OSError:
            return "(no log)"

    def docker(self, *args: str) -> str:
        env = dict(os.environ, DOCKER_HOST="unix://" + self.sock)
        env.pop("DOCKER_CONTEXT", None)
        r = subprocess.run([DOCKER_CLI, *args], env=env, capture_output=True, text=True,
                           timeout=300)
        if r.returncode != 0:
            raise BenchError(f"{self.name}: docker {shlex.join(args)} failed ({r.returncode}):"
                             f" {r.stderr.strip()}")
        return r.stdout

    def api(self, method: str, path: str, timeout: float = 60.0):
        status, body = http_call(self.sock, method, API + path, timeout)
        if status >= 300:
            raise BenchError(f"{self.name}: {method} {path} -> {status}: {body[:300]!r}")
        return json.loads(body) if body.strip() else None

    def load_plugins(self) -> None:
        for p in self.api("GET", "/plugins"):
            self.plugins[p["Name"]] = {"id": p["Id"], "socket": p["Config"]["Interface"]["Socket"]}

    def socket_path(self, name: str) -> str:
        p = self.plugins[name]
        return os.path.join(self.plugin_exec_root, p["id"], p["socket"])

    def enable(self, name: str) -> dict:
        path = f"{API}/plugins/{urllib.parse.quote(name, safe='/:')}/enable?timeout=30"
        sock = self.socket_path(name)
        t0, t1, status, body = timed_post(self.sock, path)
        if status >= 300:
            raise BenchError(f"{self.name}: enable {name} -> {status}: {body[:300]!r}")
        ready_at_response = socket_answers(sock)
        if ready_at_response:
            t2, attempts = time.perf_counter(), 1
        else:
            t2, attempts = wait_socket(sock)
        return {"response": t1 - t0, "ready": t2 - t0, "t0": t0,
                "ready_at_response": ready_at_response, "polls": attempts}

    def disable(self, name: str, force: bool = False) -> dict:
        path = f"{API}/plugins/{urllib.parse.quote(name, safe='/:')}/disable"
        if force:
            path += "?force=1"
        t0, t1, status, body = timed_post(self.sock, path)
        if status >= 300:
            raise BenchError(f"{self.name}: disable {name} -> {status}: {body[:300]!r}")
        return {"response": t1 - t0, "t1": t1}

    def enabled(self) -> list[str]:
        return [p["Name"] for p in self.api("GET", "/plugins") if p.get("Enabled")]

    def remember(self, pids) -> None:
        for pid in pids:
            st = pid_starttime(pid)
            if st is not None:
                self.seen.add((pid, st))

    def processes(self) -> dict[str, list[int]]:
        """{"daemon": [...], "helpers": [...], "plugins": [...]} of this daemon's tree."""
        raise NotImplementedError

    def names_our_dirs(self, pid: int) -> bool:
        """Whether a command-line argument of pid is (below) this daemon's own directories."""
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            return False
        roots = (self.data_root, self.exec_root, self.sock)
        for a in argv:
            a = a.split("=", 1)[1] if a.startswith("--") and "=" in a else a
            a = a.removeprefix("unix://")
            if any(a == r or a.startswith(r + "/") for r in roots):
                return True
        return False

    def stop(self, grace: float) -> None:
        if self.proc is None:
            return
        try:
            self.remember(sum(self.processes().values(), []))
        except Exception:  # noqa: BLE001 - best effort before stopping
            pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop within {grace}s; SIGKILL")
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.reap_leftovers()

    def reap_leftovers(self) -> None:
        """Stop whatever is left of the processes this daemon started (pid + start time match,
        or a command line naming our temp directory)."""
        victims = {pid for pid, st in self.seen if pid_starttime(pid) == st and pid_alive(pid)}
        table = proc_table()
        for pid in table:
            if pid != os.getpid() and self.names_our_dirs(pid):
                victims.add(pid)
        victims |= set(descendants(table, list(victims)))
        victims.discard(os.getpid())
        if not victims:
            return
        log(f"{self.name}: stopping leftover processes: " + "; ".join(
            f"{p} {table.get(p, (0, '?'))[1][:70]}" for p in sorted(victims)))
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            for pid in victims:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(pid_alive(p) for p in victims):
                time.sleep(0.05)
            victims = {p for p in victims if pid_alive(p)}
            if not victims:
                return


class Berth(Daemon):
    name = "berth"

    def __init__(self, tmp: str, binary: str):
        super().__init__(tmp)
        self.binary = binary
        self.sock = os.path.join(tmp, "berth.sock")
        # short names: a plugin socket is <exec-root>/plugins/<64-hex id>/<socket> and must fit
        # in sun_path (107 bytes)
        self.data_root = os.path.join(tmp, "bd")
        self.exec_root = os.path.join(tmp, "bx")
        self.plugin_exec_root = os.path.join(self.exec_root, "plugins")

    def argv(self) -> list[str]:
        return [self.binary, "daemon", "--host", "unix://" + self.sock,
                "--data-root", self.data_root, "--exec-root", self.exec_root,
                "--config-file", "/nonexistent"]

    def processes(self) -> dict[str, list[int]]:
        table = proc_table()
        helpers, plugins = [], []
        for pid in descendants(table, [self.pid]):
            (helpers if "plugin-init" in table[pid][1] else plugins).append(pid)
        return {"daemon": [self.pid], "helpers": helpers, "plugins": plugins}


class Dockerd(Daemon):
    name = "dockerd"

    def __init__(self, tmp: str, binary: str):
        super().__init__(tmp)
        self.binary = binary
        self.sock = os.path.join(tmp, "d.sock")
        self.data_root = os.path.join(tmp, "dd")
        self.exec_root = os.path.join(tmp, "dx")
        self.pidfile = os.path.join(tmp, "d.pid")
        self.config_file = os.path.join(tmp, "daemon.json")
        # moby 20.10 puts plugin sockets under this fixed directory, whatever --exec-root says
        self.plugin_exec_root = "/run/docker/plugins"
        with open(self.config_file, "w") as f:
            f.write("{}\n")

    def argv(self) -> list[str]:
        return [self.binary, "--config-file", self.config_file, "--data-root", self.data_root,
                "--exec-root", self.exec_root, "-H", "unix://" + self.sock,
                "--pidfile", self.pidfile, "--iptables=false", "--bridge=none"]

    def processes(self) -> dict[str, list[int]]:
        table = proc_table()
        containerd = [p for p in descendants(table, [self.pid])
                      if "containerd" in table[p][1] and self.names_our_dirs(p)]
        # containerd-shim-runc-v2 daemonizes (it is not below containerd); its -address names
        # our exec root
        shims = [p for p, (_, cmd, _) in table.items()
                 if "containerd-shim" in cmd and self.names_our_dirs(p)]
        plugins = [p for p in descendants(table, shims) if p not in shims]
        return {"daemon": [self.pid], "helpers": containerd + shims, "plugins": plugins,
                "containerd": containerd, "shims": shims}

    def cleanup_plugin_dirs(self) -> None:
        # the per-plugin socket directories our dockerd made under the shared /run/docker/plugins
        for p in self.plugins.values():
            d = os.path.join(self.plugin_exec_root, p["id"])
            if os.path.isdir(d) and not unmount_below(d):
                shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Statistics and report


def summary(samples: list[float]) -> dict:
    return {"min": min(samples), "median": statistics.median(samples), "max": max(samples),
            "n": len(samples), "samples": samples}


def fmt3(s: dict, scale: float, prec: int) -> str:
    return " / ".join(f"{s[k] * scale:.{prec}f}" for k in ("min", "median", "max"))


def run_cmd_out(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr) else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def mem_total() -> str:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) // 1024} MiB"
    except OSError:
        pass
    return "?"


# --------------------------------------------------------------------------------------------
# Benchmark


def make_plugin_dirs(tmp: str, count: int) -> list[str]:
    base = os.path.join(tmp, "plugins")
    log("building the testdriver plugin directory (scripts/make-test-plugins.sh)")
    r = subprocess.run([os.path.join(REPO, "scripts", "make-test-plugins.sh"), base,
                        "testdriver"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if r.returncode != 0:
        raise BenchError(f"make-test-plugins.sh failed:\n{r.stdout}")
    src = os.path.join(base, "testdriver")
    dirs = []
    for i in range(count):
        d = os.path.join(base, f"p{i}")
        shutil.copytree(src, d, symlinks=True)
        # dockerd 20.10 refuses a second plugin whose rootfs blob is byte-identical
        # ("content sha256:... already exists"): one distinct file per copy
        with open(os.path.join(d, "rootfs", "etc", "bench-copy"), "w") as f:
            f.write(f"bench plugin copy {i}\n")
        dirs.append(d)
    return dirs


def sample_rss(daemons: list[Daemon], samples: int, interval: float) -> dict:
    """Per daemon: lists of kB per component over `samples` samples."""
    out = {d.name: {"daemon": [], "helpers": [], "plugins": [], "daemon_pss": [],
                    "helpers_pss": [], "plugins_pss": [], "counts": None} for d in daemons}
    for i in range(samples):
        if i:
            time.sleep(interval)
        for d in daemons:
            procs = d.processes()
            d.remember(sum((procs[k] for k in ("daemon", "helpers", "plugins")), []))
            o = out[d.name]
            for k in ("daemon", "helpers", "plugins"):
                mems = [mem_kb(p) for p in procs[k]]
                o[k].append(sum(m[0] for m in mems))
                o[k + "_pss"].append(sum(m[1] for m in mems))
            o["counts"] = {k: len(v) for k, v in procs.items()}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--iterations", type=int, default=20, help="timed enable/disable cycles "
                    "per daemon (default 20)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed cycles first (default 2)")
    ap.add_argument("--plugins", type=int, default=10, help="plugins enabled for the second "
                    "RSS figure (default 10)")
    ap.add_argument("--idle", type=float, default=2.0, help="idle seconds before RSS is "
                    "sampled (default 2)")
    ap.add_argument("--rss-samples", type=int, default=5, help="RSS samples, 0.5 s apart "
                    "(default 5)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON here")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build --release")
    ap.add_argument("--berth-bin", default=os.path.join(REPO, "target", "release", "berth"))
    ap.add_argument("--dockerd-bin", default=os.environ.get("DOCKERD_BIN", "dockerd"))
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp directory (logs)")
    ap.add_argument("--show-procs", action="store_true", help="print the process trees "
                    "with all plugins enabled")
    args = ap.parse_args()
    if args.iterations < 1 or args.plugins < 1 or args.warmup < 0:
        ap.error("--iterations and --plugins must be >= 1, --warmup >= 0")
    if os.geteuid() != 0:
        print("bench-runtime: needs root (both daemons run plugins in namespaces)",
              file=sys.stderr)
        return 2
    dockerd_bin = shutil.which(args.dockerd_bin)
    if not dockerd_bin:
        print(f"bench-runtime: {args.dockerd_bin} not found", file=sys.stderr)
        return 2
    if not shutil.which(DOCKER_CLI):
        print(f"bench-runtime: the docker CLI ({DOCKER_CLI}) is not installed", file=sys.stderr)
        return 2

    started = time.monotonic()
    # SIGTERM/SIGHUP unwind like Ctrl-C, through the finally below
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    if not args.no_build:
        log("cargo build --release")
        r = subprocess.run(["cargo", "build", "--release", "-q"], cwd=REPO)
        if r.returncode != 0:
            print("bench-runtime: cargo build --release failed", file=sys.stderr)
            return 1
    if not os.access(args.berth_bin, os.X_OK):
        print(f"bench-runtime: no berth binary at {args.berth_bin}", file=sys.stderr)
        return 2

    # short: plugin sockets live several levels below the exec roots (108-byte limit)
    tmp = tempfile.mkdtemp(prefix="b", dir="/tmp")
    berth = Berth(tmp, args.berth_bin)
    dockerd = Dockerd(tmp, dockerd_bin)
    daemons: list[Daemon] = [berth, dockerd]
    results: dict = {}
    outcome = "error"  # a traceback from an unexpected exception still goes through cleanup
    try:
        results = bench(args, tmp, berth, dockerd, daemons, dockerd_bin, started)
        outcome = "ok"
    except KeyboardInterrupt:
        outcome = "interrupted"
        log("interrupted; cleaning up")
    except BenchError as e:
        log(f"error: {e}")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup(args, tmp, daemons, dockerd, keep=args.keep_tmp or outcome == "error")
    if outcome != "ok":
        return 130 if outcome == "interrupted" else 1
    results["duration_s"] = round(time.monotonic() - started, 1)
    print(f"\ntotal wall time {results['duration_s']:.0f} s ("
          f"{'' if args.no_build else 'cargo build, '}setup, cycles, RSS, cleanup)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
        print(f"results written to {args.json}")
    return 0


def cleanup(args, tmp: str, daemons: list[Daemon], dockerd: Dockerd, keep: bool) -> None:
    log("stopping the daemons")
    for d in daemons:
        if d.proc is None or d.proc.poll() is not None:
            continue
        try:
            for name in d.enabled():
                try:
                    d.disable(name, force=True)
                except (BenchError, OSError) as e:
                    log(f"{d.name}: disable {name}: {e}")
        except (BenchError, OSError, ValueError) as e:
            log(f"{d.name}: listing plugins: {e}")
    for d in daemons:
        try:
            d.stop(grace=30.0 if d is dockerd else 15.0)
        except Exception as e:  # noqa: BLE001 - keep cleaning up
            log(f"stopping {d.name}: {e}")
    dockerd.cleanup_plugin_dirs()
    left = unmount_below(tmp)
    if left:
        log(f"still mounted below {tmp}, not deleting it: {left}")
        return
    if keep:
        log(f"temp directory kept: {tmp} (daemon logs: berth.log, dockerd.log)")
        return
    subprocess.run(["rm", "-rf", "--one-file-system", tmp])


def bench(args, tmp: str, berth: Berth, dockerd: Dockerd, daemons: list[Daemon],
          dockerd_bin: str, started: float) -> dict:
    names = [f"bench/p{i}:latest" for i in range(args.plugins)]
    dirs = make_plugin_dirs(tmp, args.plugins)

    log(f"starting berth and a private dockerd in {tmp}")
    berth.start()
    dockerd.start()
    for d in daemons:
        d.remember(sum(d.processes().values(), []))

    machine = {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu": cpu_model(),
               "memory": mem_total()}
    versions = {
        "berth": run_cmd_out([berth.binary, "--version"]),
        "dockerd": run_cmd_out([dockerd_bin, "--version"]),
        "containerd": run_cmd_out(["containerd", "--version"]),
        "runc": run_cmd_out(["runc", "--version"]),
        "docker CLI": run_cmd_out([DOCKER_CLI, "--version"]),
        "python": platform.python_version(),
    }
    for d in daemons:
        v = d.api("GET", "/version")
        versions[f"{d.name} /version"] = f"{v.get('Version')} (API {v.get('ApiVersion')})"

    log(f"creating {len(names)} plugins on each daemon with the docker CLI")
    for d in daemons:
        for name, pdir in zip(names, dirs):
            d.docker("plugin", "create", name, pdir)
        d.load_plugins()
        missing = [n for n in names if n not in d.plugins]
        if missing:
            raise BenchError(f"{d.name}: created plugins not listed: {missing}")
        for n in names:
            if len(d.socket_path(n).encode()) > 107:
                raise BenchError(f"{d.name}: plugin socket path too long: {d.socket_path(n)}")

    # -- enable/disable cycles ------------------------------------------------------------
    cyc = names[0]
    timings = {d.name: {"ready": [], "response": [], "disable": [], "cycle": [],
                        "ready_at_response": 0, "polls": []} for d in daemons}
    total = args.warmup + args.iterations
    log(f"{args.warmup} warm-up + {args.iterations} timed enable/disable cycles of {cyc}, "
        "alternating which daemon goes first")
    for i in range(total):
        order = daemons if i % 2 == 0 else daemons[::-1]
        for d in order:
            e = d.enable(cyc)
            x = d.disable(cyc)
            if i < args.warmup:
                continue
            t = timings[d.name]
            t["ready"].append(e["ready"])
            t["response"].append(e["response"])
            t["disable"].append(x["response"])
            t["cycle"].append(x["t1"] - e["t0"])
            t["ready_at_response"] += int(e["ready_at_response"])
            t["polls"].append(e["polls"])
        if i >= args.warmup and ((i - args.warmup + 1) % 5 == 0 or i == total - 1):
            log(f"  cycle {i - args.warmup + 1}/{args.iterations}: " + ", ".join(
                f"{d.name} ready {timings[d.name]['ready'][-1] * 1000:.1f} ms"
                for d in daemons))

    # -- idle RSS -----------------------------------------------------------------------------
    rss: dict = {}
    for count in sorted({0, 1, args.plugins}):
        for d in daemons:
            want = set(names[:count])
            for n in names[:count]:
                if n not in d.enabled():
                    d.enable(n)
            if set(d.enabled()) != want:
                raise BenchError(f"{d.name}: enabled plugins {d.enabled()}, expected {want}")
        log(f"{count} plugin(s) enabled on each daemon; idle {args.idle:.1f} s, then "
            f"{args.rss_samples} RSS samples")
        time.sleep(args.idle)
        rss[count] = sample_rss(daemons, args.rss_samples, 0.5)
        for d in daemons:
            c = rss[count][d.name]["counts"]
            if c["plugins"] < count:
                log(f"warning: {d.name}: {count} plugins enabled but only {c['plugins']} "
                    "plugin processes found")
    if args.show_procs:
        for d in daemons:
            table = proc_table()
            print(f"\n{d.name} processes with {args.plugins} plugins enabled:")
            for k, pids in d.processes().items():
                for p in pids:
                    print(f"  {k:10} {p:>7} {mem_kb(p)[0]:>8} kB  {table.get(p, (0, '?'))[1]}")

    return report(args, machine, versions, timings, rss, daemons)


def report(args, machine, versions, timings, rss, daemons) -> dict:
    b, d = (x.name for x in daemons)
    out = {"machine": machine, "versions": versions,
           "settings": {"iterations": args.iterations, "warmup": args.warmup,
                        "plugins": args.plugins, "idle_s": args.idle,
                        "rss_samples": args.rss_samples},
           "timings_ms": {}, "rss_kb": {}}
    print()
    print(f"machine   nproc {machine['nproc']}, kernel {machine['kernel']}, "
          f"{machine['cpu']}, {machine['memory']}")
    for k, v in versions.items():
        print(f"{k:<18}{v}")
    print(f"settings  {args.iterations} timed cycles per daemon after {args.warmup} warm-up, "
          f"alternating order; RSS after {args.idle:g} s idle, {args.rss_samples} samples")

    def row(label, bs, ds, unit_scale, prec, target):
        ratio = bs["median"] / ds["median"] if ds["median"] else None
        met = None if target is None or ratio is None else ratio <= target
        verdict = "" if met is None else f"<= 1/{round(1 / target)}: {'met' if met else 'NOT met'}"
        shown = "-" if ratio is None else f"{ratio:.3f}"
        print(f"{label:<34} {fmt3(bs, unit_scale, prec):>26} {fmt3(ds, unit_scale, prec):>26}"
              f" {shown:>7}  {verdict}".rstrip())
        return {b: dict(bs), d: dict(ds), "ratio_of_medians": ratio, "target": target,
                "target_met": met}

    hdr = (f"{'':<34} {b + ' min / median / max':>26} {d + ' min / median / max':>26}"
           f" {'ratio':>7}  target (ratio = {b}/{d} of medians)")
    print(f"\nTimings (ms), {args.iterations} cycles each")
    print(hdr)
    tb, td = timings[b], timings[d]
    for key, label, target in (("ready", "enable -> plugin socket answers", TARGET_ENABLE),
                               ("response", "  (enable HTTP response only)", None),
                               ("disable", "disable", None),
                               ("cycle", "enable + disable cycle", None)):
        out["timings_ms"][key] = row(label, summary([x * 1000 for x in tb[key]]),
                                     summary([x * 1000 for x in td[key]]), 1, 2, target)
    for n in (b, d):
        out["timings_ms"].setdefault("socket_ready_at_enable_response", {})[n] = \
            timings[n]["ready_at_response"]
        out["timings_ms"].setdefault("median_connect_polls", {})[n] = \
            statistics.median(timings[n]["polls"])
    print("socket already answering when enable returned: " + ", ".join(
        f"{n} {timings[n]['ready_at_response']}/{args.iterations}" for n in (b, d)))

    print(f"\nIdle RSS (MiB), {args.rss_samples} samples each")
    print(hdr)
    helper_desc = {b: "plugin-init", d: "containerd+shims"}
    for count in sorted(rss):
        rb, rd = rss[count][b], rss[count][d]
        sfx = f"{count} plugin{'s' if count != 1 else ''}"
        entries = [
            (f"daemon alone, {sfx}", rb["daemon"], rd["daemon"],
             None if count == 0 else TARGET_RSS),
            (f"daemon + helpers, {sfx}", [x + y for x, y in zip(rb["daemon"], rb["helpers"])],
             [x + y for x, y in zip(rd["daemon"], rd["helpers"])],
             None if count == 0 else TARGET_RSS),
            (f"  helpers only, {sfx}", rb["helpers"], rd["helpers"], None),
        ]
        if count:
            entries.append((f"  plugins' own RSS, {sfx}", rb["plugins"], rd["plugins"], None))
            entries.append((f"all processes, PSS, {sfx}",
                            [x + y + z for x, y, z in zip(rb["daemon_pss"], rb["helpers_pss"],
                                                          rb["plugins_pss"])],
                            [x + y + z for x, y, z in zip(rd["daemon_pss"], rd["helpers_pss"],
                                                          rd["plugins_pss"])], None))
        for label, xs, ys, target in entries:
            out["rss_kb"][label.strip()] = row(label, summary(xs), summary(ys), 1 / 1024, 1,
                                               target)
        out["rss_kb"][f"process counts, {sfx}"] = {b: rb["counts"], d: rd["counts"]}
        print(f"{'':<2}processes: {b} 1 + {rb['counts']['helpers']} {helper_desc[b]}, "
              f"{rb['counts']['plugins']} plugin; {d} 1 + "
              f"{rd['counts'].get('containerd', 0)} containerd + {rd['counts'].get('shims', 0)}"
              f" shims, {rd['counts']['plugins']} plugin")
    return out


if __name__ == "__main__":
    sys.exit(main())
