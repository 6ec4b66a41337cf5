"""Run reports: a list of blocks saved as ``report.json``, rendered to Markdown and static HTML.

A :class:`Report` collects headings, text (CommonMark Markdown with pipe tables), key/value
tables, data tables and figures. :func:`write_report` stores the blocks and renders
``report.md`` and ``report.html``; :func:`render_report` renders them again from
``report.json``. Every rendered report ends with a "What ran" section built from the run's
``meta.json``.

>>> import tempfile, pathlib
>>> report = Report("Demo")
>>> report.add_key_values({"alpha": 2.345678}, caption="Fit")
>>> report.to_blocks()[0]["rows"]
[['alpha', '2.346']]
>>> with tempfile.TemporaryDirectory() as tmp:
...     md, html_path = write_report(pathlib.Path(tmp), report)
...     "2.346" in md.read_text() and "<table" in html_path.read_text()
True
"""

from __future__ import annotations

import copy
import html
import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmlab.errors import LmlabError
from lmlab.runs._html import markdown_to_html, page
from lmlab.runs.io import _tidy, atomic_write_json, atomic_write_text
from lmlab.runs.rundir import RunDir

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Report", "render_report", "write_report"]

_REQUIRED = {
    "heading": ("text", "level"),
    "text": ("markdown",),
    "key_values": ("rows",),
    "table": ("columns", "rows"),
    "figure": ("path", "caption"),
}
_DURATION_KEYS = ("duration", "duration_s", "elapsed", "elapsed_s", "seconds")


def _format_value(value: Any, missing: str = "") -> str:
    """Format a cell: floats to 4 significant digits, None/NaN to ``missing``.

    >>> _format_value(3.14159), _format_value(12), _format_value(float("nan"), "—")
    ('3.142', '12', '—')
    """
    if value is None:
        return missing
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        as_float = float(value)
        return missing if math.isnan(as_float) else f"{as_float:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(v, missing) for v in value)
    if isinstance(value, Mapping):
        return json.dumps({str(k): _format_value(v) for k, v in value.items()})
    if type(value).__name__ in ("NAType", "NaTType"):
        return missing
    return str(value)


def _format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


class Report:
    """An ordered list of report blocks with a title.

    Args:
        title: The report title (the page's first heading).

    >>> r = Report("Loss curves")
    >>> r.add_heading("Setup")
    >>> r.add_text("Trained for **10** steps.")
    >>> [b["type"] for b in r.to_blocks()]
    ['heading', 'text']
    """

    def __init__(self, title: str) -> None:
        self.title = str(title)
        self._blocks: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self._blocks)

    def add_heading(self, text: str, level: int = 2) -> None:
        """Add a section heading (level 2 to 6; the title is level 1)."""
        self._blocks.append({"type": "heading", "text": str(text), "level": int(level)})

    def add_text(self, markdown: str) -> None:
        """Add Markdown text (CommonMark and pipe tables; raw HTML is shown as text in the page)."""
        self._blocks.append({"type": "text", "markdown": str(markdown)})

    def add_key_values(self, d: Mapping[str, object], caption: str | None = None) -> None:
        """Add a two-column table of names and values (floats to 4 significant digits)."""
        rows = [[str(key), _format_value(value, missing="—")] for key, value in d.items()]
        self._blocks.append({"type": "key_values", "rows": rows, "caption": caption})

    def add_table(self, df: pd.DataFrame, caption: str | None = None, max_rows: int = 60) -> None:
        """Add a data table, keeping its first ``max_rows`` rows (the total is noted)."""
        table = _tidy(df)
        shown = table.head(max_rows)
        rows = [[_format_value(v) for v in record] for record in shown.itertuples(index=False)]
        self._blocks.append(
            {
                "type": "table",
                "columns": [str(c) for c in table.columns],
                "rows": rows,
                "n_rows": len(table),
                "caption": caption,
            }
        )

    def add_figure(self, path_relative_to_run_dir: str | os.PathLike[str], caption: str) -> None:
        """Add a figure by its path relative to the run directory, e.g. ``figures/loss.png``.

        An absolute path inside the run directory is made relative when the report is written.
        """
        path = Path(path_relative_to_run_dir)
        self._blocks.append({"type": "figure", "path": path.as_posix(), "caption": str(caption)})

    def add_figures(self, figures: Mapping[str, Any],
                    names: Sequence[str] | None = None) -> None:
        """Add figures drawn by a study's ``plot()``: ``figures/<name>.png``, captions from
        each figure's label (:func:`lmlab.plotting.captioned`).

        Args:
            figures: ``{name: Figure}``.
            names: only these names, in this order (default: all, in their order); a name
                that was not drawn is skipped.
        """
        for name in names if names is not None else list(figures):
            if name in figures:
                label = figures[name].get_label()
                self.add_figure(f"figures/{name}.png", label if label else name)

    def to_blocks(self) -> list[dict[str, Any]]:
        """A deep copy of the blocks as JSON-safe dicts."""
        return copy.deepcopy(self._blocks)

    @classmethod
    def from_blocks(cls, title: str, blocks: Sequence[Mapping[str, Any]]) -> Report:
        """Rebuild a report from :meth:`to_blocks` output, checking every block.

        Raises:
            LmlabError: If a block has an unknown type or lacks a field.

        >>> Report.from_blocks("T", [{"type": "text", "markdown": "hi"}]).to_blocks()
        [{'type': 'text', 'markdown': 'hi'}]
        """
        report = cls(title)
        for i, block in enumerate(blocks):
            kind = block.get("type") if isinstance(block, Mapping) else None
            if kind not in _REQUIRED:
                raise LmlabError(f"report block {i} has unknown type {kind!r}")
            missing = [k for k in _REQUIRED[kind] if k not in block]
            if missing:
                raise LmlabError(f"report block {i} ({kind}) lacks {', '.join(missing)}")
            try:
                report._blocks.append(_normalize(kind, block))
            except (TypeError, ValueError) as exc:
                raise LmlabError(f"report block {i} ({kind}) is malformed: {exc}") from None
        return report


