#!/usr/bin/env python3
"""berth compatibility harness.

Starts a target daemon (berth or a private dockerd), runs scenario files
(`scenarios/*.scn`) against it with the stock docker CLI and raw HTTP over
the unix socket, masks volatile values and compares with the expectations
written in the scenario file.  See README.md for the scenario syntax.

It can be used through pytest (test_compat.py) or directly:

    python3 harness.py --target dockerd scenarios/plugin-ls.scn
    python3 harness.py --target dockerd --print-actual scenarios/new.scn
"""

from __future__ import annotations

import argparse
import atexit
import base64
import difflib
import gzip
import http.client
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# The benchmarks' and this harness's common ground (HTTP on unix sockets, processes, the
# registry, a private containerd) lives in scripts/testbed.py; no __pycache__ is left there.
sys.path.insert(0, str(REPO / "scripts"))
_writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
import testbed  # noqa: E402
from testbed import SetupError, UnixHTTPConnection  # noqa: E402
sys.dont_write_bytecode = _writes_bytecode

SCENARIO_DIR = HERE / "scenarios"
FIXTURE_DIR = HERE / "fixtures"

TARGETS = ("berth", "dockerd")
DEFAULT_TARGET = "berth"
DOCKER_CLI = os.environ.get("DOCKER_CLI", "/usr/local/bin/docker")
# Debian's docker.io CLI (20.10, API <= 1.41): it words some requests differently from 28.x (it
# sends empty `Labels`/`DriverOpts` maps in volume create bodies, for one), so scenarios can run
# with it too (`# cli:` header, `{cli:20.10}` placeholder).
DOCKER_CLI_2010 = os.environ.get("DOCKER_CLI_2010", "/usr/bin/docker")
CLIS = {"28": DOCKER_CLI, "20.10": DOCKER_CLI_2010}
DEFAULT_CLI = "28"
# Every scenario's CLI is pinned to this API version (DOCKER_API_VERSION) unless its `# api:`
# header says otherwise: 1.41 is dockerd 20.10's, the daemon every expectation is proven
# against, while berth advertises the newest version it serves (which the CLI would negotiate).
PINNED_API_VERSION = os.environ.get("BERTH_COMPAT_API_VERSION", "1.41")
# A `# api: negotiated` scenario leaves the CLI to negotiate (berth: the advertised version).
NEGOTIATED = "negotiated"
DOCKERD_BIN = os.environ.get("DOCKERD_BIN", "dockerd")
STEP_TIMEOUT = float(os.environ.get("BERTH_COMPAT_STEP_TIMEOUT", "60"))
KEEP_TMP = os.environ.get("BERTH_COMPAT_KEEP", "") not in ("", "0")
# berth's `--plugin-start-timeout`: how long `plugin enable` waits for a plugin's socket. berth's
# default is 30 s; 5 s keeps the never-listening-plugin scenarios fast (dockerd gives up after
# ~12.5 s on its own, see plugin-runtime.md §4).
BERTH_PLUGIN_START_TIMEOUT = os.environ.get("BERTH_COMPAT_PLUGIN_START_TIMEOUT", "5")
MAKE_TEST_PLUGINS = REPO / "scripts" / "make-test-plugins.sh"
TEST_PLUGIN_NAMES = ("testdriver", "testdriver-privileged", "netdriver", "authz", "rclone", "rclone-noprivs")
# the test plugin binary, run on the host as a legacy plugin (cargo build makes it; set
# BERTH_TEST_PLUGIN_BIN for another)
TEST_PLUGIN_BIN = os.environ.get("BERTH_TEST_PLUGIN_BIN") or str(REPO / "target" / "debug" / "berth-test-plugin")
# the first build of the test plugin binary compiles the berth library (~1 min)
TEST_PLUGIN_BUILD_TIMEOUT = float(os.environ.get("BERTH_COMPAT_PLUGIN_BUILD_TIMEOUT", "900"))


class HarnessError(SetupError):
    """Problem with the harness itself or a scenario file (not a mismatch). The test bed's own
    errors (`SetupError`: a daemon, the registry or containerd not starting) are caught with
    these."""


def selected_target(cli_value: str | None = None) -> str:
    target = cli_value or os.environ.get("BERTH_COMPAT_TARGET") or DEFAULT_TARGET
    if target not in TARGETS:
        raise HarnessError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    return target


# --------------------------------------------------------------------------------------------
# HTTP over a unix socket


