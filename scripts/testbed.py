"""What the compat harness (compat-tests/harness.py) and the benchmarks (scripts/bench_*.py, via
benchlib.py) both start and talk to: HTTP on unix sockets, processes known by PID and start
time, mounts below a directory, a daemon waited for until it answers `GET /_ping`, Debian's
docker-registry on loopback, a private containerd for a private dockerd, and the project's test
plugin as a legacy AuthZ plugin.

Every process started here runs in a session of its own (a Ctrl-C at the terminal reaches only
the caller, which then stops it in order) and is stopped by its PID, checked against its start
time so a reused PID is never signalled. Standard library only.
"""

from __future__ import annotations

import http.client
import os
import shlex
import signal
import socket
import subprocess
import time


class SetupError(Exception):
    """The test bed could not be brought up or down as asked: a daemon, registry or containerd
    that did not start, a tool that is missing."""


# --------------------------------------------------------------------------------------------
# HTTP on a unix socket

# sun_path holds 108 bytes including the terminating NUL
SUN_PATH_MAX = 107


def unix_connect(path: str, timeout: float) -> socket.socket:
    """Connect to a unix socket; paths longer than sun_path are reached through
    /proc/self/fd/<dirfd>/<name> (plugin sockets sit deep below an exec root)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if len(os.fsencode(path)) <= SUN_PATH_MAX:
            s.connect(path)
            return s
        dirfd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY)
        try:
            s.connect(f"/proc/self/fd/{dirfd}/{os.path.basename(path)}")
        finally:
            os.close(dirfd)
        return s
    except BaseException:
        s.close()
        raise


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = unix_connect(self.unix_path, self.timeout)


def socket_answers(path: str) -> bool:
    """Whether a unix socket accepts a connection now."""
    try:
        unix_connect(path, 2).close()
        return True
    except OSError:
        return False


def ping_status(sock: str, timeout: float = 2.0) -> int:
    """The status of `GET /_ping` on a daemon's socket."""
    conn = UnixHTTPConnection(sock, timeout)
    try:
        conn.request("GET", "/_ping")
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# Processes and mounts


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # fields[0] is stat field 3 (state): ppid is field 4, starttime field 22
        return fields[0], int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def pid_starttime(pid: int) -> int | None:
    st = proc_stat(pid)
    return None if st is None else st[2]


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie."""
    st = proc_stat(pid)
    return st is not None and st[0] != "Z"


def pid_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def task_files(pid: int, name: str) -> dict[str, str]:
    """The file `name` (stat, schedstat, ...) of every live thread of pid, by thread id; {}
    when the process is gone."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/{name}") as f:
                out[tid] = f.read()
        except OSError:
            pass
    return out


def thread_states(pid: int) -> list[str]:
    """The state letter of every thread of pid ([] when it is gone). A process is stopped by
    SIGSTOP only once every thread shows `T`: kill() returns before that."""
    return [stat.rsplit(")", 1)[1].split()[0] for stat in task_files(pid, "stat").values()]


