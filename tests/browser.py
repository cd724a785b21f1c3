"""A real browser for the tests and the benchmark: Debian's Chromium driven by Playwright.

Playwright's Python package is pointed at the system's Chromium (`executable_path`);
it never downloads a browser. `find_chromium` says where the browser is, or why there
is none, so a test can skip with that reason.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser")
# Chromium as root in a container needs --no-sandbox; the rest keep it off this
# machine's closed network (no component updates, sync or background fetches).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip


def find_chromium() -> tuple[str | None, str]:
    """(path of the browser, "") or (None, why there is none and how to get one)."""
    given = os.environ.get("POSTERM_CHROMIUM")
    if given:
        if os.access(given, os.X_OK):
            return given, ""
        return None, f"POSTERM_CHROMIUM={given} is not an executable"
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path, ""
    return None, ("no Chromium on this machine: `apt install chromium` (./run test does it "
                  "when run as root with apt), or set POSTERM_CHROMIUM to a Chromium binary")


def launch(playwright: Any, executable: str) -> Any:
    """A headless Chromium (Playwright gives it a new empty profile of its own)."""
    return playwright.chromium.launch(executable_path=executable, headless=True,
                                      args=CHROMIUM_ARGS)


def open_terminal_page(browser: Any, url: str) -> Any:
    """hwsim's web page at `url` in a new 1400 x 900 page, once it shows the idle screen."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(url)
    # the function form: the page's CSP allows no eval of a string expression
    page.wait_for_function(
        "() => document.querySelector('#display')?.textContent.includes('ENTER AMOUNT')")
    return page
