"""The lab's index page: one static HTML page over several studies' run directories, with each
study's headline figures, key numbers, what ran, and a link to its full report.

>>> import tempfile, pathlib
>>> lab = pathlib.Path(tempfile.mkdtemp())
>>> path = write_index(lab, [LabEntry("demo", "a study", "a paper", None, "it failed", 1.0)])
>>> "it failed" in path.read_text()
True
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lmlab.config import flatten_dotted
from lmlab.runs._html import page
from lmlab.runs.io import atomic_write_text

__all__ = ["LabEntry", "write_index"]

_MAX_NUMBERS = 12
_MAX_FIGURES = 2


@dataclass(frozen=True)
class LabEntry:
    """One study of a lab run: its run directory, or the error that stopped it."""

    study: str
    description: str
    source: str
    run_dir: Path | None
    error: str | None
    seconds: float


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _flat(d: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar entries of a nested summary, with dotted keys."""
    return {k: v for k, v in flatten_dotted(d).items()
            if isinstance(v, (int, float, str, bool)) or v is None}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _rows(pairs: Sequence[tuple[str, Any]]) -> str:
    return "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in pairs)


def _figures(run_dir: Path) -> list[tuple[str, str]]:
    """(path relative to the run directory, caption) of the report's first figures."""
    report = _read(run_dir / "report.json")
    found = [(b["path"], b.get("caption", "")) for b in report.get("blocks", [])
             if isinstance(b, dict) and b.get("type") == "figure" and "path" in b]
    if not found:
        found = [(f"figures/{p.name}", p.stem) for p in sorted((run_dir / "figures").glob("*.png"))]
    return [(p, c) for p, c in found if (run_dir / p).is_file()][:_MAX_FIGURES]


def _section(lab_dir: Path, entry: LabEntry) -> str:
    head = (f'<section id="{html.escape(entry.study)}"><h2>{html.escape(entry.study)}</h2>'
            f"<p>{html.escape(entry.description)} <em>({html.escape(entry.source)})</em></p>")
    if entry.run_dir is None:
        return (head + f'<p class="note"><strong>Did not finish</strong> after '
                f"{entry.seconds:.0f} s: {html.escape(entry.error or 'unknown error')}</p>"
                "</section>")
    rel = Path(os.path.relpath(entry.run_dir, lab_dir))
    meta = _read(entry.run_dir / "meta.json")
    summary = _flat(_read(entry.run_dir / "summary.json"))
    numbers = [(k, v) for k, v in summary.items() if not isinstance(v, str)][:_MAX_NUMBERS]
    versions = meta.get("versions", {}) if isinstance(meta.get("versions"), dict) else {}
    ran: list[tuple[str, Any]] = [(k, meta[k]) for k in (
        "status", "preset", "device", "seed", "model", "data_source", "duration_s") if k in meta]
    ran += [(f"{k} version", versions[k]) for k in ("lmlab", "torch") if k in versions]
    link = html.escape(quote((rel / "report.html").as_posix()), quote=True)
    parts = [head, f'<p><a href="{link}">Full report</a> · run directory '
                   f"<code>{html.escape(rel.as_posix())}</code></p>"]
    for path, caption in _figures(entry.run_dir):
        src = html.escape(quote((rel / path).as_posix()), quote=True)
        parts.append(f'<figure><img src="{src}" alt="{html.escape(caption, quote=True)}">'
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    if numbers:
        parts.append(f'<table class="kv"><caption>Key numbers (summary.json)</caption>'
                     f"{_rows(numbers)}</table>")
    parts.append(f'<table class="kv"><caption>What ran</caption>{_rows(ran)}</table>')
    return "\n".join(parts) + "</section>"


def write_index(lab_dir: str | os.PathLike[str], entries: Sequence[LabEntry], *,
                title: str = "lmlab — every study") -> Path:
    """Write ``<lab_dir>/index.html`` (atomically) and return its path."""
    lab = Path(lab_dir)
    done = sum(e.run_dir is not None for e in entries)
    toc = "".join(f'<li><a href="#{html.escape(e.study)}">{html.escape(e.study)}</a>'
                  f"{'' if e.run_dir else ' (did not finish)'}</li>" for e in entries)
    total = sum(e.seconds for e in entries)
    body = (f"<p>{done} of {len(entries)} studies finished in {total / 60:.1f} min. Each "
            "section shows the study's first figures, its key numbers and what ran, and links "
            f"to its full report.</p><ul>{toc}</ul>"
            + "\n".join(_section(lab, e) for e in entries))
    path = lab / "index.html"
    atomic_write_text(path, page(title, body))
    return path
