"""Run a registered study: resolve its config, make the run directory, record what ran.

>>> cfg = build_config("spectral", "paper", ["precision=float32"])
>>> cfg.method, cfg.precision
('svd', 'float32')
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmlab.errors import LmlabError
from lmlab.studies.registry import PRESETS, get_study

__all__ = ["build_config", "run_study"]


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


def run_study(study: str, *, preset: str = "quick", overrides: Sequence[str] = (),
              out: str | Path = "runs", device: str | None = None,
              name: str | None = None, cfg: Any = None) -> Any:
    """Run ``study`` into a new run directory under ``out`` and return that directory.

    The resolved config goes to ``config.json``; ``meta.json`` records the study, preset,
    device, seed, library versions, start time, duration and final status (``finished``,
    ``interrupted`` or ``failed``).
    """
    from lmlab.runs import RunDir, render_report
    from lmlab.runtime import environment_info, resolve_device, seed_everything

    module = get_study(study)
    cfg = cfg if cfg is not None else build_config(study, preset, overrides, device)
    dev = resolve_device(getattr(cfg, "device", None))
    if hasattr(module, "check"):  # inputs that cannot work fail before a run directory exists
        module.check(cfg)
    if int(os.environ.get("RANK", "0")) > 0:  # torchrun: only rank 0 writes the run directory
        scratch = tempfile.mkdtemp(prefix=f"lmlab-rank{os.environ['RANK']}-")
        run_dir = RunDir.create(scratch, study, name or preset)
    else:
        run_dir = RunDir.create(out, study, name or preset)
    seed = getattr(cfg, "seed", None)
    run_dir.save_config(cfg, meta={
        "study": study, "preset": preset, "device": str(dev), "seed": seed,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "status": "running",
        "versions": environment_info(dev),
    })
    if seed is not None:
        seed_everything(int(seed))
    start = time.perf_counter()
    status = "failed"
    try:
        module.run(cfg, run_dir)
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        run_dir.update_meta({"status": status,
                             "duration_s": round(time.perf_counter() - start, 2)})
        if (run_dir.path / "report.json").exists():  # the "What ran" section shows the end
            render_report(run_dir)
    return run_dir
