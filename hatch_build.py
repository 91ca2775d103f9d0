"""Wheel build hook: the wheel carries the Go library's source, so that a sidecar can be built
against it with nothing but the Go module proxy (docs/cli.md, "Where the Go library comes from").

The module's go.mod, go.sum and the package sources (tests and test data aside) go into the wheel
as ``trio_gotask/go/``, where ``trio_gotask._golib.find_library`` looks first. Files are listed one
by one, not as a folder, so that nothing else on the builder's disk rides along.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class GoLibraryHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return  # an editable install finds the library in the source tree
        go = Path(self.root) / "go"
        sources = [go / "go.mod", go / "go.sum", *sorted((go / "gotask").rglob("*.go"))]
        for path in sources:
            relative = path.relative_to(go)
            if path.name.endswith("_test.go") or "testdata" in relative.parts:
                continue
            build_data["force_include"][str(path)] = f"trio_gotask/go/{relative.as_posix()}"