@dataclass
class HTTPResult:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def http_request(sock_path: str, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 30.0) -> HTTPResult:
    conn = UnixHTTPConnection(sock_path, timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        hdrs = dict(headers or {})
        if body is not None and not any(k.lower() == "content-length" for k in hdrs):
            hdrs["Content-Length"] = str(len(body))
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        return HTTPResult(resp.status, resp.reason, resp.getheaders(), data)
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# Target daemons


def _all_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def _descendants(roots: set[int]) -> dict[int, int]:
    """pid -> starttime for every live descendant of `roots` (roots excluded)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for pid in _all_pids():
        st = testbed.proc_stat(pid)
        if st is None:
            continue
        children.setdefault(st[1], []).append(pid)
        starts[pid] = st[2]
    out: dict[int, int] = {}
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out and child not in roots:
                out[child] = starts[child]
                todo.append(child)
    return out


def _terminate(proc: subprocess.Popen, grace: float = 10.0, group: bool = False) -> None:
    """SIGTERM a process we started (if it still runs), SIGKILL after `grace` seconds; reap it.
    With `group`, its whole process group (it was started with a session of its own: a shell
    and what it runs)."""
    if proc.poll() is not None:
        return

    def signal_it(sig: int) -> None:
        try:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass

    signal_it(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        signal_it(signal.SIGKILL)
        proc.wait(timeout=10)


def _kill_processes(procs: dict[int, int]) -> list[str]:
    """SIGKILL the processes of `procs` (pid -> starttime) that still run; describe them."""
    killed = []
    for pid, start in procs.items():
        if testbed.pid_starttime(pid) != start or not testbed.pid_alive(pid):
            continue  # gone, or the pid was reused
        killed.append(f"{pid} {testbed.pid_cmdline(pid)[:120]}")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return killed


class Daemon:
    """A daemon started (and owned) by the harness."""

    name = "?"
    sock_name = "d.sock"

    def __init__(self):
        # keep this short: unix socket paths are limited to 108 bytes and plugin sockets live
        # several levels below the exec root.
        self.tmp = tempfile.mkdtemp(prefix="bc", dir="/tmp")
        self.sock = os.path.join(self.tmp, self.sock_name)
        self.data_root = os.path.join(self.tmp, "data")
        self.exec_root = os.path.join(self.tmp, "exec")
        self.log_path = os.path.join(self.tmp, "daemon.log")
        self.proc: subprocess.Popen | None = None
        self._stopped = False
        self.leftovers: list[str] = []   # processes the daemon left running (killed at stop)
        # test plugin directories built by scripts/make-test-plugins.sh, once per session
        self.test_plugins_dir = os.path.join(self.tmp, "tp")
        self.rclone_state_dir = os.path.join(self.tmp, "rclone-state")
        self._test_plugins: dict[str, str] = {}
        # every plugin ID a state reset saw (for the session-end cleanup)
        self.seen_plugin_ids: set[str] = set()
        # the session's loopback registries ({registry}, {authregistry}, {tokenregistry}),
        # started on first use
        self._registry: testbed.DockerRegistry | None = None
        self._auth_registry: testbed.DockerRegistry | None = None
        self._token_registry: testbed.DockerRegistry | None = None
        self._token_server: "TokenServer | None" = None
        # the API version the daemon advertises (`Api-Version` of its first _ping)
        self.api_version = ""
        # an explicit empty config file keeps /etc/docker/daemon.json (or berth's) out of it
        self.config_file = os.path.join(self.tmp, "daemon.json")
        with open(self.config_file, "w") as f:
            f.write("{}\n")
        # flags added to the daemon's command line (an authorization chain)
        self.extra_args: list[str] = []
        # variables every scenario starts with ({var:NAME})
        self.scenario_vars: dict[str, str] = {}
        # legacy plugins started for this daemon (stopped after it)
        self.legacy_plugins: list["LegacyAuthzPlugin"] = []

    def registry(self) -> testbed.DockerRegistry:
        """The session's docker-registry on 127.0.0.1 (started on first use), filesystem
        storage under the session directory, stopped at the end of the session."""
        if self._registry is None:
            self._registry = self._start_registry("registry")
        return self._registry

    def auth_registry(self) -> testbed.DockerRegistry:
        """The session's docker-registry with htpasswd authentication (started on first use)."""
        if self._auth_registry is None:
            htpasswd = os.path.join(self.tmp, "authregistry.htpasswd")
            with open(htpasswd, "w") as f:
                f.write(AUTH_REGISTRY_HTPASSWD)
            self._auth_registry = self._start_registry("authregistry", f"""auth:
  htpasswd:
    realm: berth-compat
    path: {htpasswd}
""")
        return self._auth_registry

    def token_registry(self) -> testbed.DockerRegistry:
        """The session's docker-registry whose auth is a token server (Bearer), started with
        its token server on first use."""
        if self._token_registry is None:
            server = TokenServer(self.tmp)
            server.start()
            self._token_server = server
            atexit.register(server.stop)
            self._token_registry = self._start_registry("tokenregistry", f"""auth:
  token:
    realm: {server.realm}
    service: {TokenServer.SERVICE}
    issuer: {TokenServer.ISSUER}
    rootcertbundle: {server.cert}
""")
        return self._token_registry

    def _start_registry(self, name: str, auth: str = "") -> testbed.DockerRegistry:
        binary = shutil.which(REGISTRY_BIN)
        if not binary:
            raise HarnessError(f"{REGISTRY_BIN} not found (Debian package docker-registry, "
                               "or set REGISTRY_BIN)")
        reg = testbed.DockerRegistry(self.tmp, os.path.join(self.tmp, name), binary, name, auth)
        reg.start()
        atexit.register(reg.stop)
        return reg

    @property
    def token_registry_host(self) -> str | None:
        return self._token_registry.host if self._token_registry is not None else None

    @property
    def registry_host(self) -> str | None:
        return self._registry.host if self._registry is not None else None

    @property
    def auth_registry_host(self) -> str | None:
        return self._auth_registry.host if self._auth_registry is not None else None

    # -- to override
    def argv(self) -> list[str]:
        raise NotImplementedError

    def legacy_plugin_args(self) -> list[str]:
        """Flags that make the daemon find the legacy plugins of `legacy_plugins`."""
        return []

    @property
    def plugin_sock_dir(self) -> str:
        """Host directory holding `<plugin id>/<Interface.Socket>` for enabled plugins."""
        raise NotImplementedError

    def helper_roots(self) -> set[int]:
        """PIDs, besides the daemon's, whose descendants are plugin processes of this daemon."""
        return set()

    def stop_grace(self) -> float:
        return 5.0

    def extra_cleanup(self) -> None:
        pass

    def cleanup_plugin_sock_dirs(self) -> None:
        """Remove `<plugin sock dir>/<id>` left behind for this daemon's own plugin IDs."""
        ids = set(self.seen_plugin_ids)
        try:
            ids.update(n for n in os.listdir(os.path.join(self.data_root, "plugins"))
                       if re.fullmatch(r"[0-9a-f]{64}", n))
        except OSError:
            pass
        for pid in ids:
            d = os.path.join(self.plugin_sock_dir, pid)
            if os.path.isdir(d):
                testbed.unmount_below(d)
                shutil.rmtree(d, ignore_errors=True)

    # -- common
    @property
    def host(self) -> str:
        return "unix://" + self.sock

    def use_authz_chain(self, plugins: list["LegacyAuthzPlugin"]) -> None:
        """Start `plugins` (legacy AuthZ plugins) and configure them, in order, as the
        daemon's authorization chain; `{var:<ROLE>}` names each one and `{var:<ROLE>LOG}` is
        its call log (ROLE upper-cased)."""
        for plugin in plugins:
            self.legacy_plugins.append(plugin)
            plugin.start(publish_spec=self.name == "dockerd")
            self.extra_args += ["--authorization-plugin", plugin.name]
            self.scenario_vars[plugin.role.upper()] = plugin.name
            self.scenario_vars[plugin.role.upper() + "LOG"] = plugin.log
        self.extra_args = self.legacy_plugin_args() + self.extra_args

    def start(self, ready_timeout: float = 60.0) -> None:
        self.proc = testbed.spawn(self.argv() + self.extra_args, self.log_path, cwd=self.tmp)
        atexit.register(self.stop)
        try:
            testbed.wait_for_ping(self.proc, self.sock, self.name, self.log_path, ready_timeout)
        except SetupError:
            self.stop()
            raise
        # what the daemon advertises ({apiversion}): berth 1.50, dockerd 1.41
        self.api_version = http_request(self.sock, "GET", "/_ping").header("Api-Version") or ""

    def test_plugin(self, name: str) -> str:
        """Directory of test plugin NAME, built by scripts/make-test-plugins.sh on first use."""
        if name not in TEST_PLUGIN_NAMES:
            raise HarnessError(f"unknown test plugin {name!r} (known: {', '.join(TEST_PLUGIN_NAMES)})")
        if name in self._test_plugins:
            return self._test_plugins[name]
        env = dict(os.environ)
        # rclone's `config` and `cache` mounts get sources that exist on the host
        env["BERTH_RCLONE_STATE_DIR"] = self.rclone_state_dir
        t0 = time.monotonic()
        try:
            cp = subprocess.run([str(MAKE_TEST_PLUGINS), self.test_plugins_dir, name], env=env,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=TEST_PLUGIN_BUILD_TIMEOUT, cwd=str(REPO))
        except subprocess.TimeoutExpired as e:
            raise HarnessError(f"make-test-plugins.sh {name} took more than "
                               f"{TEST_PLUGIN_BUILD_TIMEOUT:.0f}s") from e
        if cp.returncode != 0:
            raise HarnessError(f"make-test-plugins.sh {self.test_plugins_dir} {name} failed "
                               f"({cp.returncode}):\n{cp.stdout}{cp.stderr}")
        path = os.path.join(self.test_plugins_dir, name)
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise HarnessError(f"make-test-plugins.sh did not produce {path}/config.json")
        with open(self.log_path, "a") as log:
            log.write(f"[harness] built test plugin {name} in {time.monotonic() - t0:.1f}s\n")
        self._test_plugins[name] = path
        return path

    def owned_processes(self) -> dict[int, int]:
        """pid -> starttime of every process below the daemon and its helpers (plugins, shims)."""
        roots = self.helper_roots()
        if self.proc is not None and self.proc.poll() is None:
            roots.add(self.proc.pid)
        procs = _descendants(roots)
        for pid in self.helper_roots():
            start = testbed.pid_starttime(pid)
            if start is not None:
                procs[pid] = start
        return procs

    def disable_all_plugins(self) -> None:
        """Best effort: let the daemon stop its plugins itself before it is stopped."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.tmp,
               "DOCKER_HOST": self.host, "DOCKER_CONFIG": os.path.join(self.tmp, "stopcfg"),
               "NO_COLOR": "1"}
        try:
            ls = subprocess.run([DOCKER_CLI, "plugin", "ls", "--no-trunc", "--filter", "enabled=true",
                                 "--format", "{{.ID}}"], capture_output=True, text=True, env=env,
                                stdin=subprocess.DEVNULL, timeout=STEP_TIMEOUT)
            for pid in ls.stdout.split() if ls.returncode == 0 else []:
                subprocess.run([DOCKER_CLI, "plugin", "disable", "-f", pid], capture_output=True,
                               env=env, stdin=subprocess.DEVNULL, timeout=STEP_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def log_tail(self, n: int = 40) -> str:
        return testbed.log_tail(self.log_path, n)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        owned: dict[int, int] = {}
        if self.proc is not None and self.proc.poll() is None:
            self.disable_all_plugins()
            owned = self.owned_processes()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.stop_grace())
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        owned.update(self.owned_processes())
        self.extra_cleanup()
        # whatever the daemon left running (plugin processes, containerd shims) goes now
        owned.update(self.owned_processes())
        killed = _kill_processes(owned)
        self.leftovers = killed
        if killed:
            msg = (f"[harness] {self.name} left {len(killed)} process(es) running after it stopped; "
                   "killed:\n  " + "\n  ".join(killed))
            with open(self.log_path, "a") as log:
                log.write(msg + "\n")
            print(msg, file=sys.stderr)
        self.cleanup_plugin_sock_dirs()
        for plugin in self.legacy_plugins:
            plugin.stop()
        for reg in (self._registry, self._auth_registry, self._token_registry):
            if reg is not None:
                reg.stop()
        if self._token_server is not None:
            self._token_server.stop()
        testbed.unmount_below(self.tmp)
        if not KEEP_TMP:
            shutil.rmtree(self.tmp, ignore_errors=True)

REGISTRY_BIN = os.environ.get("REGISTRY_BIN", "docker-registry")
# {authregistry}'s one account (scenarios log in with it): bcrypt, as docker-registry requires
AUTH_REGISTRY_USER = "berth"
AUTH_REGISTRY_PASSWORD = "s3cret"
AUTH_REGISTRY_HTPASSWD = (f"{AUTH_REGISTRY_USER}:"
                          "$2b$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK\n")


class TokenServer:
    """A Docker registry token server on 127.0.0.1:<free port>, in a thread of the harness: the
    Bearer realm of {tokenregistry}. It knows the account of {authregistry} (berth / s3cret),
    grants what is asked to it and nothing to anyone else, hands out a refresh token when asked
    for offline access (`docker login`) and honours it later (the refresh-token grant).
    Tokens are JWTs signed RS256 with a throwaway key whose self-signed certificate is the
    registry's root (`openssl` does the key, the certificate and each signature)."""

    SERVICE = "berth-compat-registry"
    ISSUER = "berth-compat-token-server"

    def __init__(self, tmp: str):
        self.key = os.path.join(tmp, "token.key")
        self.cert = os.path.join(tmp, "token.crt")
        self.port = 0
        self.httpd: ThreadingHTTPServer | None = None
        self.refresh_tokens: dict[str, str] = {}  # refresh token -> account
        self._lock = threading.Lock()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def start(self) -> None:
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-keyout", self.key, "-out", self.cert, "-days", "2",
                            "-subj", "/CN=berth-compat-token-server"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise HarnessError(f"openssl could not make the token server's key: {r.stderr}")
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"],
                             capture_output=True, check=True).stdout
        self.x5c = base64.b64encode(der).decode()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                account = server.basic_account(self.headers.get("Authorization", ""))
                if account is False:
                    return self.answer(401, {"details": "incorrect username or password"})
                refresh = None
                if account and query.get("offline_token") == ["true"]:
                    refresh = server.new_refresh_token(account)
                self.answer(200, server.token_answer(account, query.get("scope", []), refresh))

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                grant = form.get("grant_type", [""])[0]
                if grant == "refresh_token":
                    account = server.refresh_tokens.get(form.get("refresh_token", [""])[0])
                elif grant == "password":
                    account = server.check(form.get("username", [""])[0],
                                           form.get("password", [""])[0])
                else:
                    account = None
                if not account:
                    return self.answer(401, {"details": "invalid grant"})
                self.answer(200, server.token_answer(account, form.get("scope", [""])[0].split(),
                                                     None))

            def answer(self, status: int, doc: dict):
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    @staticmethod
    def check(user: str, password: str) -> str | None:
        ok = user == AUTH_REGISTRY_USER and password == AUTH_REGISTRY_PASSWORD
        return user if ok else None

    def basic_account(self, header: str):
        """The account of a Basic header; None without one; False when it is wrong."""
        if not header.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return self.check(user, password) or False

    def new_refresh_token(self, account: str) -> str:
        token = uuid.uuid4().hex
        with self._lock:
            self.refresh_tokens[token] = account
        return token

    def token_answer(self, account: str | None, scopes: list[str], refresh: str | None) -> dict:
        access = []
        for scope in scopes if account else []:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            # `repository(plugin)` is still a repository to the registry
            access.append({"type": kind.split("(")[0], "name": name,
                           "actions": [a for a in actions.split(",") if a]})
        now = int(time.time())
        claims = {"iss": self.ISSUER, "sub": account or "", "aud": self.SERVICE,
                  "exp": now + 600, "nbf": now - 60, "iat": now, "jti": uuid.uuid4().hex,
                  "access": access}
        token = self.sign(claims)
        doc = {"token": token, "access_token": token, "expires_in": 600,
               "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}
        if refresh:
            doc["refresh_token"] = refresh
        return doc

    def sign(self, claims: dict) -> str:
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        payload = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key],
                             input=payload.encode(), capture_output=True, check=True).stdout
        return f"{payload}.{b64(sig)}"


