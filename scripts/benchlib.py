"""Shared frame and helpers of the berth-vs-dockerd benchmarks (bench_runtime.py,
bench_volumes.py, bench_registry.py, bench_authz.py): the run itself (options every benchmark
takes, root and tool checks, the release build, a private temp directory, berth and a private
dockerd with its own containerd, and the cleanup that runs on success, error and Ctrl-C), HTTP
on unix sockets (http.client and a minimal keep-alive client), load rounds, the process table,
statistics, report tables and machine facts. What the compat harness needs too (HTTP on unix
sockets, processes, the registry, the private containerd, the test plugin as a legacy AuthZ
plugin) comes from testbed.py.

Standard library only; not a benchmark by itself.
"""

from __future__ import annotations

import argparse
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
import threading
import time
import urllib.parse
from typing import Any, Callable

from testbed import (  # noqa: F401 - re-exported for the benchmarks
    SetupError, UnixHTTPConnection, PrivateContainerd, log_tail, pid_alive,
    pid_starttime, proc_stat, socket_answers, spawn, unmount_below, wait_for_ping,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API = "/v1.41"
DOCKER_CLI = os.environ.get("DOCKER_CLI", "docker")

# A benchmark stops at the first failure of its own or of the test bed alike.
BenchError = SetupError


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# HTTP on a unix socket


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


# --------------------------------------------------------------------------------------------
# Daemons


class Daemon:
    name = "?"
    # socket, data root and exec root, in the temp directory; short: a plugin socket is
    # <exec-root>/plugins/<64-hex id>/<socket> and must fit in sun_path (107 bytes)
    files = ("?.sock", "?d", "?x")

    def __init__(self, tmp: str, binary: str):
        self.tmp = tmp
        self.binary = binary
        self.sock, self.data_root, self.exec_root = (os.path.join(tmp, f) for f in self.files)
        # what the command lines of this daemon's processes (and no other's) name
        self.own_paths = [self.data_root, self.exec_root, self.sock]
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(tmp, f"{self.name}.log")
        # an explicit empty configuration file keeps the machine's out of it (a benchmark may
        # rewrite it and send SIGHUP)
        self.config_file = os.path.join(tmp, f"{self.name}.json")
        with open(self.config_file, "w") as f:
            f.write("{}\n")
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
        self.proc = spawn(self.argv(), self.log_path, cwd=self.tmp)
        wait_for_ping(self.proc, self.sock, self.name, self.log_path, ready_timeout)

    def log_tail(self, n: int = 30) -> str:
        return log_tail(self.log_path, n)

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

    def create_plugins(self, dirs: dict[str, str]) -> None:
        """`docker plugin create` of each name -> plugin directory, then checks that each is
        listed and that its socket path fits in sun_path."""
        for name, pdir in dirs.items():
            self.docker("plugin", "create", name, pdir)
        self.load_plugins()
        missing = [n for n in dirs if n not in self.plugins]
        if missing:
            raise BenchError(f"{self.name}: created plugins not listed: {missing}")
        for n in dirs:
            if len(self.socket_path(n).encode()) > 107:
                raise BenchError(f"{self.name}: plugin socket path too long: "
                                 f"{self.socket_path(n)}")

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
        roots = self.own_paths
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
        self.stop_helpers()
        self.reap_leftovers()

    def stop_helpers(self) -> None:
        """Stops the helpers this script started for the daemon, once the daemon is gone."""

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
    files = ("berth.sock", "bd", "bx")

    def __init__(self, tmp: str, binary: str, runtime: str = "builtin"):
        # `--plugin-runtime`: builtin (berth's own executor), runc or crun; one berth per
        # runtime can run beside the others, each with its own files
        self.runtime = runtime
        if runtime != "builtin":
            self.name = f"berth-{runtime}"
            self.files = (f"berth-{runtime}.sock", f"bd{runtime[0]}", f"bx{runtime[0]}")
        super().__init__(tmp, binary)

    @property
    def plugin_exec_root(self) -> str:
        return os.path.join(self.exec_root, "plugins")

    def argv(self) -> list[str]:
        return [self.binary, "daemon", "--host", "unix://" + self.sock,
                "--data-root", self.data_root, "--exec-root", self.exec_root,
                "--config-file", self.config_file,
                *(["--plugin-runtime", self.runtime] if self.runtime != "builtin" else [])]

    def processes(self) -> dict[str, list[int]]:
        table = proc_table()
        helpers, plugins = [], []
        for pid in descendants(table, [self.pid]):
            helper = any(h in table[pid][1] for h in ("plugin-init", "runtime-shim"))
            (helpers if helper else plugins).append(pid)
        return {"daemon": [self.pid], "helpers": helpers, "plugins": plugins}


class Dockerd(Daemon):
    name = "dockerd"
    files = ("d.sock", "dd", "dx")
    # moby 20.10 puts plugin sockets under this fixed directory, whatever --exec-root says
    plugin_exec_root = "/run/docker/plugins"

    def __init__(self, tmp: str, binary: str):
        super().__init__(tmp, binary)
        self.pidfile = os.path.join(tmp, "d.pid")
        # its own containerd: one already listening on /run/containerd is left alone
        self.containerd = PrivateContainerd(os.path.join(tmp, "ctd"))
        self.own_paths.append(self.containerd.dir)

    def argv(self) -> list[str]:
        return [self.binary, "--config-file", self.config_file, "--data-root", self.data_root,
                "--exec-root", self.exec_root, "-H", "unix://" + self.sock,
                "--pidfile", self.pidfile, "--iptables=false", "--bridge=none",
                "--containerd", self.containerd.address]

    def start(self, ready_timeout: float = 60.0) -> None:
        self.containerd.start()
        super().start(ready_timeout)

    def stop_helpers(self) -> None:
        self.containerd.stop()

    def processes(self) -> dict[str, list[int]]:
        table = proc_table()
        containerd = [p for p in table if p == getattr(self.containerd.proc, "pid", None)]
        # containerd-shim-runc-v2 daemonizes (it is not below containerd); its -address names
        # our containerd
        shims = [p for p in table if p not in containerd and self.containerd.owns(p)]
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


class Table:
    """Report rows that set berth's figures (`b`) beside dockerd's (`d`): min / median / max
    of each, the ratio of the medians and, where a target is given, whether it is met (the
    ratio at most `target`, or with `invert` at least)."""

    def __init__(self, b: str, d: str, width: int = 34):
        self.b, self.d, self.width = b, d, width

    def header(self, note: str, label: str = "") -> None:
        print(f"{label:<{self.width}} {self.b + ' min / median / max':>26} "
              f"{self.d + ' min / median / max':>26} {'ratio':>7}  {note}")

    def of(self, label: str, samples: dict, value, scale: float, prec: int,
           target: float | None = None, invert: bool = False) -> dict:
        """The row of `value` (a key, or a function of a sample) over each daemon's samples
        (`samples[name]`: a list)."""
        get = (lambda x: x[value]) if isinstance(value, str) else value
        return self.row(label, summary([get(x) for x in samples[self.b]]),
                        summary([get(x) for x in samples[self.d]]), scale, prec, target, invert)

    def row(self, label: str, bs: dict, ds: dict, scale: float, prec: int,
            target: float | None = None, invert: bool = False) -> dict:
        ratio = bs["median"] / ds["median"] if ds["median"] else None
        met, verdict = None, ""
        if target is not None and ratio is not None:
            met = ratio >= target if invert else ratio <= target
            shown = f">= {target:g}" if invert else f"<= 1/{round(1 / target)}"
            verdict = f"{shown}: {'met' if met else 'NOT met'}"
        shown_ratio = "-" if ratio is None else f"{ratio:.3f}"
        print(f"{label:<{self.width}} {fmt3(bs, scale, prec):>26} {fmt3(ds, scale, prec):>26}"
              f" {shown_ratio:>7}  {verdict}".rstrip())
        return {self.b: dict(bs), self.d: dict(ds), "ratio_of_medians": ratio,
                "target": target, "target_met": met}


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


def cleanup(tmp: str, daemons: list[Daemon], dockerd: Dockerd, keep: bool) -> None:
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


# --------------------------------------------------------------------------------------------
# A minimal keep-alive HTTP/1.1 client on a unix socket


class Stale(Exception):
    """The server closed an idle keep-alive connection before answering."""


class RawClient:
    """One keep-alive connection. `request` returns (status, body, seconds); the clock runs
    from right before the request is written to the arrival of the response's last byte.

    A connection the server closed while idle (actix closes idle keep-alive connections after
    5 s) is reopened and the request sent again, with the clock restarted."""

    def __init__(self, path: str, timeout: float = 120.0):
        self.path = path
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.reconnects = 0

    def connect(self) -> None:
        self.close()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def request(self, method: str, target: str, body=None,
                timeout: float | None = None) -> tuple[int, bytes, float]:
        data = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {target} HTTP/1.1\r\nHost: localhost\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        if body is not None or method in ("POST", "PUT"):
            head += f"Content-Length: {len(data)}\r\n"
        raw = head.encode() + b"\r\n" + data
        fresh = self.sock is None
        if fresh:
            self.connect()
        assert self.sock is not None
        self.sock.settimeout(timeout or self.timeout)
        try:
            return self._exchange(raw)
        except Stale:
            if fresh:
                raise BenchError(f"{self.path}: connection closed before any answer")
        self.reconnects += 1
        self.connect()
        self.sock.settimeout(timeout or self.timeout)
        return self._exchange(raw)

    def _exchange(self, raw: bytes) -> tuple[int, bytes, float]:
        s = self.sock
        assert s is not None
        t0 = time.perf_counter()
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise Stale() from e
        buf = bytearray()
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            try:
                chunk = s.recv(262144)
            except ConnectionResetError as e:
                if buf:
                    raise
                raise Stale() from e
            if not chunk:
                if buf:
                    raise BenchError(f"{self.path}: connection closed inside a response head")
                raise Stale()
            buf += chunk
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        pos = end + 4
        if status in (204, 304) or 100 <= status < 200:
            payload = b""
        elif "content-length" in headers:
            need = pos + int(headers["content-length"])
            while len(buf) < need:
                chunk = s.recv(max(262144, need - len(buf)))
                if not chunk:
                    raise BenchError(f"{self.path}: connection closed inside a response body")
                buf += chunk
            payload = bytes(buf[pos:need])
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            payload = self._chunked(buf, pos)
        else:  # body until close
            while True:
                chunk = s.recv(262144)
                if not chunk:
                    break
                buf += chunk
            payload = bytes(buf[pos:])
            headers["connection"] = "close"
        t1 = time.perf_counter()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, payload, t1 - t0

    def _chunked(self, buf: bytearray, pos: int) -> bytes:
        s = self.sock
        assert s is not None
        out = bytearray()

        def more() -> None:
            chunk = s.recv(262144)
            if not chunk:
                raise BenchError(f"{self.path}: connection closed inside a chunked body")
            buf.extend(chunk)

        while True:
            eol = buf.find(b"\r\n", pos)
            while eol < 0:
                more()
                eol = buf.find(b"\r\n", pos)
            size = int(bytes(buf[pos:eol]).split(b";")[0].strip(), 16)
            pos = eol + 2
            if size == 0:
                # trailers (none expected), then an empty line
                while True:
                    eol = buf.find(b"\r\n", pos)
                    while eol < 0:
                        more()
                        eol = buf.find(b"\r\n", pos)
                    empty = eol == pos
                    pos = eol + 2
                    if empty:
                        return bytes(out)
            while len(buf) < pos + size + 2:
                more()
            out += buf[pos:pos + size]
            pos += size + 2


def check(d: Daemon, what: str, status: int, body: bytes, want: tuple[int, ...]) -> None:
    if status not in want:
        raise BenchError(f"{d.name}: {what} -> {status}: {body[:300]!r}")


def alternating(daemons: list[Daemon], warmup: int, iterations: int,
                measure: Callable[[Daemon, int], Any]) -> dict[str, list]:
    """Per daemon: what `measure(daemon, round)` returned in each of `iterations` timed rounds,
    after `warmup` untimed ones. Every round measures each daemon once, and which goes first
    alternates, so neither always meets a machine the other has just warmed (or loaded)."""
    out: dict[str, list] = {d.name: [] for d in daemons}
    for i in range(warmup + iterations):
        for d in (daemons if i % 2 == 0 else daemons[::-1]):
            value = measure(d, i)
            if i >= warmup:
                out[d.name].append(value)
    return out


def load_options(max_requests: int) -> tuple:
    """The option rows (see `add_options`) of a throughput figure measured with `load_round`;
    --load-seconds and --load-rounds take their defaults from the benchmark's QUICK and
    DEFAULTS."""
    return (("--threads", int, 4, "client threads of the throughput figure"),
            ("--load-seconds", float, None, "length of one throughput round"),
            ("--load-rounds", int, None, "throughput rounds per daemon, alternating"),
            ("--max-requests", int, max_requests, "bound on the requests of one throughput "
             "round"))


def round_options(what: str, per: str) -> tuple:
    """The option rows (see `add_options`) of timed rounds (see `alternating`): --iterations
    timed `what` `per` ..., after --warmup untimed ones; both take their defaults from the
    benchmark's QUICK and DEFAULTS."""
    return (("--iterations", int, None, f"timed {what} {per}"),
            ("--warmup", int, None, f"untimed {what} first"))


def rss_options(idle: float | None = None, samples: int | None = None) -> tuple:
    """The option rows (see `add_options`) of an RSS figure measured with `sample_rss`: --idle
    seconds before sampling, --rss-samples 0.5 s apart; a None default is taken from the
    benchmark's QUICK and DEFAULTS."""
    return (("--idle", float, idle, "idle seconds before RSS is sampled"),
            ("--rss-samples", int, samples, "RSS samples, 0.5 s apart"))


def load_round(d: Daemon, target: str, threads: int, seconds: float, max_requests: int,
               plugin_pids: list[int]) -> dict:
    """`threads` keep-alive connections issuing `GET target` back to back for `seconds`
    (at most `max_requests` in all); requests/s, and the CPU time the daemon and the processes
    `plugin_pids` spent per request."""
    barrier = threading.Barrier(threads + 1)
    go = threading.Event()
    counts = [0] * threads
    ends = [0.0] * threads
    errors: list[str] = []
    cap = max(1, max_requests // threads)
    stop_at = [0.0]

    def worker(i: int) -> None:
        c = RawClient(d.sock)
        try:
            status, payload, _ = c.request("GET", target)  # opens the connection
            check(d, f"GET {target}", status, payload, (200,))
            barrier.wait(timeout=60)
            go.wait()
            n = 0
            while n < cap and time.perf_counter() < stop_at[0]:
                status, payload, _ = c.request("GET", target)
                check(d, f"GET {target}", status, payload, (200,))
                n += 1
            counts[i] = n
            ends[i] = time.perf_counter()
        except threading.BrokenBarrierError:
            pass
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append(f"{type(e).__name__}: {e}")
            barrier.abort()
        finally:
            c.close()

    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    try:
        barrier.wait(timeout=120)
    except threading.BrokenBarrierError:
        pass
    # every connection is open and warm; all threads start together
    cpu0 = cpu_seconds(d.pid)
    pcpu0 = sum(cpu_seconds(p) for p in plugin_pids)
    start = time.perf_counter()
    stop_at[0] = start + seconds
    go.set()
    for t in ts:
        while t.is_alive():
            t.join(0.2)
    cpu1 = cpu_seconds(d.pid)
    pcpu1 = sum(cpu_seconds(p) for p in plugin_pids)
    if errors:
        raise BenchError(f"{d.name}: load: {errors[0]}")
    total = sum(counts)
    elapsed = max(ends) - start
    return {"requests": total, "seconds": elapsed, "rps": total / elapsed,
            "daemon_cpu_ms_per_request": (cpu1 - cpu0) * 1000 / total if total else None,
            "plugin_cpu_ms_per_request": (pcpu1 - pcpu0) * 1000 / total if total else None}


# --------------------------------------------------------------------------------------------
# Machine and process facts


def source_state() -> str:
    """The commit the release build came from, and whether the tree had local changes."""
    head = run_cmd_out(["git", "-C", REPO, "log", "-1", "--format=%h %s"])
    r = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "src", "Cargo.toml",
                        "Cargo.lock", "build.rs"], capture_output=True, text=True)
    changed = len(r.stdout.splitlines()) if r.returncode == 0 else "?"
    return f"{head[:70]} (+{changed} changed file(s) in src/, Cargo.*, build.rs)"


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def proc_state(pid: int) -> str:
    st = proc_stat(pid)
    return "?" if st is None else st[0]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# The frame of a run


