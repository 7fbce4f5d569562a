"""HTML building blocks of the segcal report: escaping, number formatting, tables, embedded figures, page.

Everything is self-contained: images become ``data:`` URIs, the CSS is inline, there is no script and no
external link, so the file opens offline and prints cleanly.
"""
from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp", ".svg": "image/svg+xml"}
MISSING = "\u2014"  # em dash for an absent number

CSS = """
:root { --fg: #1f2933; --muted: #616e7c; --line: #d9e2ec; --bg: #ffffff; --soft: #f5f7fa; --accent: #2563eb;
        --warn-bg: #fff8e1; --warn-line: #f0b429; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: var(--bg); line-height: 1.5;
       font: 15px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { padding: 28px 32px 12px; border-bottom: 1px solid var(--line); }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p { margin: 0; color: var(--muted); }
nav { position: sticky; top: 0; z-index: 1; background: rgba(255,255,255,0.96); border-bottom: 1px solid var(--line);
      padding: 8px 32px; display: flex; flex-wrap: wrap; gap: 4px 18px; }
nav a { color: var(--accent); text-decoration: none; font-size: 14px; }
nav a:hover { text-decoration: underline; }
main { max-width: 1240px; margin: 0 auto; padding: 8px 32px 40px; }
section { padding: 18px 0 10px; border-bottom: 1px solid var(--line); scroll-margin-top: 48px; }
h2 { font-size: 21px; margin: 0 0 12px; }
h3 { font-size: 16px; margin: 18px 0 8px; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
code { background: var(--soft); padding: 1px 4px; border-radius: 3px; }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 12px;
      overflow: auto; max-height: 480px; white-space: pre-wrap; word-break: break-word; }
.scroll { overflow-x: auto; margin: 8px 0 12px; }
table { border-collapse: collapse; font-size: 14px; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fafbfc; }
td.label { white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.total td { font-weight: 600; border-top: 2px solid var(--line); }
table.kv th { text-align: left; }
.note { color: var(--muted); background: var(--soft); border-left: 4px solid var(--line); padding: 8px 12px;
        margin: 8px 0; border-radius: 0 4px 4px 0; }
.warn { background: var(--warn-bg); border-left: 4px solid var(--warn-line); padding: 8px 12px; margin: 8px 0; }
.meta { color: var(--muted); font-size: 14px; margin: 4px 0 8px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 8px 0 14px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; min-width: 150px; }
.card .value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .label { color: var(--muted); font-size: 13px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 16px; margin: 8px 0 12px; }
.grid.wide { grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); }
figure { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: 8px; background: #fff;
         break-inside: avoid; page-break-inside: avoid; }
figure img { display: block; width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; text-align: center; }
.missing-figure { display: flex; align-items: center; justify-content: center; min-height: 120px; padding: 12px;
                  background: var(--warn-bg); color: #8d6e00; font-size: 13px; text-align: center;
                  word-break: break-all; }
details { margin: 4px 0 10px; }
summary { cursor: pointer; color: var(--muted); font-size: 14px; }
footer { color: var(--muted); font-size: 13px; padding: 16px 32px 32px; text-align: center; }
@media print {
  nav { display: none; }
  body { font-size: 12px; }
  main, header { padding-left: 0; padding-right: 0; }
  section { break-before: auto; }
  h2, h3 { break-after: avoid; page-break-after: avoid; }
  .grid, .grid.wide { grid-template-columns: repeat(2, 1fr); }
  pre { max-height: none; }
  .scroll { overflow: visible; }
  table { break-inside: auto; }
  tr { break-inside: avoid; }
}
"""


class Html(str):
    """Already-escaped HTML, inserted verbatim by the helpers below."""


def esc(value: Any) -> Html:
    """``value`` as HTML text (special characters escaped unless it is already :class:`Html`)."""
    return value if isinstance(value, Html) else Html(html.escape(str(value), quote=True))


def join(parts: Iterable[str]) -> Html:
    return Html("".join(parts))


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fmt(value: Any) -> str:
    """A number to 4 significant digits (whole floats below 10^6 as integers); ``None`` as an em dash."""
    if value is None:
        return MISSING
    if isinstance(value, bool) or not is_number(value):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    return str(int(value)) if value.is_integer() and abs(value) < 1e6 else f"{value:.4g}"


def is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float))


def is_simple(value: Any, max_items: int = 10) -> bool:
    """A scalar or a short list of scalars (shown inline in a key/value table)."""
    return is_scalar(value) or (isinstance(value, list) and len(value) <= max_items and all(map(is_scalar, value)))


def text_of(value: Any) -> str:
    """Display text: strings as they are, numbers via :func:`fmt`, lists of scalars item by item, else JSON."""
    if isinstance(value, str):
        return value
    if value is None or is_number(value):
        return fmt(value)
    if isinstance(value, list) and all(map(is_scalar, value)):
        return "[" + ", ".join(text_of(v) for v in value) + "]"
    return json.dumps(value, default=str)


