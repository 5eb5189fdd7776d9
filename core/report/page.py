"""The one HTML page builder of the lab's reports (budget.html, the demo's and reproduce's
report.html): a heading, a body, and an Altair chart with vega inlined, so a page opens with no
network. Written atomically through the store. Torch-free."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from core.store import atomic_write_text

STYLE = "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 12px;border-bottom:1px solid #ddd}</style>"


def html_page(title: str, body_html: str, chart: Any | None) -> str:
    """A self-contained HTML page: a heading, `body_html`, then the chart (needs the
    vl-convert-python package to inline vega)."""
    head = f"<h1>{html.escape(title)}</h1>\n{body_html}\n"
    meta = f"<meta charset='utf-8'><title>{html.escape(title)}</title>{STYLE}"
    if chart is None:
        return f"<!doctype html><html><head>{meta}</head><body>{head}</body></html>"
    page = chart.to_html(inline=True)
    page = page.replace("<head>", f"<head>{meta}", 1)
    at = page.rfind("<body>") + len("<body>")  # the last one: the inlined vega code holds the text too
    return page[:at] + "\n" + head + page[at:]


def write_page(path: Path, title: str, body_html: str, chart: Any | None) -> None:
    """`html_page` written to `path` atomically (a reader never sees half a page)."""
    atomic_write_text(path, html_page(title, body_html, chart))
