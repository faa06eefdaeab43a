"""HTML building blocks of the report page: the page template, escaping, tables, figures, players.

The page is self-contained: inline CSS, plots embedded as base64 PNG (and kept
as files by :class:`Figures`), no script or style from elsewhere. Its inline
script records the page's own script errors and failed resource loads in
``#page-errors`` (with ``data-count``), so a headless browser can check it.
Every text that comes from data goes through :func:`escape`.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from string import Template
from typing import Any

_PAGE = Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>$title</title>
<script>
(function () {
  var errors = [];
  function show() {
    var box = document.getElementById("page-errors");
    if (box) { box.textContent = errors.join("\\n"); box.setAttribute("data-count", String(errors.length)); }
  }
  window.addEventListener("error", function (e) {
    var t = e.target;
    errors.push(t && t !== window && (t.src || t.href) ? "failed to load " + (t.src || t.href)
                                                       : "script error: " + e.message);
    show();
  }, true);
  var original = console.error;
  console.error = function () { errors.push("console.error: " + Array.prototype.join.call(arguments, " ")); show();
                                return original.apply(console, arguments); };
  document.addEventListener("DOMContentLoaded", show);
})();
</script>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1200px;
       color: #1b1b1b; background: #fff; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #0072B2; padding-bottom: 4px; }
.meta { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #eef4fa; } td.l, th.l { text-align: left; }
tr.baseline td { color: #666; font-style: italic; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; } .grid figure { margin: 0; }
figcaption { font-size: 0.8em; color: #555; } img { max-width: 100%; border: 1px solid #eee; }
.track { border: 1px solid #ddd; border-radius: 6px; padding: 8px 12px; margin: 12px 0; }
.players { display: flex; flex-wrap: wrap; gap: 16px; font-size: 0.85em; }
.players div { display: flex; flex-direction: column; }
.flag { display: inline-block; padding: 0 6px; border-radius: 4px; background: #fde2d0; color: #8a3a00; }
.note { color: #666; font-size: 0.85em; } #page-errors { color: #b00; white-space: pre-wrap; }
</style></head>
<body>
<h1>$title</h1>
<p class="meta">$meta</p>
<pre id="page-errors" data-count="0"></pre>
$body
</body></html>
""")


def render_page(title: str, meta_html: str, sections: Iterable[str]) -> str:
    """The whole page: ``title`` (escaped here), a meta line (HTML) and the non-empty ``sections`` (HTML)."""
    return _PAGE.substitute(title=escape(title), meta=meta_html, body="\n".join(s for s in sections if s))


def escape(value: Any) -> str:
    """``str(value)`` escaped for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def number_cell(value: Any, digits: int = 2) -> str:
    """A table cell's text: ``–`` for null/NaN, floats to ``digits`` decimals (significant digits below 0.01)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 0.01 and value != 0 else f"{value:.{digits}f}"
    return escape(value)


def html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, left: int = 1,
               row_classes: Sequence[str] | None = None) -> str:
    """A table; the first ``left`` columns are left-aligned text, the others right-aligned numbers."""
    head = "".join(f'<th class="l">{escape(h)}</th>' if i < left else f"<th>{escape(h)}</th>"
                   for i, h in enumerate(headers))
    lines = []
    for index, row in enumerate(rows):
        cells = "".join(f'<td class="l">{escape(c)}</td>' if i < left else f"<td>{number_cell(c)}</td>"
                        for i, c in enumerate(row))
        cls = f' class="{row_classes[index]}"' if row_classes and row_classes[index] else ""
        lines.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def note(text: Any) -> str:
    """A small grey paragraph of (escaped) text."""
    return f'<p class="note">{escape(text)}</p>'


def audio_player(label: str, src: str) -> str:
    """A labelled ``<audio>`` player that loads ``src`` only when played."""
    return f'<div><span>{escape(label)}</span><audio controls preload="none" src="{escape(src)}"></audio></div>'


class Figures:
    """The PNG plots of one page: each embedded where it is shown, and kept in :attr:`files` to be written."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        """File name -> PNG bytes, in the order the figures were added."""

    def figure(self, file_name: str, png: bytes, caption: str) -> str:
        """Keep ``png`` as ``file_name``; the ``<figure>`` that embeds it with ``caption``."""
        self.files[file_name] = png
        data = base64.b64encode(png).decode("ascii")
        return (f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{escape(caption)}</figcaption></figure>")