def _cell(tag: str, value: Any, numeric: bool) -> str:
    text = text_of(value)
    cls = ' class="num"' if numeric else ' class="label"'
    return f"<{tag}{cls}>{esc(text)}</{tag}>"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], label_cols: int = 1,
          total_rows: int = 0) -> Html:
    """A table whose first ``label_cols`` columns are labels and the rest right-aligned numbers.

    The last ``total_rows`` rows are emphasised (e.g. a foreground mean).
    """
    head = join(_cell("th", h, i >= label_cols) for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        cls = ' class="total"' if r >= len(rows) - total_rows else ""
        body.append(f"<tr{cls}>" + join(_cell("td", v, i >= label_cols) for i, v in enumerate(row)) + "</tr>")
    return Html(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
                f"</table></div>")


def kv_table(pairs: Iterable[tuple[str, Any]]) -> Html:
    """Two-column key/value table."""
    rows = join(f"<tr><th>{esc(k)}</th><td>{esc(text_of(v))}</td></tr>" for k, v in pairs)
    return Html(f'<div class="scroll"><table class="kv"><tbody>{rows}</tbody></table></div>')


def info_block(info: dict) -> Html:
    """A mapping as a key/value table: simple values inline, flat sub-mappings as ``key.sub`` rows, and
    anything larger (e.g. a training history) in a collapsed ``<details>`` block as JSON."""
    rows, rest = [], {}
    for k, v in info.items():
        if is_simple(v):
            rows.append((k, v))
        elif isinstance(v, dict) and len(v) <= 12 and all(map(is_simple, v.values())):
            rows += [(f"{k}.{sub}", x) for sub, x in v.items()]
        else:
            rest[k] = v
    more = (f"<details><summary>{esc('more: ' + ', '.join(map(str, rest)))}</summary>"
            f"{pre(json.dumps(rest, indent=1, default=str))}</details>") if rest else ""
    return Html((kv_table(rows) if rows else "") + more)


def cards(items: Iterable[tuple[str, Any]]) -> Html:
    """Headline numbers as cards: ``(label, value)`` pairs."""
    body = join(f'<div class="card"><div class="value">{esc(text_of(v))}</div>'
                f'<div class="label">{esc(k)}</div></div>' for k, v in items)
    return Html(f'<div class="cards">{body}</div>') if body else Html("")


def note(text: str, command: str | None = None) -> Html:
    """A muted note saying what is missing and, if given, the segcal command that produces it."""
    run = f": run <code>{esc(command)}</code>" if command else ""
    return Html(f'<p class="note">{esc(text)}{run}</p>')


def para(text: str, cls: str = "meta") -> Html:
    return Html(f'<p class="{cls}">{esc(text)}</p>')


def bullets(items: Iterable[Any]) -> Html:
    return Html("<ul>" + join(f"<li>{esc(i)}</li>" for i in items) + "</ul>")


def pre(text: str) -> Html:
    return Html(f"<pre>{esc(text)}</pre>")


def h3(text: str) -> Html:
    return Html(f"<h3>{esc(text)}</h3>")


@dataclass(frozen=True)
class Fig:
    """A figure to embed: caption ``title``, file ``path``, ``shown`` (its path as named to the reader), ``key``."""
    title: str
    path: Path
    shown: str
    key: str = ""


def data_uri(path: Path) -> str | None:
    """``data:`` URI of an image file, or ``None`` if it is absent or not an image type we embed."""
    mime = IMAGE_TYPES.get(path.suffix.lower())
    if mime is None or not path.is_file():
        return None
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def figure(fig: Fig) -> Html:
    """One embedded figure with caption; a visible "missing figure" box if its file is absent."""
    uri = data_uri(fig.path)
    if uri is None:
        body = f'<div class="missing-figure">missing figure: {esc(fig.shown)}</div>'
    else:
        body = f'<img src="{uri}" alt="{esc(fig.title)}">'
    return Html(f"<figure>{body}<figcaption>{esc(fig.title)}</figcaption></figure>")


def figure_grid(figs: Sequence[Fig], wide: bool = False) -> Html:
    if not figs:
        return Html("")
    cls = "grid wide" if wide else "grid"
    return Html(f'<div class="{cls}">' + join(figure(f) for f in figs) + "</div>")


def section(sid: str, title: str, body: str) -> Html:
    return Html(f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>{body}</section>')


def page(title: str, subtitle: str, nav: Sequence[tuple[str, str]], sections: Sequence[str], footer: str) -> str:
    """The whole document. Non-ASCII characters become character references, so any file encoding works."""
    links = join(f'<a href="#{esc(sid)}">{esc(label)}</a>' for sid, label in nav)
    doc = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
           f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
           f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
           f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>\n<nav>{links}</nav>\n"
           f"<main>\n" + "\n".join(sections) + f"\n</main>\n<footer>{esc(footer)}</footer>\n</body>\n</html>\n")
    return doc.encode("ascii", "xmlcharrefreplace").decode("ascii")
