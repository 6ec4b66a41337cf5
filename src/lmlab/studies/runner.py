"""Run a registered study: resolve its config, make the run directory, record what ran.

>>> cfg = build_config("spectral", "paper", ["precision=float32"])
>>> cfg.method, cfg.precision
('svd', 'float32')
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmlab.errors import LmlabError, first_line
from lmlab.runs.io import atomic_write_json
from lmlab.studies.registry import PRESETS, get_study

if TYPE_CHECKING:
    from lmlab.runs import RunDir

__all__ = ["build_config", "check_study", "find_resumable", "run_study"]

def build_config(study: str, preset: str = "quick", overrides: Sequence[str] = (),
                 device: str | None = None, config_file: str | Path | None = None) -> Any:
    """The study's preset config, then the settings of ``config_file`` (TOML, YAML or JSON,
    the same keys as ``--set``), then ``key=value`` overrides (and ``device``).

    Raises:
        LmlabError: unknown study or preset, unknown key (naming the nearest), bad value.
    """
    from lmlab.config import (
        apply_overrides,
        config_from_dict,
        config_to_dict,
        flatten_dotted,
        read_settings_file,
    )

    module = get_study(study)
    if preset not in PRESETS:
        raise LmlabError(f"unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}")
    cfg = getattr(module.Config, preset)()
    if config_file is not None:
        settings = flatten_dotted(read_settings_file(config_file))
        try:
            cfg = config_from_dict(module.Config, {**flatten_dotted(config_to_dict(cfg)),
                                                   **settings})
        except LmlabError as e:
            raise LmlabError(f"{config_file}: {e}") from None
    extra = [f"device={device}"] if device is not None else []
    return apply_overrides(cfg, [*overrides, *extra])


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
    """The run directory to continue, locked and checked against ``cfg``; None to start a new
    one."""
    from lmlab.runs import RunDir

    if resume is True:
        run_dir = find_resumable(out, study, name)
        if run_dir is None:
            print(f"lmlab: nothing to resume: no {study} run named '{name}' in {out}; "
                  "starting a new run", file=sys.stderr)
            return None
    else:
        run_dir = RunDir.open(str(resume))
    run_dir.lock()  # before anything is read: another process may be writing it
    try:
        _check_resumable(run_dir, study, cfg)
    except BaseException:
        run_dir.unlock()
        raise
    return run_dir


def _check_resumable(run_dir: RunDir, study: str, cfg: Any) -> None:
    """``run_dir`` is a run of ``study`` with the config ``cfg``."""
    from lmlab.config import config_diff, config_to_dict

    meta = run_dir.read_meta()
    if meta.get("study", study) != study:
        raise LmlabError(f"{run_dir.path} is a run of '{meta.get('study')}', not '{study}'")
    saved = run_dir.read_config()
    _check_device_type(run_dir, saved.get("device"), getattr(cfg, "device", None))
    diff = config_diff(saved, config_to_dict(cfg), ignore=["device"])
    if diff:
        shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
        raise LmlabError(f"cannot resume {run_dir.path}: its config differs ({shown}); use the "
                         "same --preset and --set as the first command, or drop --resume")


def _check_device_type(run_dir: RunDir, was: Any, now: Any) -> None:
    """A run resumes on the device type it started on (another GPU index is fine; a run
    directory of an older lmlab that kept ``auto`` is not checked)."""
    import torch

    if was is None or now is None or str(was).lower() == "auto":
        return
    if torch.device(str(was).lower()).type != torch.device(str(now).lower()).type:
        raise LmlabError(f"cannot resume {run_dir.path}: it ran on {was} and this run would be "
                         f"on {now}; resume with --device {was}")


def _resolved(cfg: Any, dev: Any) -> Any:
    """``cfg`` with ``device: auto`` replaced by the device it resolved to, so that
    ``config.json`` records where the run computes."""
    import dataclasses

    if not hasattr(cfg, "device") or str(cfg.device or "auto").strip().lower() != "auto":
        return cfg
    return dataclasses.replace(cfg, device=str(dev))


def _run_device(cfg: Any) -> Any:
    """Where the study computes: its resolved ``device`` key; the CPU for a study without
    one."""
    import torch

    from lmlab.runtime import resolve_device

    if not hasattr(cfg, "device"):
        return torch.device("cpu")
    return resolve_device(cfg.device)


def _open_run_dir(study: str, module: Any, cfg: Any, resume: bool | str | Path,
                  out: str | Path, label: str) -> tuple[RunDir, dict[str, Any] | None]:
    """The run directory to write, locked (new, or the one to resume), and its previous meta
    (None for a new directory)."""
    from lmlab.runs import RunDir

    if resume:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise LmlabError("--resume works in a single process; resume without torchrun")
        run_dir = _reopen(study, cfg, resume, out, label)
        if run_dir is not None:
            try:
                return run_dir, run_dir.read_meta()
            except BaseException:
                run_dir.unlock()
                raise
    if int(os.environ.get("RANK", "0")) > 0:  # torchrun: only rank 0 writes the run directory
        out = tempfile.mkdtemp(prefix=f"lmlab-rank{os.environ['RANK']}-")
    run_dir = RunDir.create(out, study, label)
    try:
        return run_dir.lock(), None
    except BaseException:
        shutil.rmtree(run_dir.path, ignore_errors=True)
        raise


def _continue(run_dir: RunDir, study: str, module: Any) -> None:
    """Announce a resumed run; a study without checkpoints starts again in its directory.

    Temporary files of writes that a kill interrupted are removed first.
    """
    left = run_dir.remove_temporaries()
    if left:
        print(f"lmlab: removed {len(left)} temporary file(s) an interrupted write left in "
              f"{run_dir.path}", file=sys.stderr)
    run_dir.check_writable()
    if getattr(module, "RESUMES", False):
        print(f"lmlab: resuming {run_dir.path}", file=sys.stderr)
    else:
        print(f"lmlab: {study} keeps no checkpoints; it starts again in {run_dir.path}",
              file=sys.stderr)
        run_dir.metrics_path.unlink(missing_ok=True)


def _outdated(module: Any, run_dir: RunDir) -> bool:
    """Whether a finished run has more to do by its study's ``outdated(run_dir)`` (the
    ``spectral`` study's folder of checkpoints that has grown since); False without one."""
    hook = getattr(module, "outdated", None)
    return bool(hook is not None and hook(run_dir))