class BerthDaemon(Daemon):
    name = "berth"
    sock_name = "berth.sock"

    def __init__(self):
        self.binary = os.environ.get("BERTH_BIN") or str(REPO / "target" / "debug" / "berth")
        if not os.access(self.binary, os.X_OK):
            raise HarnessError(f"berth binary not found at {self.binary} "
                               "(build it with `cargo build` or set BERTH_BIN)")
        super().__init__()
        # a one-letter exec root: berth's plugin sockets are <exec-root>/plugins/<64-hex id>/<socket>,
        # and /tmp/bcXXXXXXXX/exec/plugins/<id>/testdriver.sock (109 bytes) does not fit in sun_path
        self.exec_root = os.path.join(self.tmp, "x")
        # BERTH_COMPAT_PLUGIN_RUNTIME=runc|crun runs the scenarios' plugins under that executor
        runtime = os.environ.get("BERTH_COMPAT_PLUGIN_RUNTIME", "")
        if runtime:
            with open(self.config_file, "w") as f:
                f.write(json.dumps({"plugin-runtime": runtime}) + "\n")

    def argv(self) -> list[str]:
        return [self.binary, "daemon", "--host", self.host, "--data-root", self.data_root,
                "--exec-root", self.exec_root, "--config-file", self.config_file,
                "--plugin-start-timeout", BERTH_PLUGIN_START_TIMEOUT]

    @property
    def plugin_sock_dir(self) -> str:
        return os.path.join(self.exec_root, "plugins")

    def legacy_plugin_args(self) -> list[str]:
        return ["--legacy-plugin-dir", os.path.join(self.tmp, "lp")]


class DockerdDaemon(Daemon):
    name = "dockerd"
    sock_name = "docker.sock"

    def __init__(self):
        super().__init__()
        self.pidfile = os.path.join(self.tmp, "docker.pid")
        # its own containerd: one already listening on /run/containerd is left alone
        self.containerd = testbed.PrivateContainerd(os.path.join(self.tmp, "ctd"))

    def argv(self) -> list[str]:
        return [DOCKERD_BIN, "--config-file", self.config_file,
                "--data-root", self.data_root, "--exec-root", self.exec_root,
                "-H", self.host, "--pidfile", self.pidfile,
                "--iptables=false", "--bridge=none", "--containerd", self.containerd.address]

    def start(self, ready_timeout: float = 60.0) -> None:
        self.containerd.start()
        super().start(ready_timeout)

    @property
    def plugin_sock_dir(self) -> str:
        # hard-coded in dockerd (daemon_linux.go getPluginExecRoot), not below --exec-root
        return "/run/docker/plugins"

    def helper_roots(self) -> set[int]:
        # dockerd's plugins run below containerd shims, which are not dockerd's descendants:
        # ours are the ones of our containerd.
        return {pid for pid in _all_pids() if self.containerd.owns(pid)}

    def stop_grace(self) -> float:
        return 30.0

    def extra_cleanup(self) -> None:
        self.containerd.stop()


