"""Authorization plugins: the scenarios of authz/ against a daemon of their own.

* `authz/chain/*.scn` run against a daemon started with the chain `--authorization-plugin
  <policy> --authorization-plugin <audit>`: two legacy plugins, the project's test plugin in its
  AuthZ mode (policy with `harness.AUTHZ_POLICY_RULES`, audit allowing everything), started
  before the daemon. `{var:POLICY}`/`{var:AUDIT}` name them, `{var:POLICYLOG}`/`{var:AUDITLOG}` are their
  call logs (every field they received, one per line).
* `authz/reload/*.scn` run against a daemon started without a chain, whose configuration file
  (`{daemonconfig}`) a scenario may edit and reload with `kill -HUP {daemonpid}`; the file is
  emptied (and reloaded) before each scenario.
"""

import os
import signal
import time

import pytest

import harness

AUTHZ_DIR = harness.HERE / "authz"
CHAIN = sorted((AUTHZ_DIR / "chain").glob("*.scn"))
RELOAD = sorted((AUTHZ_DIR / "reload").glob("*.scn"))

def _daemon(target_name: str, chain: bool):
    try:
        d = harness.make_authz_chain_daemon(target_name) if chain else harness.make_daemon(target_name)
        d.start()
    except harness.HarnessError as e:
        pytest.fail(str(e), pytrace=False)
    return d


@pytest.fixture(scope="module")
def chain_daemon(target_name):
    d = _daemon(target_name, chain=True)
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def reload_daemon(target_name):
    d = _daemon(target_name, chain=False)
    try:
        yield d
    finally:
        d.stop()


def _run(daemon, path, target_name):
    try:
        scenario = harness.parse_scenario(path)
    except harness.HarnessError as e:
        pytest.fail(f"scenario file error: {e}", pytrace=False)
    if not scenario.runs_on(target_name):
        pytest.skip(f"only for target(s) {', '.join(scenario.targets)}")
    failures = harness.run_scenario(daemon, scenario)
    if failures:
        pytest.fail(f"{scenario.title}\n" + "\n\n".join(failures), pytrace=False)


@pytest.mark.parametrize("path", CHAIN, ids=[p.stem for p in CHAIN])
def test_chain(path, target_name, request):
    if not harness.parse_scenario(path).runs_on(target_name):
        pytest.skip(f"not for target {target_name}")
    _run(request.getfixturevalue("chain_daemon"), path, target_name)


@pytest.mark.parametrize("path", RELOAD, ids=[p.stem for p in RELOAD])
def test_reload(path, target_name, request):
    if not harness.parse_scenario(path).runs_on(target_name):
        pytest.skip(f"not for target {target_name}")
    daemon = request.getfixturevalue("reload_daemon")
    _reload_without_chain(daemon)
    _run(daemon, path, target_name)


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
