"""Markdown tables: the one renderer behind the level, variant and trial tables."""
from __future__ import annotations

from typing import Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """Rows of already formatted cells as a Markdown table; `align` has one letter per column
    ('l' left, 'r' right, anything else plain)."""
    rule = {"l": ":---", "r": "---:"}
    marks = [rule.get(align[i] if i < len(align) else "", "---") for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
