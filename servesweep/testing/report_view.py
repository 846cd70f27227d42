"""An HTML report as a browser shows it: headless Chromium at a desktop (1280 px) and a phone
(390 px, mobile emulation) width. Measures whether the page overflows sideways, whether every
table scrolls in a box of its own with text of at least 11 px, and whether every plot loaded;
optionally takes screenshots of the top of the page and of one section (docs/report.md)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
from pathlib import Path

from servesweep.testing.cdp import Browser, find_chromium

WIDTHS = {"desktop": (1280, 900, False), "phone": (390, 844, True)}

CHECKS = """(() => {
  const doc = document.documentElement;
  const tables = [...document.querySelectorAll('table')];
  const boxed = tables.filter(t => t.parentElement.classList.contains('scroll'));
  const imgs = [...document.querySelectorAll('img')];
  const fonts = tables.map(t => parseFloat(getComputedStyle(t.querySelector('td') || t).fontSize));
  return {viewport: innerWidth, page_width: doc.scrollWidth, tables: tables.length, tables_in_scroll_box: boxed.length,
          smallest_table_font_px: Math.min(...fonts), plots: imgs.length,
          plots_loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
          plots_within_viewport: imgs.filter(i => i.getBoundingClientRect().width <= innerWidth).length};
})()"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _small_png(data: bytes, path: Path) -> None:
    """A 128-colour PNG: screenshots for docs/, not pixel-exact records."""
    from PIL import Image

    Image.open(io.BytesIO(data)).convert("RGB").quantize(128).save(path, optimize=True)


async def _look(report: Path, name: str, width: int, height: int, mobile: bool, out: Path | None,
                anchor: str) -> dict:
    async with Browser(find_chromium(), _free_port(), width, height) as browser:
        await browser.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                           mobile=mobile)
        await browser.goto(report.resolve().as_uri())
        await browser.wait_for("document.readyState === 'complete'")
        found = await browser.evaluate(CHECKS)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            for part, script in (("top", "window.scrollTo(0, 0)"),
                                 ("table", f"[...document.querySelectorAll('h2')].find(h => h.textContent.startsWith("
                                           f"{json.dumps(anchor)})).scrollIntoView()")):
                await browser.evaluate(script)
                shot = await browser.call("Page.captureScreenshot", format="png")
                _small_png(base64.b64decode(shot["data"]), out / f"report-{name}-{part}.png")
        return found


def look(report: Path, out: Path | None = None, anchor: str = "Energy per output token") -> dict[str, dict]:
    return {name: asyncio.run(_look(report, name, w, h, mobile, out, anchor)) for name, (w, h, mobile) in WIDTHS.items()}


