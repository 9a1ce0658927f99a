"""DICOM and NIfTI in: the pinned packages' real files, phantoms written as scanner files with known answers,
01's one row per slice, and predict.py's slice and volume rows."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lib.common import manifest, scanner_files
from lib.common.io import WINDOW_PERCENTILES, ImageReadError, read_image, read_mask, write_png
from tests.scanner_data import phantom_slices, write_dicom, write_nifti
from tests.test_pipeline import stage

pydicom_data = pytest.importorskip("pydicom.data", reason="pydicom is pinned in requirements.txt; pip install it")
nibabel = pytest.importorskip("nibabel", reason="nibabel is pinned in requirements.txt; pip install it")

MR_SMALL = ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm",
            "MR_small_implicit.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
            "MR_small_padded.dcm"]
ANATOMICAL = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"


@pytest.mark.parametrize("name", MR_SMALL)
def test_every_encoding_of_mr_small_reads_to_the_same_slice(name: str) -> None:
    reference = read_image(pydicom_data.get_testdata_file("MR_small.dcm"))
    image = read_image(pydicom_data.get_testdata_file(name))
    assert image.format == "DICOM" and image.pixels.dtype == np.uint8 and image.pixels.shape == (64, 64)
    np.testing.assert_array_equal(image.pixels, reference.pixels)  # lossless codecs: identical after decoding
    assert image.pixels.std() > 20  # windowed to the file's Window Center/Width: anatomy, not a flat grey


def test_a_dicom_is_recognised_by_content_whatever_its_name(tmp_path: Path) -> None:
    renamed = tmp_path / "IM0001"  # scanners export files without an extension
    shutil.copy(pydicom_data.get_testdata_file("MR_small.dcm"), renamed)
    assert scanner_files.kind(renamed) == "dicom" and read_image(renamed).format == "DICOM"


def test_rescale_window_monochrome1_and_frames_give_back_the_phantom(tmp_path: Path) -> None:
    frames = phantom_slices(3)
    volume = scanner_files.read_volume(write_dicom(tmp_path / "a.dcm", frames, slope=0.25, intercept=-25,
                                                   window=(127.5, 255.0)))
    assert len(volume.slices) == 3 and volume.spacing_mm == (0.5, 0.5, 5.0)
    assert volume.voxel_ml == pytest.approx(0.5 * 0.5 * 5.0 / 1000)
    for got, want in zip(volume.slices, frames):
        assert np.abs(got.astype(int) - want).max() <= 1  # stored 4p+100, slope 1/4, intercept -25: p again
    inverted = scanner_files.read_volume(write_dicom(tmp_path / "m1.dcm", frames[:1], window=(127.5, 255.0),
                                                     monochrome1=True))
    assert np.abs(inverted.slices[0].astype(int) - frames[0]).max() <= 1
    bare = scanner_files.read_volume(write_dicom(tmp_path / "bare.dcm", frames[:1], slope=2.0))
    assert bare.notes and "percentiles" in bare.notes[0]  # no window in the file: said, and still readable
    assert np.corrcoef(bare.slices[0].ravel(), frames[0].ravel())[0, 1] > 0.99


def test_broken_and_undecodable_dicoms_fail_in_one_line_naming_the_file(tmp_path: Path) -> None:
    whole = write_dicom(tmp_path / "whole.dcm", phantom_slices(1))
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(whole.read_bytes()[:-4000])
    with pytest.raises(ImageReadError) as err:
        read_image(truncated)
    assert "truncated.dcm" in str(err.value) and "\n" not in str(err.value)
    import pydicom

    ds = pydicom.dcmread(whole)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG-2: no pinned decoder exists
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
    odd = tmp_path / "mpeg.dcm"
    ds.save_as(odd)
    with pytest.raises(ImageReadError, match="no decoder for the DICOM transfer syntax MPEG2") as err:
        read_image(odd)
    assert "mpeg.dcm" in str(err.value) and "\n" not in str(err.value)


def test_nibabels_anatomical_volume_reads_as_axial_slices_with_its_voxel_size() -> None:
    volume = scanner_files.read_volume(ANATOMICAL)
    shape = nibabel.load(ANATOMICAL).shape  # 33 x 41 x 25, LAS on disk
    assert volume.format == "NIfTI" and len(volume.slices) == shape[2]
    assert volume.slices[0].shape == (shape[1], shape[0]) and volume.spacing_mm == (2.0, 2.0, 2.0)
    with pytest.raises(ImageReadError, match="volume of 25 slices"):
        read_image(ANATOMICAL)  # a volume is never silently one image


@pytest.mark.parametrize("flip_x", [False, True])
def test_a_nifti_phantom_comes_back_reoriented_and_windowed_once_per_volume(tmp_path: Path, flip_x: bool) -> None:
    slices = phantom_slices(4)
    volume = scanner_files.read_volume(write_nifti(tmp_path / "v.nii.gz", slices, flip_x=flip_x))
    low, high = np.percentile(np.stack(slices).astype(np.float32), WINDOW_PERCENTILES)
    for got, want in zip(volume.slices, slices):
        expected = np.clip(np.rint((want - low) * 255.0 / (high - low)), 0, 255)
        assert np.abs(got.astype(int) - expected).max() <= 1
    assert volume.spacing_mm == (1.0, 1.0, 3.0)
    four_d = scanner_files.read_volume(write_nifti(tmp_path / "t.nii", slices, volumes=3))
    assert len(four_d.slices) == 4 and "first volume" in four_d.notes[0]


@pytest.mark.slow
def test_01_imports_one_row_per_slice_with_its_file_index_and_spacing(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "yes").mkdir(parents=True)
    (source / "no").mkdir()
    write_dicom(source / "yes" / "series", phantom_slices(3))
    write_nifti(source / "no" / "brain.nii.gz", phantom_slices(2, seed=3))
    shutil.copy(pydicom_data.get_testdata_file("MR_small.dcm"), source / "no" / "single.dcm")
    stage("01_download.py", "--source", "folder", "--path", str(source), "--out", str(tmp_path / "01"))
    rows = manifest.read(tmp_path / "01").set_index("id")
    assert list(rows.loc[[f"yes_series_s00{k}" for k in range(3)], "slice_index"]) == ["0", "1", "2"]
    series = rows[rows["volume_path"] == "raw/yes/series"]
    assert len(series) == 3 and series["dup_group"].nunique() == 1  # one scan's slices share a fold
    assert (series["spacing_mm"] == "0.5 0.5 5").all() and (series["status"] == "ok").all()
    assert rows.loc["no_single", "format"] == "DICOM" and rows.loc["no_single", "slice_count"] == "1"
    assert len(rows[rows["volume_path"] == "raw/no/brain.nii.gz"]) == 2
    assert (tmp_path / "01" / "raw" / "yes" / "series").read_bytes() == (source / "yes" / "series").read_bytes()


@pytest.mark.slow
def test_predict_gives_each_slice_the_png_routes_answer_and_a_row_per_volume(tiny_bundle: Path,
                                                                            tmp_path: Path) -> None:
    slices = phantom_slices(4)
    folder = tmp_path / "in"
    folder.mkdir()
    write_dicom(folder / "series.dcm", slices, window=(127.5, 255.0), spacing=(0.5, 0.5, 4.0))
    for k, pixels in enumerate(slices):
        write_png(tmp_path / "png" / f"{k}.png", pixels)
    dicom_csv, png_csv = tmp_path / "dicom.csv", tmp_path / "png.csv"
    stage("predict.py", "--bundle", str(tiny_bundle), "--in", str(folder), "--out", str(dicom_csv),
          "--masks", str(tmp_path / "dicom_masks"))
    stage("predict.py", "--bundle", str(tiny_bundle), "--in", str(tmp_path / "png"), "--out", str(png_csv),
          "--masks", str(tmp_path / "png_masks"))
    found = pd.read_csv(dicom_csv, keep_default_na=False, dtype={"slice": str})
    per_slice, summary = found[found["slice"] != "volume"], found[found["slice"] == "volume"].iloc[0]
    png = pd.read_csv(png_csv, keep_default_na=False)
    assert list(per_slice["slice"]) == ["0", "1", "2", "3"] and (per_slice["error"] == "").all()
    assert list(per_slice["label_pred"]) == list(png["label_pred"])  # the same decision as the PNG route
    np.testing.assert_allclose(per_slice["prob_tumor"].astype(float), png["prob_tumor"].astype(float), atol=1e-4)
    voxels = 0
    for a, b in zip(per_slice["mask_path"], png["mask_path"]):
        x, y = read_mask(a), read_mask(b)
        voxels += int(x.sum())
        if x.any() or y.any():
            assert 2 * (x & y).sum() / (x.sum() + y.sum()) >= 0.95
    assert float(summary["prob_tumor"]) == pytest.approx(per_slice["prob_tumor"].astype(float).max())
    called = [s for s, label in zip(per_slice["slice"], per_slice["label_pred"]) if label == "tumor"]
    assert summary["tumour_slices"].split() == called
    assert float(summary["tumour_ml"]) == pytest.approx(voxels * 0.5 * 0.5 * 4.0 / 1000, abs=1e-3)
