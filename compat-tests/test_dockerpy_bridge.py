"""docker-py's network calls that need no containers, on the built-in `bridge` driver.

The same `--target` as the scenarios (conftest.py); every test starts from the scenarios' clean
state (no networks but host and none). Expectations are dockerd 20.10's with `--iptables=false
--bridge=none` (API 1.41): prove them with
`python3 -m pytest -q compat-tests/test_dockerpy_bridge.py --target dockerd`.
"""

from __future__ import annotations

import re

import pytest

import harness
from test_dockerpy import api_error, client  # noqa: F401

docker = pytest.importorskip("docker", reason="pip install -r compat-tests/requirements.txt")
from docker.errors import APIError, NotFound  # noqa: E402
from docker.types import IPAMConfig, IPAMPool  # noqa: E402

HEX64 = re.compile(r"[0-9a-f]{64}")


@pytest.fixture(autouse=True)
def clean(daemon, client):  # noqa: F811 - pytest fixtures by name
    notes = harness.reset_state(daemon)
    assert not [n for n in notes if "left over" in n], notes
    yield
    for n in client.networks.list():
        if n.name not in ("host", "none"):
            n.remove()


def pool(subnet: str, **more) -> IPAMConfig:
    return IPAMConfig(pool_configs=[IPAMPool(subnet=subnet, **more)])


def test_default_driver_is_bridge(client):
    net = client.networks.create("pybr1")
    assert HEX64.fullmatch(net.id)
    net.reload()
    attrs = net.attrs
    assert (attrs["Driver"], attrs["Scope"], attrs["Internal"]) == ("bridge", "local", False)
    assert attrs["IPAM"]["Driver"] == "default" and len(attrs["IPAM"]["Config"]) == 1
    assert attrs["Options"] == {} and attrs["Containers"] == {}
    assert [n.name for n in client.networks.list(filters={"driver": "bridge"})] == ["pybr1"]
    net.remove()
    with pytest.raises(NotFound) as e:
        client.networks.get("pybr1")
    assert api_error(e) == (404, "network pybr1 not found")


def test_ipam_config_labels_options_are_echoed(client):
    net = client.networks.create(
        "pybr2", driver="bridge", labels={"tier": "web"}, internal=True, attachable=True,
        options={"com.docker.network.driver.mtu": "1400"},
        ipam=pool("10.150.0.0/24", gateway="10.150.0.1", iprange="10.150.0.128/25",
                  aux_addresses={"host1": "10.150.0.5"}))
    net.reload()
    attrs = net.attrs
    assert attrs["IPAM"] == {"Driver": "default", "Options": None, "Config": [
        {"Subnet": "10.150.0.0/24", "IPRange": "10.150.0.128/25", "Gateway": "10.150.0.1",
         "AuxiliaryAddresses": {"host1": "10.150.0.5"}}]}
    assert (attrs["Internal"], attrs["Attachable"]) == (True, True)
    assert attrs["Labels"] == {"tier": "web"}
    assert attrs["Options"] == {"com.docker.network.driver.mtu": "1400"}
    assert [n.name for n in client.networks.list(filters={"label": "tier=web"})] == ["pybr2"]


def test_ipv6(client):
    net = client.networks.create("pybr3", enable_ipv6=True, ipam=IPAMConfig(pool_configs=[
        IPAMPool(subnet="10.151.0.0/24"), IPAMPool(subnet="fd00:151::/64")]))
    net.reload()
    assert net.attrs["EnableIPv6"] is True
    assert net.attrs["IPAM"]["Config"] == [
        {"Subnet": "10.151.0.0/24"}, {"Subnet": "fd00:151::/64"}]


def test_duplicates_and_errors(client):
    client.networks.create("pybr4", ipam=pool("10.152.0.0/24"))
    with pytest.raises(APIError) as e:
        client.networks.create("pybr4", check_duplicate=True)
    assert api_error(e) == (409, "network with name pybr4 already exists")
    with pytest.raises(APIError) as e:
        client.networks.create("pybr5", ipam=pool("10.152.0.0/16"))
    assert api_error(e) == (403, "Pool overlaps with other one on this address space")
    with pytest.raises(APIError) as e:
        client.networks.create("pybr5", driver="host")
    assert api_error(e) == (403, 'only one instance of "host" network is allowed')
    with pytest.raises(APIError) as e:
        client.networks.create("pybr5", options={"com.docker.network.driver.mtu": "x"})
    assert api_error(e) == (500, 'failed to parse com.docker.network.driver.mtu value: x '
                                 '(strconv.Atoi: parsing "x": invalid syntax)')


def test_prune(client):
    client.networks.create("pybr6", labels={"keep": "1"}, ipam=pool("10.153.0.0/24"))
    client.networks.create("pybr7", ipam=pool("10.153.1.0/24"))
    assert client.networks.prune(filters={"label!": "keep"}) == {"NetworksDeleted": ["pybr7"]}
    assert client.networks.prune() == {"NetworksDeleted": ["pybr6"]}
    assert client.networks.prune() == {"NetworksDeleted": None}
