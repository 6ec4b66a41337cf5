"""`lmlab run all`: every study in its own run directory and one index page over them."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lmlab.cli import main
from lmlab.studies.lab import run_all
from tests.conftest import tiny_model

CHARLM = ["mlp.train.steps=200", "mlp.train.lr_decay_step=100", "mlp.train.diag_every=50",
          "wavenet.enabled=false", "transformer.enabled=false", "samples=3", "device=cpu"]


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img" and a.get("src"):
            self.images.append(str(a["src"]))
        if tag == "a" and a.get("href") and not str(a["href"]).startswith("#"):
            self.links.append(str(a["href"]))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    from tests.conftest import SHARED_DATA

    model = tmp_path_factory.mktemp("m") / "tiny"
    tiny_model("gpt2").save_pretrained(model)
    words = tmp_path_factory.mktemp("w") / "names.txt"
    words.write_text("\n".join((SHARED_DATA / "names_2018.txt").read_text().split()[::16]))
    out = tmp_path_factory.mktemp("runs")
    overrides = {"spectral": [f"model={model}"],
                 "charlm": [f"data.path={words}", *CHARLM],
                 "optimizers": ["model=/nonexistent/model"]}
    return run_all("quick", out, studies=["spectral", "charlm", "optimizers"],
                   overrides=overrides)


def test_each_study_has_its_run_directory_and_a_section(lab: tuple[Path, list]) -> None:
    lab_dir, entries = lab
    assert lab_dir.name.startswith("lab-")
    assert [e.study for e in entries] == ["spectral", "charlm", "optimizers"]
    assert entries[0].run_dir and entries[0].run_dir.parent.parent == lab_dir
    assert entries[2].run_dir is None and "nonexistent" in (entries[2].error or "")
    page = (lab_dir / "index.html").read_text()
    assert "2 of 3 studies finished" in page
    for name in ("spectral", "charlm", "optimizers"):
        assert f'<section id="{name}">' in page
    assert "Did not finish" in page and "Key numbers" in page and "What ran" in page
    assert re.search(r"<td>dev_loss</td><td>[0-9.]+</td>", page)


def test_every_image_and_link_of_the_index_resolves(lab: tuple[Path, list]) -> None:
    from urllib.parse import unquote

    lab_dir, _ = lab
    parser = _Links()
    parser.feed((lab_dir / "index.html").read_text())
    assert len(parser.images) == 4  # two headline figures of each finished study
    for src in parser.images:
        png = lab_dir / unquote(src)
        assert png.read_bytes()[:4] == b"\x89PNG", src
    assert len(parser.links) == 2
    for href in parser.links:
        target = lab_dir / unquote(href)
        assert target.name == "report.html" and target.is_file()


def test_run_all_refuses_set_and_reports_failures_with_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "all", "--set", "x=1", "--out", str(tmp_path)]) == 2
    assert "apply to one study" in capsys.readouterr().err


def test_run_all_resume_continues_the_newest_lab(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "tiny"
    tiny_model("gpt2").save_pretrained(model)
    overrides = {"spectral": [f"model={model}"], "charlm": ["data.path=/nonexistent.txt"]}
    out = tmp_path / "runs"
    lab, first = run_all("quick", out, studies=["spectral", "charlm"], overrides=overrides)
    assert first[0].run_dir is not None and first[1].run_dir is None
    again, second = run_all("quick", out, studies=["spectral", "charlm"], overrides=overrides,
                            resume=True)
    assert again == lab and second[0].run_dir == first[0].run_dir  # finished: kept as it was
    assert second[0].seconds == first[0].seconds > 0  # the run's duration, not the resume's
    assert "finished already" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [lab.name]
    assert len(list((lab / "spectral").iterdir())) == 1
