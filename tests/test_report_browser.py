"""report.html in a real browser (Debian's headless Chromium driven by Playwright).

Asserts no console error, every image decoded, no request leaving the file, every section
present; saves a full-page screenshot (a reviewer should look at it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stages import report
from tests.conftest import ROOT
from tests.test_report import SECTION_IDS, full_project

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"
    ),
]


def inspect_page(page_path: Path, screenshot: Path) -> dict:
    """Open the page; return console errors, outside requests, image sizes and section ids."""
    sync_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    outside: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on(
                "request",
                lambda r: None if r.url.startswith(("file:", "data:")) else outside.append(r.url),
            )
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img",
                "imgs => imgs.map(i => ({src: i.src.slice(0, 30), w: i.naturalWidth,"
                " h: i.naturalHeight, complete: i.complete}))",
            )
            sections = page.eval_on_selector_all("section[id]", "s => s.map(e => e.id)")
            toc = page.eval_on_selector_all("nav.toc a", "a => a.map(e => e.getAttribute('href'))")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            pdf = page.pdf(format="A4", print_background=True)  # printable: it paginates
        finally:
            browser.close()
    return {
        "errors": errors,
        "outside": outside,
        "images": images,
        "sections": sections,
        "toc": toc,
        "pdf": pdf,
    }


def check(result: dict, min_images: int) -> None:
    assert result["errors"] == [], result["errors"]
    assert result["outside"] == [], result["outside"]
    assert len(result["images"]) >= min_images
    bad = [i for i in result["images"] if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
    assert not bad, f"images that did not decode: {bad}"
    assert all(i["src"].startswith("data:image/png;base64,") for i in result["images"])
    assert set(SECTION_IDS) <= set(result["sections"])
    assert result["toc"] == [f"#{sid}" for sid in SECTION_IDS]
    assert result["pdf"][:5] == b"%PDF-" and result["pdf"].count(b"/Type /Page") >= 3


def test_full_report_in_chromium(tmp_path, monkeypatch, key):
    root = full_project(tmp_path / "project", monkeypatch)
    report.main()
    shot = tmp_path / "screenshot.png"
    result = inspect_page(root / "reports/report.html", shot)
    check(result, min_images=9)
    assert shot.stat().st_size > 50_000


def test_repo_report_in_chromium(tmp_path):
    """The report of the pipeline's own last run, when there is one; its screenshot is kept."""
    page = ROOT / "reports/report.html"
    if not page.exists():
        pytest.skip("no reports/report.html in the repository: run `dvc repro` first")
    shot = tmp_path / "screenshot.png"
    result = inspect_page(page, shot)
    check(result, min_images=1)
    shutil.copyfile(shot, ROOT / "reports/screenshot.png")
