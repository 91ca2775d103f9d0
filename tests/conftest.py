from __future__ import annotations

from pathlib import Path

import pytest
import trio

from trio_gotask import build_sidecar

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "go" / "example"


@pytest.fixture(scope="session")
def sidecar() -> str:
    """The example sidecar, built once per test run (and cached across runs by its sources)."""
    return str(trio.run(build_sidecar, EXAMPLE))
