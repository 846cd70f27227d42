"""Look at an HTML report in headless Chromium at 1280 and 390 px wide (servesweep/testing/report_view.py):
print what it measured and write screenshots of the top of the page and of one section.

    python bench/report_screenshots.py REPORT.html --out docs/report-screens --anchor Capacity
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from servesweep.testing.report_view import look


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="where the screenshots go")
    parser.add_argument("--anchor", default="Energy per output token", help="the h2 the second screenshot starts at")
    args = parser.parse_args()
    print(json.dumps(look(args.report, args.out, args.anchor), indent=2))


if __name__ == "__main__":
    main()
