"""One pytest case per scenario file in scenarios/ (see README.md)."""

import pytest

import harness
from conftest import run_scenario_file

SCENARIOS = harness.discover_scenarios()


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path, target_name, request):
    # the session daemon is started only for a scenario that runs on this target
    run_scenario_file(lambda: request.getfixturevalue("daemon"), path, target_name)
