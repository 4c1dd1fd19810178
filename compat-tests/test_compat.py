"""One pytest case per scenario file in scenarios/ and CLI its `# cli:` header names (see
README.md): `volume-create` runs it with the default CLI (28.x), `volume-create@20.10` with
Debian's 20.10."""

import pytest

import harness
from conftest import run_scenario_file

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
    # the session daemon is started only for a scenario that runs on this target
    run_scenario_file(lambda: request.getfixturevalue("daemon"), path, target_name, cli=cli)
