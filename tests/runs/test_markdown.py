"""Report text blocks rendered by markdown-it-py: CommonMark + pipe tables, raw HTML escaped.

Expected HTML is written out by hand from the CommonMark spec, not produced by the converter.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from lmlab.runs import Report, write_report
from lmlab.runs._html import inline_to_html, markdown_to_html


def test_emphasis_and_strong() -> None:
    assert markdown_to_html("a *b* _c_ **d** __e__ ***f***") == (
        "<p>a <em>b</em> <em>c</em> <strong>d</strong> <strong>e</strong> "
        "<em><strong>f</strong></em></p>"
    )
    # intraword underscores stay literal (snake_case names in reports)
    assert markdown_to_html("top_k_layers") == "<p>top_k_layers</p>"


def test_nested_and_ordered_lists() -> None:
    text = "- one\n  - one.a\n  - one.b\n- two\n\n1. first\n2. second"
    assert markdown_to_html(text) == (
        "<ul>\n<li>one\n<ul>\n<li>one.a</li>\n<li>one.b</li>\n</ul>\n</li>\n<li>two</li>\n"
        "</ul>\n<ol>\n<li>first</li>\n<li>second</li>\n</ol>"
    )


def test_pipe_table_with_alignment_and_escaped_pipe() -> None:
    text = "| layer | alpha |\n|:---|---:|\n| fc1 | 2.31 |\n| a\\|b | **3** |"
    assert markdown_to_html(text) == (
        '<div class="table-wrap"><table>\n<thead>\n<tr>\n'
        '<th style="text-align:left">layer</th>\n<th style="text-align:right">alpha</th>\n'
        "</tr>\n</thead>\n<tbody>\n<tr>\n"
        '<td style="text-align:left">fc1</td>\n<td style="text-align:right">2.31</td>\n'
        "</tr>\n<tr>\n"
        '<td style="text-align:left">a|b</td>\n'
        '<td style="text-align:right"><strong>3</strong></td>\n'
        "</tr>\n</tbody>\n</table></div>"
    )


def test_headings() -> None:
    assert markdown_to_html("## Setup\n\n### Data `x`\ntext") == (
        "<h2>Setup</h2>\n<h3>Data <code>x</code></h3>\n<p>text</p>"
    )
    assert markdown_to_html("#no-space") == "<p>#no-space</p>"


def test_code_spans_and_blocks_escape_lt_and_amp() -> None:
    assert markdown_to_html("use `a < b && c > d` and `*not em*`") == (
        "<p>use <code>a &lt; b &amp;&amp; c &gt; d</code> and <code>*not em*</code></p>"
    )
    assert markdown_to_html("```python\nif a < b & c:\n    pass\n```") == (
        '<pre><code class="language-python">if a &lt; b &amp; c:\n    pass\n</code></pre>'
    )


def test_raw_html_is_shown_as_text() -> None:
    injected = 'model <script>alert("x")</script> and <img src=x onerror=alert(1)>'
    out = markdown_to_html(injected)
    assert "<script" not in out and "<img" not in out
    assert out == (
        "<p>model &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; and "
        "&lt;img src=x onerror=alert(1)&gt;</p>"
    )
    block = markdown_to_html("<div>\n<script>alert(1)</script>\n</div>")
    assert "<div>" not in block and "<script>" not in block and "&lt;script&gt;" in block
    assert "<b>" not in inline_to_html("<b>bold</b>")


def test_links_work_and_unsafe_schemes_do_not() -> None:
    assert markdown_to_html("[cfg](config.json) [w](https://a.org/?x=1&y=2)") == (
        '<p><a href="config.json">cfg</a> <a href="https://a.org/?x=1&amp;y=2">w</a></p>'
    )
    for bad in ("javascript:alert(1)", "data:text/html,hi", "file:///etc/passwd", "vbscript:x"):
        assert "<a " not in markdown_to_html(f"[x]({bad})"), bad
    assert markdown_to_html("[q](a.html \"t\")") == '<p><a href="a.html" title="t">q</a></p>'


class _Outline(HTMLParser):
    """Record the tags of a page, and the text of each tag of interest, independently."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.texts: list[tuple[str, str]] = []  # (innermost tag path, text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("meta", "img", "br", "hr"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.texts.append(("/".join(self.stack), data.strip()))


TEXT = """Loss is *low* and **stable**; see [config](config.json).

- outer
  - inner `a < b & c`
- last

| model | alpha |
|---|---:|
| gpt2 <script>x</script> | 2.5 |

### Notes"""


def test_report_html_shows_what_report_md_has(tmp_path: Path) -> None:
    report = Report("Same in both")
    report.add_text(TEXT)
    md_path, html_path = write_report(tmp_path, report)
    md = md_path.read_text(encoding="utf-8")
    assert TEXT in md  # report.md carries the block verbatim (a Markdown viewer renders it)

    page = html_path.read_text(encoding="utf-8")
    assert "<script" not in page
    outline = _Outline()
    outline.feed(page)
    texts = outline.texts
    body = "html/body/main"
    assert (f"{body}/p/em", "low") in texts
    assert (f"{body}/p/strong", "stable") in texts
    assert (f"{body}/p/a", "config") in texts and '<a href="config.json">config</a>' in page
    assert (f"{body}/ul/li", "outer") in texts
    assert (f"{body}/ul/li/ul/li", "inner") in texts
    assert (f"{body}/ul/li/ul/li/code", "a < b & c") in texts  # unescaped by the parser
    assert (f"{body}/ul/li", "last") in texts
    assert (f"{body}/div/table/thead/tr/th", "alpha") in texts
    assert (f"{body}/div/table/tbody/tr/td", "gpt2 <script>x</script>") in texts
    assert (f"{body}/div/table/tbody/tr/td", "2.5") in texts
    assert (f"{body}/h3", "Notes") in texts
    # nothing of the Markdown syntax leaks through as literal text
    visible = " ".join(text for _, text in texts)
    for syntax in ("**", "*low*", "|---", "###", "](config.json)", "`a"):
        assert syntax not in visible, syntax