def _normalize(kind: str, block: Mapping[str, Any]) -> dict[str, Any]:
    """A checked copy of a block with every field of the expected type."""
    out = copy.deepcopy(dict(block))
    for key in _REQUIRED[kind]:
        if key in ("rows", "columns"):
            continue
        out[key] = int(out[key]) if key == "level" else str(out[key])
    if kind in ("key_values", "table"):
        rows = out["rows"]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise TypeError("'rows' must be a list of lists")
        out["rows"] = [[_format_value(c) for c in row] for row in rows]
    if kind == "table":
        if not isinstance(out["columns"], list):
            raise TypeError("'columns' must be a list")
        out["columns"] = [str(c) for c in out["columns"]]
        out["n_rows"] = int(out.get("n_rows", len(out["rows"])))
    if out.get("caption") is not None:
        out["caption"] = str(out["caption"])
    return out


def _run_path(run_dir: RunDir | str | os.PathLike[str]) -> Path:
    path = run_dir.path if isinstance(run_dir, RunDir) else Path(run_dir).expanduser()
    if not path.is_dir():
        raise LmlabError(f"no run directory at {path}; check the path")
    return path


def _flatten(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``meta`` with dotted keys, durations written out."""
    from lmlab.config import flatten_dotted

    def shown(key: str, value: Any) -> Any:
        if (key.rsplit(".", 1)[-1] in _DURATION_KEYS and isinstance(value, numbers.Real)
                and float(value) >= 0.0):
            return _format_duration(float(value))
        return value

    return {k: shown(k, v) for k, v in flatten_dotted(meta).items()}


def _what_ran(run_path: Path) -> list[dict[str, Any]]:
    section = Report("")
    section.add_heading("What ran")
    meta = RunDir(run_path).read_meta()
    if meta:
        section.add_key_values(_flatten(meta))
    else:
        section.add_text("This run directory has no `meta.json`.")
    config = run_path / "config.json"
    if config.is_file():
        section.add_text(f"Resolved config: [config.json](config.json) (`{config.resolve()}`).")
    else:
        section.add_text("This run directory has no `config.json`.")
    return section.to_blocks()


def _md_cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _rows_note(block: Mapping[str, Any]) -> str | None:
    total = int(block.get("n_rows", len(block["rows"])))
    shown = len(block["rows"])
    return f"Showing the first {shown} of {total} rows." if total > shown else None


def _to_markdown(title: str, blocks: Sequence[Mapping[str, Any]]) -> str:
    parts = [f"# {title}"]
    for block in blocks:
        kind = block["type"]
        caption = block.get("caption")
        if kind == "heading":
            level = min(max(int(block["level"]), 1), 6)
            parts.append("#" * level + " " + block["text"])
        elif kind == "text":
            parts.append(block["markdown"].strip())
        elif kind in ("key_values", "table"):
            header = ["name", "value"] if kind == "key_values" else block["columns"]
            if caption:
                parts.append(f"**{caption}**")
            parts.append(_md_table(header, block["rows"]))
            note = _rows_note(block) if kind == "table" else None
            if note:
                parts.append(f"_{note}_")
        elif kind == "figure":
            alt = _md_cell(block["caption"]).replace("[", "(").replace("]", ")")
            parts.append(f"![{alt}]({block['path']})\n\n*{block['caption']}*")
    return "\n\n".join(parts) + "\n"


def _html_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], caption: str | None, cls: str
) -> str:
    out = [f'<div class="table-wrap"><table class="{cls}">']
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
    out.append("</thead><tbody>")
    for row in rows:
        cells = "".join(
            f'<td class="num">{html.escape(c)}</td>'
            if cls == "data" and _is_number(c)
            else f"<td>{html.escape(c)}</td>"
            for c in row
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _to_html(title: str, blocks: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for block in blocks:
        kind = block["type"]
        caption = block.get("caption")
        if kind == "heading":
            level = min(max(int(block["level"]), 2), 6)
            parts.append(f"<h{level}>{html.escape(block['text'])}</h{level}>")
        elif kind == "text":
            parts.append(markdown_to_html(block["markdown"].strip()))  # as report.md has it
        elif kind == "key_values":
            parts.append(_html_table(["name", "value"], block["rows"], caption, "kv"))
        elif kind == "table":
            parts.append(_html_table(block["columns"], block["rows"], caption, "data"))
            note = _rows_note(block)
            if note:
                parts.append(f'<p class="note">{html.escape(note)}</p>')
        elif kind == "figure":
            from urllib.parse import quote

            src = html.escape(quote(block["path"]), quote=True)
            alt = html.escape(block["caption"], quote=True)
            parts.append(
                f'<figure><img src="{src}" alt="{alt}" loading="lazy">'
                f"<figcaption>{html.escape(block['caption'])}</figcaption></figure>"
            )
    return page(title, "\n".join(parts))


def _relative_figures(run_path: Path, blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for block in blocks:
        if block["type"] == "figure" and Path(block["path"]).is_absolute():
            block["path"] = Path(os.path.relpath(block["path"], run_path)).as_posix()
    return blocks


def _render(run_path: Path, title: str, blocks: list[dict[str, Any]]) -> tuple[Path, Path]:
    everything = blocks + _what_ran(run_path)
    md_path = atomic_write_text(run_path / "report.md", _to_markdown(title, everything))
    html_path = atomic_write_text(run_path / "report.html", _to_html(title, everything))
    return md_path, html_path


def write_report(run_dir: RunDir | str | os.PathLike[str], report: Report) -> tuple[Path, Path]:
    """Save ``report`` to ``report.json`` and render ``report.md`` and ``report.html``.

    Args:
        run_dir: The run directory (a :class:`RunDir` or a path).
        report: The report; a "What ran" section from ``meta.json`` is appended when rendering.

    Returns:
        The paths of ``report.md`` and ``report.html``.

    Raises:
        LmlabError: If the run directory does not exist or cannot be written.
    """
    run_path = _run_path(run_dir)
    blocks = _relative_figures(run_path, report.to_blocks())
    atomic_write_json(run_path / "report.json", {"title": report.title, "blocks": blocks})
    return _render(run_path, report.title, blocks)


def render_report(run_dir: RunDir | str | os.PathLike[str]) -> tuple[Path, Path]:
    """Render ``report.md`` and ``report.html`` again from a run's ``report.json``.

    Args:
        run_dir: The run directory.

    Returns:
        The paths of ``report.md`` and ``report.html``.

    Raises:
        LmlabError: If ``report.json`` is missing or corrupt.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = write_report(tmp, Report("Again"))
    ...     render_report(tmp)[1].name
    'report.html'
    """
    run_path = _run_path(run_dir)
    source = run_path / "report.json"
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LmlabError(
            f"no report.json in {run_path}; pass a run directory whose study has finished"
        ) from None
    except (OSError, ValueError) as exc:
        detail = " ".join(str(exc).split())
        raise LmlabError(f"cannot read {source} ({detail}); the file is corrupt") from None
    if not isinstance(data, dict) or not isinstance(data.get("blocks"), list):
        raise LmlabError(f"{source} is corrupt (expected an object with a 'blocks' list)")
    try:
        report = Report.from_blocks(str(data.get("title", "")), data["blocks"])
    except LmlabError as exc:
        raise LmlabError(f"{source} is corrupt: {exc}") from None
    return _render(run_path, report.title, report.to_blocks())