def argument_parser(doc: str, quick: str | None = None) -> argparse.ArgumentParser:
    """A benchmark's options: its own (added by the caller), then those every benchmark has.
    `doc` is the script's docstring: its first paragraph the description, the rest the
    epilog. With `quick` (what it shortens), a --quick option (see `apply_defaults`)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=doc.split("\n\n", 2)[2])
    if quick is not None:
        ap.add_argument("--quick", action="store_true", help=f"short run: {quick}")
    return ap


def add_common_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON here")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build --release")
    ap.add_argument("--berth-bin", default=os.path.join(REPO, "target", "release", "berth"))
    ap.add_argument("--dockerd-bin", default=os.environ.get("DOCKERD_BIN", "dockerd"))
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp directory (logs)")


def add_options(ap: argparse.ArgumentParser, options: tuple, quick: dict | None = None,
                defaults: dict | None = None) -> None:
    """Options as (flag, type, default, help) rows. With `quick` and `defaults` (keyed by
    dest), a row whose default is None takes its default from them after parsing (see
    `apply_defaults`): the value of `defaults`, or of `quick` under --quick."""
    for flag, kind, default, text in options:
        key = flag[2:].replace("-", "_")
        if default is None:
            text += f" (default {defaults[key]:g}, --quick {quick[key]:g})"
        else:
            text += f" (default {default:g})"
        ap.add_argument(flag, type=kind, default=default, help=text)


def apply_defaults(args: argparse.Namespace, quick: dict, defaults: dict) -> None:
    """Options left unset take the --quick value or the default."""
    for k, v in (quick if args.quick else defaults).items():
        if getattr(args, k) is None:
            setattr(args, k, v)


def parse_options(ap: argparse.ArgumentParser, quick: dict, defaults: dict) -> argparse.Namespace:
    """The command line, once the benchmark has added its own options: the common ones added
    last, then the unset ones given their --quick value or default (see `apply_defaults`)."""
    add_common_options(ap)
    args = ap.parse_args()
    apply_defaults(args, quick, defaults)
    return args


class Bench:
    """One run: its name (`bench-runtime`), options, temp directory (short: plugin sockets
    live several levels below the exec roots), the two daemons, what to undo (last added
    first) before the daemons are stopped and what to stop after them (processes the daemons
    call, such as authorization plugins), whatever happens."""

    def __init__(self, name: str, args: argparse.Namespace, tmp: str, berth: Berth,
                 dockerd: Dockerd):
        self.name = name
        self.args = args
        self.tmp = tmp
        self.berth = berth
        self.dockerd = dockerd
        self.daemons: list[Daemon] = [berth, dockerd]
        self.undo: list[Callable[[], None]] = []
        self.after: list[Callable[[], None]] = []

    def start_daemons(self) -> None:
        log(f"starting berth and a private dockerd (its own containerd) in {self.tmp}")
        for d in self.daemons:
            d.start()
        for d in self.daemons:
            d.remember(sum(d.processes().values(), []))

    def versions(self, tools: dict[str, str]) -> dict:
        """`--version` of berth, dockerd and `tools` (label -> binary), and what each daemon's
        GET /version says."""
        binaries = {"berth": self.berth.binary, "dockerd": self.dockerd.binary,
                    "containerd": "containerd", "runc": "runc", **tools,
                    "docker CLI": DOCKER_CLI}
        out = {label: run_cmd_out([b, "--version"]) for label, b in binaries.items()}
        out["python"] = platform.python_version()
        out["berth source"] = source_state()
        for d in self.daemons:
            v = d.api("GET", "/version")
            out[f"{d.name} /version"] = f"{v.get('Version')} (API {v.get('ApiVersion')})"
        return out

    def make_test_plugins(self, names: list[str], env: dict | None = None) -> str:
        """scripts/make-test-plugins.sh of `names` into <tmp>/plugins; returns that directory."""
        base = os.path.join(self.tmp, "plugins")
        log(f"building the {', '.join(names)} plugin directories (scripts/make-test-plugins.sh)")
        r = subprocess.run([os.path.join(REPO, "scripts", "make-test-plugins.sh"), base, *names],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=dict(os.environ, **(env or {})))
        if r.returncode != 0:
            raise BenchError(f"make-test-plugins.sh failed:\n{r.stdout}")
        return base


def machine_facts() -> dict:
    return {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu": cpu_model(),
            "memory": mem_total(), "loadavg_at_start": loadavg()}


def print_setting(machine: dict, versions: dict) -> None:
    print()
    print(f"machine   nproc {machine['nproc']}, kernel {machine['kernel']}, "
          f"{machine['cpu']}, {machine['memory']}; load average {machine['loadavg_at_start']}"
          f" at start, {machine.get('loadavg_at_end', '?')} at end")
    for k, v in versions.items():
        print(f"{k:<20}{v}")


def run_benchmark(name: str, args: argparse.Namespace, bench: Callable[[Bench], dict],
                  tools: tuple[tuple[str, str], ...] = (),
                  daemons: tuple[type[Berth], type[Dockerd]] = (Berth, Dockerd)) -> int:
    """The frame of a benchmark: root and the tools checked (dockerd, the docker CLI and
    `tools`, (binary, Debian package) each), berth built, `bench` run on a new Bench, then
    the undo list run, the plugins disabled, the daemons and their helpers stopped, everything
    below the temp directory unmounted and the directory deleted (kept on error or with
    --keep-tmp), then the `after` list run, on success, error, Ctrl-C or SIGTERM alike. Prints
    the wall time and writes the results to --json. Returns the exit code."""
    if os.geteuid() != 0:
        print(f"{name}: needs root (both daemons run plugins in namespaces)", file=sys.stderr)
        return 2
    dockerd_bin = shutil.which(args.dockerd_bin)
    for binary, package in ((args.dockerd_bin, "docker.io"), (DOCKER_CLI, "docker-cli"),
                            *tools):
        if not shutil.which(binary):
            print(f"{name}: {binary} not found (Debian package {package})", file=sys.stderr)
            return 2
    started = time.monotonic()
    unwind_on_signals()
    stop = build_berth(name, args.no_build, args.berth_bin)
    if stop is not None:
        return stop

    tmp = tempfile.mkdtemp(prefix="b", dir="/tmp")
    berth_class, dockerd_class = daemons
    run = Bench(name, args, tmp, berth_class(tmp, args.berth_bin),
                dockerd_class(tmp, dockerd_bin))
    results: dict = {}
    outcome = "error"  # a traceback from an unexpected exception still goes through cleanup
    try:
        results = bench(run)
        outcome = "ok"
    except KeyboardInterrupt:
        outcome = "interrupted"
        log("interrupted; cleaning up")
    except BenchError as e:
        log(f"error: {e}")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            for undo in reversed(run.undo):
                undo()
        finally:
            try:
                cleanup(tmp, run.daemons, run.dockerd, keep=args.keep_tmp or outcome == "error")
            finally:
                for stop in reversed(run.after):
                    stop()
    if outcome != "ok":
        return 130 if outcome == "interrupted" else 1
    results["duration_s"] = round(time.monotonic() - started, 1)
    print(f"\ntotal wall time {results['duration_s']:.0f} s ("
          f"{'' if args.no_build else 'cargo build, '}setup, measurements, cleanup)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
        print(f"results written to {args.json}")
    return 0


def unwind_on_signals() -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C, through the callers' `finally` cleanup."""
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)



def build_berth(name: str, no_build: bool, berth_bin: str) -> int | None:
    """`cargo build --release` unless told not to, then check the binary. Returns an exit
    code to stop with, or None to go on. `name` prefixes the messages (`bench-runtime`)."""
    if not no_build:
        log("cargo build --release")
        r = subprocess.run(["cargo", "build", "--release", "-q"], cwd=REPO)
        if r.returncode != 0:
            print(f"{name}: cargo build --release failed", file=sys.stderr)
            return 1
    if not os.access(berth_bin, os.X_OK):
        print(f"{name}: no berth binary at {berth_bin}", file=sys.stderr)
        return 2
    return None