def mountpoints_below(prefix: str) -> list[str]:
    """Mount points at or below prefix, deepest first."""
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
    """Lazily unmount everything at or below prefix (dockerd bind-mounts its data root); returns
    what is still mounted."""
    for _ in range(5):
        points = mountpoints_below(prefix)
        if not points:
            return []
        for mp in points:
            subprocess.run(["umount", "-l", mp], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    return mountpoints_below(prefix)


def log_tail(path: str, n: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return f"--- last lines of {path}:\n" + "".join(f.readlines()[-n:])
    except OSError:
        return f"(no log at {path})"


def spawn(argv: list[str], log_path: str, cwd: str | None = None,
          env: dict[str, str] | None = None) -> subprocess.Popen:
    """Starts argv in a session of its own, stdout and stderr appended to log_path (and with
    only `env` in its environment when given)."""
    with open(log_path, "ab") as log:
        try:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, cwd=cwd, env=env)
        except OSError as e:
            raise SetupError(f"cannot start {shlex.join(argv)}: {e}") from e


def stop_process(proc: subprocess.Popen | None, starttime: int | None, grace: float) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds, to a process started here, if it is still
    the same process (PID and start time)."""
    if proc is None or proc.poll() is not None or pid_starttime(proc.pid) != starttime:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def wait_for_ping(proc: subprocess.Popen, sock: str, name: str, log_path: str,
                  timeout: float = 60.0) -> None:
    """Waits until the daemon `proc` answers `GET /_ping` with 200 on `sock`."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SetupError(f"{name} exited with {proc.returncode} during start-up\n"
                             f"command: {shlex.join(proc.args)}\n{log_tail(log_path)}")
        if os.path.exists(sock):
            try:
                status = ping_status(sock)
                if status == 200:
                    return
                last = f"GET /_ping -> {status}"
            except OSError as e:
                last = str(e)
        time.sleep(0.05)
    raise SetupError(f"{name} did not answer GET /_ping within {timeout:g}s ({last})\n"
                     f"command: {shlex.join(proc.args)}\n{log_tail(log_path)}")


# --------------------------------------------------------------------------------------------
# Debian's docker-registry on loopback


def free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


class DockerRegistry:
    """Debian's `docker-registry` (distribution 2.x) on 127.0.0.1:<free port>, plain HTTP,
    filesystem storage in `root`, its config and log in `tmp`. Deletes are enabled and there is
    no blob descriptor cache: deleting a repository's files makes the registry answer 404 for
    its blobs again."""

    def __init__(self, tmp: str, root: str, binary: str = "docker-registry",
                 name: str = "registry", auth: str = ""):
        self.binary = binary
        self.root = root
        self.config = os.path.join(tmp, f"{name}.yml")
        self.log_path = os.path.join(tmp, f"{name}.log")
        # the configuration's `auth:` section (htpasswd, token), if any
        self.auth = auth
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.starttime: int | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        for attempt in range(5):
            self.port = free_port()
            with open(self.config, "w") as f:
                f.write(f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {self.root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{self.port}
{self.auth}""")
            self.proc = spawn([self.binary, "serve", self.config], self.log_path)
            self.starttime = pid_starttime(self.proc.pid)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self._answers():
                    return
                time.sleep(0.05)
            # the port may have been taken meanwhile: try another one
            self.stop()
            with open(self.log_path, "a") as log:
                log.write(f"[testbed] port {self.port} did not answer (attempt {attempt + 1})\n")
        raise SetupError(f"{self.binary} did not answer GET /v2/ on 127.0.0.1\n"
                         f"{log_tail(self.log_path)}")

    def _answers(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/v2/")
            # with authentication, the challenge says it is up
            return conn.getresponse().status in ((200, 401) if self.auth else (200,))
        except OSError:
            return False
        finally:
            conn.close()

    def stop(self) -> None:
        stop_process(self.proc, self.starttime, grace=10)
        self.proc = None


# --------------------------------------------------------------------------------------------
# A private containerd


class PrivateContainerd:
    """containerd with its own socket, root, state and configuration in `dir`, for a private
    dockerd (`dockerd --containerd <address>`). A dockerd left to itself uses a containerd that
    already listens on /run/containerd, whose state and shims then mix with the machine's (and
    `plugin enable` failed with `mkdir /run/containerd/io.containerd.runtime.v2.task/
    plugins.moby/<id>: file exists`). `dir` must be short: the shims' sockets are named after
    the address."""

    def __init__(self, dir: str, binary: str = "containerd"):
        self.dir = dir
        self.binary = binary
        self.address = os.path.join(dir, "c.sock")
        self.root = os.path.join(dir, "root")
        self.state = os.path.join(dir, "state")
        self.config = os.path.join(dir, "config.toml")
        self.log_path = os.path.join(dir, "containerd.log")
        self.proc: subprocess.Popen | None = None
        self.starttime: int | None = None

    def start(self, timeout: float = 30.0) -> None:
        os.makedirs(self.dir, exist_ok=True)
        # Its own file: the machine's /etc/containerd/config.toml (CRI, an `opt` directory
        # under /var/lib/containerd) stays out of it.
        with open(self.config, "w") as f:
            f.write(f"""version = 2
root = "{self.root}"
state = "{self.state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt"]