def _start_meta(study: str, preset: str, cfg: Any, dev: Any,
                previous: dict[str, Any]) -> dict[str, Any]:
    """``meta.json`` at the start of a run (or of a resumed session)."""
    import socket

    from lmlab.runtime import environment_info

    meta = {"study": study, "preset": preset, "device": str(dev),
            "seed": getattr(cfg, "seed", None), "status": "running",
            "versions": environment_info(dev), "pid": os.getpid(),
            "host": socket.gethostname()}
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    if previous:
        meta.update(resumed=int(previous.get("resumed", 0)) + 1, resumed_at=now)
    else:
        meta["started"] = now
    return meta


def _error_line(exc: BaseException) -> str:
    """The one line that ``meta.json`` keeps of a failure."""
    if isinstance(exc, LmlabError):
        return first_line(exc)
    return f"{type(exc).__name__}: {first_line(exc)}"


def _record_end(run_dir: RunDir, meta: dict[str, Any]) -> None:
    """Record how a failed or interrupted run ended, as far as the disk allows.

    The error that ended the run is the one the user sees: an error of this bookkeeping (the
    disk that failed the run may fail ``meta.json`` too) is swallowed.
    """
    from lmlab.runs import render_report

    try:
        run_dir.update_meta(meta)
    except Exception:  # noqa: BLE001 - the run's own error is the one to show; try once more
        with contextlib.suppress(Exception):
            try:
                merged = {**run_dir.read_meta(), **meta}
            except Exception:  # noqa: BLE001 - a corrupt meta.json: write what is known
                merged = dict(meta)
            atomic_write_json(run_dir.path / "meta.json", merged)
    if (run_dir.path / "report.json").exists():  # the "What ran" section shows the end
        with contextlib.suppress(Exception):
            render_report(run_dir)


def _start(run_dir: RunDir, meta: dict[str, Any], cfg: Any, resumed: bool) -> None:
    """Write ``config.json`` and ``meta.json`` at the start of a run or a resumed session.

    A new run directory that cannot get its config is removed again (it holds nothing yet).
    """
    try:
        run_dir.save_config(cfg, meta=meta)
    except BaseException as exc:
        if resumed:
            _record_end(run_dir, {"status": "failed", "error": _error_line(exc)})
        else:
            shutil.rmtree(run_dir.path, ignore_errors=True)
        raise


