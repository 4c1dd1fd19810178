"""Property-based fuzzing of berth's API with schemathesis, driven by api-spec/openapi.json:
every documented operation gets generated paths, queries, headers and bodies (valid and not),
sent through a loopback TCP bridge (127.0.0.1 only) to berth's unix socket.

Asserts: no 5xx except the ones dockerd 20.10 also answers for the same input (KNOWN_5XX, listed
in the README), berth never stops answering, no call takes longer than CALL_TIMEOUT.

    python3 -m pytest -q fuzz                      # the short run CI makes
    FUZZ_MAX_EXAMPLES=2000 python3 -m pytest fuzz  # longer (scripts/fuzz.sh)

The registry routes (privileges, pull, upgrade, push, auth) are left out: a generated `remote` or
`serveraddress` would send berth to registries on the internet.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import sys
import tarfile
import tempfile
import threading

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "scripts"))
import testbed  # noqa: E402

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "25"))
CALL_TIMEOUT = 30.0
# CI's short run draws the same examples every time, so a red run is a finding and never a draw
# of luck; the long run (scripts/fuzz.sh, FUZZ_RANDOM=1) explores new ones on every call.
DERANDOMIZE = os.environ.get("FUZZ_RANDOM", "0") != "1"

# (method, path pattern, message pattern) of the 5xx dockerd 20.10 answers too, checked against
# a private dockerd 20.10 with the same requests (API 1.41 and unversioned):
KNOWN_5XX = [
    # `filters` that is not a JSON filter map: moby 20.10's filters.FromJSON error, untyped.
    ("GET", r"^/plugins$", r"^(json: cannot unmarshal |invalid character |unexpected end of JSON)"),
    ("POST", r"^/volumes/prune$",
     r"^(json: cannot unmarshal |invalid character |unexpected end of JSON)"),
    # `plugin enable` without a numeric `timeout`: strconv.Atoi's error, untyped.
    ("POST", r"^/plugins/.+/enable$", r"^strconv\.Atoi: parsing "),
    # `plugin create` with a name that is no reference, a digest, or a body that is no tar.
    ("POST", r"^/plugins/create$", r"^failed to parse reference "),
    ("POST", r"^/plugins/create$", r"^canonical references are not permitted$"),
    ("POST", r"^/plugins/create$", r"^failed to read from tar: "),
    # events `since`/`until` that are no timestamps (strconv's error), `filters` that is no JSON
    # filter map (scenario http-fuzz-5xx.scn, events-filters.scn).
    ("GET", r"^/events$", r"^(strconv\.Parse(Int|Float): |json: cannot unmarshal |invalid character |"
     r"unexpected end of JSON)"),
    # network create: libnetwork's untyped errors for names, IPAM configuration, options and
    # scopes (scenarios http-fuzz-5xx.scn, network-create-http.scn, network-bridge-bad.scn).
    ("POST", r"^/networks/create$",
     r"^(invalid name: |Invalid subnet |invalid gateway address |failed to allocate |"
     r"non parsable secondary ip address |invalid MTU number|This node is not a swarm manager|"
     r"json: cannot unmarshal |invalid character |unexpected end of JSON)"),
    # PUT /volumes/{name:.*} (API >= 1.42) is the cluster-volume update dockerd 23+ answers with
    # 503 when swarm is off; dockerd 20.10 has no such route (scenario target-berth-volume-put.scn).
    ("PUT", r"^/volumes/", r"^volume update only valid for cluster volumes, but swarm is unavailable$"),
]



def tar_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


# Create contexts: a few real ones (valid, bad config, no config) and random bytes.
schemathesis.openapi.media_type("application/x-tar", st.one_of(
    st.sampled_from([
        tar_of({"config.json": b'{"Description":"fuzz","Entrypoint":["/p"],'
                b'"Interface":{"Socket":"p.sock","Types":["docker.volumedriver/1.0"]}}',
                "rootfs/p": b"#!/bin/sh\n"}),
        tar_of({"config.json": b'{"Interface":7}'}),
        tar_of({"rootfs/p": b""}),
    ]),
    st.binary(max_size=2048),
))

schema = schemathesis.openapi.from_path(os.path.join(REPO, "api-spec", "openapi.json")).exclude(
    path_regex=r"^(/plugins/(privileges|pull|[^/]+/upgrade|[^/]+/push)|/auth)$")


class Bridge:
    """127.0.0.1:<free port> -> a unix socket, one thread pair per connection."""

    def __init__(self, unix_path: str):
        self.unix_path = unix_path
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = testbed.unix_connect(self.unix_path, timeout=CALL_TIMEOUT)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def berth_url():
    binary = os.environ.get("BERTH_BIN", os.path.join(REPO, "target", "debug", "berth"))
    tmp = tempfile.mkdtemp(prefix="fz", dir="/tmp")
    sock, log = os.path.join(tmp, "b.sock"), os.path.join(tmp, "berth.log")
    proc = testbed.spawn([binary, "daemon", "--host", "unix://" + sock,
                          "--data-root", os.path.join(tmp, "d"),
                          "--exec-root", os.path.join(tmp, "x"),
                          "--config-file", os.path.join(tmp, "none.json"),
                          "--legacy-plugin-dir", os.path.join(tmp, "legacy")], log)
    starttime = testbed.pid_starttime(proc.pid)
    bridge = None
    try:
        testbed.wait_for_ping(proc, sock, "berth", log)
        bridge = Bridge(sock)
        yield f"http://127.0.0.1:{bridge.port}", proc, sock, log
        assert proc.poll() is None, f"berth exited\n{testbed.log_tail(log)}"
    finally:
        if bridge:
            bridge.close()
        testbed.stop_process(proc, starttime, grace=30)
        testbed.unmount_below(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def known_5xx(method: str, path: str, message: str) -> bool:
    path = re.sub(r"^/v[0-9.]+", "", path)
    return any(m == method and re.search(p, path) and re.search(t, message)
               for m, p, t in KNOWN_5XX)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=DERANDOMIZE,
          suppress_health_check=list(HealthCheck))
def test_no_unexpected_server_errors(case, berth_url):
    url, proc, sock, log = berth_url
    if case.path == "/events":
        # without a past `until` the event stream stays open until the client hangs up
        case.query = {**(case.query or {}), "until": "1"}
    response = case.call(base_url=url, timeout=CALL_TIMEOUT)
    if response.status_code >= 500:
        try:
            message = response.json().get("message", "")
        except Exception:
            message = response.text
        assert known_5xx(case.method.upper(), case.formatted_path, message), (
            f"{case.method.upper()} {case.formatted_path} -> {response.status_code}: {message}")
    assert testbed.ping_status(sock, timeout=5) == 200, f"berth stopped answering\n{testbed.log_tail(log)}"
