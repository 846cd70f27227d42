"""The HTML report in headless Chromium at 1280 and 390 px wide: the page never widens past the
screen (each table scrolls in its own box), table text stays readable, every plot loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from servesweep.reports.render import write_report
from servesweep.testing.cdp import find_chromium
from servesweep.testing.report_view import look

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(find_chromium() is None, reason="no chromium (apt-get install -y chromium)")
def test_the_report_reads_on_a_desktop_and_a_phone(tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(ROOT / "examples" / "h100-llama3-8b", sweep)
    page = write_report(sweep)["html"]
    seen = look(page)
    for name, width in (("desktop", 1280), ("phone", 390)):
        view = seen[name]
        assert view["viewport"] == width, view  # the page declares a viewport: a phone lays it out at 390 px
        assert view["page_width"] <= width, view  # no sideways scrolling of the whole page
        assert view["tables"] >= 4 and view["tables_in_scroll_box"] == view["tables"], view
        assert view["smallest_table_font_px"] >= 11, view
        assert view["plots"] >= 5 and view["plots_loaded"] == view["plots"] == view["plots_within_viewport"], view
