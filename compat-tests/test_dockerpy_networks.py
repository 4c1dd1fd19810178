"""docker-py networks against the session daemon, through the project's test network plugin.

The same `--target` as the scenarios (conftest.py); every test starts from the scenarios' clean
state (no networks but host and none, no plugins) with the `netdriver` test plugin created and
enabled as `pytest/nd`. Expectations are dockerd 20.10's (API 1.41): prove them with
`python3 -m pytest -q compat-tests/test_dockerpy_networks.py --target dockerd`.

docker-py quirks that show here (the same on every target):
* `networks.create()` sends `CheckDuplicate` only when asked (`check_duplicate=True`), so a
  second network of the same name is created unless it is.
* `Network.containers` looks every joined consumer up as a container; with none joined it is
  empty, which is all a daemon without containers can show.
"""

from __future__ import annotations

import re

import pytest

import harness
from test_dockerpy import api_error, client, runnable_plugin_dir, workdir  # noqa: F401

docker = pytest.importorskip("docker", reason="pip install -r compat-tests/requirements.txt")
from docker.errors import APIError, NotFound  # noqa: E402
from docker.types import IPAMConfig, IPAMPool  # noqa: E402

HEX64 = re.compile(r"[0-9a-f]{64}")
DRIVER = "pytest/nd:latest"


@pytest.fixture(autouse=True)
def plugin(daemon, client, workdir):  # noqa: F811 - pytest fixtures by name
    notes = harness.reset_state(daemon)
    assert not [n for n in notes if "left over" in n], notes
    p = client.plugins.create("pytest/nd", runnable_plugin_dir(daemon, workdir, "netdriver"))
    p.enable(timeout=30)
    yield p
    for n in client.networks.list():
        if n.name not in ("host", "none"):
            n.remove()
    p.reload()
    p.disable()


def ipam(subnet: str, **pool) -> IPAMConfig:
    return IPAMConfig(pool_configs=[IPAMPool(subnet=subnet, **pool)])


def test_create_inspect_list_remove(client):
    net = client.networks.create(
        "pynet1", driver=DRIVER, options={"mtu": "1400"}, labels={"team": "a"},
        ipam=ipam("10.130.0.0/24", gateway="10.130.0.1", iprange="10.130.0.128/25",
                  aux_addresses={"host1": "10.130.0.5"}))
    assert HEX64.fullmatch(net.id)
    net.reload()
    attrs = net.attrs
    assert attrs["Driver"] == DRIVER and attrs["Scope"] == "local"
    assert attrs["IPAM"] == {"Driver": "default", "Options": None, "Config": [
        {"Subnet": "10.130.0.0/24", "IPRange": "10.130.0.128/25", "Gateway": "10.130.0.1",
         "AuxiliaryAddresses": {"host1": "10.130.0.5"}}]}
    assert attrs["Options"] == {"mtu": "1400"} and attrs["Labels"] == {"team": "a"}
    assert attrs["Containers"] == {}
    assert client.networks.get(net.id[:12]).name == "pynet1"
    assert sorted(n.name for n in client.networks.list()) == ["host", "none", "pynet1"]
    assert [n.name for n in client.networks.list(filters={"label": "team=a"})] == ["pynet1"]
    assert [n.name for n in client.networks.list(names=["pynet1"])] == ["pynet1"]
    assert [n.name for n in client.networks.list(filters={"type": "builtin"})] in (
        ["host", "none"], ["none", "host"])
    assert client.networks.list(filters={"driver": "pytest/nd"}) == []
    net.remove()
    with pytest.raises(NotFound) as e:
        client.networks.get("pynet1")
    assert api_error(e) == (404, "network pynet1 not found")


def test_plugin_ipam_and_duplicates(client, plugin):
    net = client.networks.create("pynet2", driver=DRIVER, ipam=IPAMConfig(
        driver=DRIVER, options={"pool": "x"}))
    net.reload()
    assert net.attrs["IPAM"] == {"Driver": DRIVER, "Options": {"pool": "x"}, "Config": [
        {"Subnet": "10.90.0.0/24", "Gateway": "10.90.0.1"}]}
    with pytest.raises(APIError) as e:
        client.networks.create("pynet2", driver=DRIVER, check_duplicate=True)
    assert api_error(e) == (409, "network with name pynet2 already exists")
    with pytest.raises(APIError) as e:
        plugin.disable()
    assert api_error(e) == (409, "plugin pytest/nd:latest is in use")


def test_create_errors(client):
    with pytest.raises(APIError) as e:
        client.networks.create("host", driver=DRIVER)
    assert api_error(e) == (403, "operation is not permitted on predefined host network ")
    client.networks.create("pynet3", driver=DRIVER, ipam=ipam("10.131.0.0/24"))
    with pytest.raises(APIError) as e:
        client.networks.create("pynet4", driver=DRIVER, ipam=ipam("10.131.0.0/25"))
    assert api_error(e) == (403, "Pool overlaps with other one on this address space")
    with pytest.raises(APIError) as e:
        client.networks.create("pynet4", driver=DRIVER,
                               ipam=ipam("10.132.0.0/24", gateway="10.133.0.1"))
    assert api_error(e) == (
        500, "failed to allocate gateway (10.133.0.1): Requested address is out of range")
    with pytest.raises(APIError) as e:
        client.networks.get("host").remove()
    assert api_error(e) == (403, "host is a pre-defined network and cannot be removed")


def test_prune_with_label_filters(client):
    for i, team in enumerate(("a", "b")):
        client.networks.create(f"pyprune{i}", driver=DRIVER, labels={"team": team},
                               ipam=ipam(f"10.134.{i}.0/24"))
    client.networks.create("pyprune2", driver=DRIVER, ipam=ipam("10.134.2.0/24"))
    assert client.networks.prune(filters={"label": "team=a"}) == {
        "NetworksDeleted": ["pyprune0"]}
    assert client.networks.prune(filters={"label!": "team"}) == {
        "NetworksDeleted": ["pyprune2"]}
    assert sorted(n.name for n in client.networks.list()) == ["host", "none", "pyprune1"]
    assert sorted(client.networks.prune()["NetworksDeleted"]) == ["pyprune1"]
    assert client.networks.prune() == {"NetworksDeleted": None}
