"""hwsim's web page: from a key clicked in the browser to the display updated in it.

Starts hwsim with its web page and posterm (tests/rig.py), opens the page in
Debian's Chromium (Playwright, tests/browser.py) and clicks keypad keys one at a
time, each after the previous one's screen arrived. The page itself measures
each time (the page's modules, `window.hwsimPage.latencies`): `performance.now()` at the click,
and again when the first display update that differs from the screen before it
has been drawn into the page. That time covers the whole loop a tester sees:
the WebSocket request, hwsim's keypad model, the firmware reading the key event,
drawing the screen over hwsim's I2C stand-in, the LCD model, and the update
pushed back to the page. Printed: min / median / p95 / max over the clicks.

    ./run bench        or     .venv/bin/python bench/web.py [--clicks 60]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from tests.browser import find_chromium, launch, open_terminal_page  # noqa: E402
from tests.rig import Rig  # noqa: E402

# keys that each change the screen: digits then CLEARs back to an empty amount
CYCLE = ("1", "2", "3", "CLEAR", "CLEAR", "CLEAR")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=60)
    args = parser.parse_args()
    chromium, why = find_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        chromium, why = None, f"the Python package playwright is missing ({exc})"
    if chromium is None:
        print(f"web page benchmark skipped: {why}")
        return 0
    with tempfile.TemporaryDirectory(prefix="posterm-bench-") as tmp, Rig(
            pathlib.Path(tmp), web=True) as rig, sync_playwright() as playwright:
        rig.start()
        rig.wait_online()
        browser = launch(playwright, chromium)
        page = open_terminal_page(browser, rig.web_url)
        for n in range(args.clicks + len(CYCLE)):  # the first cycle warms up
            key = CYCLE[n % len(CYCLE)]
            before = page.evaluate("window.hwsimPage.latencies.length")
            page.click(f'[data-key="{key}"]')
            page.wait_for_function(f"() => window.hwsimPage.latencies.length > {before}",
                                   timeout=10_000)
            time.sleep(0.02)
        latencies = page.evaluate("window.hwsimPage.latencies")[len(CYCLE):]
        browser.close()
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    print("web page benchmark (Chromium, key clicked -> display updated in the page)")
    print(f"  clicks                            {len(latencies)}")
    print("                                         min  median     p95     max")
    print(f"  key -> display, ms               {latencies[0]:8.1f}"
          f"{statistics.median(latencies):8.1f}{p95:8.1f}{latencies[-1]:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
