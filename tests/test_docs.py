"""The docs that are generated from the code must match it."""

from __future__ import annotations

import fault_table


def test_fault_table_is_current() -> None:
    doc = fault_table.DOC.read_text()
    assert fault_table.render(doc) == doc, "run: python tests/fault_table.py --write"
