"""The lab's index page and a study's report, rendered in a real headless Chromium: every image
loads, the browser logs no error, and each page shows what it should.

Needs Debian's Chromium at ``/usr/bin/chromium`` (``apt-get install chromium``) and the Python
package ``playwright``; the tests skip without them. Pages are opened as ``file://`` URLs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lmlab.runs.lab_index import LabEntry
from lmlab.studies.lab import run_all
from tests.conftest import SHARED_DATA, tiny_model
from tests.studies.test_lab import CHARLM

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Response

CHROMIUM = Path("/usr/bin/chromium")
# Root needs --no-sandbox; the rest keep Chromium off the (closed) network, whose failures
# would otherwise show up as console errors.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
INSTALL = "install it with `apt-get install chromium` (and `pip install playwright`)"

# Scroll every image into view (report figures are loading="lazy" and load only when scrolled
# to), wait until each has loaded or failed, and return the src of every image that did not load.
_BROKEN_IMAGES_JS = """async () => {
  for (const img of document.images) {
    img.scrollIntoView();
    if (!img.complete) {
      await new Promise(done => {
        img.addEventListener("load", done, {once: true});
        img.addEventListener("error", done, {once: true});
        setTimeout(done, 5000);
      });
    }
  }
  return [...document.images]
    .filter(img => !(img.complete && img.naturalWidth > 0))
    .map(img => img.getAttribute("src"));
}"""


def check_page(page: Page, open_page: str | Callable[[], object]) -> tuple[list[str], list[str]]:
    """Open a page (a URL, or a callable that navigates, e.g. by a click) and return
    ``(broken_images, console_errors)``: the src of every ``<img>`` that did not load, and every
    console error, uncaught page error and failed request seen while it loaded."""
    errors: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            errors.append(f"console error: {msg.text} ({msg.location.get('url', '')})")

    def on_response(response: Response) -> None:
        if response.status >= 400:
            errors.append(f"HTTP {response.status}: {response.url}")

    handlers: dict[str, Callable[..., None]] = {
        "console": on_console,
        "response": on_response,
        "pageerror": lambda exc: errors.append(f"page error: {exc}"),
        "requestfailed": lambda req: errors.append(f"request failed: {req.url} ({req.failure})"),
    }
    for event, handler in handlers.items():
        page.on(event, handler)
    try:
        if isinstance(open_page, str):
            page.goto(open_page, wait_until="load")
        else:
            open_page()
            page.wait_for_load_state("load")
        broken = page.evaluate(_BROKEN_IMAGES_JS)
    finally:
        for event, handler in handlers.items():
            page.remove_listener(event, handler)
    return broken, errors


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(f"the playwright package is not installed; {INSTALL}")
    if not CHROMIUM.is_file():
        pytest.skip(f"chromium could not be installed (no {CHROMIUM}); {INSTALL}")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[LabEntry]]:
    """A lab of three studies: spectral on a tiny GPT-2, charlm on a thinned names file, and
    optimizers pointed at a missing model so that its section reports the failure."""
    model = tmp_path_factory.mktemp("m") / "tiny"
    tiny_model("gpt2").save_pretrained(model)
    words = tmp_path_factory.mktemp("w") / "names.txt"
    words.write_text("\n".join((SHARED_DATA / "names_2018.txt").read_text().split()[::16]))
    overrides = {"spectral": [f"model={model}"],
                 "charlm": [f"data.path={words}", *CHARLM],
                 "optimizers": ["model=/nonexistent/model"]}
    return run_all("quick", tmp_path_factory.mktemp("runs"),
                   studies=["spectral", "charlm", "optimizers"], overrides=overrides)


def _run_dir(entries: list[LabEntry], study: str) -> Path:
    run_dir = next(e.run_dir for e in entries if e.study == study)
    assert run_dir is not None, f"{study} did not finish"
    return run_dir


def _assert_report_content(page: Page, run_dir: Path) -> None:
    report = json.loads((run_dir / "report.json").read_text())
    figures = [b for b in report["blocks"] if b["type"] == "figure"]
    assert figures, "the report has no figure to check"
    assert page.title() == report["title"]
    assert page.locator("h1").inner_text() == report["title"]
    assert page.locator("h2", has_text="What ran").count() == 1
    assert page.locator("figure img").count() == len(figures)
    assert [page.locator("figcaption").nth(i).inner_text() for i in range(len(figures))] == [
        " ".join(f["caption"].split()) for f in figures]


def test_index_renders_every_image_and_a_section_per_study(
        page: Page, lab: tuple[Path, list[LabEntry]]) -> None:
    lab_dir, _ = lab
    broken, errors = check_page(page, (lab_dir / "index.html").as_uri())
    assert broken == [] and errors == []
    assert page.title() == "lmlab — every study"
    assert page.locator("h1").inner_text() == "lmlab — every study"
    assert "2 of 3 studies finished" in page.locator("main").inner_text()
    for study in ("spectral", "charlm", "optimizers"):
        assert page.locator(f"section#{study} h2").inner_text() == study
    for study in ("spectral", "charlm"):
        section = page.locator(f"section#{study}")
        assert section.locator("img").count() == 2
        assert section.get_by_role("link", name="Full report").count() == 1
        assert "Key numbers" in section.inner_text() and "What ran" in section.inner_text()
    assert "Did not finish" in page.locator("section#optimizers").inner_text()
    assert page.locator("img").count() == 4


@pytest.mark.parametrize("study", ["spectral", "charlm"])
def test_study_report_renders_every_figure(
        page: Page, lab: tuple[Path, list[LabEntry]], study: str) -> None:
    run_dir = _run_dir(lab[1], study)
    broken, errors = check_page(page, (run_dir / "report.html").as_uri())
    assert broken == [] and errors == []
    _assert_report_content(page, run_dir)


def test_index_link_leads_to_a_report_that_renders(
        page: Page, lab: tuple[Path, list[LabEntry]]) -> None:
    lab_dir, entries = lab
    run_dir = _run_dir(entries, "spectral")
    assert check_page(page, (lab_dir / "index.html").as_uri()) == ([], [])
    link = page.locator("section#spectral").get_by_role("link", name="Full report")
    broken, errors = check_page(page, link.click)
    assert page.url == (run_dir / "report.html").as_uri()
    assert broken == [] and errors == []
    _assert_report_content(page, run_dir)


def test_checker_reports_a_missing_image_and_a_script_error(
        page: Page, lab: tuple[Path, list[LabEntry]]) -> None:
    """Negative control: the checker above can fail."""
    lab_dir, _ = lab
    index = (lab_dir / "index.html").read_text()
    first = index.index('<img src="') + len('<img src="')
    src = index[first:index.index('"', first)]
    spoilt = (index[:first] + "figures/missing.png" + index[first + len(src):]).replace(
        "</body>", "<script>throw new Error('boom');</script>\n</body>")
    bad = lab_dir / "index-broken.html"
    bad.write_text(spoilt)
    broken, errors = check_page(page, bad.as_uri())
    assert broken == ["figures/missing.png"]
    missing = (lab_dir / "figures" / "missing.png").as_uri()
    assert any(e.startswith("request failed: " + missing) for e in errors), errors
    assert any(e.startswith("console error:") and missing in e for e in errors), errors
    assert any(e.startswith("page error:") and "boom" in e for e in errors), errors
