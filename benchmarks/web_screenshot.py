"""The README's screenshot of the web page (docs/img/web.png), taken with headless Chromium.

Starts the app in this process with the default model allowlist (MobileNetV2 authorized; EfficientNet-Lite0/1/2
as unauthorized judges), uploads kit photos through the page with the chosen preset, waits for the results and
saves a full-page screenshot. Needs Debian's chromium and the playwright package.

    python benchmarks/web_screenshot.py --preset high -o docs/img/web.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KIT_PHOTOS = REPO.parent / "shared" / "kit" / "photos" / "imagenet"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photo", action="append", type=Path,
                   help="photo to upload (repeatable; default: the kit's foolbox_00_243.jpg)")
    p.add_argument("--preset", default="high", choices=["low", "mid", "high"])
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--torch-threads", type=int, default=None)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("-o", "--out", type=Path, default=REPO / "docs" / "img" / "web.png")
    a = p.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from onlymine.web import ServerConfig
    from onlymine.web.server import background_server

    photos = a.photo or [KIT_PHOTOS / "foolbox_00_243.jpg"]
    cfg = ServerConfig(default_preset=a.preset, torch_threads=a.torch_threads, preload=True)
    with background_server(cfg) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=a.chromium, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1100, "height": 900}, device_scale_factor=1)
        page.goto(url + "/")
        page.wait_for_selector("#model option", state="attached")
        page.select_option("#preset", a.preset)
        page.set_input_files("#files", [str(f) for f in photos])
        page.click("#submit")
        # (wait_for_function would need 'unsafe-eval', which the page's CSP forbids)
        page.locator(".result[data-status]").nth(len(photos) - 1).wait_for(timeout=a.timeout * 1000)
        for _ in range(600):
            if page.evaluate("Array.from(document.querySelectorAll('.result img'))"
                             ".every(i => i.complete && i.naturalWidth > 0)"):
                break
            page.wait_for_timeout(100)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(a.out), full_page=True)
        print(page.inner_text("#results"))
        browser.close()
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
