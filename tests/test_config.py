from __future__ import annotations

import dataclasses
import enum
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, get_args, get_origin

import pytest

from lmlab._coerce import type_name
from lmlab.config import (
    MAX_SEED,
    Range,
    apply_overrides,
    check_ranges,
    config_diff,
    config_from_dict,
    config_keys,
    config_to_dict,
    load_config_file,
    ranged,
    seed_field,
)
from lmlab.errors import LmlabError
from lmlab.studies import get_study, study_names


@dataclass(frozen=True)
class Train:
    lr: float = 0.1
    steps: int = 100
    use_amp: bool = False
    optimizer: Literal["sgd", "adam"] = "adam"
    widths: tuple[int, ...] = (8, 16)
    betas: tuple[float, ...] = (0.9, 0.999)

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"train.lr must be positive, got {self.lr}")


@dataclass(frozen=True)
class Data:
    name: str = "names"
    root: Path = Path("data")
    limit: int | None = None
    tags: tuple[str, ...] = ()
    scale: Optional[float] = None  # noqa: UP045  (the Optional spelling must work too)


@dataclass(frozen=True)
class Cfg:
    seed: int = 0
    device: str = "cpu"
    train: Train = field(default_factory=Train)
    data: Data = field(default_factory=Data)

    def validate(self) -> None:
        if self.seed < 0:
            raise LmlabError("seed must be >= 0")


def test_overrides_coerce_every_supported_type() -> None:
    cfg = apply_overrides(
        Cfg(),
        [
            "seed=7",
            "train.lr=3e-4",
            "train.steps=1e3",
            "train.use_amp=YES",
            "train.optimizer=sgd",
            "train.widths=[32, 64,128]",
            "train.betas=0.8,0.95",
            "data.name=wiki",
            "data.root=/tmp/corpus",
            "data.limit=50",
            "data.tags=(a, 'b')",
            "data.scale=2.5",
        ],
    )
    assert cfg.seed == 7
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.steps == 1000 and isinstance(cfg.train.steps, int)
    assert cfg.train.use_amp is True
    assert cfg.train.optimizer == "sgd"
    assert cfg.train.widths == (32, 64, 128)
    assert cfg.train.betas == (0.8, 0.95)
    assert cfg.data == Data(
        name="wiki", root=Path("/tmp/corpus"), limit=50, tags=("a", "b"), scale=2.5
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("False", False), ("1", True), ("0", False), ("no", False), ("Yes", True)],
)
def test_bool_spellings(text: str, expected: bool) -> None:
    assert apply_overrides(Cfg(), [f"train.use_amp={text}"]).train.use_amp is expected


def test_none_and_null_set_optional_fields() -> None:
    cfg = apply_overrides(Cfg(), ["data.limit=5", "data.scale=1"])
    cleared = apply_overrides(cfg, ["data.limit=none", "data.scale=NULL"])
    assert cleared.data.limit is None and cleared.data.scale is None


def test_overrides_return_new_object_and_keep_the_original() -> None:
    base = Cfg()
    new = apply_overrides(base, ["train.lr=0.5"])
    assert base.train.lr == 0.1 and new.train.lr == 0.5
    assert new.data is base.data  # untouched sections are shared, not rebuilt
    assert apply_overrides(base, []) == base


def test_later_override_wins() -> None:
    assert apply_overrides(Cfg(), ["seed=1", "seed=2"]).seed == 2


def test_unknown_key_names_nearest() -> None:
    with pytest.raises(LmlabError) as err:
        apply_overrides(Cfg(), ["trian.lr=0.1"])
    assert str(err.value) == "unknown config key 'trian.lr'; did you mean 'train.lr'?"


def test_unknown_leaf_name_suggests_full_key() -> None:
    with pytest.raises(LmlabError, match=r"did you mean 'train\.steps'\?"):
        apply_overrides(Cfg(), ["stesp=3"])


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    with pytest.raises(LmlabError) as err:
        apply_overrides(Cfg(), ["zzzzzzzz=1"])
    message = str(err.value)
    assert "valid keys are:" in message
    assert "train.lr" in message and "data.limit" in message
    assert "\n" not in message


