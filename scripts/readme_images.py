"""Make the README's pictures: hwsim's web page after a sale, and that sale's receipt.

Starts hwsim with its web page and posterm (tests/rig.py), makes a sale by
clicking in Debian's Chromium (tests/browser.py) as a person would, then saves
a screenshot of the page to docs/images/hwsim-web.png and the receipt, drawn by
`hwsim ctl receipts --png`, to docs/images/receipt.png.

    .venv/bin/python scripts/readme_images.py
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import find_chromium, launch, open_terminal_page  # noqa: E402
from tests.rig import Rig, _env  # noqa: E402

OUT = ROOT / "docs" / "images"


def main() -> int:
    chromium, why = find_chromium()
    if chromium is None:
        print(f"cannot make the pictures: {why}", file=sys.stderr)
        return 1
    from PIL import Image
    from playwright.sync_api import expect, sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="posterm-pictures-") as tmp, Rig(
            pathlib.Path(tmp), web=True) as rig, sync_playwright() as playwright:
        rig.start()
        rig.wait_online()
        browser = launch(playwright, chromium)
        page = open_terminal_page(browser, rig.web_url)
        display = page.locator("#display")
        for key in ("1", "2", "5", "0", "OK"):
            page.click(f'[data-key="{key}"]')
        expect(display).to_contain_text("SWIPE CARD")
        page.click('#card-slot [data-pan="4761739001010010"]')
        expect(display).to_contain_text("APPROVED", timeout=15_000)
        expect(page.locator("#paper img.receipt")).to_have_count(1, timeout=15_000)
        page.wait_for_function("() => [...document.querySelectorAll('#paper img')]"
                               ".every(img => img.complete && img.naturalWidth > 0)")
        shot = pathlib.Path(tmp) / "page.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
        with Image.open(shot) as image:  # 256 colours: a quarter of the size, same look
            image.convert("RGB").quantize(colors=256).save(OUT / "hwsim-web.png", optimize=True)
        pngs = pathlib.Path(tmp) / "receipts"
        subprocess.run([sys.executable, "-m", "hwsim", "ctl", "--dir", str(rig.sim_dir),
                        "receipts", "--png", str(pngs)], env=_env(), check=True)
        shutil.copyfile(pngs / "receipt-1.png", OUT / "receipt.png")
    for name in ("hwsim-web.png", "receipt.png"):
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
