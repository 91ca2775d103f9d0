"""Which build of the sans-I/O core the tests run: the .py files, or the mypyc-compiled modules
that `nox -s compiled` builds (docs/performance.md, "The compiled core")."""

from __future__ import annotations

import os
import types

import pytest

from trio_gotask import _goridge, _protocol, _wire

pytestmark = pytest.mark.fast  # no process: nox -s fast

CORE = [_wire, _protocol, _goridge]


@pytest.mark.parametrize("module", CORE, ids=lambda m: m.__name__)
def test_the_core_is_the_build_this_session_asked_for(module: types.ModuleType) -> None:
    compiled = os.environ.get("TRIO_GOTASK_EXPECT_COMPILED") == "1"
    path = module.__file__ or ""
    if compiled:
        assert path.endswith(".so"), f"{module.__name__} is {path}, not the compiled module"
    else:
        assert path.endswith(".py"), f"{module.__name__} is {path}: a compiled module shadows the source"