class LegacyAuthzPlugin(testbed.LegacyAuthzPlugin):
    """The test plugin in its AuthZ mode as a legacy plugin of a daemon (`role`: what the
    scenarios call it): socket `<session>/lp/<name>.sock`, call log `<session>/<name>.log`.
    The name is `<session dir name>-<role>`, unique on the machine as dockerd's spec files
    need (berth is given `--legacy-plugin-dir <session>/lp`). Stopped with the daemon; a spec
    file is removed at exit at the latest."""

    def __init__(self, daemon: Daemon, role: str, rules: str = ""):
        name = f"{os.path.basename(daemon.tmp)}-{role}"
        super().__init__(TEST_PLUGIN_BIN, name, os.path.join(daemon.tmp, "lp", name + ".sock"),
                         rules, log=os.path.join(daemon.tmp, name + ".log"))
        self.role = role

    def start(self, publish_spec: bool, timeout: float = 15.0) -> None:
        super().start(publish_spec, timeout)
        atexit.register(self.stop)


def make_daemon(target: str) -> Daemon:
    if target == "berth":
        return BerthDaemon()
    if target == "dockerd":
        return DockerdDaemon()
    raise HarnessError(f"unknown target {target!r}")


# What the policy plugin of `authz/chain/` scenarios decides; anything else is allowed (the state
# resets between scenarios pass through the chain too).
AUTHZ_POLICY_RULES = "; ".join([
    "req deny POST /volumes/create body=secret msg=no secrets here",
    "res deny GET /volumes/hidden msg=not for your eyes",
    "res deny GET /volumes?deny msg=too much",
    "res deny POST /push msg=no pushing",
    "req error GET /volumes/broken msg=policy is broken",
])


def make_authz_chain_daemon(target: str) -> Daemon:
    """A daemon (not started) whose chain is `policy` (AUTHZ_POLICY_RULES) then `audit` (allows
    everything), both legacy test plugins started here."""
    d = make_daemon(target)
    d.use_authz_chain([LegacyAuthzPlugin(d, "policy", AUTHZ_POLICY_RULES),
                       LegacyAuthzPlugin(d, "audit")])
    return d


# --------------------------------------------------------------------------------------------
# Scenario files

STEP_COMMANDS = ("docker", "http", "sh", "write", "mkdir", "bg", "stop")
DIRECTIVES = ("exit", "stderr", "stderr-contains", "contains", "status", "header", "no-header",
              "body", "any-stdout", "any-stderr", "timeout", "min-seconds", "max-seconds")


@dataclass
class Step:
    lineno: int
    line: str                      # text after "$ "
    command: str                   # docker | http | sh | write | mkdir
    rest: str                      # text after the command word
    capture: str | None = None     # variable name for VAR=command
    input_lines: list[str] | None = None
    expected: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    stderr_contains: list[str] = field(default_factory=list)
    contains: list[str] = field(default_factory=list)   # substrings of stdout / body
    exit: int = 0
    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    no_headers: list[str] = field(default_factory=list)
    body_mode: str = "raw"
    any_stdout: bool = False
    any_stderr: bool = False
    timeout: float = STEP_TIMEOUT
    min_seconds: float | None = None   # the step must take at least this long
    max_seconds: float | None = None   # ... and at most this long


@dataclass
class Scenario:
    path: Path
    title: str
    targets: list[str]
    masks: list[tuple[re.Pattern, str]]
    steps: list[Step]
    # DOCKER_API_VERSION for the CLI: PINNED_API_VERSION unless `# api:` says a version or
    # `negotiated`
    api: str = PINNED_API_VERSION
    # the CLIs (keys of CLIS) the scenario runs with
    clis: list[str] = field(default_factory=lambda: [DEFAULT_CLI])
    # `# plugin-runtime: runc`: only where the daemon runs plugins with these runtimes
    runtimes: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.path.stem

    def runs_on(self, target: str) -> bool:
        return ((not self.targets or target in self.targets)
                and (not self.runtimes or plugin_runtime(target) in self.runtimes))

    def skip_reason(self, target: str) -> str:
        if self.targets and target not in self.targets:
            return f"only for target(s) {', '.join(self.targets)}"
        return (f"only where plugins run under {', '.join(self.runtimes)} ({target} runs them "
                f"under {plugin_runtime(target)})")


def plugin_runtime(target: str) -> str:
    """What runs the target's plugins: dockerd's containerd always uses runc; berth its
    built-in executor unless BERTH_COMPAT_PLUGIN_RUNTIME names runc or crun."""
    if target == "dockerd":
        return "runc"
    return os.environ.get("BERTH_COMPAT_PLUGIN_RUNTIME") or "builtin"


_STEP_RE = re.compile(r"^(?:(?P<var>[A-Za-z_][A-Za-z0-9_]*)=)?(?P<cmd>[a-z]+)(?:\s+(?P<rest>.*))?$")
_DIRECTIVE_RE = re.compile(r"^!\s*(?P<key>[a-z][a-z-]*)(?::\s?|\s+|$)(?P<val>.*)$")


