"""End-to-end: the Gradio demo in a real (headless) Chromium, driven by Playwright.

Starts `demo/app.py` on a free port with the `tiny_bundle` bundle, opens the
page, checks the notice, uploads a phantom slice and predicts (verdict, crop
and mask overlay shown), uploads a file that is not an image (one status
line, no crash), then predicts again to show the server still serves. Keeps a
screenshot of the page after the box prompt: build/test-artifacts/demo_browser.png
(conftest's `artifacts`; `make test` prints where it is).

Needs Debian's chromium at /usr/bin/chromium (`make test` in CI installs it);
skips without it. Never runs `playwright install`: no downloads.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
STARTUP_TIMEOUT = 120.0  # seconds: TensorFlow, the bundle's models and LiteMedSAM load first
WAIT_MS = 60_000  # any one wait in the page


# Marks, not a fixture: a skip decided before fixtures run, so a missing browser never builds tiny_bundle.
pytestmark = [
    pytest.mark.slow,  # builds a bundle and drives Chromium against the demo server
    pytest.mark.skipif(not CHROMIUM.is_file(),
                       reason=f"{CHROMIUM} is absent (CI installs it: apt-get install chromium); skipping browser test"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="python playwright is not installed; skipping browser test"),
]


@pytest.fixture(scope="module")
def demo_url(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`demo/app.py --bundle tiny_bundle` on a free port; its URL once it answers; stopped afterwards."""
    from demo import serve

    try:
        proc, url = serve.start(tiny_bundle, tmp_path_factory.mktemp("demo_server"), STARTUP_TIMEOUT)
    except serve.ServerError as err:
        pytest.fail(str(err))
    try:
        yield url
    finally:
        serve.stop(proc)


@pytest.fixture(scope="module")
def slices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A phantom slice with a tumour, and a `.png` that holds text, not an image."""
    from lib.acquire import phantom
    from lib.common.io import write_png

    folder = tmp_path_factory.mktemp("uploads")
    good = folder / "phantom_slice.png"
    write_png(good, phantom.make_slice(np.random.default_rng(1), 1).image)
    bad = folder / "not_an_image.png"
    bad.write_bytes(b"this is text, not a PNG\n" * 4)
    from tests.scanner_data import phantom_slices, write_dicom

    dicom = write_dicom(folder / "scan.dcm", phantom_slices(3))
    real = Path(__file__).resolve().parents[2] / "shared" / "data" / "figshare_seg" / "images" / "cheng_2150.png"
    return {"good": good, "bad": bad, "dicom": dicom, "real": real if real.is_file() else good}


def upload(page, path: Path) -> None:  # noqa: ANN001 - playwright.sync_api.Page (imported lazily)
    """Put `path` into the gr.File and wait until the server holds it.

    A gr.File holding a file has no <input type=file>: clear it first. The
    file row (td.filename) and its download link to the server's copy appear
    only once the upload request has finished.
    """
    clear = page.locator('#upload button[aria-label="Clear"]')
    if clear.count():
        clear.first.click()
    page.locator("#upload input[type=file]").set_input_files(str(path))
    page.locator(f'#upload td.filename[aria-label="{path.name}"]').wait_for(timeout=WAIT_MS)
    page.locator("#upload a[data-testid=download-link][href*='gradio_api/file=']").wait_for(timeout=WAIT_MS)


def predict_ok(page) -> None:  # noqa: ANN001
    """Click Predict and wait for the verdict, the crop and the mask overlay."""
    from playwright.sync_api import expect

    page.locator("#predict").click()
    expect(page.locator("#verdict")).to_contain_text("Tumour probability", timeout=WAIT_MS)
    for elem in ("crop", "overlay"):
        img = page.locator(f"#{elem} img").first
        expect(img).to_be_visible(timeout=WAIT_MS)
        assert img.get_attribute("src"), f"#{elem} <img> has no src"
    expect(page.locator("#status")).not_to_contain_text("Could not analyse")


def test_demo_in_browser(demo_url: str, slices: dict[str, Path], artifacts: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    page_errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            page.on("pageerror", lambda err: page_errors.append(str(err)))
            page.goto(demo_url, wait_until="domcontentloaded")

            expect(page.locator("#notice")).to_contain_text("not a medical device", timeout=WAIT_MS)
            expect(page.locator("#notice")).to_be_visible()
            expect(page.locator("#provenance")).to_contain_text("Phantom-trained bundle")
            expect(page.locator("#provenance")).to_contain_text("ROC AUC")

            # 1. a real figshare slice (a phantom where ../shared is absent): verdict, crop, mask, downloads
            upload(page, slices["real"])
            expect(page.locator("#preview img").first).to_be_visible(timeout=WAIT_MS)  # before any Predict
            predict_ok(page)
            stem = slices["real"].stem
            expect(page.locator("#downloads")).to_contain_text(f"{stem}_mask")
            expect(page.locator("#downloads")).to_contain_text(f"{stem}_prediction")
            page.locator("#explain").click()
            expect(page.locator("#gradcam img").first).to_be_visible(timeout=WAIT_MS)

            # 1b. two clicks on the crop draw a box; LiteMedSAM segments what it holds
            crop = page.locator("#crop img").first
            size = crop.bounding_box()
            for fx, fy in ((0.3, 0.3), (0.6, 0.65)):
                crop.click(position={"x": fx * size["width"], "y": fy * size["height"]})
                expect(page.locator("#status")).to_contain_text("Prompt:", timeout=WAIT_MS)
            expect(page.locator("#status")).to_contain_text("box ready")
            page.locator("#prompt_segment").click()
            expect(page.locator("#status")).to_contain_text("LiteMedSAM's mask for your box", timeout=WAIT_MS)
            page.wait_for_timeout(1500)  # Gradio fades an updated image in: let the screenshot show it
            screenshot = artifacts / "demo_browser.png"
            page.screenshot(path=str(screenshot), full_page=True)
            assert screenshot.stat().st_size > 10_000
            print(f"screenshot: {screenshot}")

            # 2. a .png holding text: one status line, the verdict cleared
            upload(page, slices["bad"])
            page.locator("#predict").click()
            expect(page.locator("#status")).to_contain_text("Could not analyse", timeout=WAIT_MS)
            expect(page.locator("#status")).to_contain_text(slices["bad"].name)
            expect(page.locator("#verdict")).not_to_contain_text("Tumour probability")

            # 3. the server still serves
            upload(page, slices["good"])
            predict_ok(page)

            # 4. a DICOM volume: the slider picks the slice the verdict names
            upload(page, slices["dicom"])
            slider = page.locator("#slice input[type=range]")
            expect(slider).to_be_visible(timeout=WAIT_MS)
            slider.fill("2")
            page.locator("#predict").click()
            expect(page.locator("#verdict")).to_contain_text("DICOM slice 2 of 3", timeout=WAIT_MS)
        finally:
            browser.close()
    assert not page_errors, f"JavaScript errors in the page: {page_errors}"
