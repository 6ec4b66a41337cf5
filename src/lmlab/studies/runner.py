"""Run a registered study: resolve its config, make the run directory, record what ran.

>>> cfg = build_config("spectral", "paper", ["precision=float32"])
>>> cfg.method, cfg.precision
('svd', 'float32')
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmlab.errors import LmlabError
from lmlab.studies.registry import PRESETS, get_study

if TYPE_CHECKING:
    from lmlab.runs import RunDir

__all__ = ["build_config", "run_study", "find_resumable"]


def build_config(study: str, preset: str = "quick", overrides: Sequence[str] = (),
                 device: str | None = None) -> Any:
    """The study's preset config with ``key=value`` overrides (and ``device``) applied.

    Raises:
        LmlabError: unknown study or preset, unknown key (naming the nearest), bad value.
    """
    from lmlab.config import apply_overrides

    module = get_study(study)
    if preset not in PRESETS:
        raise LmlabError(f"unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}")
    cfg = getattr(module.Config, preset)()
    extra = [f"device={device}"] if device is not None else []
    return apply_overrides(cfg, [*overrides, *extra])


def _differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two config dicts (metadata keys skipped)."""
    from lmlab.config import flatten_dotted

    a, b = flatten_dotted(saved), flatten_dotted(wanted)
    return [f"{key}: {a.get(key)!r} in the run, {b.get(key)!r} now"
            for key in sorted(set(a) | set(b))
            if not key.startswith("_") and a.get(key) != b.get(key)]


def _alive(pid: Any) -> bool:
    """Whether process ``pid`` exists (a missing or non-positive pid: no)."""
    try:
        if int(pid) <= 0:
            return False
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def find_resumable(out: str | Path, study: str, name: str) -> RunDir | None:
    """The newest run directory of ``study`` named ``name`` under ``out``, or None.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     find_resumable(tmp, "spectral", "quick") is None
    True
    """
    from lmlab.runs import RunDir

    study_dir = Path(out).expanduser() / study
    if not study_dir.is_dir():
        return None
    pattern = re.compile(r"^(\d{8}-\d{6})-" + re.escape(name) + r"(?:-(\d+))?$")
    found = {}  # run directory -> (time stamp, then the -2, -3 ... suffix)
    for p in study_dir.iterdir():
        match = pattern.match(p.name)
        if match and p.is_dir() and (p / "config.json").is_file():
            found[p] = (match.group(1), int(match.group(2) or 1))
    return RunDir.open(max(found, key=found.__getitem__)) if found else None


def _reopen(study: str, cfg: Any, resume: bool | str | Path, out: str | Path,
            name: str) -> RunDir | None:
    """The run directory to continue, checked against ``cfg``; None to start a new one."""
    import socket

    from lmlab.config import config_to_dict
    from lmlab.runs import RunDir

    if resume is True:
        run_dir = find_resumable(out, study, name)
        if run_dir is None:
            print(f"lmlab: nothing to resume: no {study} run named '{name}' in {out}; "
                  "starting a new run", file=sys.stderr)
            return None
    else:
        run_dir = RunDir.open(str(resume))
    meta = run_dir.read_meta()
    if meta.get("study", study) != study:
        raise LmlabError(f"{run_dir.path} is a run of '{meta.get('study')}', not '{study}'")
    if (meta.get("status") == "running" and meta.get("host") == socket.gethostname()
            and _alive(meta.get("pid"))):
        raise LmlabError(f"{run_dir.path} is still running (process {meta.get('pid')}); "
                         "stop it first, or wait for it to finish")
    diff = _differences(run_dir.read_config(), config_to_dict(cfg))
    if diff:
        shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
        raise LmlabError(f"cannot resume {run_dir.path}: its config differs ({shown}); use the "
                         "same --preset and --set as the first command, or drop --resume")
    return run_dir


def run_study(study: str, *, preset: str = "quick", overrides: Sequence[str] = (),
              out: str | Path = "runs", device: str | None = None,
              name: str | None = None, cfg: Any = None,
              resume: bool | str | Path = False) -> RunDir:
    """Run ``study`` into a new run directory under ``out`` and return that directory.

    The resolved config goes to ``config.json``; ``meta.json`` records the study, preset,
    device, seed, library versions, start time, duration and final status (``finished``,
    ``interrupted`` or ``failed``).

    With ``resume`` (True: the newest run of this study with the same name under ``out``; or
    a run directory), an interrupted run continues in its own directory from its last
    checkpoints; its config must equal ``cfg``. A finished run is returned as it is. Studies
    that keep no checkpoints (``RESUMES = False``) start again in that directory.

    A ready ``cfg`` (from :func:`build_config`) is used as it is: ``overrides`` and ``device``
    are then not applied, and ``preset`` only labels the run.
    """
    import socket

    from lmlab.runs import RunDir, render_report
    from lmlab.runtime import environment_info, resolve_device, seed_everything

    module = get_study(study)
    cfg = cfg if cfg is not None else build_config(study, preset, overrides, device)
    dev = resolve_device(getattr(cfg, "device", None))
    if hasattr(module, "check"):  # inputs that cannot work fail before a run directory exists
        module.check(cfg)
    label = name or preset
    ranked = int(os.environ.get("RANK", "0")) > 0
    run_dir: RunDir | None = None
    if resume:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise LmlabError("--resume works in a single process; resume without torchrun")
        run_dir = _reopen(study, cfg, resume, out, label)
    previous: dict[str, Any] = run_dir.read_meta() if run_dir is not None else {}
    if run_dir is not None and previous.get("status") == "finished":
        print(f"lmlab: {run_dir.path} has finished already; nothing to resume",
              file=sys.stderr)
        return run_dir
    if run_dir is not None:
        run_dir.check_writable()
        if not getattr(module, "RESUMES", False):
            print(f"lmlab: {study} keeps no checkpoints; it starts again in {run_dir.path}",
                  file=sys.stderr)
            run_dir.metrics_path.unlink(missing_ok=True)
        else:
            print(f"lmlab: resuming {run_dir.path}", file=sys.stderr)
    elif ranked:  # torchrun: only rank 0 writes the run directory
        scratch = tempfile.mkdtemp(prefix=f"lmlab-rank{os.environ['RANK']}-")
        run_dir = RunDir.create(scratch, study, label)
    else:
        run_dir = RunDir.create(out, study, label)
    seed = getattr(cfg, "seed", None)
    meta = {"study": study, "preset": preset, "device": str(dev), "seed": seed,
            "status": "running", "versions": environment_info(dev),
            "pid": os.getpid(), "host": socket.gethostname()}
    if previous:
        meta.update(resumed=int(previous.get("resumed", 0)) + 1,
                    resumed_at=time.strftime("%Y-%m-%d %H:%M:%S"))
    else:
        meta["started"] = time.strftime("%Y-%m-%d %H:%M:%S")
    run_dir.save_config(cfg, meta=meta)
    if seed is not None:
        seed_everything(int(seed))
    start = time.perf_counter()
    before = float(previous.get("duration_s") or 0.0)
    status = "failed"
    try:
        result = module.run(cfg, run_dir)
        if hasattr(module, "report"):  # the study pattern: the runner saves and draws
            from lmlab.studies.pattern import publish

            publish(run_dir, module, result)
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        run_dir.update_meta({"status": status,
                             "duration_s": round(before + time.perf_counter() - start, 2)})
        if (run_dir.path / "report.json").exists():  # the "What ran" section shows the end
            render_report(run_dir)
    return run_dir