def parse_scenario(path: Path | str) -> Scenario:
    path = Path(path)
    text = path.read_text()
    title = ""
    targets: list[str] = []
    runtimes: list[str] = []
    masks: list[tuple[re.Pattern, str]] = []
    steps: list[Step] = []
    cur: Step | None = None
    api = PINNED_API_VERSION
    clis: list[str] = []

    def err(lineno: int, msg: str) -> HarnessError:
        return HarnessError(f"{path}:{lineno}: {msg}")

    for lineno, line in enumerate(text.split("\n"), start=1):
        if line.startswith("#"):
            body = line[1:].strip()
            m = re.match(r"^(target|mask|api|cli|plugin-runtime):\s*(.*)$", body)
            if m and cur is None:
                if m.group(1) == "plugin-runtime":
                    runtimes.extend(r for r in re.split(r"[,\s]+", m.group(2).strip()) if r)
                elif m.group(1) == "api":
                    api = m.group(2).strip()
                    if api != NEGOTIATED and not re.fullmatch(r"\d+\.\d+", api):
                        raise err(lineno, f"api must be a version or {NEGOTIATED!r}, not {api!r}")
                elif m.group(1) == "cli":
                    for c in re.split(r"[,\s]+", m.group(2).strip()):
                        if c not in CLIS:
                            raise err(lineno, f"unknown cli {c!r} (known: {', '.join(CLIS)})")
                        clis.append(c)
                elif m.group(1) == "target":
                    for t in re.split(r"[,\s]+", m.group(2).strip()):
                        if t not in TARGETS:
                            raise err(lineno, f"unknown target {t!r}")
                        targets.append(t)
                else:
                    if "=>" not in m.group(2):
                        raise err(lineno, "mask needs the form `# mask: REGEX => REPLACEMENT`")
                    rx, repl = m.group(2).split("=>", 1)
                    try:
                        masks.append((re.compile(rx.strip()), repl.strip()))
                    except re.error as e:
                        raise err(lineno, f"bad mask regex: {e}") from e
            elif not title and body and cur is None:
                title = body
            continue
        if line.startswith("$ "):
            m = _STEP_RE.match(line[2:].strip())
            if not m or m.group("cmd") not in STEP_COMMANDS:
                raise err(lineno, f"unknown step {line!r}; steps start with one of "
                                  f"{', '.join(STEP_COMMANDS)} (optionally VAR=...)")
            cur = Step(lineno=lineno, line=line[2:].strip(), command=m.group("cmd"),
                       rest=m.group("rest") or "", capture=m.group("var"))
            if cur.capture:
                cur.any_stdout = True
            steps.append(cur)
            continue
        if cur is None:
            if line.strip():
                raise err(lineno, "text before the first `$ ` step (comments start with `#`)")
            continue
        if line.startswith("!"):
            m = _DIRECTIVE_RE.match(line)
            if not m or m.group("key") not in DIRECTIVES:
                raise err(lineno, f"unknown directive {line!r}")
            key, val = m.group("key"), m.group("val")
            try:
                if key == "exit":
                    cur.exit = int(val)
                elif key == "stderr":
                    cur.stderr.append(val)
                elif key == "stderr-contains":
                    cur.stderr_contains.append(val)
                elif key == "contains":
                    cur.contains.append(val)
                    cur.any_stdout = True
                elif key == "status":
                    cur.status = int(val)
                elif key == "header":
                    name, _, value = val.partition(":")
                    cur.headers.append((name.strip(), value.strip()))
                elif key == "no-header":
                    cur.no_headers.append(val.strip())
                elif key == "body":
                    mode = val.strip()
                    if mode not in ("raw", "pretty") and not re.match(r"^field \S+$", mode):
                        raise ValueError("body mode must be raw, pretty or `field NAME`")
                    cur.body_mode = mode
                elif key == "any-stdout":
                    cur.any_stdout = True
                elif key == "any-stderr":
                    cur.any_stderr = True
                elif key == "timeout":
                    cur.timeout = float(val)
                elif key == "min-seconds":
                    cur.min_seconds = float(val)
                elif key == "max-seconds":
                    cur.max_seconds = float(val)
            except ValueError as e:
                raise err(lineno, f"bad directive value in {line!r}: {e}") from e
            continue
        if line.startswith(">"):
            if cur.input_lines is None:
                cur.input_lines = []
            cur.input_lines.append(line[2:] if line.startswith("> ") else line[1:])
            continue
        if line.startswith("\\"):
            line = line[1:]
        cur.expected.append(line)

    for st in steps:
        while st.expected and st.expected[-1].strip() == "":
            st.expected.pop()
        if st.command in ("http",) and st.status is None:
            st.status = 200
    if not steps:
        raise HarnessError(f"{path}: no steps")
    return Scenario(path=path, title=title or path.stem, targets=targets, masks=masks, steps=steps,
                    api=api, clis=clis or [DEFAULT_CLI], runtimes=runtimes)


def discover_scenarios() -> list[Path]:
    return sorted(SCENARIO_DIR.glob("*.scn"))


# --------------------------------------------------------------------------------------------
# Masking and comparison

DEFAULT_MASKS: list[tuple[re.Pattern, str]] = [
    # the daemon's own version string, stamped into plugin configs by `plugin create` on 20.10
    (re.compile(r'("DockerVersion"\s*:\s*)"[^"]*"'), r'\1"<VERSION>"'),
    # only times that differ between runs: Go's zero time (what plugins that give no date show)
    # stays visible
    (re.compile(r"\b(?!0001-01-01T00:00:00Z)"
                r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})"), "<TIME>"),
    (re.compile(r"\b[0-9a-f]{64}\b"), "<ID>"),
    # 12 characters wide, so that `plugin ls` tables keep their column alignment
    (re.compile(r"\b[0-9a-f]{12}\b"), "<short-id12>"),
]

NOEOL = "<noeol>"


def cli_lines(text: str) -> list[str]:
    """CLI output normalisation: trailing blanks on each line and trailing empty lines dropped."""
    lines = [ln.rstrip() for ln in text.split("\n")]
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def body_lines(body: str) -> list[str]:
    """Raw body: exact, with a final `<noeol>` line when the body does not end in a newline."""
    if body == "":
        return []
    lines = body.split("\n")
    if lines[-1] == "":
        lines.pop()
    else:
        lines.append(NOEOL)
    return lines


def unified(expected: list[str], actual: list[str], what: str) -> str:
    diff = difflib.unified_diff(expected, actual, fromfile=f"expected {what}",
                                tofile=f"actual {what}", lineterm="")
    return "\n".join(diff)


# --------------------------------------------------------------------------------------------
# Running


def _tar_dir(directory: str) -> bytes:
    """Uncompressed tar of a directory with relative entry names (as `docker plugin create`)."""
    buf = io.BytesIO()
    root = Path(directory)
    if not root.is_dir():
        raise HarnessError(f"@tar: {directory} is not a directory")
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for p in sorted(root.rglob("*")):
            tf.add(p, arcname=str(p.relative_to(root)), recursive=False)
    return buf.getvalue()


_PLACEHOLDER_RE = re.compile(
    r"\{(fixture|plugin|var|tmp|config|sock|goarch|pluginsockdir|dataroot|execroot|registry"
    r"|authregistry|tokenregistry|target|cli|daemonpid|daemonconfig|apiversion)"
    r"(?::([^{}]*))?\}")
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386",
           "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}
_VAR_SLICE_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[(-?\d*):(-?\d*)\])?$")


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
        return dst
    except OSError:
        return shutil.copy2(src, dst)


def _check_duration(step: "Step", elapsed: float, problems: list[str]) -> None:
    if step.min_seconds is not None and elapsed < step.min_seconds:
        problems.append(f"duration: expected at least {step.min_seconds:g}s, took {elapsed:.2f}s")
    if step.max_seconds is not None and elapsed > step.max_seconds:
        problems.append(f"duration: expected at most {step.max_seconds:g}s, took {elapsed:.2f}s")


