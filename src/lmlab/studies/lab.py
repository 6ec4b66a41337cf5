"""The lab: run every registered study (each in its own run directory) and write one index
page over them, ``<out>/lab-<time>/index.html``.

The index is rewritten after every study, so an interrupted lab still has a page for what
finished. A study that fails is recorded with its one-line error and the others go on.

Command::

    lmlab run all --preset quick      # what `make demo` runs
    lmlab run all --preset quick --resume   # continue the newest lab under ./runs
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from lmlab.errors import LmlabError
from lmlab.runs.guard import DirectoryLock
from lmlab.runs.lab_index import LabEntry, write_index
from lmlab.studies.registry import study_table

__all__ = ["lab_dir_for", "find_lab", "run_all"]


def lab_dir_for(out: str | Path) -> Path:
    """A new ``lab-<YYYYmmdd-HHMMSS>`` directory under ``out`` (a suffix keeps it unique)."""
    root = Path(out).expanduser()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, k = root / f"lab-{stamp}", 1
    while path.exists():
        k += 1
        path = root / f"lab-{stamp}-{k}"
    try:
        path.mkdir(parents=True)
    except OSError as e:
        raise LmlabError(f"cannot create {path}: {e.strerror or e}; choose another --out") from None
    return path


def find_lab(out: str | Path) -> Path | None:
    """The newest ``lab-*`` directory under ``out``, or None.

    >>> import tempfile
    >>> find_lab(tempfile.mkdtemp()) is None
    True
    """
    root = Path(out).expanduser()
    if not root.is_dir():
        return None
    labs = [p for p in root.glob("lab-*") if p.is_dir()]

    def order(p: Path) -> tuple[str, int]:  # time stamp, then the -2, -3 ... suffix
        parts = p.name.split("-")
        return "-".join(parts[1:3]), int(parts[3]) if len(parts) > 3 else 1

    return max(labs, key=order) if labs else None


def run_all(preset: str = "quick", out: str | Path = "runs", device: str | None = None, *,
            studies: Sequence[str] | None = None,
            overrides: Mapping[str, Sequence[str]] | None = None,
            resume: bool | str | Path = False) -> tuple[Path, list[LabEntry]]:
    """Run ``studies`` (default: every registered one) and write the index after each.

    With ``resume`` (True: the newest lab under ``out``; or a lab directory), finished studies
    are kept as they are and interrupted ones continue from their checkpoints.

    Returns the lab directory and one entry per study (its run directory or its error).
    """
    from lmlab.studies.registry import PRESETS

    if preset not in PRESETS:
        raise LmlabError(f"unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}")
    table = study_table()
    names = list(studies) if studies is not None else [s.name for s in table]
    infos = {s.name: s for s in table}
    unknown = [n for n in names if n not in infos]
    if unknown:
        raise LmlabError(f"unknown studies {', '.join(unknown)}; see lmlab study list")
    lab = None
    if resume is not True and resume:
        lab = Path(resume).expanduser()
        if not lab.is_dir():
            raise LmlabError(f"no lab directory at {lab}; check the path")
    elif resume:
        lab = find_lab(out)
        if lab is None:
            print(f"lmlab: nothing to resume: no lab-* directory in {out}; starting a new lab",
                  file=sys.stderr)
    lab = lab or lab_dir_for(out)
    with DirectoryLock(lab):  # one lab process per lab directory (each run locks its own)
        return lab, _run_each(lab, names, preset, device, overrides, resume)


def _run_each(lab: Path, names: Sequence[str], preset: str, device: str | None,
              overrides: Mapping[str, Sequence[str]] | None,
              resume: bool | str | Path) -> list[LabEntry]:
    """Run the studies one after another into ``lab``, writing the index after each."""
    from lmlab.studies.runner import run_study

    infos = {s.name: s for s in study_table()}
    entries: list[LabEntry] = []
    for i, name in enumerate(names, 1):
        info = infos[name]
        print(f"[{i}/{len(names)}] {name}: {info.description}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            run = run_study(name, preset=preset, overrides=list((overrides or {}).get(name, ())),
                            out=lab, device=device, resume=resume is not False)
            # the run's own duration, which adds up the sessions of a resumed run
            took = run.read_meta().get("duration_s")
            entry = LabEntry(name, info.description, info.source, run.path, None,
                             float(took) if took is not None else time.perf_counter() - start)
        except LmlabError as e:
            entry = LabEntry(name, info.description, info.source, None, str(e),
                             time.perf_counter() - start)
            print(f"lmlab: {name} did not finish: {e}", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            entries.append(LabEntry(name, info.description, info.source, None, "interrupted",
                                    time.perf_counter() - start))
            write_index(lab, entries)
            raise
        entries.append(entry)
        write_index(lab, entries)
    return entries
