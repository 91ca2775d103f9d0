"""The examples run as a user runs them, against sidecars built from their own folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )


def test_host_calls_example() -> None:
    done = run_example(EXAMPLES / "host_calls" / "orders.py")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "total: 2.50 EUR",
        "refused: Orders.Total: Prices.Lookup: KeyError: 'durian'",
    ]
    for item, price in (("apple", 0.5), ("pear", 0.75), ("fig", 1.25)):
        assert f"trio_gotask.go.orders INFO: priced item='{item}' price={price} currency='EUR'" in done.stderr
