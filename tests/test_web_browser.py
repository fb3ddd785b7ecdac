"""End to end in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright opens the page,
uploads a kit photo, waits for the result, downloads the protected file and the zip, and checks them.

Skipped when Playwright or /usr/bin/chromium is missing, unless ONLYMINE_REQUIRE_BROWSER=1 (set by .ci/run,
which installs both), where a missing browser is a failure.
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SAMPLES

CHROMIUM = os.environ.get("ONLYMINE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EPS_255 = 4


def _need(ok: bool, why: str) -> None:
    if not ok:
        if os.environ.get("ONLYMINE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required but {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    _need(sync_playwright is not None, "playwright is not installed (pip install playwright)")
    _need(Path(CHROMIUM).is_file() or shutil.which(CHROMIUM) is not None,
          f"{CHROMIUM} not found (apt-get install chromium chromium-driver)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import torch

    from onlymine.web import ServerConfig
    from onlymine.web.server import background_server

    threads = torch.get_num_threads()
    cfg = ServerConfig(presets={"fast": {"preset": "low", "steps": 2}}, unauthorized=("efficientnet-lite:lite0",),
                       torch_threads=1, data_dir=tmp_path_factory.mktemp("browser-jobs"))
    with background_server(cfg) as url:
        yield url
    torch.set_num_threads(threads)


def test_upload_protect_and_download_in_chromium(browser, server, tmp_path):
    from onlymine import io as oio

    photo = SAMPLES / "chelsea.png"  # a real photo shipped with the repository (samples/SOURCES.md)
    page = browser.new_page(accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server + "/")
    page.wait_for_selector("#model option[value='torchvision:mobilenet_v2']", state="attached")
    assert "fast (eps 4/255, 2 steps)" in page.inner_text("#preset")
    page.set_input_files("#files", str(photo))
    assert page.is_enabled("#submit")
    page.click("#submit")
    page.wait_for_selector(".result[data-status]", timeout=240_000)
    result = page.locator(".result").first
    assert result.get_attribute("data-status") == "ok", result.inner_text()
    assert result.locator(".name").inner_text() == photo.name
    rows = result.locator(".verdicts tbody tr")
    assert rows.count() == 2
    authorized = rows.nth(0).locator("td")
    assert authorized.nth(0).inner_text() == "torchvision:mobilenet_v2" and authorized.nth(4).inner_text() == "yes"
    assert rows.nth(1).locator("td").nth(0).inner_text() == "efficientnet-lite:lite0"
    assert "PSNR" in result.locator(".quality").inner_text()
    for _ in range(300):  # (not wait_for_function: it needs 'unsafe-eval', which the page's CSP forbids)
        if page.evaluate("Array.from(document.querySelectorAll('.result img'))"
                         ".every(i => i.complete && i.naturalWidth > 0)"):
            break
        page.wait_for_timeout(100)
    else:
        pytest.fail("the before / after / difference images did not load")
    assert "done: 1 of 1" in page.inner_text("#state")

    with page.expect_download() as info:
        result.locator(".download").click()
    download = info.value
    assert download.suggested_filename == "chelsea-protected.png"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    protected = Image.open(saved)
    assert protected.format == "PNG" and not protected.getexif()
    original = oio.to_uint8(oio.load_image(photo).rgb).astype(np.int16)
    diff = np.abs(np.asarray(protected.convert("RGB"), np.int16) - original)
    assert diff.shape == original.shape and 0 < diff.max() <= EPS_255

    page.wait_for_selector("#zip:not([hidden])")
    with page.expect_download() as zinfo:
        page.click("#zip")
    z = zipfile.ZipFile(io.BytesIO(Path(zinfo.value.path()).read_bytes()))
    assert z.namelist() == ["chelsea-protected.png"]
    assert z.read(z.namelist()[0]) == saved.read_bytes()
    assert not errors, errors


def test_page_shows_a_refusal_clearly(browser, server, tmp_path):
    fake = tmp_path / "holiday.png"
    fake.write_text("not an image, whatever the name says")
    page = browser.new_page()
    page.goto(server + "/")
    page.wait_for_selector("#model option", state="attached")
    page.set_input_files("#files", str(fake))
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "holiday.png: not a supported image" in page.inner_text("#error")
    assert page.is_enabled("#submit")  # the page can be used again
