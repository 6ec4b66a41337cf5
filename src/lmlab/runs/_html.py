"""HTML for reports: Markdown rendered by markdown-it-py, and the self-contained page template.

Text blocks are CommonMark with pipe tables, so ``report.md`` and ``report.html`` show the same
emphasis, lists, tables, headings, links and code. Raw HTML in the Markdown is escaped, never
passed through (reports embed model names and file paths), and links only keep a relative
target or an ``http``, ``https`` or ``mailto`` one.

>>> markdown_to_html("Loss is **low** and `alpha < 2`.")
'<p>Loss is <strong>low</strong> and <code>alpha &lt; 2</code>.</p>'
>>> markdown_to_html("- one\\n- two")
'<ul>\\n<li>one</li>\\n<li>two</li>\\n</ul>'
>>> markdown_to_html("<script>alert(1)</script>")
'<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>'
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

__all__ = ["inline_to_html", "markdown_to_html", "page"]

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
p, ul, ol { margin: .6rem 0 1rem; }
li > ul, li > ol { margin: .2rem 0; }
blockquote { margin: 1rem 0; padding: 0 1rem; color: #57606a; border-left: 4px solid #e5e7eb; }
pre { background: #f3f4f6; padding: .8rem 1rem; border-radius: 4px; overflow-x: auto; }
pre code { background: none; padding: 0; word-break: normal; }
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


def _table_open(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    return '<div class="table-wrap"><table>\n'


def _table_close(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    return "</table></div>\n"


@lru_cache(maxsize=1)
def _renderer() -> MarkdownIt:
    """The shared CommonMark + tables parser: no raw HTML, no typographic replacements."""
    from markdown_it import MarkdownIt

    class _ReportMarkdown(MarkdownIt):
        def validateLink(self, url: str) -> bool:  # noqa: N802 (markdown-it's name)
            """markdown-it's check (no ``javascript:``, ``file:`` ...) and a scheme allowlist."""
            return super().validateLink(url) and urlparse(url).scheme.lower() in _SAFE_SCHEMES

    md = _ReportMarkdown("commonmark", {"html": False, "typographer": False, "linkify": False})
    md.enable("table")
    md.add_render_rule("table_open", _table_open)
    md.add_render_rule("table_close", _table_close)
    return md


def inline_to_html(text: str) -> str:
    """Convert inline Markdown (emphasis, code spans, links) to escaped HTML, without a ``<p>``.

    >>> inline_to_html("[docs](https://example.org?a=1&b=2) *and* `a&b`")
    '<a href="https://example.org?a=1&amp;b=2">docs</a> <em>and</em> <code>a&amp;b</code>'
    """
    return _renderer().renderInline(str(text))


def markdown_to_html(markdown: str) -> str:
    """Convert Markdown (CommonMark and pipe tables) to HTML, escaping any raw HTML.

    Args:
        markdown: The text: paragraphs, ``#`` headings, ``*emphasis*``, ``**bold**``, code
            spans and fenced code, bullet and numbered lists (nested by indentation), pipe
            tables, block quotes and ``[text](url)`` links.

    Returns:
        The HTML blocks, without a trailing newline. Tables come wrapped in
        ``<div class="table-wrap">`` like the report's own tables.

    >>> markdown_to_html("| a | b |\\n|---|---|\\n| 1 | x |").splitlines()[:2]
    ['<div class="table-wrap"><table>', '<thead>']
    >>> markdown_to_html("[x](javascript:alert(1))")
    '<p>[x](javascript:alert(1))</p>'
    """
    return _renderer().render(str(markdown)).rstrip("\n")


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
