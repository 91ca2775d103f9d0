"""Sphinx configuration of the docs site: `nox -s docs` builds it into build/docs/html."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # autodoc imports this tree's trio_gotask, not an installed copy

project = "trio-gotask"
author = "the trio-gotask authors"
copyright = "the trio-gotask authors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinxcontrib.mermaid",
]

# The pages are plain markdown that reads well on GitHub too; MyST turns it into the site.
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# `[text](page.md#a-heading)` links resolve against GitHub-style slugs of headings down to ####.
myst_heading_anchors = 4
# A ```mermaid fence is a diagram both on GitHub and here, drawn in the reader's browser: the build
# needs no drawing tool, and without mermaid.js the diagram's text still reads as text.
myst_fence_as_directive = ["mermaid"]
mermaid_height = "auto"  # the diagram's own proportions, not squeezed into 500 px

# Docstrings write `GoTask` for a cross-reference; nitpicky mode makes one that points nowhere an
# error, so the API reference cannot link to a name that does not exist.
default_role = "py:obj"
nitpicky = True
# Trio's and the standard library's names stay unlinked: linking them would take their inventories,
# which the build (offline in CI) cannot fetch.
nitpick_ignore_regex = [(r"py:.*", r"(trio|ssl|os|collections\.abc|contextlib|pathlib)\..*")]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"

html_theme = "furo"
html_title = "trio-gotask"

# `nox -s docs` runs the linkcheck builder after the HTML build, which has resolved every link
# between pages already; web links are checked only on request (`nox -s docs -- web`), since CI
# has no network.
linkcheck_ignore = [] if os.environ.get("TRIO_GOTASK_DOCS_CHECK_WEB") else [r"https?://"]
