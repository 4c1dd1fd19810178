"""docker-py against the session daemon with the session's loopback registry (`daemon.registry()`,
Debian's docker-registry on 127.0.0.1:<port>, plain HTTP): privileges, install, push, upgrade,
configure and remove of plugins from a registry.

Same fixtures and clean state as test_dockerpy.py; expectations are dockerd 20.10's. Repository
paths carry the target's name, like the scenarios' `{registry}/{target}/...`.

docker-py 7.1.0 quirks that show here (the same on every target):
* `plugins.install()` is privileges + pull + get: it never enables the plugin.
* `plugin_privileges()` of a plugin without privileges is None (the daemon answers `null`), and
  `pull_plugin()`/`upgrade_plugin()` then send `{}` instead of a list: the daemon refuses to
  parse it (500). So docker-py cannot install or upgrade a plugin that has no privileges.
* `Plugin.push()` / `api.push_plugin()` POST /plugins/NAME/pull (sic), an unknown route: 404.
* `Plugin.upgrade()` of an enabled plugin raises AttributeError (it refers to a nonexistent
  `docker.errors.DockerError`) before any request.
"""

from __future__ import annotations

import json
import os

import pytest

import harness
from test_dockerpy import (HEX64, api_error, client, clean_state, runnable_plugin_dir,  # noqa: F401
                           workdir)

docker = pytest.importorskip("docker", reason="pip install -r compat-tests/requirements.txt")
from docker.errors import APIError, NotFound  # noqa: E402

RCLONE_ENV = ["RCLONE_CONFIG=/data/config/rclone.conf", "RCLONE_CACHE_DIR=/data/cache",
              "RCLONE_BASE_DIR=/mnt", "HTTP_PROXY=", "HTTPS_PROXY=", "NO_PROXY="]


@pytest.fixture(scope="module")
def registry(daemon):
    return daemon.registry().host


def publish(client, daemon, workdir: str, ref: str, plugin: str) -> None:
    """`plugin create` + push (raw HTTP: docker-py cannot push, see the module doc) + rm."""
    client.plugins.create(ref, runnable_plugin_dir(daemon, workdir, plugin))
    res = harness.http_request(daemon.sock, "POST", f"/plugins/{ref}/push", timeout=120)
    assert res.status == 200, res.body
    msgs = [json.loads(x) for x in res.body.splitlines() if x.strip()]
    assert not [m for m in msgs if "error" in m], msgs
    aux = [m["aux"] for m in msgs if "aux" in m]
    assert [a["Tag"] for a in aux] == [ref.rsplit(":", 1)[1]]
    assert aux[0]["Digest"].startswith("sha256:")
    client.plugins.get(ref).remove()


def rclone_privileges(daemon) -> list[dict]:
    return [
        {"Name": "network", "Description": "permissions to access a network", "Value": ["host"]},
        {"Name": "mount", "Description": "host path to mount",
         "Value": [f"{daemon.rclone_state_dir}/config"]},
        {"Name": "mount", "Description": "host path to mount",
         "Value": [f"{daemon.rclone_state_dir}/cache"]},
        {"Name": "device", "Description": "host device to access", "Value": ["/dev/fuse"]},
        {"Name": "capabilities", "Description": "list of additional capabilities required",
         "Value": ["CAP_SYS_ADMIN"]},
    ]


def test_push_is_broken_in_docker_py(client, daemon, workdir, registry):
    ref = f"{registry}/{daemon.name}/py-push/td:1"
    p = client.plugins.create(ref, runnable_plugin_dir(daemon, workdir, "testdriver"))
    # POST /plugins/<ref>/pull: no such route
    with pytest.raises(NotFound) as ei:
        p.push()
    assert ei.value.status_code == 404
    with pytest.raises(NotFound) as ei:
        client.api.push_plugin(ref)
    assert ei.value.status_code == 404
    # nothing reached the registry: the reference cannot be resolved
    assert client.api.plugin_privileges(ref) == []
    assert [x.name for x in client.plugins.list()] == [ref]


