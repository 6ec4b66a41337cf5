from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest

from lmlab.config import (
    apply_overrides,
    config_diff,
    config_from_dict,
    config_keys,
    config_to_dict,
    load_config_file,
)
from lmlab.errors import LmlabError


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
