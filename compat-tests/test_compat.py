"""One pytest case per scenario file in scenarios/ (see README.md)."""

import pytest

import harness

SCENARIOS = harness.discover_scenarios()


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path, target_name, request):
    try:
        scenario = harness.parse_scenario(path)
    except harness.HarnessError as e:
        pytest.fail(f"scenario file error: {e}", pytrace=False)
    if not scenario.runs_on(target_name):
        pytest.skip(f"only for target(s) {', '.join(scenario.targets)}")
    daemon = request.getfixturevalue("daemon")
    failures = harness.run_scenario(daemon, scenario)
    if failures:
        pytest.fail(f"{scenario.title}\n" + "\n\n".join(failures), pytrace=False)