class ScenarioRun:
    def __init__(self, daemon: Daemon, scenario: Scenario, print_actual: bool = False,
                 cli: str = DEFAULT_CLI):
        self.daemon = daemon
        self.sc = scenario
        self.print_actual = print_actual
        self.cli = CLIS[cli]
        if not os.access(self.cli, os.X_OK):
            raise HarnessError(f"docker CLI {cli} not found at {self.cli} (Debian's docker.io "
                               f"provides 20.10 as /usr/bin/docker; set DOCKER_CLI / DOCKER_CLI_2010)")
        # `$ bg NAME ...` processes: name -> (process, stdout path, stderr path)
        self.background: dict[str, tuple[subprocess.Popen, str, str]] = {}
        self.tmp = tempfile.mkdtemp(prefix="bcs-")
        self.config_dir = os.path.join(self.tmp, "dockercfg")
        os.makedirs(self.config_dir)
        self.vars: dict[str, str] = dict(daemon.scenario_vars)
        self.fixture_uses: dict[str, int] = {}
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.plugin_uses: dict[str, int] = {}
        # only directories named by a plugin ID, so a plugin's own view of /run/docker/plugins
        # (e.g. rclone's "Serving unix socket: /run/docker/plugins/rclone.sock") stays visible
        self._sockdir_rx = re.compile(re.escape(daemon.plugin_sock_dir.rstrip("/")) +
                                      r"/(?=[0-9a-f]{64}\b)")

    # -- environment
    def env(self) -> dict[str, str]:
        path = os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        cli_dir = os.path.dirname(self.cli)
        env = {
            "PATH": f"{cli_dir}:{path}",
            "HOME": self.tmp,
            "DOCKER_HOST": self.daemon.host,
            "DOCKER_CONFIG": self.config_dir,
            "NO_COLOR": "1",
        }
        if self.sc.api != NEGOTIATED:
            env["DOCKER_API_VERSION"] = self.sc.api
        return env

    # -- masking
    def mask(self, text: str) -> str:
        text = text.replace(self.daemon.sock, "<SOCK>")
        # longest first: one port may be a prefix of the other
        hosts = [(self.daemon.registry_host, "<REGISTRY>"),
                 (self.daemon.auth_registry_host, "<AUTHREGISTRY>"),
                 (self.daemon.token_registry_host, "<TOKENREGISTRY>")]
        for host, placeholder in sorted((h for h in hosts if h[0]), key=lambda h: -len(h[0])):
            text = text.replace(host, placeholder)
        # plugin sockets: berth <exec-root>/plugins/<id>/..., dockerd /run/docker/plugins/<id>/...
        text = self._sockdir_rx.sub("<PLUGINSOCKDIR>/", text)
        text = text.replace(self.daemon.data_root, "<DATAROOT>")
        # the rest of the session directory (test plugin builds, rclone's state directory)
        text = text.replace(self.daemon.tmp, "<SESSION>")
        text = text.replace(self.tmp, "<TMP>")
        for rx, repl in DEFAULT_MASKS + self.sc.masks:
            text = rx.sub(repl, text)
        return text

    # -- placeholders
    def fixture(self, name: str) -> str:
        src = FIXTURE_DIR / name
        if not src.is_dir():
            raise HarnessError(f"no fixture directory {src}")
        n = self.fixture_uses.get(name, 0) + 1
        self.fixture_uses[name] = n
        dst = os.path.join(self.tmp, name if n == 1 else f"{name}-{n}")
        shutil.copytree(src, dst, symlinks=True)
        rootfs = os.path.join(dst, "rootfs")
        if os.path.isdir(rootfs):
            # dockerd 20.10 refuses to create a second plugin whose rootfs blob is byte-identical
            # to an existing one ("content sha256:...: already exists"), so every copy differs.
            with open(os.path.join(rootfs, ".compat-nonce"), "w") as f:
                f.write(uuid.uuid4().hex + "\n")
        return dst

    def plugin(self, name: str) -> str:
        """A per-scenario copy (hard links where possible) of a test plugin built for the session."""
        src = self.daemon.test_plugin(name)
        n = self.plugin_uses.get(name, 0) + 1
        self.plugin_uses[name] = n
        dst = os.path.join(self.tmp, f"plugin-{name}" if n == 1 else f"plugin-{name}-{n}")
        # the rootfs is hard-linked (rclone's is ~54 MB); config.json is a real copy
        shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy,
                        ignore=lambda d, names: ["config.json"] if d == src else [])
        shutil.copy2(os.path.join(src, "config.json"), os.path.join(dst, "config.json"))
        # a unique rootfs per use, for the same reason as fixtures (dockerd's blob dedup)
        with open(os.path.join(dst, "rootfs", ".compat-nonce"), "w") as f:
            f.write(uuid.uuid4().hex + "\n")
        return dst

    def expand(self, text: str, allow_fixture: bool = True) -> str:
        def repl(m: re.Match) -> str:
            kind, arg = m.group(1), m.group(2)
            if kind == "tmp":
                return self.tmp
            if kind == "config":
                return self.config_dir
            if kind == "sock":
                return self.daemon.sock
            if kind == "pluginsockdir":
                return self.daemon.plugin_sock_dir
            if kind == "dataroot":
                return self.daemon.data_root
            if kind == "execroot":
                return self.daemon.exec_root
            if kind == "registry":
                return self.daemon.registry().host
            if kind == "authregistry":
                return self.daemon.auth_registry().host
            if kind == "tokenregistry":
                return self.daemon.token_registry().host
            if kind == "cli":
                if arg not in CLIS:
                    raise HarnessError(f"{{cli:{arg}}}: unknown CLI (known: {', '.join(CLIS)})")
                return CLIS[arg]
            if kind == "target":
                return self.daemon.name
            if kind == "apiversion":
                return self.daemon.api_version
            if kind == "daemonpid":
                return str(self.daemon.proc.pid if self.daemon.proc else 0)
            if kind == "daemonconfig":
                return self.daemon.config_file
            if kind == "goarch":
                machine = os.uname().machine
                return _GOARCH.get(machine, machine)
            if kind in ("fixture", "plugin"):
                if not allow_fixture:
                    raise HarnessError(f"{{{kind}:...}} is not allowed here: {text!r}")
                if not arg:
                    raise HarnessError(f"{{{kind}:NAME}} needs a name")
                return self.fixture(arg) if kind == "fixture" else self.plugin(arg)
            vm = _VAR_SLICE_RE.match(arg or "")
            if not vm:
                raise HarnessError(f"bad variable reference {m.group(0)!r}")
            name = vm.group(1)
            if name not in self.vars:
                raise HarnessError(f"variable {name!r} is not set (capture it with `$ {name}=docker ...`)")
            value = self.vars[name]
            if m.group(2) and "[" in m.group(2):
                lo = int(vm.group(2)) if vm.group(2) else None
                hi = int(vm.group(3)) if vm.group(3) else None
                value = value[lo:hi]
            return value
        return _PLACEHOLDER_RE.sub(repl, text)

    # -- reporting
    def fail(self, step: Step, problems: list[str]) -> None:
        head = f"--- {self.sc.path.name}:{step.lineno}: $ {step.line}"
        self.failures.append(head + "\n" + "\n".join(problems))

    def compare_lines(self, problems: list[str], what: str, expected: list[str], actual: list[str]) -> None:
        exp = [self.mask(x) for x in expected]
        act = [self.mask(x) for x in actual]
        if exp != act:
            problems.append(unified(exp, act, what))

    def check_contains(self, problems: list[str], what: str, subs: list[str], actual: str) -> None:
        masked = self.mask(actual)
        for sub in subs:
            sub = self.mask(self.expand(sub, False))
            if sub not in masked:
                problems.append(f"{what} does not contain {sub!r}; {what} was:\n{masked}")

    # -- steps
    def run(self) -> list[str]:
        try:
            for step in self.sc.steps:
                try:
                    self.run_step(step)
                except SetupError as e:
                    self.failures.append(f"--- {self.sc.path.name}:{step.lineno}: $ {step.line}\n"
                                         f"harness error: {e}")
                    break
        finally:
            for name in list(self.background):
                self._end_background(name)
            if not KEEP_TMP:
                shutil.rmtree(self.tmp, ignore_errors=True)
        if self.failures and self.notes:
            self.failures.insert(0, "\n".join(self.notes))
        return self.failures

    def run_step(self, step: Step) -> None:
        handler = getattr(self, "step_" + step.command)
        handler(step)

    def _input_bytes(self, step: Step, trailing_newline: bool) -> bytes | None:
        if step.input_lines is None:
            return None
        text = "\n".join(self.expand(x) for x in step.input_lines)
        if trailing_newline:
            text += "\n"
        return text.encode()

    def step_write(self, step: Step) -> None:
        args = [self.expand(a) for a in shlex.split(step.rest)]
        if len(args) != 1:
            raise HarnessError("usage: $ write PATH  (content on following `> ` lines)")
        data = self._input_bytes(step, trailing_newline=True) or b""
        os.makedirs(os.path.dirname(args[0]) or ".", exist_ok=True)
        if os.path.isfile(args[0]) and os.stat(args[0]).st_nlink > 1:
            os.unlink(args[0])  # a hard link into a {plugin:...} build: never write through it
        with open(args[0], "wb") as f:
            f.write(data)

    def step_mkdir(self, step: Step) -> None:
        for a in shlex.split(step.rest):
            os.makedirs(self.expand(a), exist_ok=True)

    def _run_process(self, step: Step, argv: list[str] | None, script: str | None) -> None:
        stdin = self._input_bytes(step, trailing_newline=True)
        t0 = time.monotonic()
        try:
            if script is not None:
                argv = ["/bin/sh", "-c", script]
            cp = subprocess.run(argv, input=stdin if stdin is not None else None,
                                stdin=subprocess.DEVNULL if stdin is None else None,
                                capture_output=True, env=self.env(), cwd=self.tmp,
                                timeout=step.timeout)
            rc, out, errout = cp.returncode, cp.stdout, cp.stderr
        except subprocess.TimeoutExpired as e:
            rc, out, errout = "timeout", e.stdout or b"", e.stderr or b""
        elapsed = time.monotonic() - t0
        out_s = out.decode(errors="replace")
        err_s = errout.decode(errors="replace")
        if step.capture:
            self.vars[step.capture] = out_s.strip()
        if self.print_actual:
            self._print_actual_cli(step, rc, out_s, err_s, elapsed)
        problems = []
        _check_duration(step, elapsed, problems)
        if rc != step.exit:
            problems.append(f"exit code: expected {step.exit}, got {rc}")
        if not step.any_stdout or step.expected:
            self.compare_lines(problems, "stdout", [self.expand(x, False) for x in step.expected],
                               cli_lines(out_s))
        self.check_contains(problems, "stdout", step.contains, out_s)
        if not step.any_stderr:
            if step.stderr_contains:
                self.check_contains(problems, "stderr", step.stderr_contains, err_s)
                if step.stderr:
                    self.compare_lines(problems, "stderr", [self.expand(x, False) for x in step.stderr],
                                       cli_lines(err_s))
            else:
                self.compare_lines(problems, "stderr", [self.expand(x, False) for x in step.stderr],
                                   cli_lines(err_s))
        if problems:
            self.fail(step, problems)

    def step_docker(self, step: Step) -> None:
        args = [self.expand(a) for a in shlex.split(step.rest)]
        self._run_process(step, [self.cli] + args, None)

    def step_bg(self, step: Step) -> None:
        """`$ bg NAME docker ARGS` / `$ bg NAME sh SCRIPT`: start a process that runs while the
        next steps do (a `docker events` stream); `$ stop NAME` compares its output."""
        name, _, rest = step.rest.partition(" ")
        command, _, rest = rest.strip().partition(" ")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or command not in ("docker", "sh"):
            raise HarnessError("usage: $ bg NAME docker ARGS...  |  $ bg NAME sh SCRIPT")
        if name in self.background:
            raise HarnessError(f"background process {name!r} is already running")
        if step.expected or step.stderr:
            raise HarnessError("a bg step expects nothing; give the output to `$ stop NAME`")
        if command == "docker":
            argv = [self.cli] + [self.expand(a) for a in shlex.split(rest)]
        else:
            argv = ["/bin/sh", "-c", self.expand(rest)]
        out_path = os.path.join(self.tmp, f"bg-{name}.out")
        err_path = os.path.join(self.tmp, f"bg-{name}.err")
        with open(out_path, "wb") as out, open(err_path, "wb") as err_f:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err_f,
                                    env=self.env(), cwd=self.tmp, start_new_session=True)
        self.background[name] = (proc, out_path, err_path)
        if self.print_actual:
            print(f"$ {step.line}")

    def _end_background(self, name: str) -> tuple[str, str]:
        proc, out_path, err_path = self.background.pop(name)
        _terminate(proc, grace=5.0, group=True)
        with open(out_path, errors="replace") as out, open(err_path, errors="replace") as err_f:
            return out.read(), err_f.read()

    def step_stop(self, step: Step) -> None:
        """`$ stop NAME`: wait until the background process has printed as many lines as the
        step expects (or has exited, or the step timeout passed), stop it, and compare its
        output. Its exit status is not compared (it is stopped with SIGTERM)."""
        name = step.rest.strip()
        if name not in self.background:
            raise HarnessError(f"no background process {name!r} (start it with `$ bg {name} ...`)")
        proc, out_path, _ = self.background[name]
        want = len(step.expected)
        deadline = time.monotonic() + step.timeout
        while proc.poll() is None and time.monotonic() < deadline:
            with open(out_path, errors="replace") as out:
                if len(cli_lines(out.read())) >= want:
                    break
            time.sleep(0.05)
        out_s, err_s = self._end_background(name)
        if self.print_actual:
            self._print_actual_cli(step, 0, out_s, err_s, 0.0)
        problems: list[str] = []
        if not step.any_stdout or step.expected:
            self.compare_lines(problems, "stdout", [self.expand(x, False) for x in step.expected],
                               cli_lines(out_s))
        self.check_contains(problems, "stdout", step.contains, out_s)
        if not step.any_stderr:
            self.compare_lines(problems, "stderr", [self.expand(x, False) for x in step.stderr],
                               cli_lines(err_s))
        if problems:
            self.fail(step, problems)

    def step_sh(self, step: Step) -> None:
        self._run_process(step, None, self.expand(step.rest))

    def step_http(self, step: Step) -> None:
        words = [self.expand(a) for a in shlex.split(step.rest)]
        headers: dict[str, str] = {}
        sock = self.daemon.sock
        while words and words[0] in ("-H", "--plugin-socket"):
            if len(words) < 2:
                raise HarnessError(f"{words[0]} needs an argument")
            if words[0] == "-H":
                name, _, value = words[1].partition(":")
                headers[name.strip()] = value.strip()
            else:
                sock = self.plugin_socket(words[1])
            words = words[2:]
        if len(words) not in (2, 3):
            raise HarnessError("usage: $ http [-H 'K: V']... [--plugin-socket PLUGIN] METHOD PATH "
                               "[@tar:DIR|@targz:DIR|@file:PATH]")
        method, path = words[0], words[1]
        body = self._input_bytes(step, trailing_newline=False)
        if len(words) == 3:
            spec = words[2]
            if body is not None:
                raise HarnessError("give the body either as a @spec or as `> ` lines, not both")
            if spec.startswith("@tar:"):
                body = _tar_dir(spec[5:])
                headers.setdefault("Content-Type", "application/x-tar")
            elif spec.startswith("@targz:"):
                body = gzip.compress(_tar_dir(spec[7:]), mtime=0)
                headers.setdefault("Content-Type", "application/x-tar")
            elif spec.startswith("@file:"):
                body = Path(spec[6:]).read_bytes()
            else:
                raise HarnessError(f"unknown body spec {spec!r}")
        try:
            t0 = time.monotonic()
            res = http_request(sock, method, path, body, headers, timeout=step.timeout)
            elapsed = time.monotonic() - t0
        except (OSError, http.client.HTTPException) as e:
            self.fail(step, [f"request failed: {e!r}"])
            return
        text = res.body.decode(errors="replace")
        if step.capture:
            self.vars[step.capture] = text.strip()
        if self.print_actual:
            self._print_actual_http(step, res, text, elapsed)
        problems = []
        _check_duration(step, elapsed, problems)
        if res.status != step.status:
            problems.append(f"status: expected {step.status}, got {res.status} {res.reason}")
        for name, value in step.headers:
            got = res.header(name)
            want = self.mask(self.expand(value, False))
            if got is None:
                problems.append(f"header {name}: expected {want!r}, header missing")
            elif self.mask(got) != want:
                problems.append(f"header {name}: expected {want!r}, got {self.mask(got)!r}")
        for name in step.no_headers:
            got = res.header(name)
            if got is not None:
                problems.append(f"header {name}: expected absent, got {got!r}")
        if not step.any_stdout or step.expected:
            self.compare_lines(problems, "body", [self.expand(x, False) for x in step.expected],
                               self._body_view(step, text))
        self.check_contains(problems, "body", step.contains, text)
        if problems:
            problems.append("(response headers: " + ", ".join(f"{k}: {v}" for k, v in res.headers) + ")")
            self.fail(step, problems)

    def plugin_socket(self, name: str) -> str:
        """Host path of a plugin's socket: <plugin sock dir>/<Id>/<Config.Interface.Socket>, with
        the ID and socket name taken from the daemon's own `GET /plugins/NAME/json`."""
        try:
            res = http_request(self.daemon.sock, "GET", f"/plugins/{name}/json", timeout=STEP_TIMEOUT)
            doc = json.loads(res.body) if res.status == 200 else None
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise HarnessError(f"--plugin-socket {name}: cannot inspect the plugin: {e!r}") from e
        if not isinstance(doc, dict):
            raise HarnessError(f"--plugin-socket {name}: inspect answered {res.status}: "
                               f"{res.body.decode(errors='replace').strip()}")
        pid = doc.get("Id") or ""
        sock_name = ((doc.get("Config") or {}).get("Interface") or {}).get("Socket") or ""
        if not re.fullmatch(r"[0-9a-f]{64}", pid) or not sock_name:
            raise HarnessError(f"--plugin-socket {name}: no Id/Config.Interface.Socket in inspect")
        return os.path.join(self.daemon.plugin_sock_dir, pid, sock_name)

    def _body_view(self, step: Step, text: str) -> list[str]:
        if step.body_mode.startswith("field "):
            key = step.body_mode.split(None, 1)[1]
            try:
                doc = json.loads(text)
            except ValueError:
                return ["<body is not JSON>"] + body_lines(text)
            items = doc if isinstance(doc, list) else [doc]
            out = []
            for item in items:
                v = item.get(key, "<missing>") if isinstance(item, dict) else "<not an object>"
                out.append(v if isinstance(v, str) else json.dumps(v))
            return out
        if step.body_mode == "pretty" and text.strip():
            try:
                doc = json.loads(text)
            except ValueError:
                return ["<body is not JSON>"] + body_lines(text)
            lines = json.dumps(doc, indent=4, ensure_ascii=False).split("\n")
            if not text.endswith("\n"):
                lines.append(NOEOL)
            return lines
        return body_lines(text)

    # -- authoring aid
    def _print_actual_cli(self, step: Step, rc, out: str, err: str, elapsed: float) -> None:
        print(f"$ {step.line}")
        print(f"#   (took {elapsed:.2f}s)")
        for ln in cli_lines(self.mask(out)):
            print("\\" + ln if ln.startswith(("!", ">", "$ ", "#", "\\")) else ln)
        if rc != 0:
            print(f"! exit {rc}")
        for ln in cli_lines(self.mask(err)):
            print(f"! stderr: {ln}")

    def _print_actual_http(self, step: Step, res: HTTPResult, text: str, elapsed: float) -> None:
        print(f"$ {step.line}")
        print(f"#   (took {elapsed:.2f}s)")
        print(f"! status {res.status}")
        for k, v in res.headers:
            print(f"#   {k}: {self.mask(v)}")
        for ln in self._body_view(step, self.mask(text)):
            print("\\" + ln if ln.startswith(("!", ">", "$ ", "#", "\\")) else ln)


