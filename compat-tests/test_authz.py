"""Authorization plugins: the scenarios of authz/ against a daemon of their own.

* `authz/chain/*.scn` run against a daemon started with the chain `--authorization-plugin
  <policy> --authorization-plugin <audit>`: two legacy plugins, the project's test plugin in its
  AuthZ mode (policy with `harness.AUTHZ_POLICY_RULES`, audit allowing everything), started
  before the daemon. `{var:POLICY}`/`{var:AUDIT}` name them, `{var:POLICYLOG}`/`{var:AUDITLOG}`
  are their call logs (every field they received, one per line).
* `authz/reload/*.scn` run against a daemon started without a chain, whose configuration file
  (`{daemonconfig}`) a scenario may edit and reload with `kill -HUP {daemonpid}`; the file is
  emptied (and reloaded) before each scenario.
"""

import os
import signal
import time

import pytest

import harness
from conftest import run_scenario_file, started

AUTHZ_DIR = harness.HERE / "authz"
CHAIN = sorted((AUTHZ_DIR / "chain").glob("*.scn"))
RELOAD = sorted((AUTHZ_DIR / "reload").glob("*.scn"))


@pytest.fixture(scope="module")
def chain_daemon(target_name):
    yield from started(lambda: harness.make_authz_chain_daemon(target_name))


@pytest.fixture(scope="module")
def reload_daemon(target_name):
    yield from started(lambda: harness.make_daemon(target_name))


@pytest.mark.parametrize("path", CHAIN, ids=[p.stem for p in CHAIN])
def test_chain(path, target_name, request):
    run_scenario_file(lambda: request.getfixturevalue("chain_daemon"), path, target_name)


@pytest.mark.parametrize("path", RELOAD, ids=[p.stem for p in RELOAD])
def test_reload(path, target_name, request):
    def daemon():
        d = request.getfixturevalue("reload_daemon")
        _reload_without_chain(d)
        return d
    run_scenario_file(daemon, path, target_name)


def _reload_without_chain(daemon, timeout: float = 15.0) -> None:
    """Every reload scenario starts without a chain: an empty configuration file, reloaded
    (both daemons log `Reloaded configuration` once a reload is done)."""
    def reloads() -> int:
        with open(daemon.log_path, errors="replace") as f:
            return f.read().count("Reloaded configuration")
    with open(daemon.config_file, "w") as f:
        f.write("{}\n")
    before = reloads()
    os.kill(daemon.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while reloads() == before:
        if time.monotonic() > deadline:
            pytest.fail(f"{daemon.name} did not reload its configuration\n{daemon.log_tail()}",
                        pytrace=False)
        time.sleep(0.05)