def test_override_without_equals_sign() -> None:
    with pytest.raises(LmlabError, match="key=value"):
        apply_overrides(Cfg(), ["train.lr"])
    with pytest.raises(LmlabError, match="key=value"):
        apply_overrides(Cfg(), ["=3"])


def test_bad_value_names_key_type_and_value() -> None:
    with pytest.raises(LmlabError) as err:
        apply_overrides(Cfg(), ["train.steps=ten"])
    assert str(err.value) == "invalid value for 'train.steps': expected int, got 'ten'"
    with pytest.raises(LmlabError, match=r"'train\.use_amp'.*bool.*'maybe'"):
        apply_overrides(Cfg(), ["train.use_amp=maybe"])
    with pytest.raises(LmlabError, match=r"'train\.widths'.*int.*'8,x'"):
        apply_overrides(Cfg(), ["train.widths=8,x"])
    with pytest.raises(LmlabError, match=r"'train\.steps'.*2\.5"):
        apply_overrides(Cfg(), ["train.steps=2.5"])


def test_literal_error_lists_allowed_values() -> None:
    with pytest.raises(LmlabError) as err:
        apply_overrides(Cfg(), ["train.optimizer=lion"])
    assert "one of 'sgd', 'adam'" in str(err.value)
    assert "'lion'" in str(err.value)


def test_setting_a_section_is_an_error() -> None:
    with pytest.raises(LmlabError) as err:
        apply_overrides(Cfg(), ["train=3"])
    assert "'train' is a config section" in str(err.value)
    assert "train.lr" in str(err.value)


def test_key_below_a_leaf_is_unknown() -> None:
    with pytest.raises(LmlabError, match="unknown config key 'seed.x'"):
        apply_overrides(Cfg(), ["seed.x=1"])


def test_validate_runs_after_overrides() -> None:
    with pytest.raises(LmlabError, match="seed must be >= 0"):
        apply_overrides(Cfg(), ["seed=-1"])
    with pytest.raises(LmlabError, match="train.lr must be positive"):
        apply_overrides(Cfg(), ["train.lr=0"])


def test_config_keys_lists_dotted_leaves() -> None:
    keys = config_keys(Cfg)
    assert keys[:3] == ["seed", "device", "train.lr"]
    assert "data.scale" in keys and "train" not in keys
    assert config_keys(Cfg()) == keys


def test_dict_round_trip_is_json_safe() -> None:
    cfg = apply_overrides(Cfg(), ["data.root=/x/y", "train.widths=1,2", "data.limit=3"])
    d = config_to_dict(cfg)
    text = json.dumps(d, allow_nan=False)
    assert d["train"]["widths"] == [1, 2]
    assert d["data"]["root"] == "/x/y"
    assert config_from_dict(Cfg, json.loads(text)) == cfg


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "NaN", "1e999"])
def test_non_finite_overrides_are_rejected(text: str) -> None:
    with pytest.raises(LmlabError, match=rf"^'train\.lr' must be a finite number, got '{text}'$"):
        apply_overrides(Cfg(), [f"train.lr={text}"])
    with pytest.raises(LmlabError, match=r"'train\.betas' must be a finite number"):
        apply_overrides(Cfg(), [f"train.betas=0.9,{text}"])
    with pytest.raises(LmlabError, match=r"'data\.scale' must be a finite number"):
        apply_overrides(Cfg(), [f"data.scale={text}"])


def test_non_finite_values_in_files_and_dicts_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(LmlabError, match=r"'train\.lr' must be a finite number, got 'inf'"):
        config_from_dict(Cfg, {"train": {"lr": "inf"}})  # as an older lmlab wrote it
    with pytest.raises(LmlabError, match=r"'train\.lr' must be a finite number, got nan"):
        config_from_dict(Cfg, {"train.lr": float("nan")})
    toml = tmp_path / "c.toml"
    toml.write_text("[train]\nlr = inf\n")
    with pytest.raises(LmlabError, match=r"'train\.lr' must be a finite number"):
        load_config_file(Cfg, toml)


