"""Extra sources of true masks for 08: raw trees cleaned as 02 cleans, stage folders, Cheng's .mat files."""

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from lib.acquire import figshare_mat, phantom
from lib.common import manifest
from lib.common.io import read_image, read_mask, write_png
from lib.segment import mask_sources
from tests.conftest import shared_data


def phantom_tree(root: Path, numbers: list[int], free: tuple[int, ...] = (), patient_slices: int = 6) -> Path:
    """images/ + masks/ of phantom slices named cheng_NNNN (consecutive numbers: patient runs);
    `free` numbers are tumour-free (empty masks); index.csv names a type and a patient per slice."""
    rng = np.random.default_rng(0)
    rows = []
    for number in numbers:
        slice_ = phantom.make_slice(rng, 0 if number in free else 1, force=dict.fromkeys(phantom.ARTEFACTS, False))
        name = f"cheng_{number:04d}.png"
        write_png(root / "images" / name, slice_.image)
        write_png(root / "masks" / name, slice_.tumor_mask.astype(np.uint8) * 255)
        rows.append({"file": name, "label_name": "glioma" if number < 100 else "pituitary",
                     "patient": f"p{number // patient_slices}", "index_block": "1-99" if number < 100 else "100-"})
    pd.DataFrame(rows).to_csv(root / "index.csv", index=False)
    return root


def test_a_raw_tree_is_cleaned_like_02_and_its_masks_follow(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tree = phantom_tree(tmp_path / "tree", list(range(1, 7)), free=(6,))
    (tmp_path / "tree" / "images" / "cheng_0007.png").write_bytes(b"not an image")  # corrupt, with a mask
    write_png(tmp_path / "tree" / "masks" / "cheng_0007.png", np.zeros((8, 8), np.uint8))
    rows = mask_sources.load(tree, "tree", tmp_path / "prepared", size=128)
    assert "cheng_0007.png" in capsys.readouterr().out  # a one-line warning names the file; the rest still loads
    assert list(rows["id"]) == [f"cheng_{i:04d}" for i in range(1, 7)]
    assert list(rows["label"]) == ["tumor"] * 5 + ["no_tumor"]  # an empty mask means tumour-free
    assert list(rows["kind"].unique()) == ["glioma"] and rows["group"].iloc[0] == "p0"  # from index.csv
    for row in rows[rows["label"] == "tumor"].to_dict("records"):
        image, mask = read_image(row["image_path"]).pixels, read_mask(row["mask_path"])
        assert image.shape[:2] == mask.shape == (128, 128)  # the clean frame, the input's size
        assert 0 < mask.mean() < 0.5 and image[mask].mean() > 0  # the tumour stays inside the cropped head
    stamp = (tmp_path / "prepared" / "tree" / "manifest.csv").stat().st_mtime_ns
    again = mask_sources.load(tree, "tree", tmp_path / "prepared", size=128)  # reused, not prepared again
    assert (tmp_path / "prepared" / "tree" / "manifest.csv").stat().st_mtime_ns == stamp
    assert again.equals(rows)
    other = mask_sources.load(tree, "tree", tmp_path / "prepared", size=96)  # other settings: prepared afresh
    assert read_image(other["image_path"].iloc[0]).pixels.shape[:2] == (96, 96)


def test_paths_are_absolute_whatever_the_folders_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    phantom_tree(tmp_path / "tree", [1, 2])
    monkeypatch.chdir(tmp_path)  # 08 run with relative --out and --extra-masks
    rows = mask_sources.load(Path("tree"), "tree", Path("out/sources"), size=64)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in rows["image_path"])


def test_a_folder_without_tumour_masks_is_refused(tmp_path: Path) -> None:
    tree = phantom_tree(tmp_path / "tree", [1, 2], free=(1, 2))
    with pytest.raises(mask_sources.MaskSourceError, match="no slice with a tumour mask"):
        mask_sources.load(tree, "tree", tmp_path / "prepared", size=64)
    (tmp_path / "empty").mkdir()
    with pytest.raises(mask_sources.MaskSourceError, match="empty"):
        mask_sources.load(tmp_path / "empty", "empty", tmp_path / "prepared", size=64)


def test_each_source_splits_by_its_own_rule(tmp_path: Path) -> None:
    tree = phantom_tree(tmp_path / "tree", [*range(1, 13), *range(101, 113)], patient_slices=1)
    rows = mask_sources.load(tree, "tree", tmp_path / "prepared", size=64)
    parts, rule = mask_sources.with_parts(rows)
    assert rule == "ranges" and set(parts["part"]) == {"train", "val", "test"}
    patients = mask_sources.with_parts(rows.assign(group=[f"p{i // 6}" for i in range(len(rows))]))[0]
    assert patients.groupby("group")["part"].nunique().max() == 1  # a patient's slices stay on one side
    held, rule = mask_sources.with_parts(rows, leave_out=2)
    assert "cheng_0101-cheng_0112" in rule and list(rows["block"].unique()) == ["1-99", "100-"]
    assert set(held.loc[held["id"] >= "cheng_0101", "part"]) == {"test"}
    assert set(held.loc[held["id"] < "cheng_0101", "part"]) == {"train", "val"}