def reset_state(daemon: Daemon) -> list[str]:
    """Start each scenario clean: remove every volume and every user network (best effort;
    first, while their drivers still run; networks after disconnecting what joined them),
    disable every enabled plugin, then `plugin rm -f` every plugin."""
    notes = []
    cfg = tempfile.mkdtemp(prefix="bcr-")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": cfg, "DOCKER_HOST": daemon.host,
           "DOCKER_CONFIG": cfg, "NO_COLOR": "1"}

    def docker(*args: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([DOCKER_CLI, *args], capture_output=True, env=env,
                                  stdin=subprocess.DEVNULL, timeout=STEP_TIMEOUT, text=True)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, "timeout", "", f"timed out after {STEP_TIMEOUT}s")

    try:
        ls = docker("volume", "ls", "-q")
        if ls.returncode == 0:
            for name in ls.stdout.split():
                rm = docker("volume", "rm", "-f", name)
                if rm.returncode != 0:
                    notes.append(f"(state reset: `docker volume rm -f {name}` failed: {rm.stderr.strip()})")
        ls = docker("network", "ls", "-q", "--no-trunc", "--filter", "type=custom")
        for nid in ls.stdout.split() if ls.returncode == 0 else []:
            joined = docker("network", "inspect", "-f", "{{range .Containers}}{{.Name}} {{end}}", nid)
            for name in joined.stdout.split() if joined.returncode == 0 else []:
                docker("network", "disconnect", "-f", nid, name)
            rm = docker("network", "rm", nid)
            if rm.returncode != 0:
                notes.append(f"(state reset: `docker network rm {nid}` failed: {rm.stderr.strip()})")
        ls = docker("plugin", "ls", "--no-trunc", "--format", "{{.ID}} {{.Enabled}}")
        if ls.returncode != 0:
            notes.append(f"(state reset: `docker plugin ls` failed: {ls.stderr.strip()})")
        else:
            plugins = [ln.split() for ln in ls.stdout.splitlines() if ln.strip()]
            daemon.seen_plugin_ids.update(p[0] for p in plugins)
            for pid, enabled in plugins:
                if enabled == "true":
                    dis = docker("plugin", "disable", "-f", pid)
                    if dis.returncode != 0:
                        notes.append(f"(state reset: `docker plugin disable -f {pid}` failed: "
                                     f"{dis.stderr.strip()})")
                rm = docker("plugin", "rm", "-f", pid)
                if rm.returncode != 0:
                    notes.append(f"(state reset: `docker plugin rm -f {pid}` failed: {rm.stderr.strip()})")
        left = docker("plugin", "ls", "-q")
        if left.returncode == 0 and left.stdout.strip():
            notes.append(f"(state reset: plugins left over: {left.stdout.split()})")
    finally:
        shutil.rmtree(cfg, ignore_errors=True)
    return notes