def test_a_non_finite_config_built_in_python_fails_validation() -> None:
    cfg = Cfg(train=Train(lr=float("inf")))
    with pytest.raises(LmlabError, match=r"^'train\.lr' must be a finite number, got inf$"):
        apply_overrides(cfg, ["seed=1"])
    d = config_to_dict(cfg)  # the one NaN policy: null, never "inf" or Infinity
    assert d["train"]["lr"] is None
    json.dumps(d, allow_nan=False)


class Mode(enum.Enum):
    FAST = "f"
    SLOW = "s"


@dataclass(frozen=True)
class WithEnum:
    mode: Mode = Mode.FAST
    train: Train = field(default_factory=Train)


def test_config_to_dict_writes_enums_by_name_and_sections_by_field() -> None:
    d = config_to_dict(WithEnum(mode=Mode.SLOW))
    assert d["mode"] == "SLOW" and d["train"]["betas"] == [0.9, 0.999]
    assert config_from_dict(WithEnum, d) == WithEnum(mode=Mode.SLOW)


def test_config_diff_lists_changed_dotted_keys() -> None:
    old = {"_study": "x", "seed": 0, "train": {"lr": 0.1, "widths": [8, 16]}, "out_dir": "a"}
    new = {"_study": "y", "seed": 0, "train.lr": 0.2, "train.widths": [8, 16], "out_dir": "b",
           "extra": 1}
    assert config_diff(old, new, ignore={"out_dir"}) == [
        "extra: None in the run, 1 now",
        "train.lr: 0.1 in the run, 0.2 now",
    ]
    cfg = apply_overrides(Cfg(), ["train.widths=1,2"])
    saved = json.loads(json.dumps(config_to_dict(cfg)))
    assert config_diff(saved, config_to_dict(cfg)) == []


def test_from_dict_keeps_defaults_and_accepts_dotted_keys() -> None:
    cfg = config_from_dict(Cfg, {"train.lr": 0.5, "data": {"tags": ["x"]}, "_study": "demo"})
    assert cfg.train.lr == 0.5 and cfg.train.steps == 100
    assert cfg.data.tags == ("x",)


def test_from_dict_rejects_unknown_keys_with_suggestion() -> None:
    with pytest.raises(
        LmlabError, match=r"unknown config key 'train\.lrr'; did you mean 'train\.lr'"
    ):
        config_from_dict(Cfg, {"train": {"lrr": 0.1}})


def test_from_dict_rejects_bad_types() -> None:
    with pytest.raises(LmlabError, match=r"'train\.steps'.*int"):
        config_from_dict(Cfg, {"train": {"steps": "many"}})
    with pytest.raises(LmlabError, match=r"'seed'.*int.*true"):
        config_from_dict(Cfg, {"seed": True})
    with pytest.raises(LmlabError, match="'train' is a config section"):
        config_from_dict(Cfg, {"train": 3})


def test_from_dict_reports_missing_required_keys() -> None:
    @dataclass(frozen=True)
    class Needs:
        n: int

    with pytest.raises(LmlabError, match="missing required key"):
        config_from_dict(Needs, {})


def test_classes_defined_inside_functions_resolve() -> None:
    @dataclass(frozen=True)
    class Inner:
        k: int = 1

    @dataclass(frozen=True)
    class Outer:
        inner: Inner = field(default_factory=Inner)

    assert apply_overrides(Outer(), ["inner.k=4"]).inner.k == 4


def test_load_toml_and_json(tmp_path: Path) -> None:
    toml_file = tmp_path / "c.toml"
    toml_file.write_text('seed = 3\n[train]\nlr = 0.25\nwidths = [4, 5]\n[data]\nroot = "d"\n')
    cfg = load_config_file(Cfg, toml_file)
    assert cfg.seed == 3 and cfg.train.lr == 0.25 and cfg.train.widths == (4, 5)
    assert cfg.data.root == Path("d")
    json_file = tmp_path / "c.json"
    json_file.write_text(json.dumps(config_to_dict(cfg)))
    assert load_config_file(Cfg, json_file) == cfg


