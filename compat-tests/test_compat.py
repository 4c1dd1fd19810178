"""One pytest case per scenario file in scenarios/ and CLI its `# cli:` header names (see
README.md): `volume-create` runs it with the default CLI (28.x), `volume-create@20.10` with
Debian's 20.10."""

import pytest

import harness

SCENARIOS = harness.discover_scenarios()


def _cases():
    for path in SCENARIOS:
        try:
            clis = harness.parse_scenario(path).clis
        except harness.HarnessError:
            clis = [harness.DEFAULT_CLI]  # reported by the test itself
        for cli in clis:
            yield pytest.param(path, cli,
                               id=path.stem if cli == harness.DEFAULT_CLI else f"{path.stem}@{cli}")


@pytest.mark.parametrize("path, cli", list(_cases()))
def test_scenario(path, cli, target_name, request):
    try:
        scenario = harness.parse_scenario(path)
    except harness.HarnessError as e:
        pytest.fail(f"scenario file error: {e}", pytrace=False)
    if not scenario.runs_on(target_name):
        pytest.skip(f"only for target(s) {', '.join(scenario.targets)}")
    daemon = request.getfixturevalue("daemon")
    try:
        failures = harness.run_scenario(daemon, scenario, cli=cli)
    except harness.HarnessError as e:
        pytest.fail(str(e), pytrace=False)
    if failures:
        pytest.fail(f"{scenario.title} (CLI {cli})\n" + "\n\n".join(failures), pytrace=False)
