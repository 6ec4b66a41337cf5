"""HTML for reports: a minimal Markdown converter and the self-contained page template.

The converter handles what reports need and nothing more: paragraphs, ``#`` headings,
``**bold**``, inline code, ``- `` bullet lists and ``[text](url)`` links. All text is escaped.

>>> markdown_to_html("Loss is **low** and `alpha < 2`.")
'<p>Loss is <strong>low</strong> and <code>alpha &lt; 2</code>.</p>'
>>> markdown_to_html("- one\\n- two")
'<ul>\\n<li>one</li>\\n<li>two</li>\\n</ul>'
"""

from __future__ import annotations

import html
import re
from urllib.parse import urlparse

__all__ = ["markdown_to_html", "page"]

_CODE = re.compile(r"(`[^`]+`)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_BULLET = re.compile(r"[-*+]\s+(.*)")
_HEADING = re.compile(r"(#{1,6})\s+(.*)")
_SAFE_SCHEMES = ("", "http", "https", "mailto")

CSS = """
:root { color-scheme: light; }
body { margin: 0; background: #fafafa; color: #1f2328;
  font: 16px/1.6 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }
main { max-width: 960px; margin: 0 auto; padding: 2rem 1.5rem 4rem; background: #fff;
  min-height: 100vh; box-sizing: border-box; }
h1 { font-size: 1.9rem; line-height: 1.25; margin: 0 0 1.5rem; }
h2 { font-size: 1.4rem; margin: 2.2rem 0 .8rem; padding-bottom: .3rem;
  border-bottom: 1px solid #e5e7eb; }
h3, h4, h5, h6 { font-size: 1.1rem; margin: 1.6rem 0 .6rem; }
p, ul { margin: .6rem 0 1rem; }
a { color: #0969da; }
code { font: .9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  background: #f3f4f6; padding: .1em .35em; border-radius: 4px; word-break: break-all; }
.table-wrap { overflow-x: auto; margin: 1rem 0 1.4rem; }
table { border-collapse: collapse; font-size: .92rem; min-width: 40%; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 0 0 .4rem; }
th, td { border: 1px solid #e5e7eb; padding: .35rem .7rem; text-align: left;
  vertical-align: top; }
th { background: #f3f4f6; font-weight: 600; }
tbody tr:nth-child(even) { background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv td:first-child { font-weight: 500; white-space: nowrap; }
.note { color: #57606a; font-size: .9rem; }
figure { margin: 1.5rem 0; text-align: center; }
figure img { max-width: 100%; height: auto; border: 1px solid #e5e7eb; border-radius: 4px; }
figcaption { color: #57606a; font-size: .92rem; margin-top: .5rem; }
""".strip()


def _bold(escaped: str) -> str:
    return _BOLD.sub(r"<strong>\1</strong>", escaped)


def _plain_inline(text: str) -> str:
    out: list[str] = []
    pos = 0
    for match in _LINK.finditer(text):
        out.append(_bold(html.escape(text[pos : match.start()])))
        label, url = match.group(1), match.group(2)
        if urlparse(url).scheme.lower() in _SAFE_SCHEMES:
            href = html.escape(url, quote=True)
            out.append(f'<a href="{href}">{_bold(html.escape(label))}</a>')
        else:
            out.append(_bold(html.escape(match.group(0))))
        pos = match.end()
    out.append(_bold(html.escape(text[pos:])))
    return "".join(out)


def inline_to_html(text: str) -> str:
    """Convert inline Markdown (code spans, links, bold) to escaped HTML.

    >>> inline_to_html("[docs](https://example.org?a=1&b=2)")
    '<a href="https://example.org?a=1&amp;b=2">docs</a>'
    """
    parts = _CODE.split(text)
    return "".join(
        f"<code>{html.escape(part[1:-1])}</code>"
        if len(part) > 1 and part[0] == part[-1] == "`"
        else _plain_inline(part)
        for part in parts
    )


def markdown_to_html(markdown: str) -> str:
    """Convert a small Markdown subset to HTML blocks (escaping all text).

    Args:
        markdown: Paragraphs separated by blank lines; ``- `` bullets; ``#`` headings.

    Returns:
        HTML for the blocks, one per line group.
    """
    out: list[str] = []
    paragraph: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if paragraph:
            out.append("<p>" + inline_to_html("\n".join(paragraph)) + "</p>")
            paragraph.clear()
        if items:
            lis = "\n".join(f"<li>{inline_to_html(item)}</li>" for item in items)
            out.append(f"<ul>\n{lis}\n</ul>")
            items.clear()

    for line in markdown.splitlines():
        stripped = line.strip()
        bullet = _BULLET.fullmatch(stripped)
        heading = _HEADING.fullmatch(stripped)
        if not stripped:
            flush()
        elif bullet:
            if paragraph:
                flush()
            items.append(bullet.group(1))
        elif heading:
            flush()
            level = len(heading.group(1))
            out.append(f"<h{level}>{inline_to_html(heading.group(2))}</h{level}>")
        elif items and line[:1] in (" ", "\t"):
            items[-1] += " " + stripped
        else:
            if items:
                flush()
            paragraph.append(stripped)
    flush()
    return "\n".join(out)


def page(title: str, body: str) -> str:
    """Wrap ``body`` (already HTML) in a complete static page with inline CSS.

    >>> "<title>a &amp; b</title>" in page("a & b", "")
    True
    """
    escaped = html.escape(title)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escaped}</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{escaped}</h1>\n{body}\n</main>\n</body>\n</html>\n"
    )