def run_scenario(daemon: Daemon, scenario: Scenario, print_actual: bool = False,
                 cli: str = DEFAULT_CLI) -> list[str]:
    notes = reset_state(daemon)
    run = ScenarioRun(daemon, scenario, print_actual=print_actual, cli=cli)
    run.notes = notes
    return run.run()


# --------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=TARGETS, default=None,
                    help="daemon to test (default: $BERTH_COMPAT_TARGET or berth)")
    ap.add_argument("--print-actual", action="store_true",
                    help="print what each step actually produced, in scenario syntax (authoring aid)")
    ap.add_argument("--cli", choices=sorted(CLIS), default=None,
                    help="run the scenarios with this docker CLI only (default: each with the "
                         "CLIs its `# cli:` header names)")
    ap.add_argument("--authz-chain", action="store_true",
                    help="start the daemon with the authorization chain of authz/chain/ scenarios")
    ap.add_argument("files", nargs="*", help="scenario files (default: all)")
    ns = ap.parse_args(argv)
    target = selected_target(ns.target)
    files = [Path(f) for f in ns.files] or discover_scenarios()
    scenarios = [parse_scenario(f) for f in files]
    runnable = [s for s in scenarios if s.runs_on(target)]
    daemon = make_authz_chain_daemon(target) if ns.authz_chain else make_daemon(target)
    failed = 0
    try:
        daemon.start()
        for sc in runnable:
            for cli in [ns.cli] if ns.cli else sc.clis:
                if ns.print_actual:
                    print(f"# ===== {sc.path} (CLI {cli})")
                failures = run_scenario(daemon, sc, print_actual=ns.print_actual, cli=cli)
                status = "FAIL" if failures else "ok"
                print(f"{status:4} {sc.path.name} [CLI {cli}]  ({sc.title})", file=sys.stderr)
                for f in failures:
                    print(f, file=sys.stderr)
                failed += bool(failures)
    finally:
        daemon.stop()
    skipped = len(scenarios) - len(runnable)
    print(f"{len(runnable) - failed} passed, {failed} failed, {skipped} skipped (target {target})",
          file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SetupError as e:
        print(f"harness error: {e}", file=sys.stderr)
        sys.exit(2)
