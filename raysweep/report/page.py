"""One self-contained HTML page: inline CSS, images as base64 data URIs, no script, no server.

The page opens from disk (``file://``) in any browser and can be mailed as one file. Building
blocks return HTML fragments (every text is escaped); :func:`render_page` assembles sections
with a table of contents and, for a sweep still running, a ``<meta http-equiv="refresh">`` (the
browser reloads the page from disk; no script) and a visible line that says so. Nothing here
reads or writes files.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from raysweep.analysis import format_table

CSS = """
:root { --ink: #1d2330; --muted: #5b6475; --line: #d9dee7; --accent: #1f5fa8;
        --warn-bg: #fff6e0; --warn-line: #e0b44c; --bad-bg: #fdecea; --bad-line: #d9534f; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: #f6f7fa; }
header { background: #1d2330; color: #fff; padding: 18px 32px; }
header h1 { margin: 0; font-size: 22px; font-weight: 600; }
header p { margin: 4px 0 0; color: #c9d1e0; font-size: 13px; }
nav { position: sticky; top: 0; z-index: 1; background: #fff; border-bottom: 1px solid var(--line);
      padding: 8px 32px; font-size: 13px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 16px; white-space: nowrap; }
main { max-width: 1280px; margin: 0 auto; padding: 8px 32px 48px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px;
          padding: 4px 24px 16px; margin: 20px 0; }
h2 { font-size: 18px; margin: 16px 0 8px; border-bottom: 1px solid var(--line);
     padding-bottom: 6px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
p.lead { color: var(--muted); margin: 4px 0 10px; }
figure { margin: 12px 0 20px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); background: #fff; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
figcaption a { color: var(--accent); }
table.data, table.kv { border-collapse: collapse; font-size: 13px; margin: 6px 0 14px; }
table.data th, table.data td, table.kv th, table.kv td { border: 1px solid var(--line);
     padding: 3px 9px; text-align: left; }
table.data th { background: #eef1f6; position: sticky; top: 37px; }
table.data tr:nth-child(even) td { background: #fafbfc; }
table.kv caption { text-align: left; font-weight: 600; padding: 2px 0; }
table.kv th { background: #f3f5f9; font-weight: 500; color: var(--muted); }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { border-left: 4px solid var(--warn-line); background: var(--warn-bg);
        padding: 8px 12px; margin: 10px 0; font-size: 14px; }
.note.problem { border-color: var(--bad-line); background: var(--bad-bg); }
.note code, p code { font-size: 12.5px; background: rgba(0,0,0,.05); padding: 0 3px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 150px; }
.card .v { font-size: 20px; font-weight: 600; }
.card .k { font-size: 12px; color: var(--muted); }
details { margin: 8px 0; }
details summary { cursor: pointer; color: var(--accent); font-size: 14px; }
pre { background: #f3f5f9; padding: 10px; overflow-x: auto; font-size: 12.5px; }
.row { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.row figure { flex: 1 1 420px; max-width: 640px; }
.scroll { max-height: 520px; overflow: auto; display: inline-block; max-width: 100%; }
.running { background: #e8f1fb; border-bottom: 1px solid #b9d3f0; color: var(--ink);
           padding: 8px 32px; font-size: 14px; }
"""


@dataclass
class Section:
    """One titled part of the page: HTML blocks in order."""

    anchor: str
    title: str
    blocks: list[str] = field(default_factory=list)

    def add(self, *blocks: str) -> Section:
        """Append blocks; returns ``self``."""
        self.blocks.extend(b for b in blocks if b)
        return self


def esc(text: Any) -> str:
    """HTML-escaped ``str(text)``."""
    return html.escape(str(text))


def paragraph(text: str, *, lead: bool = False) -> str:
    """``<p>`` with escaped text; ``lead`` in the muted style."""
    return f'<p class="lead">{esc(text)}</p>' if lead else f"<p>{esc(text)}</p>"


def note(text: str, *, problem: bool = False) -> str:
    """A highlighted note: something missing (yellow) or broken (``problem``, red)."""
    return f'<div class="note{" problem" if problem else ""}">{esc(text)}</div>'


def figure(png: bytes, *, alt: str, caption: str, links: Sequence[tuple[str, str]] = ()) -> str:
    """An embedded PNG (data URI) with a caption and links to the saved files (relative)."""
    data = base64.b64encode(png).decode("ascii")
    link_html = " · ".join(f'<a href="{esc(href)}">{esc(label)}</a>' for label, href in links)
    if link_html:
        link_html = f" ({link_html})"
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">'
        f"<figcaption>{esc(caption)}{link_html}</figcaption></figure>"
    )


def row(*blocks: str) -> str:
    """Blocks side by side (wrapping on narrow screens), e.g. two small figures."""
    return '<div class="row">' + "".join(blocks) + "</div>"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, scroll: bool = False) -> str:
    """A data table; ``scroll`` caps its height (long tables)."""
    out = format_table(header, rows, fmt="html")
    return f'<div class="scroll">{out}</div>' if scroll else out


def key_values(items: Mapping[str, Any], *, caption: str | None = None) -> str:
    """A two-column table of ``key: value`` (with an optional caption above it)."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items.items())
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f'<table class="kv">{cap}{rows}</table>'


def cards(items: Mapping[str, Any]) -> str:
    """Big numbers with a small label (the summary)."""
    body = "".join(
        f'<div class="card"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>'
        for k, v in items.items()
    )
    return f'<div class="cards">{body}</div>'


def details(summary: str, inner_html: str) -> str:
    """A collapsed block (``<details>``), opened by a click; no script needed."""
    return f"<details><summary>{esc(summary)}</summary>{inner_html}</details>"


def json_block(obj: Any) -> str:
    """Pretty-printed JSON in a ``<pre>``."""
    return f"<pre>{esc(json.dumps(obj, indent=2, sort_keys=True, default=str))}</pre>"


def heading(text: str) -> str:
    """A sub-heading inside a section."""
    return f"<h3>{esc(text)}</h3>"


def refresh_tag(seconds: int) -> str:
    """``<meta http-equiv="refresh" content="N">``: the browser reloads the page every N s."""
    return f'<meta http-equiv="refresh" content="{int(seconds)}">'


def render_page(
    title: str,
    subtitle: str,
    sections: Sequence[Section],
    *,
    refresh_s: int | None = None,
    banner: str | None = None,
) -> str:
    """The whole page: header, table of contents, sections.

    ``refresh_s``: reload every that many seconds (a running sweep; ``None``: never).
    ``banner``: a line shown under the header (e.g. "sweep running: …").
    """
    nav = "\n".join(f'<a href="#{esc(s.anchor)}">{esc(s.title)}</a>' for s in sections)
    body = "\n".join(
        f'<section id="{esc(s.anchor)}"><h2>{esc(s.title)}</h2>\n'
        + "\n".join(s.blocks)
        + "</section>"
        for s in sections
    )
    refresh = f"{refresh_tag(refresh_s)}\n" if refresh_s is not None else ""
    running = f'<p class="running" id="running">{esc(banner)}</p>\n' if banner else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"{refresh}"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>\n{running}"
        f"<nav>{nav}</nav>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )
