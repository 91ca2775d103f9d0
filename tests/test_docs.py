"""The docs that are generated from the code must match it."""

from __future__ import annotations

import re
from pathlib import Path

import fault_table
import pytest

import trio_gotask
import trio_gotask.stubs

pytestmark = pytest.mark.fast  # no process: nox -s fast

ROOT = Path(__file__).resolve().parent.parent


def test_fault_table_is_current() -> None:
    doc = fault_table.DOC.read_text()
    assert fault_table.render(doc) == doc, "run: python tests/fault_table.py --write"


def quick_start(text: str) -> list[str]:
    """The lines of the first ```sh block after a "## Quick start" heading."""
    section = text.split("\n## Quick start\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return block.splitlines()


def test_the_docs_front_page_shows_the_readmes_quick_start() -> None:
    readme = quick_start((ROOT / "README.md").read_text())
    assert any("# runs every test" in line for line in readme), ".ci/run runs the line marked so"
    assert quick_start((ROOT / "docs" / "index.md").read_text()) == readme


def test_the_api_reference_documents_every_public_name() -> None:
    page = (ROOT / "docs" / "api.md").read_text()
    documented = set(
        re.findall(r"^\.\. (?:autofunction|autoclass|autoexception|data):: ([\w.]+)", page, re.M)
    )
    # The plugin's one function a conftest.py calls (its fixture and option are in testing.md).
    plugin = {"trio_gotask.pytest_plugin.gotask_fixture"}
    stubs = {f"trio_gotask.stubs.{name}" for name in trio_gotask.stubs.__all__}  # for generated code
    assert documented == set(trio_gotask.__all__) | plugin | stubs