def _execute(run_dir: RunDir, module: Any, cfg: Any, previous: dict[str, Any]) -> None:
    """Run the study, publish its result, and record the final status and duration.

    A run that fails records ``status: failed`` and the error's line in ``meta.json``.
    """
    from lmlab.runs import render_report
    from lmlab.studies.pattern import publish

    start = time.perf_counter()
    before = float(previous.get("duration_s") or 0.0)

    def ended(status: str) -> dict[str, Any]:
        return {"status": status, "duration_s": round(before + time.perf_counter() - start, 2)}

    try:
        result = module.run(cfg, run_dir)
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 publishes
            publish(run_dir, module, result)
        run_dir.update_meta(ended("finished"), drop=["error"])
        if (run_dir.path / "report.json").exists():  # the "What ran" section shows the end
            render_report(run_dir)
    except KeyboardInterrupt:
        _record_end(run_dir, ended("interrupted"))
        raise
    except BaseException as exc:
        _record_end(run_dir, {**ended("failed"), "error": _error_line(exc)})
        raise


def check_study(study: str, *, preset: str = "quick", overrides: Sequence[str] = (),
                out: str | Path = "runs", device: str | None = None, cfg: Any = None,
                config_file: str | Path | None = None) -> tuple[Any, Any]:
    """Check everything that can be checked before a run (``lmlab run ... --check``): the
    config, the study's inputs (its ``check``), the device and ``out``; write nothing.

    Returns:
        The resolved config and the torch device.

    >>> check_study("spectral", overrides=["max_n=100"])[0].max_n
    100
    """
    from lmlab.runs.rundir import check_runs_root
    from lmlab.runtime import check_seed

    module = get_study(study)
    cfg = cfg if cfg is not None else build_config(study, preset, overrides, device,
                                                   config_file)
    if getattr(cfg, "seed", None) is not None:  # seeding happens after the directory exists
        check_seed(cfg.seed)
    dev = _run_device(cfg)
    if hasattr(module, "check"):  # inputs that cannot work fail before a run directory exists
        module.check(cfg)
    check_runs_root(out)
    return cfg, dev


def run_study(study: str, *, preset: str = "quick", overrides: Sequence[str] = (),
              out: str | Path = "runs", device: str | None = None,
              name: str | None = None, cfg: Any = None,
              resume: bool | str | Path = False,
              config_file: str | Path | None = None) -> RunDir:
    """Run ``study`` into a new run directory under ``out`` and return that directory.

    The resolved config goes to ``config.json`` (``device: auto`` as the device it resolved to;
    a study without a ``device`` key computes on the CPU); ``meta.json`` records the study,
    preset, that device, seed, library versions, start time, duration and final status
    (``finished``, ``interrupted`` or ``failed``). The study's ``Result`` is saved under
    ``result/``, its figures under ``figures/`` and its report as ``report.md`` and
    ``report.html``.

    With ``resume`` (True: the newest run of this study with the same name under ``out``; or
    a run directory), an interrupted run continues in its own directory from its last
    checkpoints; its config must equal ``cfg``, on the same device type (a run that started on
    a GPU resumes with ``--device cuda``, one on the CPU with ``--device cpu``). A finished run
    is returned as it is, unless its study's ``outdated(run_dir)`` says it has more to do (a
    ``spectral`` series whose folder has new checkpoints): then it continues. Studies that keep
    no checkpoints (``RESUMES = False``) start again in that directory.

    The run directory is locked for the whole run (:meth:`lmlab.runs.RunDir.lock`): a second
    run or ``--resume`` of it, from any process, is refused while this one writes it. A run
    that fails records ``status: failed`` and its error's line in ``meta.json``.

    A ready ``cfg`` (from :func:`build_config`) is used as it is: ``overrides``, ``device`` and
    ``config_file`` are then not applied, and ``preset`` only labels the run.
    """
    from lmlab.runtime import seed_everything

    module = get_study(study)
    cfg, dev = check_study(study, preset=preset, overrides=overrides, out=out, device=device,
                           cfg=cfg, config_file=config_file)
    cfg = _resolved(cfg, dev)
    run_dir, previous = _open_run_dir(study, module, cfg, resume, out, name or preset)
    try:  # the run directory stays locked until the run ends
        if (previous is not None and previous.get("status") == "finished"
                and not _outdated(module, run_dir)):
            print(f"lmlab: {run_dir.path} has finished already; nothing to resume",
                  file=sys.stderr)
            return run_dir
        if previous is not None:
            _continue(run_dir, study, module)
        _start(run_dir, _start_meta(study, preset, cfg, dev, previous or {}), cfg,
               resumed=previous is not None)
        if getattr(cfg, "seed", None) is not None:
            seed_everything(int(cfg.seed))
        _execute(run_dir, module, cfg, previous or {})
    finally:
        run_dir.unlock()
    return run_dir