def test_consecutive_numbers_without_named_blocks_split_by_groups(tmp_path: Path) -> None:
    tree = phantom_tree(tmp_path / "tree", list(range(1, 25)), patient_slices=1)
    rows = mask_sources.load(tree, "tree", tmp_path / "prepared", size=64).assign(block="")  # navoneel: Y1, Y2, ...
    parts, rule = mask_sources.with_parts(rows, leave_out=1)
    assert rule.startswith("groups") and set(parts["part"]) == {"train", "val", "test"}
    two_runs = rows.assign(id=[f"cheng_{i:04d}" for i in (*range(1, 13), *range(101, 113))])
    forced, rule = mask_sources.with_parts(two_runs, leave_out=2, rule="ranges")  # 08 --split ranges: index runs
    assert list(forced.loc[forced["part"] == "test", "id"]) == list(two_runs["id"][12:])


def test_a_stage_folder_finds_its_data_sets_index_through_its_lineage(tmp_path: Path) -> None:
    from argparse import Namespace

    from lib.common.stage import write_lineage

    tree = phantom_tree(tmp_path / "tree", [1, 2])
    first, second = tmp_path / "run" / "01_download", tmp_path / "run" / "02_clean"
    write_lineage(first, "01_download", Namespace(path=str(tree)), {})
    write_lineage(second, "02_clean", Namespace(size=64), {"in": first})
    assert mask_sources.index_columns(second)["cheng_0002"]["kind"] == "glioma"


def test_a_cleaned_stage_folder_is_used_as_it_is(tmp_path: Path) -> None:
    folder = tmp_path / "02_clean"
    write_png(folder / "images" / "a.png", np.full((64, 64), 90, np.uint8))
    write_png(folder / "masks" / "a.png", np.pad(np.full((8, 8), 255, np.uint8), 28))
    write_png(folder / "images" / "b.png", np.full((64, 64), 80, np.uint8))
    table = pd.DataFrame({"id": ["a", "b"], "status": "ok", "label": ["tumor", "no_tumor"],
                          "image_path": ["images/a.png", "images/b.png"], "mask_path": ["masks/a.png", ""],
                          "square_box": ["0,0,64,64"] * 2, "dup_group": ["g1", "g2"]})
    manifest.write(table, folder)
    rows = mask_sources.load(folder, "x", tmp_path / "prepared", size=256)
    assert not (tmp_path / "prepared").exists()  # nothing prepared: 02 did it
    assert list(rows["group"]) == ["g1", "g2"] and Path(rows["image_path"][0]).is_absolute()
    assert read_mask(rows["mask_path"][0]).sum() == 64


def write_mat(path: Path, image: np.ndarray, mask: np.ndarray, label: int, patient: str) -> None:
    """A MATLAB v7.3 file as Cheng's: HDF5 holds the column-major arrays transposed."""
    with h5py.File(path, "w") as f:
        data = f.create_group("cjdata")
        data["image"] = image.T.astype(np.int16)
        data["tumorMask"] = mask.T.astype(np.uint8)
        data["label"] = np.array([[float(label)]])
        data["PID"] = np.array([[ord(c)] for c in patient], np.uint16)


def test_figshare_mat_files_become_an_images_and_masks_tree(tmp_path: Path) -> None:
    image = np.tile(np.arange(40, dtype=np.float32) * 30, (24, 1))  # 24 x 40: not square, rises to the right
    mask = np.zeros((24, 40), bool)
    mask[5:9, 30:36] = True
    (tmp_path / "mats").mkdir()
    write_mat(tmp_path / "mats" / "12.mat", image, mask, 2, "100360")
    write_mat(tmp_path / "mats" / "3.mat", image[::-1], mask[::-1], 3, "MR1")
    (tmp_path / "mats" / "4.mat").write_bytes(b"MATLAB 5.0 but not HDF5")
    assert figshare_mat.holds_mat(tmp_path / "mats") and not figshare_mat.holds_mat(tmp_path / "nothing")
    with pytest.raises(figshare_mat.MatError, match="4.mat"):
        figshare_mat.convert(tmp_path / "mats", tmp_path / "tree")
    (tmp_path / "mats" / "4.mat").unlink()
    tree = figshare_mat.convert(tmp_path / "mats", tmp_path / "tree")
    index = pd.read_csv(tree / "index.csv", dtype=str)
    assert list(index["file"]) == ["cheng_0003.png", "cheng_0012.png"]
    assert list(index["label_name"]) == ["pituitary", "glioma"] and list(index["patient"]) == ["MR1", "100360"]
    pixels = read_image(tree / "images" / "cheng_0012.png").pixels
    assert pixels.shape == (24, 40) and pixels[0, 0] < pixels[0, -1]  # MATLAB's orientation, scaled to 8 bits
    assert np.array_equal(read_mask(tree / "masks" / "cheng_0012.png"), mask)


def test_the_shared_figshare_masks_load_with_their_types() -> None:
    root = shared_data("figshare_seg")
    rows = mask_sources.index_columns(root)
    assert rows["cheng_0121"]["kind"] == "meningioma" and len(rows) == 600
