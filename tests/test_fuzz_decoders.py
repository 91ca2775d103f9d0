"""The fuzzer of `nox -s fuzz` (tests/fuzz_decoders.py) runs: a few examples of each target, so
that the harness cannot rot between long runs."""

from __future__ import annotations

import logging

import fuzz_decoders
import pytest

pytestmark = pytest.mark.fast  # no process: nox -s fast


@pytest.mark.parametrize("target", sorted(fuzz_decoders.TARGETS))
def test_the_fuzzer_runs(target: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_gotask.go")  # $log records are logged in full
    fuzz_decoders.run_round(target, seed=22, examples=30)
