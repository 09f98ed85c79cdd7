"""The 13-class report in a real browser: no table or figure runs off the page."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages import report
from tests.test_report import thirteen_class_inputs
from tests.test_report_browser import ARGS, CHROMIUM

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,  # a browser start: about 5 s
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"
    ),
]

# What overflows the viewport and is not inside a horizontal scroller.
OVERFLOW = """() => [...document.querySelectorAll('table, img')]
  .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
  .filter(e => !e.closest('.scroll'))
  .map(e => e.closest('section').id + ': ' + e.tagName)"""


@pytest.mark.parametrize("width", [1280, 800])
def test_thirteen_class_report_fits_the_page(tmp_path: Path, width: int) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    page_path = tmp_path / "report.html"
    page_path.write_text(report.render_html(report.build_context(thirteen_class_inputs())))
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            overflowing = page.evaluate(OVERFLOW)
            page_width = page.evaluate("document.documentElement.scrollWidth")
        finally:
            browser.close()
    assert overflowing == [] and page_width <= width