def test_load_config_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(LmlabError, match="not found: .*nope.toml"):
        load_config_file(Cfg, missing)
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = = 3\n")
    with pytest.raises(LmlabError) as err:
        load_config_file(Cfg, bad)
    assert "bad.toml" in str(err.value) and "\n" not in str(err.value)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{seed: 1")
    with pytest.raises(LmlabError, match="cannot parse config file .*bad.json"):
        load_config_file(Cfg, bad_json)
    yaml = tmp_path / "c.yaml"
    yaml.write_text("seed: 1")
    assert load_config_file(Cfg, yaml).seed == 1
    ini = tmp_path / "c.ini"
    ini.write_text("seed = 1")
    with pytest.raises(LmlabError, match=r"\.toml, \.yaml or \.json"):
        load_config_file(Cfg, ini)
    with pytest.raises(LmlabError, match="unknown config key 'sed'"):
        (tmp_path / "typo.json").write_text('{"sed": 1}')
        load_config_file(Cfg, tmp_path / "typo.json")


def test_frozen_configs_stay_frozen() -> None:
    cfg = apply_overrides(Cfg(), ["seed=1"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 2  # type: ignore[misc]


@dataclass(frozen=True)
class Sched:
    warmup: int = 10


@dataclass(frozen=True)
class WithOptionalSection:
    sched: Sched | None = None


def test_optional_section_can_be_filled_and_cleared() -> None:
    assert config_keys(WithOptionalSection) == ["sched.warmup"]
    filled = apply_overrides(WithOptionalSection(), ["sched.warmup=5"])
    assert filled.sched == Sched(warmup=5)
    assert apply_overrides(filled, ["sched=none"]).sched is None
    with pytest.raises(LmlabError, match="'sched' is a config section"):
        apply_overrides(filled, ["sched=3"])
    assert config_from_dict(WithOptionalSection, config_to_dict(filled)) == filled
    assert config_from_dict(WithOptionalSection, {"sched": None}).sched is None


# --- valid ranges, declared with the fields (lmlab.config.ranged) ----------------------------

@dataclass(frozen=True)
class Ranged:
    steps: int = ranged(10, 1, 1000, why="every step is kept")
    lr: float = ranged(0.1, 0, open_lo=True)
    betas: tuple[float, float] = ranged((0.9, 0.99), 0, 1, open_hi=True)
    limit: int | None = ranged(None, 1)
    widths: tuple[int, ...] = ranged((8,), 1, 64)
    path: str | None = None
    seed: int = seed_field(0)
    train: Train = field(default_factory=Train)


@pytest.mark.parametrize(("override", "message"), [
    ("steps=0", "'steps' must be in [1, 1000], got 0"),
    ("steps=5000", "'steps' must be in [1, 1000], got 5000 (every step is kept)"),
    ("lr=0", "'lr' must be > 0, got 0.0"),
    ("lr=-1", "'lr' must be > 0, got -1.0"),
    ("betas=0.9,1", "'betas' values must be in [0, 1), got 1.0"),
    ("limit=0", "'limit' must be ≥ 1, got 0"),
    ("widths=8,0", "'widths' values must be in [1, 64], got 0"),
    ("seed=-1", "'seed' must be in [0, 4294967295], got -1"),
    ("path=", "'path' is empty; give a value, or none"),
    ("path=" + "x" * 5000, "'path' is 5000 characters long; at most 4096"),
])
def test_a_value_out_of_its_declared_range_is_one_line(override: str, message: str) -> None:
    with pytest.raises(LmlabError) as err:
        apply_overrides(Ranged(), [override])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    with pytest.raises(LmlabError, match=re.escape(message)):
        key, _, raw = override.partition("=")
        config_from_dict(Ranged, {key: raw})


def test_values_in_range_bounds_included_and_none_pass() -> None:
    cfg = apply_overrides(Ranged(), ["steps=1000", "lr=1e-9", "betas=0,0.999", "limit=none",
                                     "widths=1,64", "seed=4294967295", "path=a.txt"])
    assert (cfg.steps, cfg.limit, cfg.widths, cfg.seed) == (1000, None, (1, 64), 2**32 - 1)
    assert config_from_dict(Ranged, config_to_dict(cfg)) == cfg


def test_a_config_built_in_python_is_range_checked_when_validated() -> None:
    with pytest.raises(LmlabError, match=r"^'steps' must be in \[1, 1000\], got 0$"):
        apply_overrides(Ranged(steps=0), [])
    check_ranges(Ranged())  # in range: nothing to say
    with pytest.raises(LmlabError, match=r"^'train.steps' must be"):
        check_ranges(Ranged(steps=-3), "train.")


def test_ranges_are_checked_before_validate_so_it_may_divide_by_them() -> None:
    @dataclass(frozen=True)
    class Heads:
        n_embd: int = ranged(64, 1)
        n_head: int = ranged(4, 1)

        def validate(self) -> None:
            if self.n_embd % self.n_head:
                raise LmlabError("n_head must divide n_embd")

    with pytest.raises(LmlabError, match="'n_head' must be ≥ 1, got 0"):
        apply_overrides(Heads(), ["n_head=0"])  # not ZeroDivisionError
    with pytest.raises(LmlabError, match="divide"):
        apply_overrides(Heads(), ["n_head=3"])


def test_range_text_and_type_names() -> None:
    assert [str(r) for r in (Range(1), Range(0, open_lo=True), Range(0, 1, open_hi=True),
                             Range(hi=5), Range(1, 10**7), Range(0, 2**32 - 1))] == [
        "≥ 1", "> 0", "in [0, 1)", "≤ 5", "in [1, 1e7]", "in [0, 4294967295]"]
    assert type_name(int | None, Range(1)) == "int ≥ 1 or None"
    assert type_name(tuple[float, ...], Range(0, 1)) == "comma-separated list of float in [0, 1]"
    assert type_name(tuple[float, float], Range(0, 1, open_hi=True)) == (
        "2 comma-separated values, each float in [0, 1)")
    assert type_name(int) == "int"  # no rule: the bare type, as in error messages
    assert MAX_SEED == 2**32 - 1


def _numeric(tp: Any) -> bool:
    args = [a for a in get_args(tp) if a is not type(None) and a is not Ellipsis]
    if get_origin(tp) is Literal:
        return False
    return tp in (int, float) or any(_numeric(a) for a in args)


def _fields(cls: type, prefix: str = "") -> list[tuple[str, Any, dataclasses.Field[Any]]]:
    from lmlab._coerce import field_types, section_class

    out = []
    hints = field_types(cls)
    for f in dataclasses.fields(cls):
        section = section_class(hints.get(f.name))
        if section is not None:
            out += _fields(section, f"{prefix}{f.name}.")
        elif f.init:
            out.append((prefix + f.name, hints[f.name], f))
    return out


@pytest.mark.parametrize("study", study_names())
def test_every_numeric_field_of_every_study_declares_its_range(study: str) -> None:
    from lmlab._coerce import field_range

    config = get_study(study).Config
    missing = [key for key, tp, f in _fields(config) if _numeric(tp) and field_range(f) is None]
    assert missing == [], f"{study}: declare a range (lmlab.config.ranged) for {missing}"


@pytest.mark.parametrize("study", study_names())
def test_every_preset_validates_unchanged(study: str) -> None:
    config = get_study(study).Config
    for preset in (config.quick(), config.paper()):
        assert apply_overrides(preset, []) == preset
        assert config_from_dict(config, config_to_dict(preset)) == preset


def test_the_sections_outside_the_study_configs_declare_their_ranges_too() -> None:
    from lmlab._coerce import field_range
    from lmlab.data.attention_teacher import AttentionTask
    from lmlab.data.copying import CopyTask
    from lmlab.models.attention_student import GDConfig
    from lmlab.studies.induction_train import TrainSetting
    from lmlab.sweep import SweepConfig
    from lmlab.train.loop import TrainConfig
    from lmlab.train.sampled import StepConfig

    for cls in (AttentionTask, CopyTask, GDConfig, TrainSetting, SweepConfig, TrainConfig,
                StepConfig):
        missing = [key for key, tp, f in _fields(cls) if _numeric(tp) and field_range(f) is None]
        if cls is TrainSetting:  # pool_size overrides task.pool_size, checked by its range
            assert missing == ["pool_size"]
        else:
            assert missing == [], f"{cls.__name__}: declare a range for {missing}"
