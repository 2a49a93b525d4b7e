"""Rows of text cells as a table: aligned plain text, Markdown, or an HTML ``<table>``.

The analysis produces tables as ``(header, rows)`` of strings (e.g.
:func:`raysweep.analysis.accuracy_rows`, :func:`raysweep.analysis.energy_rows`);
:func:`format_table` renders them for a terminal, a notebook or the HTML report. HTML output
escapes every cell and carries no style of its own (``class="data"``; the report styles it).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

TABLE_FORMATS = ("text", "markdown", "html")


def _check(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[list[str]]:
    if isinstance(header, str) or not header:
        raise TypeError(f"header: expected a non-empty list of column names, got {header!r}.")
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, str) or len(row) != len(header):
            raise ValueError(
                f"row {i}: expected {len(header)} cells (one per column of {list(header)}), "
                f"got {row!r}."
            )
        out.append([str(cell) for cell in row])
    return out


def _numeric(cell: str) -> bool:
    head = cell.split(" ")[0].rstrip("*")
    try:
        float(head)
    except ValueError:
        return False
    return True


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, fmt: str = "text") -> str:
    """Render ``(header, rows)`` as ``"text"``, ``"markdown"`` or ``"html"``.

    Numeric-looking cells are right-aligned (text: padded; HTML: ``class="num"``).
    """
    if fmt not in TABLE_FORMATS:
        raise ValueError(f"fmt={fmt!r} is not supported; expected one of {TABLE_FORMATS}.")
    cells = _check(header, rows)
    header = [str(h) for h in header]
    if fmt == "html":
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "\n".join(
            "<tr>"
            + "".join(
                f'<td class="num">{html.escape(c)}</td>'
                if _numeric(c)
                else f"<td>{html.escape(c)}</td>"
                for c in row
            )
            + "</tr>"
            for row in cells
        )
        return (
            f'<table class="data">\n<thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n{body}\n</tbody>\n</table>"
        )
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            "  ".join(
                c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=True)
            ).rstrip()
        )
    return "\n".join(lines)