def test_install_configure_upgrade_remove(client, daemon, workdir, registry):
    r1 = f"{registry}/{daemon.name}/py-inst/rclone:1"
    r2 = f"{registry}/{daemon.name}/py-inst/rclone:2"
    publish(client, daemon, workdir, r1, "rclone")
    publish(client, daemon, workdir, r2, "rclone")
    assert client.plugins.list() == []

    assert client.api.plugin_privileges(r1) == rclone_privileges(daemon)

    p = client.plugins.install(r1, "pyrc")
    assert p.name == "pyrc:latest"
    assert HEX64.fullmatch(p.id)
    assert p.enabled is False                 # install() does not enable
    assert p.attrs["PluginReference"] == r1
    assert p.settings["Env"] == ["RCLONE_VERBOSE=0"] + RCLONE_ENV
    assert [(x.name, x.enabled) for x in client.plugins.list()] == [("pyrc:latest", False)]

    assert p.configure({"RCLONE_VERBOSE": "1"}) is None
    assert p.settings["Env"] == ["RCLONE_VERBOSE=1"] + RCLONE_ENV

    # the same local name again: 400 here (plugin create answers 409 for the same case)
    with pytest.raises(APIError) as ei:
        client.plugins.install(r1, "pyrc")
    assert api_error(ei) == (400, "plugin pyrc:latest already exists")

    old_id = p.id
    stream = p.upgrade(r2)
    assert not isinstance(stream, list)       # a generator: nothing happens before iterating
    assert client.plugins.get("pyrc").attrs["PluginReference"] == r1
    msgs = list(stream)
    assert msgs[0] == {"status": f"Pulling from {r1.rsplit(':', 1)[0]}", "id": "2"}
    assert msgs[1]["status"].startswith("Digest: sha256:")
    assert not [m for m in msgs if "error" in m or "errorDetail" in m], msgs
    assert msgs[-1]["status"] == "Complete"
    # upgrade() reloads: same ID, new reference, settings kept, still disabled
    assert p.id == old_id
    assert p.attrs["PluginReference"] == r2
    assert p.enabled is False
    assert p.settings["Env"] == ["RCLONE_VERBOSE=1"] + RCLONE_ENV

    p.enable()
    assert p.enabled is True
    with pytest.raises(AttributeError):
        next(p.upgrade(r1))                   # docker-py's own bug, no request is sent
    assert client.plugins.get("pyrc").attrs["PluginReference"] == r2

    # remove(force=True) removes an enabled plugin
    assert p.remove(force=True) is True
    assert client.plugins.list() == []
    with pytest.raises(NotFound):
        client.plugins.get("pyrc")


def test_install_without_privileges_fails_in_docker_py(client, daemon, workdir, registry):
    ref = f"{registry}/{daemon.name}/py-nopriv/td:1"
    publish(client, daemon, workdir, ref, "testdriver")
    # `null` from the daemon, then `{}` sent as the grant
    assert client.api.plugin_privileges(ref) is None
    with pytest.raises(APIError) as ei:
        client.plugins.install(ref, "pytd")
    assert api_error(ei) == (500, "failed to parse privileges: json: cannot unmarshal object "
                                  "into Go value of type types.PluginPrivileges")
    assert client.plugins.list() == []

    # the low-level pull with an explicit empty grant works, and does not enable
    msgs = list(client.api.pull_plugin(ref, [], "pytd"))
    assert msgs[0] == {"status": f"Pulling from {ref.rsplit(':', 1)[0]}", "id": "1"}
    assert not [m for m in msgs if "error" in m], msgs
    p = client.plugins.get("pytd")
    assert (p.name, p.enabled, p.attrs["PluginReference"]) == ("pytd:latest", False, ref)
    p.configure({"TEST_REPORT": "1"})
    assert p.settings["Env"] == ["TEST_ROOT=/data", "TEST_REPORT=1"]

    # upgrade() has the same problem
    with pytest.raises(APIError) as ei:
        list(p.upgrade(ref))
    assert ei.value.status_code == 500
    assert p.remove(force=True) is True
    assert client.plugins.list() == []


def test_install_missing_reference(client, daemon, registry, target_name):
    ref = f"{registry}/{daemon.name}/py-miss/td:nope"
    assert client.api.plugin_privileges(ref) == []
    with pytest.raises(APIError) as ei:
        client.plugins.install(ref)
    status, text = api_error(ei)
    assert status == 500
    assert text.startswith("error resolving plugin reference: "), text
    # deliberate difference (see target-*-registry-missing.scn): dockerd reports its first,
    # HTTPS, attempt; berth talks plain HTTP to loopback registries and reports the 404
    if target_name == "dockerd":
        assert text.endswith(": http: server gave HTTP response to HTTPS client"), text
    else:
        assert text == f"error resolving plugin reference: {ref}: not found", text
    assert client.plugins.list() == []
