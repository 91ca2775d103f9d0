from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, settings

from trio_gotask import build_sidecar

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "go" / "example"

# No outcome may depend on the machine's speed: hypothesis puts no deadline on an example and does
# not time how long its data takes to make. A failure prints the blob that replays it.
settings.register_profile(
    "trio-gotask", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("trio-gotask")


def pytest_report_header(config: pytest.Config) -> str:
    seed = config.getoption("hypothesis_seed", None)
    if seed is None:
        return "hypothesis seed: a new one each test (a failure prints the blob that replays it)"
    return f"hypothesis seed: {seed} (replay with --hypothesis-seed={seed}, or HYPOTHESIS_SEED={seed} nox)"


@pytest.fixture(scope="session")
def sidecar() -> str:
    """The example sidecar, built once per test run (and cached across runs by its sources)."""
    return str(trio.run(build_sidecar, EXAMPLE))


@pytest.fixture(autouse=True)
def _fast_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test marked fast (`nox -s fast`) is deterministic by construction: memory streams, fake
    sidecars, the autojump clock. Starting a process would make it neither fast nor that."""
    if request.node.get_closest_marker("fast") is None:
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{request.node.nodeid} is marked fast but starts a process: {args[:1]}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
