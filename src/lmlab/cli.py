"""The ``lmlab`` command: argparse subcommands that call the library (no science here).

    lmlab study list
    lmlab study show <study>
    lmlab run <study> [--preset quick|paper] [--config FILE] [--set key=value ...] [--out DIR]
                      [--device D] [--resume [RUN_DIR]]
    lmlab spectral <model-or-path> [--out DIR] [--format csv|json|parquet] [...]
    lmlab spectral compare <A> <B> [--out DIR] [--layers ...] [...]
    lmlab report <run-dir>

A user mistake (bad path, unknown key, corrupt file) prints one line ``lmlab: error: ...`` and
exits with code 2; an interrupted run exits with 130.

>>> main(["study", "list"])  # doctest: +ELLIPSIS
spectral ...
0
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lmlab.errors import LmlabError

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise LmlabError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lmlab`` command."""
    from lmlab import __version__

    p = _Parser(prog="lmlab", description="A bench for the science of language-model training.")
    p.add_argument("--version", action="version", version=f"lmlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    st = sub.add_parser("study", help="list the studies, or show every option of one")
    st.add_argument("action", choices=["list", "show"],
                    help="list: the studies; show STUDY: every --set key with its type, "
                         "defaults and meaning")
    st.add_argument("study", nargs="?", default=None, help="the study to show")
    st.add_argument("--markdown", action="store_true",
                    help="show: Markdown tables of the options and the summary keys")

    r = sub.add_parser("run", help="run a study into a new run directory")
    r.add_argument("study", help="study name (see 'lmlab study list'), or 'all' for every "
                                 "study and one index page")
    r.add_argument("--preset", default="quick", help="quick (default) or paper")
    r.add_argument("--config", dest="config_file", default=None, metavar="FILE",
                   help="settings from a TOML, YAML or JSON file (the keys of 'lmlab study "
                        "show STUDY'); --set applies on top")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set max_n=none (repeatable)")
    r.add_argument("--out", default="runs", help="runs directory (default: ./runs)")
    r.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    r.add_argument("--name", default=None, help="label of the run directory (default: preset)")
    r.add_argument("--check", action="store_true",
                   help="check the settings and the inputs (model, data, device, --out) "
                        "without running anything")
    r.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                   help="continue the newest interrupted run of this command under --out (or "
                        "RUN_DIR) from its last checkpoint, with the same --preset and --set")

    s = sub.add_parser("spectral", help="analyse the weight spectra of a model or checkpoint")
    s.add_argument("model", help="offline model name (all-minilm-l6-v2), model directory, "
                                 ".safetensors/.pt file, hub id, or a folder of checkpoints "
                                 "(step_N/, checkpoint-N/, ckpt_N.pt: one row per layer per "
                                 "step)")
    s.add_argument("compare_models", nargs="*", default=[], metavar="B",
                   help="'lmlab spectral compare A B': compare two models, fine-tunes or LoRA "
                        "adapters layer by layer (Δα; a run of the spectral-compare study)")
    s.add_argument("--out", default="runs", help="runs directory (default: ./runs)")
    s.add_argument("--format", dest="table_format", default="csv",
                   choices=["csv", "json", "parquet"], help="format of the per-layer table")
    s.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                   help="only these layers (ids, names or types)")
    s.add_argument("--esd-layers", nargs="+", default=None, metavar="LAYER",
                   help="layers whose ESD to plot (default: lowest, median, highest α)")
    s.add_argument("--method", choices=["eigh", "svd"], default="eigh",
                   help="eigh: Gram matrix (fast, default); svd: weightwatcher's route")
    s.add_argument("--fast", action="store_true", help="float32 fast mode (α within ~1e-3)")
    s.add_argument("--fit-mode", choices=["ww", "xmin_peak"], default="ww",
                   help="xmin search: ww (weightwatcher, default) or xmin_peak")
    s.add_argument("--max-n", default="50000",
                   help="skip matrices with a side above this (default 50000); 'none' lifts it")
    s.add_argument("--threads", type=int, default=None, help="BLAS/torch threads")
    s.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    s.add_argument("--workers", type=int, default=None,
                   help="a folder of checkpoints: checkpoints analysed at once (default: one "
                        "per core); one model: matrices analysed at once, one process each "
                        "(default: every core for a large safetensors model, else 1)")
    s.add_argument("--backend", choices=["process", "inprocess", "ray"], default=None,
                   help="a folder of checkpoints: where they run (default: process pool)")
    s.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                   help="continue the newest run of this folder under --out (or RUN_DIR), "
                        "analysing only the checkpoints not done yet (new ones included)")

    rep = sub.add_parser("report", help="draw a finished run's figures and report again from "
                                        "its saved result (no model, no training)")
    rep.add_argument("run_dir", help="a run directory (holds config.json)")
    return p


def _cmd_study(args: argparse.Namespace) -> int:
    from lmlab.studies import study_table

    if args.action == "show":
        from lmlab.studies.options import format_options, markdown_reference

        if not args.study:
            raise LmlabError("name the study to show, e.g. 'lmlab study show charlm'")
        if args.study == "all":
            from lmlab.studies.options import reference_page

            print(reference_page(), end="")
            return 0
        print(markdown_reference(args.study) if args.markdown else format_options(args.study))
        return 0
    if args.study:
        raise LmlabError("'lmlab study list' takes no study name; use 'lmlab study show STUDY'")
    table = study_table()
    width = max(len(info.name) for info in table)
    for info in table:
        print(f"{info.name:<{width}}  {info.description}  [{info.source}]")
    return 0


