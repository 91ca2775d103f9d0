"""The tutorial (docs/tutorial.md) followed as a new user follows it: its command makes the sidecar's
Go module with the installed package (`trio-gotask new`), the page's main.go replaces the one
written, and its scripts print what the page says they print. The page shows these very files
(docs/tutorial/), so what it shows is what ran here. `nox -s install` does the same from a wheel in
a fresh venv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the tutorial's Go module built and its scripts run: the newest Python only

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out as the tutorial has it: the sidecar's module made by the tutorial's
    command, its main.go replaced by the page's, and the scripts."""
    work = tmp_path_factory.mktemp("tutorial")
    # The installed package's command, as an activated venv has it.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    made = subprocess.run(
        ["bash", "-euo", "pipefail", str(TUTORIAL / "new.sh")],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PATH": path},
    )
    assert made.returncode == 0, made.stderr
    shutil.copy(TUTORIAL / "greeter" / "main.go", work / "greeter")
    for script in TUTORIAL.glob("*.py"):
        shutil.copy(script, work)
    return work


def test_the_sidecar_is_a_module_that_vets_clean(workspace: Path) -> None:
    vet = subprocess.run(["go", "vet", "./..."], cwd=workspace / "greeter", capture_output=True, text=True)
    assert vet.returncode == 0, vet.stderr
    unformatted = subprocess.run(
        ["gofmt", "-l", "."], cwd=workspace / "greeter", capture_output=True, text=True
    )
    assert unformatted.stdout == "", unformatted.stderr


@pytest.mark.parametrize("script", ["first_call", "first_timeout"])
def test_each_step_prints_what_the_page_shows(workspace: Path, script: str) -> None:
    done = subprocess.run(
        [sys.executable, f"{script}.py"],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == (TUTORIAL / f"{script}.txt").read_text()


def test_the_page_shows_these_files() -> None:
    page = (ROOT / "docs" / "tutorial.md").read_text()
    shown = [
        "greeter/main.go",
        "new.sh",
        "first_call.py",
        "first_call.txt",
        "first_timeout.py",
        "first_timeout.txt",
    ]
    for name in shown:
        assert f"{{literalinclude}} tutorial/{name}\n" in page, name
