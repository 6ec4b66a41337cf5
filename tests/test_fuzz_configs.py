"""Fuzz every ``--set`` key of every study with hostile values, through the command line.

The cases are generated from the configs themselves (``study_names()`` × ``study_options()``,
each key's annotated type choosing its hostile values), so a new study or field is covered by
itself. Every case runs ``lmlab run STUDY --check --set KEY=VALUE --out TMP`` and must end with
exit 0, or exit 2 and exactly one ``lmlab: error: ...`` line on stderr — never a traceback,
never a run directory. Each study's test prints ``fuzz STUDY: N cases, F failures``.
"""

from __future__ import annotations

import contextlib
import io
import traceback
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest

from lmlab._coerce import field_types, is_union, section_class
from lmlab.cli import main
from lmlab.studies import get_study, study_names
from lmlab.studies.options import study_options

NUMBERS = ["-1", "0", "nan", "inf", "-inf", "1e30", str(10**12), "", "abc"]
STRINGS = ["", "x" * 5000, "/nonexistent/x"]
BOOLS = ["maybe", ""]


def annotation(config: type, key: str) -> Any:
    """The annotated type of a dotted ``--set`` key, without ``| None``."""
    cls: Any = config
    for part in key.split("."):
        tp = field_types(cls)[part]
        cls = section_class(tp) or tp
    if is_union(tp):
        args = [a for a in get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else tp
    return tp


def _scalar_values(tp: Any) -> list[str]:
    if tp is bool:
        return BOOLS
    if tp in (int, float):
        return NUMBERS
    return STRINGS  # str, paths, Literal choices


def hostile_values(tp: Any) -> list[str]:
    """The hostile ``--set`` values for a field of annotated type ``tp``."""
    origin = get_origin(tp)
    if origin not in (tuple, list):
        return _scalar_values(tp)
    args = get_args(tp)
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        n, item = len(args), args[0]  # fixed length: wrong lengths and wrong items
        bad = ["abc"] if item in (int, float) else ["1e30"] if item is bool else ["x" * 5000]
        return ["", "[]", ",".join(["0.5"] * (n - 1)), ",".join(["0.5"] * (n + 1)),
                *(",".join([v] * n) for v in ("-1", "nan", "inf", "1e30", *bad))]
    item = args[0] if args else str
    elements = [v for v in _scalar_values(item) if v]  # the empty one: the empty list below
    return ["", "[]", *elements, f"[{elements[0]}, {elements[-1]}]"]


def cases(study: str) -> list[tuple[str, str]]:
    """Every (key, hostile value) pair of a study."""
    config = get_study(study).Config
    return [(o.key, v) for o in study_options(study) for v in hostile_values(
        annotation(config, o.key))]


def run_case(study: str, key: str, value: str, out: Path,
             preset: str = "quick") -> str | None:
    """One case through ``lmlab.cli.main``; what went wrong, or None."""
    err, std = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
            code = main(["run", study, "--check", "--preset", preset, "--set",
                         f"{key}={value}", "--out", str(out)])
    except BaseException:  # noqa: BLE001 - a traceback is what the fuzz looks for
        return "raised " + traceback.format_exc(limit=-1).strip().splitlines()[-1][:200]
    lines = [line[:200] for line in err.getvalue().strip().splitlines()]
    if out.exists():
        return f"exit {code}, but {out} exists"
    if code == 0:
        return None
    if code != 2:
        return f"exit {code}: {lines[-1:] or 'no message'}"
    if "Traceback" in err.getvalue():
        return "a traceback on stderr"
    if len(lines) != 1 or not lines[0].startswith("lmlab: error: "):
        return f"stderr is not one 'lmlab: error:' line: {lines[:3]}"
    return None


def fuzz(study: str, tmp_path: Path, preset: str = "quick") -> tuple[int, list[str]]:
    """Run every case of ``study``; (cases tried, failures)."""
    out = tmp_path / "runs"
    todo = cases(study)
    failures = [f"{key}={value[:40]!r}: {problem}" for key, value in todo
                if (problem := run_case(study, key, value, out, preset)) is not None]
    print(f"fuzz {study} ({preset}): {len(todo)} cases, {len(failures)} failures")
    return len(todo), failures


@pytest.mark.parametrize("study", study_names())
def test_every_key_survives_hostile_values(study: str, tmp_path: Path) -> None:
    tried, failures = fuzz(study, tmp_path)
    assert tried > 0
    assert not failures, f"{len(failures)} of {tried} cases failed:\n" + "\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize("study", study_names())
def test_every_key_survives_hostile_values_on_the_paper_preset(study: str,
                                                               tmp_path: Path) -> None:
    tried, failures = fuzz(study, tmp_path, preset="paper")
    assert not failures, f"{len(failures)} of {tried} cases failed:\n" + "\n".join(failures)


def test_the_cases_cover_every_kind_of_field() -> None:
    assert hostile_values(int) == NUMBERS and hostile_values(bool) == BOOLS
    assert "" in hostile_values(tuple[float, float]) and "0.5" in hostile_values(
        tuple[float, float])  # one number short of two
    assert "x" * 5000 in hostile_values(Literal["a", "b"])
    assert "abc" in hostile_values(tuple[int, ...])


# --- regression tests: the settings defects of issue 15, each refused before a run directory
# exists (a real `lmlab run`, not --check: the refusal must come before any work) -------------

DEFECTS = [
    ("optimizers", ["train.max_steps=0"], "'train.max_steps' must be in [1, 1e7], got 0"),
    ("optimizers", ["train.max_steps=-1"], "'train.max_steps' must be in [1, 1e7], got -1"),
    ("finetune-spectral", ["train.optimizer=LBFGS"], "needs a closure"),
    ("finetune-spectral", ["train.optimizer=SparseAdam"], "SparseAdam"),
    ("optimizers", ["optimizers=adamw,lbfgs"], "unknown optimizer 'lbfgs'"),
    ("optimizers", ["optimizers=adamw,LBFGS"], "use adamw, sgd or one of: ASGD"),
    ("charlm", ["transformer.n_head=0"], "'transformer.n_head' must be in [1, 64], got 0"),
    ("charlm", ["transformer.n_head=3"], "must be a multiple of transformer.n_head=3"),
    ("charlm", ["transformer.n_embd=0"], "'transformer.n_embd' must be in [1, 4096], got 0"),
    ("charlm", ["transformer.n_layer=0"], "'transformer.n_layer'"),
    ("charlm", ["wavenet.block_size=0"], "'wavenet.block_size' must be in [2, 64], got 0"),
    ("charlm", ["wavenet.block_size=12"], "power of 2"),
    ("charlm", ["wavenet.n_hidden=0"], "'wavenet.n_hidden'"),
    ("charlm", ["mlp.n_embd=0"], "'mlp.n_embd' must be in [1, 1024], got 0"),
    ("charlm", ["transformer.n_embd=4096"], "GiB while it trains"),
    ("charlm", ["mlp.train.weight_decay=nan"], "'mlp.train.weight_decay' must be a finite"),
    ("finetune-spectral", ["train.weight_decay=nan"], "'train.weight_decay' must be a finite"),
    ("charlm", ["transformer.train.betas=0.9,1.0"], "betas' values must be in [0, 1), got 1.0"),
    ("charlm", ["transformer.train.betas=-0.1,0.99"], "got -0.1"),
    ("attention-phase", ["grid.alpha_points=1000000000"], "'grid.alpha_points' must be in"),
    ("attention-phase", ["grid.alpha_points=1000", "grid.seeds=10000"], "students"),
    ("attention-phase", ["n_test=1000000", "task.d=10000"], "GiB"),
    ("finetune-spectral", ["train.batch_size=10000000000"], "'train.batch_size' must be in"),
    ("finetune-spectral", ["train.batch_size=1024"], "tokens per batch"),
    ("charlm", ["mlp.train.batch_size=1e10"], "'mlp.train.batch_size' must be in [2, 4096]"),
    ("charlm", ["seed=-1"], "'seed' must be in [0, 4294967295], got -1"),
    ("charlm", ["seed=4294967296"], "NumPy"),
    ("charlm", ["data.split_seed=-5"], "'data.split_seed'"),
    ("finetune-spectral", ["data.seed=99999999999"], "'data.seed'"),
    ("induction", ["seed=-1"], "'seed'"),
    ("attention-phase", ["seed=-1"], "'seed'"),
    ("charlm", ["data.path="], "'data.path' is empty"),
    ("finetune-spectral", ["data.path= "], "'data.path' is empty"),
    ("induction", ["eval_cheap=5000", "eval_full=1000"], "must not exceed"),
    ("induction", ["steps=400000", "save_every=200"], "checkpoints"),
]


@pytest.mark.parametrize("study, sets, message", DEFECTS)
def test_each_settings_defect_is_refused_before_a_run_directory(
        study: str, sets: list[str], message: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    argv = ["run", study, "--out", str(out), *[a for s in sets for a in ("--set", s)]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmlab: error: "), err
    assert message in lines[0] and "Traceback" not in err
    assert not out.exists()


def test_max_steps_none_runs_every_epoch_and_a_positive_value_is_honoured() -> None:
    from lmlab.studies import build_config

    assert build_config("optimizers", "quick").train.max_steps is None
    assert build_config("optimizers", "quick", ["train.max_steps=3"]).train.max_steps == 3


def test_every_optimizer_the_settings_accept_takes_a_step_of_the_training_loop() -> None:
    import torch

    from lmlab.train.loop import TrainConfig, build_optimizer, supported_optimizers

    names = supported_optimizers()
    assert {"AdamW", "SGD", "Adam"} <= set(names)
    assert not {"LBFGS", "SparseAdam"} & set(names)
    for name in names:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
        opt = build_optimizer(model, TrainConfig(optimizer=name, lr=1e-2))
        before = [p.detach().clone() for p in model.parameters()]
        model(torch.ones(4, 3)).pow(2).sum().backward()
        opt.step()  # no closure: the loop's call
        after = list(model.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True)), name


def test_checking_an_optimizer_draws_no_random_numbers() -> None:
    import torch

    from lmlab.train.loop import _optimizer_class, _unusable

    _unusable.cache_clear()
    state = torch.random.get_rng_state()
    for name in ("RMSprop", "Adagrad", "NAdam"):
        _optimizer_class(name)
    assert torch.equal(state, torch.random.get_rng_state())
