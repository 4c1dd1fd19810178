#!/usr/bin/env python3
"""Registry benchmark: berth against a private dockerd 20.10, side by side in one run.

    scripts/bench-registry.sh [--iterations N] [--warmup N] [--quick] [--big-mb MB]
                              [--big-iterations N] [--json FILE] [--no-build] [--keep-tmp]

Measures the daemons, not the CLI: every timed request is raw HTTP on the daemon's unix socket,
against Debian's docker-registry on 127.0.0.1:<free port> (filesystem storage in the temp
directory). Before every timed install the daemon's plugin blob store is checked to be empty,
so every install downloads its layer.

  install          GET /v1.41/plugins/privileges?remote=R, POST /v1.41/plugins/pull?remote=R&name=N
                   with those privileges as the body (the JSON stream read to its end), then
                   POST /v1.41/plugins/N/enable?timeout=0 until the plugin's socket accepts a
                   connection; the figure is the sum of the three (the untimed inspect between
                   pull and enable, which finds the plugin's ID and socket, is left out). The
                   rclone plugin (scripts/make-test-plugins.sh rclone, privileged: installed with
                   the grant), alternating which daemon goes first; DELETE ?force=1 after each.
                   The pull is split into phases by the arrival times of its stream messages
                   and the moment the staging rootfs (<data-root>/plugins/tmp/.rootfs*) is
                   renamed away; the daemon's CPU per phase comes from schedstat.
  push             POST /v1.41/plugins/<registry>/bench/<variant>-<daemon>:latest/push with
                   X-Registry-Auth e30= (the stream read to its end), of the rclone plugin:
                   "own" as each daemon's own `docker plugin create` packed it, "same" the
                   installed source (identical bytes on both); before every push the
                   repository is deleted from the registry's storage, and every blob no
                   repository references, so every blob is uploaded again.
  large install    the testdriver plugin plus --big-mb (200) MB of random data in its rootfs:
                   install time and MB/s (layer bytes / time) of both daemons, and the machine's
                   single-core limit measured in the same run (sha256 + gunzip + write of the
                   same layer blob, one thread); berth's MB/s as a share of that limit.

Setup: `cargo build --release` (skip with --no-build), scripts/make-test-plugins.sh rclone and
testdriver (BERTH_RCLONE_STATE_DIR=<tmp>/state), the random file, the registry, berth and a
private dockerd (with its own containerd) on a private temp directory. The plugins installed
are made by the private dockerd (`docker plugin create`) and pushed to the registry before the
timed part. Everything is stopped (the registry by its PID) and unmounted, and the temp
directory deleted, also on Ctrl-C or failure. Needs root.

Nothing here asserts on a timing: targets are reported, never enforced.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import time
import urllib.parse
import zlib

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (  # noqa: E402 - the shared benchmark frame and helpers
    API, Bench, BenchError, Daemon, Table, UnixHTTPConnection, add_options, argument_parser,
    cpu_seconds, fmt3, loadavg, log, machine_facts, parse_options, print_setting, round_options,
    run_benchmark, socket_answers, summary, timed_post, wait_socket,
)
from testbed import DockerRegistry, task_files  # noqa: E402

REGISTRY_BIN = os.environ.get("REGISTRY_BIN", "docker-registry")
AUTH = "e30="  # base64("{}"): what the docker CLI sends without credentials
# Targets from the issue.
TARGET_INSTALL = 1 / 2   # berth / dockerd of medians
TARGET_LIMIT = 0.70      # berth's MB/s of the large install as a share of the single-core limit

QUICK = {"iterations": 5, "warmup": 1, "big_iterations": 2}
DEFAULTS = {"iterations": 20, "warmup": 2, "big_iterations": 5}

MB = 1_000_000
PUSH_VARIANTS = ("own", "same")


# --------------------------------------------------------------------------------------------
# The registry


class Registry(DockerRegistry):
    """The benchmark's registry (filesystem storage in <tmp>/reg), with what the benchmark
    reads and deletes in its storage."""

    def __init__(self, tmp: str, binary: str):
        super().__init__(tmp, os.path.join(tmp, "reg"), binary)
        self.v2 = os.path.join(self.root, "docker", "registry", "v2")

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid) if self.proc else 0.0

    # -- storage ----------------------------------------------------------------------------

    def repo_dir(self, repo: str) -> str:
        return os.path.join(self.v2, "repositories", repo)

    def blob_data(self, digest: str) -> str:
        hexd = digest.split(":", 1)[1]
        return os.path.join(self.v2, "blobs", "sha256", hexd[:2], hexd, "data")

    def manifest(self, repo: str, tag: str = "latest") -> dict:
        link = os.path.join(self.repo_dir(repo), "_manifests", "tags", tag, "current", "link")
        with open(link) as f:
            digest = f.read().strip()
        with open(self.blob_data(digest), "rb") as f:
            doc = json.loads(f.read())
        doc["_digest"] = digest
        return doc

    def referenced(self) -> set[str]:
        """Hex digests some repository links to (layers, manifests, tags)."""
        refs = set()
        for dirpath, _dirs, files in os.walk(os.path.join(self.v2, "repositories")):
            if "link" in files:
                with open(os.path.join(dirpath, "link")) as f:
                    refs.add(f.read().strip().split(":", 1)[-1])
        return refs

    def delete_repo(self, repo: str) -> int:
        """Deletes a repository and then every blob no remaining repository links to (an
        offline garbage collection); returns the number of blobs deleted."""
        shutil.rmtree(self.repo_dir(repo), ignore_errors=True)
        refs = self.referenced()
        base = os.path.join(self.v2, "blobs", "sha256")
        removed = 0
        for prefix in os.listdir(base) if os.path.isdir(base) else []:
            for hexd in os.listdir(os.path.join(base, prefix)):
                if hexd not in refs:
                    shutil.rmtree(os.path.join(base, prefix, hexd))
                    removed += 1
        return removed

    def has_blob(self, digest: str) -> bool:
        return os.path.exists(self.blob_data(digest))


# --------------------------------------------------------------------------------------------
# Streamed requests


def quote_name(name: str) -> str:
    return urllib.parse.quote(name, safe="/:")


def stream_request(d: Daemon, method: str, target: str, body: bytes | None = None,
                   headers: dict | None = None, timeout: float = 600.0,
                   sampler=None) -> dict:
    """One request on a connection set up beforehand; the clock starts right before the
    request is written. The response (a JSON message stream) is read to its end, each message
    stamped with its arrival time. Returns t0, t_end, status and [(t, message)]; with a
    sampler, also its value before the request, at every message whose (status, id) differs
    from the one before, and at the end ("samples": {message index or "start"/"end": value})."""
    conn = UnixHTTPConnection(d.sock, timeout)
    try:
        conn.connect()
        hdrs = dict(headers or {})
        if body is not None:
            hdrs.setdefault("Content-Type", "application/json")
        samples: dict = {}
        last_key = None
        if sampler:
            samples["start"] = sampler()
        t0 = time.perf_counter()
        conn.request(method, target, body=body, headers=hdrs)
        resp = conn.getresponse()
        t_head = time.perf_counter()
        messages: list[tuple[float, dict]] = []
        buf = b""
        raw_len = 0
        decoder = json.JSONDecoder()
        while True:
            chunk = resp.read1(262144)
            now = time.perf_counter()
            if not chunk:
                break
            raw_len += len(chunk)
            buf += chunk
            text = buf.decode("utf-8", errors="replace")
            pos = 0
            while True:
                while pos < len(text) and text[pos] in " \r\n\t":
                    pos += 1
                if pos >= len(text):
                    break
                try:
                    obj, end = decoder.raw_decode(text, pos)
                except json.JSONDecodeError:
                    break  # incomplete: wait for more
                if not isinstance(obj, dict):
                    obj = {"value": obj}
                messages.append((now, obj))
                key = (obj.get("status"), obj.get("id"))
                if sampler and key != last_key:
                    samples[len(messages) - 1] = sampler()
                last_key = key
                pos = end
            buf = text[pos:].encode()
        t_end = time.perf_counter()
        if sampler:
            samples["end"] = sampler()
        status = resp.status
    finally:
        conn.close()
    if status >= 300:
        raise BenchError(f"{d.name}: {method} {target} -> {status}: {buf[:300]!r} "
                         f"{[m for _, m in messages][:3]}")
    errors = [m for _, m in messages if m.get("error") or m.get("errorDetail")]
    if errors:
        raise BenchError(f"{d.name}: {method} {target}: {errors[0]}")
    return {"t0": t0, "t_head": t_head, "t_end": t_end, "status": status, "messages": messages,
            "samples": samples, "bytes": raw_len, "trailing": buf.decode(errors="replace").strip()}


def timed_get(d: Daemon, target: str, headers: dict | None = None) -> tuple[float, bytes]:
    conn = UnixHTTPConnection(d.sock, 120)
    try:
        conn.connect()
        t0 = time.perf_counter()
        conn.request("GET", target, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        t1 = time.perf_counter()
        if resp.status >= 300:
            raise BenchError(f"{d.name}: GET {target} -> {resp.status}: {body[:300]!r}")
        return t1 - t0, body
    finally:
        conn.close()


def plain_request(d: Daemon, method: str, target: str, want=(200, 204)) -> bytes:
    conn = UnixHTTPConnection(d.sock, 300)
    try:
        conn.request(method, target, headers={"Content-Length": "0"} if method == "POST" else {})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status not in want:
            raise BenchError(f"{d.name}: {method} {target} -> {resp.status}: {body[:300]!r}")
        return body
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# Blob stores, install, remove, push


def blob_store(d: Daemon) -> str:
    # the same layout on both: <data-root>/plugins/storage/{blobs/sha256,ingest}
    return os.path.join(d.data_root, "plugins", "storage")


def stored_blobs(d: Daemon) -> list[str]:
    out = []
    for sub in ("blobs/sha256", "ingest"):
        p = os.path.join(blob_store(d), sub)
        try:
            out += [f"{sub}/{e}" for e in os.listdir(p)]
        except FileNotFoundError:
            pass
    return out


def wait_blobs_empty(d: Daemon, timeout: float = 60.0) -> float:
    """dockerd 20.10 deletes unreferenced blobs in a goroutine started by the remove; berth
    before answering. Returns how long it took to see the store empty."""
    t0 = time.monotonic()
    while True:
        left = stored_blobs(d)
        if not left:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise BenchError(f"{d.name}: plugin blob store not empty {timeout:g} s after the "
                             f"remove: {left[:5]}")
        time.sleep(0.01)


def plugin_record(d: Daemon, name: str) -> dict:
    body = plain_request(d, "GET", f"{API}/plugins/{quote_name(name)}/json", want=(200,))
    p = json.loads(body)
    d.plugins[f"{p['Name']}#{p['Id']}"] = {"id": p["Id"],
                                           "socket": p["Config"]["Interface"]["Socket"]}
    return p


def remove_plugin(d: Daemon, name: str, wait: bool = True) -> float:
    plain_request(d, "DELETE", f"{API}/plugins/{quote_name(name)}?force=1")
    return wait_blobs_empty(d) if wait else 0.0


# Layer statuses in the pull stream. berth sends each when it happens: Waiting, Pulling fs
# layer, Downloading (at most every 100 ms), Download complete, Extracting, Complete. dockerd
# 20.10 reports the state of its transfers on a 100 ms ticker: Waiting, then (at the next tick)
# Pulling fs layer and/or Download complete, Extracting with progress, Complete; a short
# download shows up as Download complete only, up to 100 ms after it ended.
DL_END = ("Download complete", "Verifying Checksum")
EX_END = ("Pull complete", "Complete")
PHASES = ("manifest + config", "layer download + verify", "unpack", "commit (-> stream end)")


class StagingWatch:
    """Polls <data-root>/plugins/tmp every millisecond in a thread and records when a
    `.rootfs*` staging directory disappears: both daemons unpack a pulled plugin into one and
    rename it into the plugin's own directory when they commit the plugin. A message written
    by berth while it commits is held back until the commit is over (see pull_phases), so this
    is where its unpack ends. `sampler` is called at that moment too."""

    def __init__(self, d: Daemon, sampler=None, interval: float = 0.001):
        self.dir = os.path.join(d.data_root, "plugins", "tmp")
        self.sampler = sampler
        self.interval = interval
        self.seen: dict[str, list] = {}  # name -> [first seen, gone, sample when gone]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "StagingWatch":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.stopping.is_set():
            now = time.perf_counter()
            try:
                names = {e for e in os.listdir(self.dir) if e.startswith(".rootfs")}
            except OSError:
                names = set()
            for n in names:
                self.seen.setdefault(n, [now, None, None])
            for n, v in self.seen.items():
                if v[1] is None and n not in names:
                    v[1] = now
                    v[2] = self.sampler() if self.sampler else None
            self.stopping.wait(self.interval)

    def gone(self) -> tuple[float, object] | None:
        """(time, sample) of the last staging directory that went away, if any."""
        done = [v for v in self.seen.values() if v[1] is not None]
        if not done:
            return None
        last = max(done, key=lambda v: v[1])
        return last[1], last[2]


def pull_phases(pull: dict, staged_gone: tuple | None) -> dict:
    """Per phase: wall seconds, the CPU seconds the daemon and the registry used meanwhile,
    and how long the daemon's threads waited for a CPU. The phases end at: the first layer
    message (session, manifest, config blob, grant check), the last Download complete, the
    end of the unpack (the staging rootfs renamed away, or the last Complete if that came
    first), the end of the stream (the daemon commits the plugin before it ends the stream).

    berth commits (fsync of the blobs, renames) on the thread that also writes the response,
    so its Complete message arrives only after the commit: its unpack ends where the staging
    directory went away. None where a marking message is missing."""
    msgs = pull["messages"]
    samples = pull["samples"]

    def mark(statuses, first):
        ix = [i for i, (_, m) in enumerate(msgs) if m.get("id") and m.get("status") in statuses]
        if not ix:
            return None
        i = ix[0] if first else ix[-1]
        return msgs[i][0], samples.get(i)

    start = (pull["t0"], samples.get("start"))
    layer = mark(("Waiting", "Pulling fs layer", "Downloading", *DL_END), True)
    dl_end = mark(DL_END, False)
    unpacked = mark(EX_END, False)
    if staged_gone and dl_end and staged_gone[0] > dl_end[0] and (
            unpacked is None or staged_gone[0] < unpacked[0]):
        unpacked = staged_gone
    end = (pull["t_end"], samples.get("end"))
    marks = [start, layer, dl_end, unpacked, end]
    wall, cpu, wait, reg = {}, {}, {}, {}
    for name, a, b in zip(PHASES, marks, marks[1:]):
        ok = a is not None and b is not None
        wall[name] = b[0] - a[0] if ok else None
        have = ok and a[1] is not None and b[1] is not None
        cpu[name] = cpu_between(a[1][0], b[1][0]) if have else None
        wait[name] = cpu_between(a[1][0], b[1][0], 1) if have else None
        reg[name] = cpu_between(a[1][1], b[1][1]) if have else None
    return {"wall": wall, "daemon_cpu": cpu, "daemon_runqueue": wait, "registry_cpu": reg,
            "staging_gone_marks_unpack_end": unpacked is staged_gone and staged_gone is not None}


def thread_cpu(pid: int) -> dict[str, tuple[int, int]]:
    """{tid: (nanoseconds on a CPU, nanoseconds runnable but waiting for a CPU)} of the live
    threads of pid, from schedstat (nanoseconds, unlike the 10 ms ticks of /proc/<pid>/stat);
    {} if the process is gone."""
    out = {}
    for tid, schedstat in task_files(pid, "schedstat").items():
        try:
            run, wait = schedstat.split()[:2]
            out[tid] = (int(run), int(wait))
        except ValueError:
            pass
    return out


def cpu_between(a: dict, b: dict, field: int = 0) -> float:
    """Seconds on a CPU (field 0) or waiting for one (field 1) of the threads alive at `b`
    since `a` (a thread started meanwhile counts from 0; the time of a thread that ended
    meanwhile is lost: idle pool threads that time out, in practice)."""
    return sum(v[field] - a.get(tid, (0, 0))[field] for tid, v in b.items()) / 1e9


def trace(t0: float, messages: list[tuple[float, dict]], limit: int = 80) -> list:
    """[ms since the request, status, id, current] of the stream's messages (for the JSON);
    progress updates are thinned to keep it short."""
    out = []
    for t, m in messages:
        cur = (m.get("progressDetail") or {}).get("current")
        out.append([round((t - t0) * 1000, 1), m.get("status"), m.get("id"), cur])
    if len(out) > limit:
        keep = [r for r in out if r[3] is None]
        prog = [r for r in out if r[3] is not None]
        step = max(1, len(prog) // max(1, limit - len(keep)))
        out = sorted(keep + prog[::step] + prog[-1:], key=lambda r: r[0])
    return out


def install(d: Daemon, remote: str, name: str, registry: Registry) -> dict:
    """privileges + pull (stream to its end) + enable until the plugin socket answers."""
    cpu0, rcpu0 = cpu_seconds(d.pid), registry.cpu()
    q_remote = urllib.parse.quote(remote, safe="")
    t_priv, privs = timed_get(d, f"{API}/plugins/privileges?remote={q_remote}",
                              {"X-Registry-Auth": AUTH})
    reg_pid = registry.proc.pid if registry.proc else 0

    def sampler():
        return thread_cpu(d.pid), thread_cpu(reg_pid)
    with StagingWatch(d, sampler) as staging:
        pull = stream_request(d, "POST", f"{API}/plugins/pull?remote={q_remote}&name="
                              f"{urllib.parse.quote(name, safe='')}", body=privs,
                              headers={"X-Registry-Auth": AUTH}, sampler=sampler)
    cached = [m for _, m in pull["messages"] if m.get("status") == "Already exists"]
    if cached:
        raise BenchError(f"{d.name}: pull of {remote} did not download everything: {cached}")
    p = plugin_record(d, name)
    sock = os.path.join(d.plugin_exec_root, p["Id"], p["Config"]["Interface"]["Socket"])
    if len(sock.encode()) > 107:
        raise BenchError(f"{d.name}: plugin socket path too long: {sock}")
    t0, t1, status, body = timed_post(d.sock, f"{API}/plugins/{quote_name(name)}/enable"
                                      "?timeout=0", timeout=120)
    if status >= 300:
        raise BenchError(f"{d.name}: enable {name} -> {status}: {body[:300]!r}")
    if socket_answers(sock):
        t2 = time.perf_counter()
    else:
        t2, _ = wait_socket(sock, timeout=60)
    cpu1, rcpu1 = cpu_seconds(d.pid), registry.cpu()
    pull_s = pull["t_end"] - pull["t0"]
    statuses = []
    for _, m in pull["messages"]:
        st = m.get("status") or ""
        st = "Digest: ..." if st.startswith("Digest:") else st
        st = "Pulling from ..." if st.startswith("Pulling from") else st
        if st and st not in statuses:
            statuses.append(st)
    return {
        "total": t_priv + pull_s + (t2 - t0), "privileges": t_priv, "pull": pull_s,
        "enable_response": t1 - t0, "enable_ready": t2 - t0,
        "phases": pull_phases(pull, staging.gone()),
        "daemon_cpu_s": cpu1 - cpu0, "registry_cpu_s": rcpu1 - rcpu0,
        "messages": len(pull["messages"]), "statuses": statuses, "id": p["Id"],
        "trace": trace(pull["t0"], pull["messages"]),
        "privileges_body": json.loads(privs),
    }


def push(d: Daemon, name: str, registry: Registry) -> dict:
    cpu0, rcpu0 = cpu_seconds(d.pid), registry.cpu()
    r = stream_request(d, "POST", f"{API}/plugins/{quote_name(name)}/push",
                       headers={"X-Registry-Auth": AUTH, "Content-Length": "0"})
    cpu1, rcpu1 = cpu_seconds(d.pid), registry.cpu()
    aux = [m["aux"] for _, m in r["messages"] if isinstance(m.get("aux"), dict)]
    if not aux or not aux[-1].get("Digest"):
        raise BenchError(f"{d.name}: push {name}: no digest in the stream "
                         f"{[m for _, m in r['messages']][-3:]}")
    final: dict[str, str] = {}
    for _, m in r["messages"]:
        if m.get("id") and m.get("status"):
            final[m["id"]] = m["status"]
    return {"seconds": r["t_end"] - r["t0"], "digest": aux[-1]["Digest"],
            "daemon_cpu_s": cpu1 - cpu0, "registry_cpu_s": rcpu1 - rcpu0,
            "final_status": final, "messages": len(r["messages"])}


# --------------------------------------------------------------------------------------------
# The single-core limit


def single_core_pass(blob: str, digest: str, out_path: str, chunk: int = 1 << 20) -> dict:
    """sha256 of the gzip blob + gunzip + write of the result, one thread, one pass, as a
    daemon that verifies, decompresses and writes a layer must at least do. The blob is read
    from the page cache (the registry served it just before). The fsync afterwards is timed
    apart and not counted."""
    h = hashlib.sha256()
    dec = zlib.decompressobj(wbits=31)
    t_hash = t_unzip = t_write = t_read = 0.0
    written = 0
    t0 = time.perf_counter()
    with open(blob, "rb", buffering=0) as f, open(out_path, "wb", buffering=0) as o:
        while True:
            a = time.perf_counter()
            data = f.read(chunk)
            b = time.perf_counter()
            if not data:
                break
            h.update(data)
            c = time.perf_counter()
            plain = dec.decompress(data)
            e = time.perf_counter()
            o.write(plain)
            g = time.perf_counter()
            written += len(plain)
            t_read += b - a
            t_hash += c - b
            t_unzip += e - c
            t_write += g - e
        rest = dec.flush()
        o.write(rest)
        written += len(rest)
        t1 = time.perf_counter()
        os.fsync(o.fileno())
        t2 = time.perf_counter()
    os.remove(out_path)
    if "sha256:" + h.hexdigest() != digest:
        raise BenchError(f"single-core pass: sha256 of {blob} is not {digest}")
    return {"seconds": t1 - t0, "read": t_read, "sha256": t_hash, "gunzip": t_unzip,
            "write": t_write, "fsync_after": t2 - t1, "written_bytes": written}


# --------------------------------------------------------------------------------------------
# Setup


def make_plugins(run: Bench, big_mb: int) -> dict:
    state = os.path.join(run.tmp, "state")
    base = run.make_test_plugins(["rclone", "testdriver"], {"BERTH_RCLONE_STATE_DIR": state})
    rclone, big = os.path.join(base, "rclone"), os.path.join(base, "big")
    # the installed copy gets a marker file, so its layer differs from the layer of the copies
    # the daemons create for the push figure (dockerd's create is deterministic)
    src = os.path.join(base, "rclone-src")
    shutil.copytree(rclone, src, symlinks=True)
    with open(os.path.join(src, "rootfs", "etc", "bench-source"), "w") as f:
        f.write("installed copy\n")
    shutil.copytree(os.path.join(base, "testdriver"), big, symlinks=True)
    log(f"writing {big_mb} MB of random data into the large plugin's rootfs")
    with open(os.path.join(big, "rootfs", "bench-random.bin"), "wb") as f:
        left = big_mb * MB
        while left:
            n = min(left, 4 << 20)
            f.write(os.urandom(n))
            left -= n
    return {"rclone": rclone, "rclone-src": src, "big": big, "state": state}


def publish(d: Daemon, registry: Registry, ref: str, pdir: str) -> dict:
    """`docker plugin create` on d, push to the registry, remove (untimed setup)."""
    d.docker("plugin", "create", ref, pdir)
    t0 = time.perf_counter()
    p = push(d, ref, registry)
    dt = time.perf_counter() - t0
    remove_plugin(d, ref)
    repo = ref.split("/", 1)[1].rsplit(":", 1)[0]
    m = registry.manifest(repo)
    layers = m["layers"]
    if len(layers) != 1:
        raise BenchError(f"{ref}: expected one layer, the manifest has {len(layers)}")
    return {"ref": ref, "manifest": m["_digest"], "layer": layers[0]["digest"],
            "layer_bytes": layers[0]["size"], "config_bytes": m["config"]["size"],
            "push_s": dt, "pushed_by": d.name, "push_digest": p["digest"]}


# --------------------------------------------------------------------------------------------
# Main


def main() -> int:
    ap = argument_parser(__doc__, quick="fewer iterations")
    add_options(ap, (
        *round_options("installs and pushes", "of the rclone plugin per daemon"),
        ("--big-iterations", int, None, "timed installs of the large plugin per daemon, each "
         "followed by one single-core pass"),
        ("--big-mb", int, 200, "random data in the large plugin, MB (10^6 bytes)"),
    ), QUICK, DEFAULTS)
    ap.add_argument("--registry-bin", default=REGISTRY_BIN, help="distribution registry "
                    "binary (default docker-registry, Debian's package of that name)")
    args = parse_options(ap, QUICK, DEFAULTS)
    if args.iterations < 1 or args.warmup < 0 or args.big_iterations < 1 or args.big_mb < 1:
        ap.error("--iterations, --big-iterations and --big-mb must be >= 1, --warmup >= 0")
    return run_benchmark("bench-registry", args, bench,
                         tools=((args.registry_bin, "docker-registry"),
                                ("rclone", "rclone")))


def bench(run: Bench) -> dict:
    args, daemons, berth, dockerd = run.args, run.daemons, run.berth, run.dockerd
    dirs = make_plugins(run, args.big_mb)
    registry = Registry(run.tmp, shutil.which(args.registry_bin))
    run.undo.append(registry.stop)
    log("starting the registry")
    registry.start()
    run.start_daemons()
    machine = machine_facts()
    versions = run.versions({"registry": registry.binary, "rclone": "rclone"})

    # -- what gets installed: made by the private dockerd, pushed, removed again ---------------
    R = registry.host
    src_rclone = f"{R}/bench/rclone:latest"
    src_big = f"{R}/bench/big:latest"
    log(f"publishing {src_rclone} and {src_big} ({args.big_mb} MB of random data) from the "
        "private dockerd (docker plugin create, push, rm)")
    sources = {"rclone": publish(dockerd, registry, src_rclone, dirs["rclone-src"]),
               "big": publish(dockerd, registry, src_big, dirs["big"])}
    for k, s in sources.items():
        log(f"  {k}: layer {s['layer'][:19]}, {s['layer_bytes'] / MB:.1f} MB gzip")

    # -- 1. install of the rclone plugin ---------------------------------------------------------
    name = "bench/rclone:latest"
    inst: dict = {d.name: [] for d in daemons}
    blob_wait: dict = {d.name: [] for d in daemons}
    total = args.warmup + args.iterations
    log(f"install of {src_rclone} as {name}: {args.warmup} warm-up + {args.iterations} timed "
        "per daemon, alternating which daemon goes first; DELETE ?force=1 after each")
    for i in range(total):
        for d in (daemons if i % 2 == 0 else daemons[::-1]):
            if stored_blobs(d):
                raise BenchError(f"{d.name}: plugin blob store not empty before an install: "
                                 f"{stored_blobs(d)[:5]}")
            x = install(d, src_rclone, name, registry)
            blob_wait[d.name].append(remove_plugin(d, name))
            d.remember(sum(d.processes().values(), []))
            if i >= args.warmup:
                inst[d.name].append(x)
        if i >= args.warmup:
            log(f"  install {i - args.warmup + 1}/{args.iterations}: " + ", ".join(
                f"{d.name} {inst[d.name][-1]['total'] * 1000:.0f} ms" for d in daemons))

    # -- 2. the large plugin, and the single-core limit ----------------------------------------
    big_name = "bench/big:latest"
    big_blob = registry.blob_data(sources["big"]["layer"])
    big: dict = {d.name: [] for d in daemons}
    limit: list[dict] = []
    log(f"install of {src_big}: {args.big_iterations} per daemon, alternating, each round "
        "followed by one single-core pass (sha256 + gunzip + write) over the same layer blob")
    for i in range(args.big_iterations):
        for d in (daemons if i % 2 == 0 else daemons[::-1]):
            if stored_blobs(d):
                raise BenchError(f"{d.name}: plugin blob store not empty before an install")
            big[d.name].append(install(d, src_big, big_name, registry))
            blob_wait[d.name].append(remove_plugin(d, big_name))
        limit.append(single_core_pass(big_blob, sources["big"]["layer"],
                                      os.path.join(run.tmp, "single-core.out")))
        log(f"  round {i + 1}/{args.big_iterations}: " + ", ".join(
            f"{d.name} {big[d.name][-1]['total']:.2f} s" for d in daemons)
            + f", single-core pass {limit[-1]['seconds']:.2f} s")

    # -- 3. push -------------------------------------------------------------------------------
    # "own": the rclone directory as each daemon's own `docker plugin create` packed it (the
    # layers differ: compression level, tar details); "same": the installed source, pulled
    # (not enabled) under a pushable name, so both daemons upload the same bytes.
    refs = {(v, d.name): f"{R}/bench/{v}-{d.name}:latest" for v in PUSH_VARIANTS
            for d in daemons}
    pushes: dict = {v: {d.name: [] for d in daemons} for v in PUSH_VARIANTS}
    log("docker plugin create " + ", ".join(f"{refs['own', d.name]} on {d.name}"
                                            for d in daemons) + f" from {dirs['rclone']}")
    for d in daemons:
        d.docker("plugin", "create", refs["own", d.name], dirs["rclone"])
    log(f"pull {src_rclone} as " + ", ".join(f"{refs['same', d.name]} on {d.name}"
                                              for d in daemons))
    for d in daemons:
        q = urllib.parse.quote
        _, privs = timed_get(d, f"{API}/plugins/privileges?remote={q(src_rclone, safe='')}",
                             {"X-Registry-Auth": AUTH})
        stream_request(d, "POST", f"{API}/plugins/pull?remote={q(src_rclone, safe='')}"
                       f"&name={q(refs['same', d.name], safe='')}", body=privs,
                       headers={"X-Registry-Auth": AUTH})
        plugin_record(d, refs["same", d.name])
    known_blobs: dict = {}
    log(f"push: {args.warmup} warm-up + {args.iterations} timed per daemon and variant "
        f"({', '.join(PUSH_VARIANTS)}), alternating; the repository and every unreferenced "
        "blob deleted from the registry before each")
    for i in range(total):
        for d in (daemons if i % 2 == 0 else daemons[::-1]):
            for v in PUSH_VARIANTS:
                ref = refs[v, d.name]
                repo = ref.split("/", 1)[1].rsplit(":", 1)[0]
                deleted = registry.delete_repo(repo)
                present = [x for x in known_blobs.get(ref, []) if registry.has_blob(x)]
                x = push(d, ref, registry)
                m = registry.manifest(repo)
                known_blobs[ref] = [m["config"]["digest"]] + [la["digest"] for la in m["layers"]]
                x.update(blobs_deleted_before=deleted, blobs_stored_before=len(present),
                         layer_bytes=sum(la["size"] for la in m["layers"]),
                         config_bytes=m["config"]["size"], layer=m["layers"][0]["digest"])
                if i >= args.warmup:
                    pushes[v][d.name].append(x)
        if i >= args.warmup:
            log(f"  push {i - args.warmup + 1}/{args.iterations}: " + "; ".join(
                f"{v} " + ", ".join(f"{d.name} {pushes[v][d.name][-1]['seconds'] * 1000:.0f} ms"
                                    for d in daemons) for v in PUSH_VARIANTS))
    for (v, n), ref in refs.items():
        remove_plugin(berth if n == berth.name else dockerd, ref, wait=False)

    machine["loadavg_at_end"] = loadavg()
    return report(args, machine, versions, registry, sources, inst, big, limit, pushes,
                  blob_wait, daemons)


# --------------------------------------------------------------------------------------------
# Report


def report(args, machine, versions, registry, sources, inst, big, limit, pushes, blob_wait,
           daemons) -> dict:
    b, d = (x.name for x in daemons)
    out: dict = {
        "machine": machine, "versions": versions,
        "settings": {k: getattr(args, k) for k in ("iterations", "warmup", "big_iterations",
                                                   "big_mb", "quick")},
        "registry": {"address": registry.host, "sources": sources},
        "install_ms": {}, "install_phases_ms": {}, "push_ms": {}, "big": {},
        "samples": {"install": inst, "big_install": big, "single_core": limit,
                    "push": pushes, "blob_gc_wait_s": blob_wait},
    }
    print_setting(machine, versions)
    rs, bs = sources["rclone"], sources["big"]
    print(f"settings  registry {registry.host} (filesystem storage, no blob cache); "
          f"{args.iterations} timed installs and pushes per daemon after {args.warmup} "
          f"warm-up, {args.big_iterations} large installs, alternating order")
    print(f"plugins   rclone: layer {rs['layer_bytes'] / MB:.1f} MB gzip; large: testdriver + "
          f"{args.big_mb} MB random, layer {bs['layer_bytes'] / MB:.1f} MB gzip; both made by "
          f"the private dockerd (plugin create + push)")

    table = Table(b, d, width=38)
    row = table.row

    def hdr(title, note):
        print(f"\n{title}")
        table.header(note)

    def phase_rows(samples_b, samples_d, scale, prec, key_out):
        """Wall time per pull phase, then the daemon's CPU per phase, then the registry's CPU
        during the download."""
        groups = (("wall", "  pull phases, wall:", PHASES),
                  ("daemon_cpu", "  pull phases, daemon CPU:", PHASES),
                  ("daemon_runqueue", "  pull phases, daemon threads runnable, not running:",
                   PHASES),
                  ("registry_cpu", "  registry CPU during the download:",
                   ("layer download + verify",)))
        for kind, title, phases in groups:
            print(title)
            key_out[kind] = {}
            for ph in phases:
                xs = [s["phases"][kind][ph] for s in samples_b]
                ys = [s["phases"][kind][ph] for s in samples_d]
                if any(v is None for v in xs + ys):
                    cells = [fmt3(summary(vs), scale, prec) if None not in vs else "-"
                             for vs in (xs, ys)]
                    print(f"{'    ' + ph:<38} {cells[0]:>26} {cells[1]:>26}")
                    key_out[kind][ph] = {
                        b: summary(xs) if None not in xs else None,
                        d: summary(ys) if None not in ys else None}
                    continue
                key_out[kind][ph] = row("    " + ph, summary(xs), summary(ys), scale, prec,
                                        None)
        marked = {n: sum(1 for x in xs if x["phases"]["staging_gone_marks_unpack_end"])
                  for n, xs in ((b, samples_b), (d, samples_d))}
        key_out["unpack_end_from_staging_rename"] = marked
        print("  unpack end = staging rootfs renamed away (else: last Complete message): "
              + ", ".join(f"{n} {k}/{len(xs)}" for (n, k), xs in zip(
                  marked.items(), (samples_b, samples_d))))

    # 1. install
    ib, idd = inst[b], inst[d]
    hdr(f"plugin install of the rclone plugin (ms), {args.iterations} each; empty blob store "
        "before each", f"target (ratio = {b}/{d} of medians)")
    out["install_ms"]["install"] = table.of("install: privileges+pull+enable->ready", inst,
                                            "total", 1000, 0, TARGET_INSTALL)
    for key, label in (("privileges", "  GET /plugins/privileges"),
                       ("pull", "  POST /plugins/pull (stream to end)"),
                       ("enable_ready", "  enable -> plugin socket answers"),
                       ("enable_response", "    (enable HTTP response only)")):
        out["install_ms"][key] = table.of(label, inst, key, 1000, 1)
    phase_rows(ib, idd, 1000, 1, out["install_phases_ms"])
    for key, label in (("daemon_cpu", "  daemon CPU per install (ms)"),
                       ("registry_cpu", "  registry CPU per install (ms)")):
        out["install_ms"][key] = table.of(label, inst, key + "_s", 1000, 0)
    for n in (b, d):
        print(f"  {n} pull stream statuses (first appearance order): {', '.join(inst[n][-1]['statuses'])}")
    print(f"  privileges granted: {json.dumps(ib[-1]['privileges_body'])}")

    # 2. the large plugin
    lb = bs["layer_bytes"]
    gb, gd = big[b], big[d]
    hdr(f"install of the large plugin (s), {args.big_iterations} each: layer "
        f"{lb / MB:.1f} MB gzip", f"(ratio = {b}/{d} of medians)")
    for key, label, field in (("install_s", "install: privileges+pull+enable->ready", "total"),
                              ("pull_s", "  POST /plugins/pull (stream to end)", "pull"),
                              ("enable_ready_s", "  enable -> plugin socket answers",
                               "enable_ready")):
        out["big"][key] = table.of(label, big, field, 1, 3)
    out["big"]["phases_s"] = {}
    phase_rows(gb, gd, 1, 3, out["big"]["phases_s"])
    for key, label in (("daemon_cpu_s", "  daemon CPU per install (s)"),
                       ("registry_cpu_s", "  registry CPU per install (s)")):
        out["big"][key] = table.of(label, big, key, 1, 3)
    print(f"{'throughput (MB/s of layer bytes)':<38}")
    for key, label, field in (("install_mbps", "  whole install", "total"),
                              ("pull_mbps", "  pull only", "pull")):
        out["big"][key] = table.of(label, big, lambda x: lb / MB / x[field], 1, 1)

    sl = summary([x["seconds"] for x in limit])
    lim_mbps = summary([lb / MB / x["seconds"] for x in limit])
    print(f"\nsingle-core limit: sha256 + gunzip + write of the same {lb / MB:.1f} MB layer, one "
          f"thread, {len(limit)} pass(es) between the large installs")
    print(f"  {'time (s), min / median / max':<36} {fmt3(sl, 1, 3):>26}")
    print(f"  {'MB/s':<36} {fmt3(lim_mbps, 1, 1):>26}")
    for k in ("read", "sha256", "gunzip", "write", "fsync_after"):
        label = (f"  of which {k}" if k != "fsync_after" else
                 "  fsync afterwards (not counted)")
        print(f"  {label:<36} {fmt3(summary([x[k] for x in limit]), 1, 3):>26}")
    berth_mbps = out["big"]["install_mbps"][b]
    share = berth_mbps["median"] / lim_mbps["median"]
    share_pull = out["big"]["pull_mbps"][b]["median"] / lim_mbps["median"]
    share_best = berth_mbps["max"] / lim_mbps["max"]
    met = share >= TARGET_LIMIT
    print(f"  {b} MB/s as a share of the limit (medians): whole install {share * 100:.0f}%, "
          f"pull only {share_pull * 100:.0f}%, best against best {share_best * 100:.0f}%;  "
          f">= {TARGET_LIMIT * 100:.0f}%: {'met' if met else 'NOT met'}")
    dshare = out["big"]["install_mbps"][d]["median"] / lim_mbps["median"]
    print(f"  ({d}: whole install {dshare * 100:.0f}% of the limit)")
    out["big"]["single_core"] = {"seconds": sl, "mbps": lim_mbps,
                                 "components_s": {k: summary([x[k] for x in limit]) for k in (
                                     "read", "sha256", "gunzip", "write", "fsync_after")}}
    out["big"]["share_of_limit"] = {"install_median": share, "pull_median": share_pull,
                                    "best_vs_best": share_best, f"{d}_install_median": dshare,
                                    "target": TARGET_LIMIT, "target_met": met}

    # 3. push
    hdr(f"push of the rclone plugin (ms), {args.iterations} each; the repository and every "
        "unreferenced blob deleted from the registry before each",
        f"(ratio = {b}/{d} of medians)")
    labels = {"own": "as each daemon's own create packed it", "same": "the installed source "
              "(same bytes on both)"}
    for v in PUSH_VARIANTS:
        pb, pd = pushes[v][b], pushes[v][d]
        print(f"{v}: {labels[v]}")
        res = out["push_ms"][v] = {}
        res["push"] = row(f"  push {v} (stream to end)", summary([x["seconds"] for x in pb]),
                          summary([x["seconds"] for x in pd]), 1000, 0, None)
        res["upload_mbps"] = row(
            "    layer MB/s", summary([x["layer_bytes"] / MB / x["seconds"] for x in pb]),
            summary([x["layer_bytes"] / MB / x["seconds"] for x in pd]), 1, 1, None)
        res["daemon_cpu"] = row("    daemon CPU per push (ms)",
                                summary([x["daemon_cpu_s"] for x in pb]),
                                summary([x["daemon_cpu_s"] for x in pd]), 1000, 0, None)
        res["registry_cpu"] = row("    registry CPU per push (ms)",
                                  summary([x["registry_cpu_s"] for x in pb]),
                                  summary([x["registry_cpu_s"] for x in pd]), 1000, 0, None)
        for n, ps in ((b, pb), (d, pd)):
            x = ps[-1]
            print(f"    {n}: layer {x['layer'][:19]} {x['layer_bytes'] / MB:.1f} MB + config "
                  f"{x['config_bytes']} B; of its blobs, {max(p['blobs_stored_before'] for p in ps)}"
                  " stored (not linked to the repository) before a push; last stream: "
                  + ", ".join(f"{k} {st}" for k, st in x["final_status"].items()))

    waits = {n: summary(v) for n, v in blob_wait.items()}
    print("\nblob store empty after DELETE ?force=1 (untimed, polled every 10 ms): "
          + ", ".join(f"{n} median {w['median'] * 1000:.0f} ms, max {w['max'] * 1000:.0f} ms"
                      for n, w in waits.items()))
    return out


if __name__ == "__main__":
    sys.exit(main())
