"""pytest wiring for the compatibility harness: `--target berth|dockerd` and the session daemon."""

import signal
import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def _interrupted(signum, frame):
    raise KeyboardInterrupt


# SIGTERM (scripts/test.sh stopping a background run when another stage failed) ends the session
# as Ctrl-C does, so the daemons, containerd and mounts the fixtures made are torn down.
signal.signal(signal.SIGTERM, _interrupted)


def pytest_addoption(parser):
    parser.addoption("--target", action="store", default=None, choices=harness.TARGETS,
                     help="daemon to run the compatibility scenarios against "
                          "(default: $BERTH_COMPAT_TARGET or berth)")


@pytest.fixture(scope="session")
def target_name(request) -> str:
    return harness.selected_target(request.config.getoption("--target"))


def started(make_daemon):
    """A fixture's daemon: made by `make_daemon()` and started, stopped when the fixture ends."""
    d = None
    try:
        d = make_daemon()
        d.start()
    except harness.SetupError as e:
        if d is not None:
            d.stop()
        pytest.fail(str(e), pytrace=False)
    try:
        yield d
    finally:
        d.stop()
        if d.leftovers:
            warnings.warn(f"{d.name} left {len(d.leftovers)} process(es) running after it stopped "
                          "(killed by the harness): " + "; ".join(d.leftovers))


@pytest.fixture(scope="session")
def daemon(target_name):
    """One daemon per pytest session, started lazily by the first scenario that needs it."""
    yield from started(lambda: harness.make_daemon(target_name))


def pytest_report_header(config):
    return f"berth compat target: {harness.selected_target(config.getoption('--target'))}"


def run_scenario_file(daemon, path, target_name: str, cli: str = harness.DEFAULT_CLI) -> None:
    """Runs one scenario file against `daemon` with docker CLI `cli` as a pytest case (skipped
    on other targets)."""
    try:
        scenario = harness.parse_scenario(path)
    except harness.HarnessError as e:
        pytest.fail(f"scenario file error: {e}", pytrace=False)
    if not scenario.runs_on(target_name):
        pytest.skip(scenario.skip_reason(target_name))
    try:
        failures = harness.run_scenario(daemon() if callable(daemon) else daemon, scenario,
                                        cli=cli)
    except harness.HarnessError as e:
        pytest.fail(str(e), pytrace=False)
    if failures:
        pytest.fail(f"{scenario.title} (CLI {cli})\n" + "\n\n".join(failures), pytrace=False)
