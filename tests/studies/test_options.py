"""``lmlab study show``: every --set key of every study, with type, defaults and meaning; and
``lmlab run --config FILE`` reading the same keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmlab.cli import main
from lmlab.config import config_keys
from lmlab.errors import LmlabError
from lmlab.studies import build_config, get_study, study_names
from lmlab.studies.options import field_docs, study_options


def _as_set(value: str) -> str:
    return "" if value == "(empty)" else value


@pytest.mark.parametrize("study", study_names())
def test_every_listed_key_is_a_set_key_and_every_field_is_listed(study: str) -> None:
    opts = study_options(study)
    listed = [o.key for o in opts]
    assert listed == config_keys(get_study(study).Config)
    quick = get_study(study).Config.quick()
    for o in opts:  # each key takes its own shown default back through --set
        assert build_config(study, "quick", [f"{o.key}={_as_set(o.quick)}"]) == quick, o.key


@pytest.mark.parametrize("study", study_names())
def test_every_key_says_what_it_means(study: str) -> None:
    missing = [o.key for o in study_options(study) if not o.doc]
    assert missing == [], f"{study}: document these fields in the config's Attributes section"


def test_show_prints_types_defaults_and_meanings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "show", "charlm"]) == 0
    out = capsys.readouterr().out
    assert "mlp.train.steps" in out and "int" in out
    assert "quick 20000 | paper 200000" in out  # both presets' defaults where they differ
    for o in study_options("charlm"):
        assert o.key in out


def test_show_needs_a_known_study(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "show", "charm"]) == 2
    assert "did you mean 'charlm'" in capsys.readouterr().err
    assert main(["study", "show"]) == 2


def test_field_docs_reads_multi_line_attributes() -> None:
    docs = field_docs(get_study("spectral").Config)
    assert docs["max_n"].startswith("skip matrices with a side larger than this")
    assert "none" in docs["max_n"]  # the continuation line is joined


@pytest.mark.parametrize("suffix, text", [
    (".toml", 'method = "svd"\nmax_n = 1000\nlayers = ["dense"]\n'),
    (".yaml", "method: svd\nmax_n: 1000\nlayers: [dense]\n"),
    (".json", '{"method": "svd", "max_n": 1000, "layers": ["dense"]}'),
])
def test_config_file_sets_the_same_keys(suffix: str, text: str, tmp_path: Path) -> None:
    path = tmp_path / f"cfg{suffix}"
    path.write_text(text)
    cfg = build_config("spectral", "quick", ["max_n=2000"], config_file=path)
    assert (cfg.method, cfg.max_n, cfg.layers) == ("svd", 2000, ("dense",))  # --set on top


def test_config_file_sections_and_dotted_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[mlp.train]\nsteps = 7\n")
    assert build_config("charlm", "quick", config_file=path).mlp.train.steps == 7
    path.write_text('"mlp.train.steps" = 9\n')
    assert build_config("charlm", "quick", config_file=path).mlp.train.steps == 9


@pytest.mark.parametrize("text, expect", [
    ("methd: svd\n", "did you mean 'method'"),
    ("max_n: lots\n", "max_n"),
    ("- a\n- b\n", "table"),
    ("method: [\n", "cannot parse"),
])
def test_config_file_mistakes_are_one_line(text: str, expect: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    out = tmp_path / "runs"
    assert main(["run", "spectral", "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0] and "Traceback" not in err[0]
    assert not out.exists()


def test_config_file_must_exist() -> None:
    with pytest.raises(LmlabError, match="not found"):
        build_config("spectral", "quick", config_file="/nonexistent/c.toml")


def test_docs_reference_is_current() -> None:
    from lmlab.studies.options import reference_page

    page = Path(__file__).resolve().parents[2] / "docs" / "reference.md"
    assert page.read_text(encoding="utf-8") == reference_page(), (
        "docs/reference.md is out of date: run `lmlab study show all > docs/reference.md`")


def test_show_prints_each_range_next_to_its_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "show", "charlm"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("mlp.train.steps "))
    assert "int in [1, 1e7]  [default: quick 20000 | paper 200000]" in line
    assert "2 comma-separated values, each float in [0, 1)" in out  # the betas
    assert "(upper bound: the loss of every step is kept in memory)" in out
    assert "int in [0, 4294967295]" in out  # the seeds


def test_the_reference_shows_ranges_and_choices_next_to_the_types() -> None:
    from lmlab.studies.options import markdown_reference

    md = markdown_reference("attention-phase")
    assert "| `grid.alpha_points` | int in [1, 1000] |" in md
    assert "| `gd.lr` | float > 0 |" in md
    assert "comma-separated list of one of 'semantic', 'positional', 'random'" in md
    assert "| `sweep.workers` | int in [1, 1024] or None |" in md
    assert "| `dtype` | one of 'float32', 'float64' |" in md


def test_options_keep_the_bare_type_beside_the_allowed_values() -> None:
    opts = {o.key: o for o in study_options("finetune-spectral")}
    assert (opts["train.lr"].type, opts["train.lr"].allowed) == ("float", "float > 0")
    assert opts["data.test_fraction"].allowed == "float in (0, 1)"
    assert opts["train.max_steps"].allowed == "int in [1, 1e7] or None"
    assert opts["model"].allowed == "str"  # no range: the type alone
