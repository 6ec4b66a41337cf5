from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from lmlab.errors import LmlabError
from lmlab.runs import Report, RunDir, render_report, write_report
from lmlab.runs._html import markdown_to_html


@pytest.fixture
def run(tmp_path: Path) -> RunDir:
    run = RunDir.create(tmp_path, "demo", name="r")
    run.save_config(
        {"seed": 0},
        meta={"study": "demo", "preset": "quick", "seed": 0, "versions": {"torch": "2.x"}},
    )
    return run


def _report() -> Report:
    report = Report("Spectra <of> layers & more")
    report.add_heading("Results")
    report.add_text("Alpha is **below 2** in `fc<1>`.\n\n- first\n- second [doc](notes.html)")
    report.add_key_values({"alpha": 2.3456789, "n": 12, "flag": True, "name": "<b>x</b>"})
    report.add_table(pd.DataFrame({"layer": ["a|b", "c"], "alpha": [1.23456, float("nan")]}))
    report.add_figure("figures/esd.png", caption='Spectrum of "fc1" <weights>')
    return report


def test_blocks_round_trip_and_formatting() -> None:
    report = _report()
    blocks = report.to_blocks()
    assert [b["type"] for b in blocks] == ["heading", "text", "key_values", "table", "figure"]
    assert blocks[2]["rows"] == [
        ["alpha", "2.346"],
        ["n", "12"],
        ["flag", "true"],
        ["name", "<b>x</b>"],
    ]
    assert blocks[3]["rows"] == [["a|b", "1.235"], ["c", ""]]
    assert Report.from_blocks(report.title, blocks).to_blocks() == blocks
    blocks[0]["text"] = "changed"
    assert report.to_blocks()[0]["text"] == "Results"  # a copy, not the inside


def test_from_blocks_rejects_bad_blocks() -> None:
    with pytest.raises(LmlabError, match="unknown type 'video'"):
        Report.from_blocks("t", [{"type": "video"}])
    with pytest.raises(LmlabError, match="lacks caption"):
        Report.from_blocks("t", [{"type": "figure", "path": "x.png"}])
    with pytest.raises(LmlabError, match="malformed"):
        Report.from_blocks("t", [{"type": "table", "columns": ["a"], "rows": "nope"}])


def test_write_report_files(run: RunDir) -> None:
    md_path, html_path = write_report(run, _report())
    assert md_path == run.path / "report.md" and html_path == run.path / "report.html"
    saved = json.loads((run.path / "report.json").read_text())
    assert saved["title"] == "Spectra <of> layers & more" and len(saved["blocks"]) == 5

    md = md_path.read_text()
    assert md.startswith("# Spectra <of> layers & more\n")
    assert "| alpha | 2.346 |" in md
    assert "| a\\|b | 1.235 |" in md
    assert '![Spectrum of "fc1" <weights>](figures/esd.png)' in md


def test_html_is_escaped_and_self_contained(run: RunDir) -> None:
    _, html_path = write_report(run, _report())
    page = html_path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert '<meta charset="utf-8">' in page
    assert "<style>" in page and "max-width: 960px" in page
    assert "<title>Spectra &lt;of&gt; layers &amp; more</title>" in page
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "<strong>below 2</strong>" in page and "<code>fc&lt;1&gt;</code>" in page
    assert "<li>first</li>" in page and '<a href="notes.html">doc</a>' in page
    img = re.search(r"<img [^>]*>", page)
    assert img is not None
    assert 'src="figures/esd.png"' in img.group(0)
    assert 'alt="Spectrum of &quot;fc1&quot; &lt;weights&gt;"' in img.group(0)
    assert "<figcaption>Spectrum of &quot;fc1&quot; &lt;weights&gt;</figcaption>" in page
    assert '<td class="num">1.235</td>' in page  # numbers right-aligned in data tables
    assert "<td>2.346</td>" in page  # key/value tables stay left-aligned
    assert "http://" not in page and "https://" not in page  # nothing fetched from outside
    assert "<script" not in page


def test_what_ran_section_from_meta(run: RunDir) -> None:
    run.update_meta({"duration_s": 125.0})
    md_path, html_path = write_report(run, Report("T"))
    md = md_path.read_text()
    assert "## What ran" in md
    assert "| study | demo |" in md and "| preset | quick |" in md
    assert "| versions.torch | 2.x |" in md
    assert "| duration_s | 2 min 05 s |" in md
    assert str((run.path / "config.json").resolve()) in md
    page = html_path.read_text()
    assert "<h2>What ran</h2>" in page and '<a href="config.json">config.json</a>' in page
    assert page.rindex("What ran") > page.index("<h1>")


def test_what_ran_without_meta(tmp_path: Path) -> None:
    md, _ = write_report(tmp_path, Report("T"))
    text = md.read_text()
    assert "## What ran" in text and "no `meta.json`" in text and "no `config.json`" in text


def test_absolute_figure_paths_become_relative(run: RunDir) -> None:
    report = Report("T")
    report.add_figure(run.figures_dir / "loss.png", caption="Loss")
    _, html_path = write_report(run.path, report)
    assert 'src="figures/loss.png"' in html_path.read_text()


def test_long_tables_are_truncated(run: RunDir) -> None:
    report = Report("T")
    report.add_table(pd.DataFrame({"i": range(100)}), caption="Steps", max_rows=10)
    md_path, html_path = write_report(run, report)
    assert "Showing the first 10 of 100 rows." in md_path.read_text()
    # two header rows (table, "What ran"), ten data rows, four meta rows
    assert html_path.read_text().count("<tr>") == 2 + 10 + 4
    assert "<caption>Steps</caption>" in html_path.read_text()


def test_render_report_rebuilds_from_json(run: RunDir) -> None:
    md_path, html_path = write_report(run, _report())
    original = html_path.read_text()
    md_path.unlink()
    html_path.write_text("stale")
    assert render_report(run.path) == (md_path, html_path)
    assert html_path.read_text() == original and md_path.exists()


def test_render_report_errors(tmp_path: Path, run: RunDir) -> None:
    with pytest.raises(LmlabError, match="no report.json"):
        render_report(run.path)
    (run.path / "report.json").write_text("{not json")
    with pytest.raises(LmlabError, match="corrupt"):
        render_report(run.path)
    (run.path / "report.json").write_text('{"title": "t", "blocks": [{"type": "nope"}]}')
    with pytest.raises(LmlabError, match="corrupt"):
        render_report(run.path)
    with pytest.raises(LmlabError, match="no run directory"):
        render_report(tmp_path / "absent")


def test_markdown_converter() -> None:
    assert markdown_to_html("a\nb\n\nc") == "<p>a\nb</p>\n<p>c</p>"
    assert markdown_to_html("intro\n- x **y**\n- `z*`") == (
        "<p>intro</p>\n<ul>\n<li>x <strong>y</strong></li>\n<li><code>z*</code></li>\n</ul>"
    )
    assert "<a " not in markdown_to_html("[x](javascript:alert(1))")
    assert markdown_to_html("<script>") == "<p>&lt;script&gt;</p>"
