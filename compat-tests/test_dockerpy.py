"""docker-py (the PyPI `docker` package, pinned in requirements.txt) against the session daemon.

The same `--target` as the scenarios: the `daemon` fixture of conftest.py starts one berth or
dockerd per pytest session, and every test here starts from the scenarios' clean state
(`harness.reset_state`: no volumes, no plugins). Expectations are dockerd 20.10's (API 1.41):
run `python3 -m pytest -q compat-tests --target dockerd` to prove them. Like the scenarios'
CLI, the client is pinned to API 1.41 (berth advertises 1.50); `auto_client` negotiates.

docker-py quirks that show here (the same on every target):
* `remove_volume(name, force=True)` never sends `force`: it passes the parameters to `_url()`,
  which drops them, so a missing volume is a NotFound even with force.
* list/prune filters are sent in the legacy `{"key": ["value"]}` form, booleans as "true"/"false".
* `Plugin.enable()` sends `timeout=0`; `Plugin.disable()` sends `force=False`.
* `events()` sends `since`/`until` in whole seconds, and its stream ends quietly on an error
  answer (an APIError is an OSError, which `CancellableStream` takes for the end of the stream).
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from datetime import datetime, timezone

import pytest

import harness

docker = pytest.importorskip("docker", reason="pip install -r compat-tests/requirements.txt")
from docker.errors import APIError, NotFound  # noqa: E402

HEX64 = re.compile(r"[0-9a-f]{64}")
LABEL_ANON = "com.docker.volume.anonymous"


# --------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def client(daemon):
    c = docker.DockerClient(base_url=daemon.host, version=harness.PINNED_API_VERSION, timeout=120)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def auto_client(daemon):
    """A client that negotiates (`version="auto"`: it asks GET /version)."""
    c = docker.DockerClient(base_url=daemon.host, version="auto", timeout=120)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(autouse=True)
def clean_state(daemon):
    """Every test starts as every scenario does: no volumes, no plugins."""
    notes = harness.reset_state(daemon)
    assert not [n for n in notes if "left over" in n], notes
    yield


@pytest.fixture
def workdir(tmp_path_factory):
    # short paths: nothing here becomes a unix socket, but keep them readable in failures
    return str(tmp_path_factory.mktemp("py"))


def fixture_dir(workdir: str, name: str) -> str:
    """A fresh copy of compat-tests/fixtures/NAME with a unique rootfs (dockerd 20.10 refuses a
    second plugin whose rootfs blob is byte-identical to an existing one)."""
    dst = os.path.join(workdir, f"{name}-{uuid.uuid4().hex[:8]}")
    shutil.copytree(harness.FIXTURE_DIR / name, dst, symlinks=True)
    os.makedirs(os.path.join(dst, "rootfs"), exist_ok=True)
    with open(os.path.join(dst, "rootfs", ".compat-nonce"), "w") as f:
        f.write(uuid.uuid4().hex + "\n")
    return dst


def runnable_plugin_dir(daemon, workdir: str, name: str) -> str:
    """A fresh copy (hard links, real config.json, nonce) of a runnable test plugin."""
    src = daemon.test_plugin(name)
    dst = os.path.join(workdir, f"plugin-{name}-{uuid.uuid4().hex[:8]}")
    shutil.copytree(src, dst, symlinks=True, copy_function=harness._link_or_copy,
                    ignore=lambda d, names: ["config.json"] if d == src else [])
    shutil.copy2(os.path.join(src, "config.json"), os.path.join(dst, "config.json"))
    with open(os.path.join(dst, "rootfs", ".compat-nonce"), "w") as f:
        f.write(uuid.uuid4().hex + "\n")
    return dst



def api_error(excinfo) -> tuple[int, str]:
    err = excinfo.value
    return err.status_code, err.explanation


def names(volumes) -> list[str]:
    return sorted(v.name for v in volumes)


def local_mountpoint(daemon, name: str) -> str:
    return f"{daemon.data_root}/volumes/{name}/_data"


def parse_created_at(value: str) -> datetime:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --------------------------------------------------------------------------------------------
# volumes


def test_api_version_is_the_advertised_one_unless_pinned(client, auto_client, target_name):
    # version="auto" takes what GET /version says: dockerd 20.10 advertises 1.41, berth the
    # newest version it serves
    advertised = {"berth": "1.50", "dockerd": "1.41"}[target_name]
    assert auto_client.api.api_version == advertised
    assert auto_client.version()["ApiVersion"] == advertised
    assert client.api.api_version == "1.41"
    assert client.version()["ApiVersion"] == advertised


def test_negotiated_client_prunes_anonymous_volumes_only_on_berth(auto_client, target_name):
    # API >= 1.42 (current moby): anonymous volumes are labelled and default prune takes only
    # them; dockerd 20.10 stays at 1.41 (test_prune_on_141_...)
    if target_name != "berth":
        pytest.skip("dockerd 20.10 serves 1.41 at most")
    auto_client.volumes.create("named1")
    anon = auto_client.volumes.create()
    assert anon.attrs["Labels"] == {LABEL_ANON: ""}
    assert auto_client.volumes.prune() == {"VolumesDeleted": [anon.name], "SpaceReclaimed": 0}
    assert names(auto_client.volumes.list()) == ["named1"]
    assert auto_client.volumes.prune(filters={"all": True}) == \
        {"VolumesDeleted": ["named1"], "SpaceReclaimed": 0}


def test_create_named_volume_with_labels_and_options(client, daemon):
    v = client.volumes.create(name="pyvol", driver="local",
                              driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"},
                              labels={"team": "a", "bare": ""})
    assert v.name == "pyvol"
    assert v.id == "pyvol"
    attrs = v.attrs
    assert list(attrs) == ["CreatedAt", "Driver", "Labels", "Mountpoint", "Name", "Options", "Scope"]
    assert attrs["Driver"] == "local"
    assert attrs["Labels"] == {"team": "a", "bare": ""}
    assert attrs["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}
    assert attrs["Mountpoint"] == local_mountpoint(daemon, "pyvol")
    assert attrs["Scope"] == "local"
    created = parse_created_at(attrs["CreatedAt"])
    assert abs((datetime.now(timezone.utc) - created).total_seconds()) < 60
    assert os.path.isdir(local_mountpoint(daemon, "pyvol"))


def test_create_without_name_or_driver_is_anonymous_local(client, daemon):
    v = client.volumes.create()
    assert HEX64.fullmatch(v.name), v.name
    assert v.attrs["Driver"] == "local"
    # API 1.41: no com.docker.volume.anonymous label (current daemons add it)
    assert v.attrs["Labels"] is None
    assert v.attrs["Options"] is None
    assert v.attrs["Mountpoint"] == local_mountpoint(daemon, v.name)
    assert names(client.volumes.list()) == [v.name]


def test_create_is_idempotent_and_keeps_the_first_labels(client):
    first = client.volumes.create("same", labels={"k": "1"})
    again = client.volumes.create("same", labels={"k": "2"}, driver="local")
    assert again.name == "same"
    assert again.attrs["Labels"] == {"k": "1"}
    assert again.attrs["CreatedAt"] == first.attrs["CreatedAt"]
    assert names(client.volumes.list()) == ["same"]


def test_get_equals_create_and_reload(client):
    created = client.volumes.create("insp", labels={"a": "b"})
    got = client.volumes.get("insp")
    assert got.attrs == created.attrs   # TestVolumesInspect: inspect deep-equals the create answer
    assert "Status" not in got.attrs    # local volumes have no Status
    got.reload()
    assert got.attrs == created.attrs
    assert client.api.inspect_volume("insp") == created.attrs


def test_get_missing_is_not_found(client):
    with pytest.raises(NotFound) as ei:
        client.volumes.get("nosuch")
    assert api_error(ei) == (404, "get nosuch: no such volume")


def test_list_and_filters(client):
    client.volumes.create("aaa", labels={"team": "a", "env": "prod"})
    client.volumes.create("soo", labels={"team": "b"})
    client.volumes.create("test", labels={"solo": ""})
    client.volumes.create("vol10")
    client.volumes.create("vol2")
    everything = ["aaa", "soo", "test", "vol10", "vol2"]

    listed = client.volumes.list()
    assert names(listed) == everything
    by_name = {v.name: v.attrs for v in listed}
    assert by_name["aaa"]["Labels"] == {"team": "a", "env": "prod"}
    assert by_name["vol2"]["Labels"] is None
    assert all(a["Driver"] == "local" and a["Scope"] == "local" for a in by_name.values())
    raw = client.api.volumes()
    assert raw["Warnings"] is None
    assert sorted(v["Name"] for v in raw["Volumes"]) == everything

    def f(**filters):
        return names(client.volumes.list(filters=filters))

    assert f(dangling=True) == everything          # no container refers to any of them
    assert f(dangling=False) == []
    assert f(dangling="1") == everything
    assert f(driver="local") == everything
    assert f(driver="loca") == []                  # exact match only
    assert f(label="team") == ["aaa", "soo"]
    assert f(label="team=a") == ["aaa"]
    assert f(label=["team=a", "env=prod"]) == ["aaa"]   # several labels: all of them
    assert f(label=["team=a", "env=dev"]) == []
    assert f(label="solo") == ["test"]
    assert f(label="nosuch") == []
    assert f(name="vol") == ["vol10", "vol2"]      # substring / regexp
    assert f(name="^s") == ["soo"]
    assert f(name=["aaa", "soo"]) == ["aaa", "soo"]
    assert f(name="o", label="team") == ["soo"]    # several keys: all of them
    assert client.api.volumes(filters={"name": "nomatch"}) == {"Volumes": [], "Warnings": None}


def test_list_filter_errors(client):
    client.volumes.create("vol1")
    with pytest.raises(APIError) as ei:
        client.volumes.list(filters={"foo": "bar"})
    assert api_error(ei) == (400, "Invalid filter 'foo'")
    with pytest.raises(APIError) as ei:
        client.volumes.list(filters={"dangling": "potato"})
    assert api_error(ei) == (400, "Invalid filter 'dangling=[potato]'")
    with pytest.raises(APIError) as ei:
        client.volumes.list(filters={"label!": "x"})
    assert api_error(ei) == (400, "Invalid filter 'label!'")


@pytest.mark.parametrize("kwargs, status, message", [
    ({"name": "a"}, 400,
     "create a: volume name is too short, names should be at least two alphanumeric characters"),
    ({"name": "a/b"}, 400,
     'create a/b: "a/b" includes invalid characters for a local volume name, only '
     '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, '
     "use absolute path"),
    ({"name": "x1", "driver_opts": {"foo": "bar"}}, 400, 'create x1: invalid option: "foo"'),
    ({"name": "x2", "driver_opts": {"type": "tmpfs"}}, 400,
     'create x2: missing required option: "device"'),
    ({"name": "x3", "driver_opts": {"device": "tmpfs"}}, 400,
     'create x3: missing required option: "type"'),
], ids=["too-short", "bad-chars", "invalid-option", "missing-device", "missing-type"])
def test_create_errors(client, kwargs, status, message):
    with pytest.raises(APIError) as ei:
        client.volumes.create(**kwargs)
    assert api_error(ei) == (status, message)
    assert client.volumes.list() == []


def test_remove_and_force(client, daemon):
    v = client.volumes.create("rm1")
    client.volumes.create("rm2")
    assert v.remove() is None
    assert names(client.volumes.list()) == ["rm2"]
    assert not os.path.exists(os.path.dirname(local_mountpoint(daemon, "rm1")))
    with pytest.raises(NotFound) as ei:
        client.volumes.get("rm1")
    assert api_error(ei) == (404, "get rm1: no such volume")

    # removing it again: 404
    with pytest.raises(NotFound) as ei:
        v.remove()
    assert api_error(ei) == (404, "get rm1: no such volume")
    # docker-py drops `force` (see the module docstring): still 404 on every daemon
    with pytest.raises(NotFound) as ei:
        v.remove(force=True)
    assert api_error(ei) == (404, "get rm1: no such volume")

    # force on an existing volume removes it
    client.volumes.get("rm2").remove(force=True)
    assert client.volumes.list() == []


def test_prune_on_141_removes_named_and_anonymous_but_not_with_options(client, daemon):
    client.volumes.create("named1", labels={"keep": "yes"})
    client.volumes.create("named2")
    client.volumes.create("optvol", driver_opts={"type": "tmpfs", "device": "tmpfs"})
    anon = client.volumes.create().name
    with open(os.path.join(local_mountpoint(daemon, "named2"), "f"), "wb") as f:
        f.write(b"x" * 1000)

    res = client.volumes.prune()
    assert sorted(res) == ["SpaceReclaimed", "VolumesDeleted"]
    assert sorted(res["VolumesDeleted"]) == sorted([anon, "named1", "named2"])
    assert res["SpaceReclaimed"] == 1000
    assert names(client.volumes.list()) == ["optvol"]

    assert client.volumes.prune() == {"VolumesDeleted": [], "SpaceReclaimed": 0}


def test_prune_label_filters_and_errors(client):
    client.volumes.create("named1", labels={"keep": "yes"})
    client.volumes.create("named3", labels={"keep": "no"})
    client.volumes.create("named4")
    assert client.volumes.prune(filters={"label": "keep=no"}) == \
        {"VolumesDeleted": ["named3"], "SpaceReclaimed": 0}
    assert client.volumes.prune(filters={"label!": "keep"}) == \
        {"VolumesDeleted": ["named4"], "SpaceReclaimed": 0}
    assert client.volumes.prune(filters={"label": "nosuch"}) == \
        {"VolumesDeleted": [], "SpaceReclaimed": 0}
    assert client.volumes.prune(filters={"label!": "keep=yes"}) == \
        {"VolumesDeleted": [], "SpaceReclaimed": 0}
    assert names(client.volumes.list()) == ["named1"]

    # 20.10 prune knows only label and label!: `all` (API >= 1.42) is an invalid filter
    with pytest.raises(APIError) as ei:
        client.volumes.prune(filters={"all": True})
    assert api_error(ei) == (400, "Invalid filter 'all'")
    with pytest.raises(APIError) as ei:
        client.volumes.prune(filters={"dangling": True})
    assert api_error(ei) == (400, "Invalid filter 'dangling'")
    assert names(client.volumes.list()) == ["named1"]


# --------------------------------------------------------------------------------------------
# events and disk usage


def test_events_recorded_and_live(client, daemon):
    since = int(time.time()) - 1
    client.volumes.create("pyev1", labels={"x": "y"})
    client.volumes.create("pyev1")
    client.volumes.get("pyev1").remove()
    until = int(time.time()) + 1
    # docker-py sends whole seconds; the filter keeps other tests' events out
    past = list(client.events(since=since, until=until, decode=True,
                              filters={"type": "volume", "volume": "pyev1"}))
    assert [(e["Type"], e["Action"], e["Actor"]) for e in past] == [
        ("volume", "create", {"ID": "pyev1", "Attributes": {"driver": "local"}}),
        ("volume", "create", {"ID": "pyev1", "Attributes": {"driver": "local"}}),
        ("volume", "destroy", {"ID": "pyev1", "Attributes": {"driver": "local"}}),
    ]
    for e in past:
        assert list(e) == ["Type", "Action", "Actor", "scope", "time", "timeNano"]
        assert e["scope"] == "local"
        assert e["time"] == e["timeNano"] // 1_000_000_000

    # live: each event arrives as it happens (from a second back: dockerd answers the request
    # before it subscribes, and the recorded past covers that moment)
    stream = client.events(since=int(time.time()) - 1, decode=True, filters={"volume": "pyev2"})
    try:
        client.volumes.create("pyev2")
        first = next(stream)
        assert (first["Action"], first["Actor"]["ID"]) == ("create", "pyev2")
        client.volumes.get("pyev2").remove()
        second = next(stream)
        assert (second["Action"], second["Actor"]["ID"]) == ("destroy", "pyev2")
    finally:
        stream.close()

    # the daemon refuses since > until (400, events-filters.scn), but docker-py's stream
    # swallows the error: its APIError is an OSError, which CancellableStream takes for the end
    assert list(client.events(since=10, until=5)) == []


def test_df_reports_local_volumes_with_sizes(client, daemon):
    client.volumes.create("dfpy1", labels={"team": "a"})
    client.volumes.create("dfpy2", driver_opts={"type": "tmpfs", "device": "tmpfs"})
    with open(os.path.join(local_mountpoint(daemon, "dfpy1"), "f"), "wb") as f:
        f.write(b"x" * 1234)
    df = client.df()
    assert list(df) == ["LayersSize", "Images", "Containers", "Volumes", "BuildCache",
                        "BuilderSize"]
    assert (df["LayersSize"], df["Images"], df["Containers"], df["BuildCache"],
            df["BuilderSize"]) == (0, [], [], None, 0)
    # only local volumes without options are measured
    assert [v["Name"] for v in df["Volumes"]] == ["dfpy1"]
    v = df["Volumes"][0]
    assert v["UsageData"] == {"RefCount": 0, "Size": 1234}
    assert v["Labels"] == {"team": "a"}
    assert v["Mountpoint"] == local_mountpoint(daemon, "dfpy1")
    assert list(v) == ["CreatedAt", "Driver", "Labels", "Mountpoint", "Name", "Options",
                       "Scope", "UsageData"]


# --------------------------------------------------------------------------------------------
# plugins


def test_plugin_create_list_get_remove(client, workdir):
    p = client.plugins.create("pytest/basic:1.0", fixture_dir(workdir, "basic"))
    assert p.name == "pytest/basic:1.0"
    assert p.enabled is False
    assert HEX64.fullmatch(p.id)
    assert p.attrs["PluginReference"] == "pytest/basic:1.0"
    assert p.attrs["Config"]["Interface"]["Socket"] == "basic.sock"
    assert p.settings == {"Args": [], "Devices": [], "Env": [], "Mounts": []}

    listed = client.plugins.list()
    assert [(x.name, x.id, x.enabled) for x in listed] == [("pytest/basic:1.0", p.id, False)]

    # by name, by full ID, by ID prefix
    assert client.plugins.get("pytest/basic:1.0").id == p.id
    assert client.plugins.get(p.id).name == "pytest/basic:1.0"
    assert client.plugins.get(p.id[:5]).name == "pytest/basic:1.0"

    assert p.remove() is True
    assert client.plugins.list() == []
    with pytest.raises(NotFound) as ei:
        client.plugins.get("pytest/basic:1.0")
    assert api_error(ei) == (404, 'plugin "pytest/basic:1.0" not found')


def test_create_plugin_low_level_and_duplicates(client, workdir):
    assert client.api.create_plugin("pytest/low", fixture_dir(workdir, "basic")) is True
    info = client.api.inspect_plugin("pytest/low")
    assert info["Name"] == "pytest/low:latest"
    assert info["Enabled"] is False
    assert [p["Name"] for p in client.api.plugins()] == ["pytest/low:latest"]

    # the same name again (also as name:latest): 409
    for name in ("pytest/low", "pytest/low:latest"):
        with pytest.raises(APIError) as ei:
            client.api.create_plugin(name, fixture_dir(workdir, "basic"))
        assert api_error(ei) == (409, "plugin pytest/low:latest already exists")

    # a gzip-compressed context is a berth extension: dockerd cannot read it (see
    # target-*-create-gzip.scn), so it is not exercised here
    assert len(client.plugins.list()) == 1


def test_plugin_get_missing(client):
    with pytest.raises(NotFound) as ei:
        client.plugins.get("nosuch")
    assert api_error(ei) == (404, 'plugin "nosuch" not found')
    with pytest.raises(NotFound) as ei:
        client.api.remove_plugin("nosuch/x:1")
    assert api_error(ei) == (404, 'plugin "nosuch/x:1" not found')


def test_plugin_configure(client, workdir):
    p = client.plugins.create("pytest/settable", fixture_dir(workdir, "settable"))
    assert p.settings["Env"] == ["DEBUG=0"]

    assert p.configure({"DEBUG": "1"}) is None
    assert p.settings["Env"] == ["DEBUG=1"]             # configure() reloads
    assert client.plugins.get("pytest/settable").settings["Env"] == ["DEBUG=1"]

    p.configure({"pmount1.source": "bar"})
    assert p.settings["Mounts"][0]["Source"] == "bar"

    # TestPluginSet's refusals: 20.10 answers them with untyped errors, hence 500
    with pytest.raises(APIError) as ei:
        p.configure({"pmount2.source": "bar2"})
    assert api_error(ei) == (500, "Plugin config has no mount source")
    with pytest.raises(APIError) as ei:
        p.configure({"pdev2.path": "/dev/bar2"})
    assert api_error(ei) == (500, "Plugin config has no device path")
    with pytest.raises(APIError) as ei:
        p.configure({"NOSUCH": "1"})
    assert api_error(ei) == (500, 'setting "NOSUCH" not found in the plugin configuration')
    p.reload()
    assert p.settings["Env"] == ["DEBUG=1"]
    assert [m.get("Source") for m in p.settings["Mounts"]] == ["bar", None]

    with pytest.raises(NotFound) as ei:
        client.api.configure_plugin("nosuch", {"A": "1"})
    assert api_error(ei) == (404, 'plugin "nosuch" not found')


def test_plugin_enable_disable_and_its_volumes(client, daemon, workdir):
    p = client.plugins.create("pytest/td", runnable_plugin_dir(daemon, workdir, "testdriver"))
    driver = "pytest/td:latest"

    # a disabled plugin is no volume driver
    with pytest.raises(APIError) as ei:
        client.volumes.create("pv0", driver=driver)
    assert api_error(ei) == (409, f"create pv0: error looking up volume plugin {driver}: "
                                  f"plugin {driver} found but disabled")

    assert p.enable(timeout=30) is None
    assert p.enabled is True                           # enable() reloads
    assert client.plugins.get(p.id).enabled is True

    with pytest.raises(APIError) as ei:
        p.enable()
    assert api_error(ei) == (409, f"plugin already enabled: plugin {driver} is enabled")

    v = client.volumes.create("pv1", driver=driver, driver_opts={"opt1": "x"}, labels={"k": "v"})
    assert v.attrs["Driver"] == driver
    assert v.attrs["Labels"] == {"k": "v"}
    assert v.attrs["Options"] == {"opt1": "x"}
    # the tag may be left out; the volume's driver is still the full name
    assert client.volumes.create("pv2", driver="pytest/td").attrs["Driver"] == driver

    got = client.volumes.get("pv1")
    assert got.attrs["Mountpoint"] == "/data/pv1"       # raw from VolumeDriver.Get
    assert got.attrs["Status"] == {"Mounts": 0, "Opts": {"opt1": "x"}}
    assert got.attrs["Scope"] == "local"

    listed = {x.name: x.attrs for x in client.volumes.list(filters={"driver": driver})}
    assert sorted(listed) == ["pv1", "pv2"]
    # list mountpoints are mapped into the host: <data-root>/plugins/<id>/propagated-mount/...
    assert listed["pv1"]["Mountpoint"] == f"{daemon.data_root}/plugins/{p.id}/propagated-mount/pv1"
    assert "Status" not in listed["pv1"]
    assert client.volumes.list(filters={"driver": "pytest/td"}) == []
    assert client.volumes.list(filters={"driver": "local"}) == []

    # in use while a volume exists (TestPluginActive)
    with pytest.raises(APIError) as ei:
        p.disable()
    assert api_error(ei) == (409, f"plugin {driver} is in use")
    with pytest.raises(APIError) as ei:
        p.remove()
    assert api_error(ei) == (409, f"plugin {driver} is in use")   # checked before "is enabled"
    with pytest.raises(APIError) as ei:
        p.configure({"TEST_SLOW_CALL_MS": "1"})
    assert api_error(ei) == (500, "cannot set on an active plugin, disable plugin before setting")

    # prune (API 1.41) never removes plugin volumes
    assert client.volumes.prune() == {"VolumesDeleted": [], "SpaceReclaimed": 0}

    got.remove()
    client.volumes.get("pv2").remove(force=True)
    assert client.volumes.list() == []
    with pytest.raises(APIError) as ei:
        p.remove()
    assert api_error(ei) == (409, f"plugin {driver} is enabled")
    assert p.disable() is None
    assert p.enabled is False
    assert p.remove() is True
    assert client.plugins.list() == []


def test_plugin_volume_name_conflicts(client, daemon, workdir):
    p = client.plugins.create("pytest/td2", runnable_plugin_dir(daemon, workdir, "testdriver"))
    p.enable(timeout=30)
    driver = "pytest/td2:latest"

    client.volumes.create("loc1")
    with pytest.raises(APIError) as ei:
        client.volumes.create("loc1", driver=driver)
    assert api_error(ei) == (409, "create loc1: driver 'local' already has volume 'loc1': "
                                  "volume name must be unique")
    client.volumes.create("pv1", driver=driver)
    with pytest.raises(APIError) as ei:
        client.volumes.create("pv1", driver="local")
    assert api_error(ei) == (409, f"create pv1: driver '{driver}' already has volume 'pv1': "
                                  "volume name must be unique")

    # the plugin's own error: 500 with its Err text
    with pytest.raises(APIError) as ei:
        client.volumes.create("bad1", driver=driver, driver_opts={"error": "boom"})
    assert api_error(ei) == (500, "create bad1: VolumeDriver.Create: boom")

    assert sorted((v.name, v.attrs["Driver"]) for v in client.volumes.list()) == \
        [("loc1", "local"), ("pv1", driver)]

    # with its volume gone, remove -f takes the enabled plugin
    client.volumes.get("pv1").remove()
    assert p.remove(force=True) is True
    assert client.plugins.list() == []
    assert names(client.volumes.list()) == ["loc1"]


def test_create_without_driver_returns_the_existing_plugin_volume(client, daemon, workdir):
    # docker-py sends no Driver when none is given (the CLI always sends "local"): 20.10 then
    # skips the driver comparison and returns the existing volume, whatever its driver
    p = client.plugins.create("pytest/td3", runnable_plugin_dir(daemon, workdir, "testdriver"))
    p.enable(timeout=30)
    client.volumes.create("pv1", driver="pytest/td3:latest", labels={"a": "b"})
    again = client.volumes.create("pv1")
    assert again.attrs["Driver"] == "pytest/td3:latest"
    assert again.attrs["Labels"] == {"a": "b"}
    assert [(v.name, v.attrs["Driver"]) for v in client.volumes.list()] == \
        [("pv1", "pytest/td3:latest")]
    # with driver="local" it is a conflict
    with pytest.raises(APIError) as ei:
        client.volumes.create("pv1", driver="local")
    assert api_error(ei) == (409, "create pv1: driver 'pytest/td3:latest' already has volume "
                                  "'pv1': volume name must be unique")