def _cmd_run_all(args: argparse.Namespace) -> int:
    from lmlab.errors import LmlabError
    from lmlab.studies.lab import run_all

    if args.overrides or args.name or args.config_file:
        raise LmlabError("--set, --config and --name apply to one study; run that study on "
                         "its own to change its settings")
    if args.check:
        from lmlab.studies import study_names
        from lmlab.studies.runner import check_study

        for study in study_names():
            check_study(study, preset=args.preset, out=args.out, device=args.device)
        print(f"lmlab: every study's {args.preset} settings and inputs are valid; nothing "
              "was run")
        return 0
    lab, entries = run_all(args.preset, args.out, args.device, resume=args.resume)
    failed = [e.study for e in entries if e.run_dir is None]
    print(lab / "index.html")
    if failed:
        raise LmlabError(f"{len(failed)} of {len(entries)} studies did not finish "
                         f"({', '.join(failed)}); their errors are in {lab / 'index.html'}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import os

    from lmlab.studies.runner import run_study

    if args.study == "all":
        return _cmd_run_all(args)
    if args.check:
        from lmlab.studies.runner import check_study

        check_study(args.study, preset=args.preset, overrides=args.overrides, out=args.out,
                    device=args.device, config_file=args.config_file)
        print(f"lmlab: {args.study}: the settings and inputs are valid; nothing was run")
        return 0
    run_dir = run_study(args.study, preset=args.preset, overrides=args.overrides, out=args.out,
                        device=args.device, name=args.name, resume=args.resume,
                        config_file=args.config_file)
    if int(os.environ.get("RANK", "0")) > 0:  # under torchrun only rank 0 reports
        return 0
    _print_summary(run_dir)
    print(run_dir.path)
    return 0


def _spectral_overrides(args: argparse.Namespace) -> list[str]:
    sets = [f"model={args.model}", f"method={args.method}", f"fit_mode={args.fit_mode}",
            f"table_format={args.table_format}", f"max_n={args.max_n}"]
    if args.fast:
        sets.append("precision=float32")
    if args.layers:
        sets.append("layers=" + ",".join(args.layers))
    if args.esd_layers:
        sets.append("esd_layers=" + ",".join(args.esd_layers))
    if args.threads is not None:
        sets.append(f"threads={args.threads}")
    if args.workers is not None:
        sets.append(f"sweep.workers={args.workers}")
    if args.backend is not None:
        sets.append(f"sweep.backend={args.backend}")
    return sets


def _cmd_spectral_compare(args: argparse.Namespace) -> int:
    """``lmlab spectral compare A B``: a run of the spectral-compare study."""
    from pathlib import Path

    from lmlab.studies.runner import run_study

    if len(args.compare_models) != 2:
        raise LmlabError("'lmlab spectral compare' takes two models: lmlab spectral compare A "
                         f"B (got {len(args.compare_models)})")
    for flag in ("esd_layers", "workers", "backend", "resume"):
        if getattr(args, flag, None):
            raise LmlabError(f"--{flag.replace('_', '-')} does not apply to 'lmlab spectral "
                             "compare'")
    a, b = args.compare_models
    sets = [f"model_a={a}", f"model_b={b}", f"method={args.method}",
            f"fit_mode={args.fit_mode}", f"table_format={args.table_format}",
            f"max_n={args.max_n}"]
    if args.fast:
        sets.append("precision=float32")
    if args.layers:
        sets.append("layers=" + ",".join(args.layers))
    if args.threads is not None:
        sets.append(f"threads={args.threads}")
    label = "-vs-".join(Path(m.rstrip("/")).name or "model" for m in (a, b))
    run_dir = run_study("spectral-compare", preset="quick", overrides=sets, out=args.out,
                        device=args.device, name=label)
    _print_summary(run_dir)
    print(run_dir.path)
    return 0


def _cmd_spectral(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmlab.studies.runner import run_study

    if args.compare_models:  # 'compare A B'; a path named 'compare' alone is still a model
        if args.model != "compare":
            raise LmlabError(f"'lmlab spectral' takes one model (got {args.model!r} and "
                             f"{' '.join(args.compare_models)}); to compare two, use 'lmlab "
                             "spectral compare A B'")
        return _cmd_spectral_compare(args)

    label = Path(args.model.rstrip("/")).name or "model"
    run_dir = run_study("spectral", preset="quick", overrides=_spectral_overrides(args),
                        out=args.out, device=args.device, name=label, resume=args.resume)
    _print_summary(run_dir)
    print(run_dir.path)
    return 0


def _print_summary(run_dir: object) -> None:
    from lmlab.config import flatten_dotted

    summary = flatten_dotted(run_dir.read_summary())  # type: ignore[attr-defined]
    width = max((len(k) for k in summary), default=0)
    for key, value in summary.items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"  {key:<{width}}  {text}")
    print(f"  {'report':<{width}}  {run_dir.path / 'report.html'}")  # type: ignore[attr-defined]


def _cmd_report(args: argparse.Namespace) -> int:
    from lmlab.studies.pattern import redraw

    run_dir = redraw(args.run_dir)
    for name in ("report.md", "report.html"):
        print(run_dir.path / name)
    return 0


_COMMANDS = {"study": _cmd_study, "run": _cmd_run, "spectral": _cmd_spectral,
             "report": _cmd_report}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lmlab`` command; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        return _COMMANDS[args.command](args)
    except LmlabError as e:
        print(f"lmlab: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (``lmlab study show x | head``)
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # the last net for the file system's refusals (a name too long, ...)
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"lmlab: error: {e.strerror or type(e).__name__}{where}; check the path, its "
              "permissions and the free disk space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmlab: interrupted; the run directory keeps what was written so far "
              "(run the same command with --resume to continue)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