[grpc]
  address = "{self.address}"
""")
        self.proc = spawn([self.binary, "--config", self.config, "--address", self.address,
                           "--root", self.root, "--state", self.state], self.log_path)
        self.starttime = pid_starttime(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if socket_answers(self.address):
                return
            time.sleep(0.05)
        self.stop()
        raise SetupError(f"{self.binary} did not listen on {self.address}\n"
                         f"{log_tail(self.log_path)}")

    def stop(self, grace: float = 10.0) -> None:
        stop_process(self.proc, self.starttime, grace)
        self.proc = None

    def owns(self, pid: int) -> bool:
        """Whether pid is this containerd or one of its shims (a shim daemonizes, so it is no
        descendant: its command line names this containerd's address)."""
        if self.proc is not None and pid == self.proc.pid:
            return True
        argv = pid_cmdline(pid).split()
        return "containerd-shim" in (argv[0] if argv else "") and self.address in argv


# --------------------------------------------------------------------------------------------
# The test plugin as a legacy AuthZ plugin

# where dockerd looks for legacy plugin spec files (hard-coded in dockerd, shared by every dockerd
# on the machine)
DOCKERD_PLUGIN_SPEC_DIR = "/etc/docker/plugins"


class LegacyAuthzPlugin:
    """The project's test plugin (src/bin/berth-test-plugin, `binary`) in its AuthZ mode, run on
    the host as legacy plugin `name` listening on `socket`: it decides by `rules`
    (TEST_AUTHZ_RULES) and, given a `log`, writes every call it receives there
    (TEST_AUTHZ_LOG). berth finds it through `--legacy-plugin-dir <the socket's directory>`;
    dockerd only in fixed places, so `start(publish_spec=True)` writes a spec file
    /etc/docker/plugins/<name>.spec pointing at the socket (the name must then be unique on the
    machine). `stop` removes the spec file and stops the plugin by its PID."""

    def __init__(self, binary: str, name: str, socket: str, rules: str = "",
                 log: str | None = None):
        self.binary = binary
        self.name = name
        self.socket = socket
        self.rules = rules
        self.log = log
        self.spec: str | None = None
        self.proc: subprocess.Popen | None = None
        self.starttime: int | None = None

    def start(self, publish_spec: bool, timeout: float = 15.0) -> None:
        if not os.access(self.binary, os.X_OK):
            raise SetupError(f"no test plugin binary at {self.binary} (cargo build makes it)")
        os.makedirs(os.path.dirname(self.socket), exist_ok=True)
        env = {"PATH": "/usr/bin:/bin", "TEST_SOCKET_PATH": self.socket,
               "TEST_IMPLEMENTS": "authz", "TEST_AUTHZ_RULES": self.rules,
               "TEST_ROOT": self.socket + ".root"}
        if self.log is not None:
            env["TEST_AUTHZ_LOG"] = self.log
        out = os.path.splitext(self.socket)[0] + ".out"
        self.proc = spawn([self.binary], out, env=env)
        self.starttime = pid_starttime(self.proc.pid)
        deadline = time.monotonic() + timeout
        while not socket_answers(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SetupError(f"authz plugin {self.name} did not listen on {self.socket}\n"
                                 f"{log_tail(out)}")
            time.sleep(0.02)
        if publish_spec:
            os.makedirs(DOCKERD_PLUGIN_SPEC_DIR, exist_ok=True)
            self.spec = os.path.join(DOCKERD_PLUGIN_SPEC_DIR, self.name + ".spec")
            with open(self.spec, "w") as f:
                f.write(f"unix://{self.socket}\n")

    def stop(self) -> None:
        if self.spec is not None:
            try:
                os.unlink(self.spec)
            except FileNotFoundError:
                pass
            self.spec = None
        stop_process(self.proc, self.starttime, grace=10)
        self.proc = None
