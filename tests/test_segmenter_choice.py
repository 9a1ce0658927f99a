"""lib.deploy.segmenter_choice: 09 ships the segmenter that holds outside its training sources, and gates masks."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lib.deploy import segmenter_choice


def write_run(folder: Path, test_dice: float, outside: dict[str, float], trained: dict[str, float]) -> Path:
    """An 08 folder's metrics.json as 08 writes it: `outside` sources scored only, `trained` ones trained on."""
    sources = {name: {"rule": "scored only", "train": 0, "test": 200} for name in outside}
    sources |= {name: {"rule": "groups", "train": 100, "test": 20} for name in trained}
    if "figshare_seg" in outside:
        sources["figshare_seg"] = {"rule": "ranges, block 3 (cheng_2121-cheng_2320) left out", "train": 350,
                                   "test": 200}
    by_source = {name: {"dice_mean": dice, "tumour_images": 10} for name, dice in {**outside, **trained}.items()}
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "architecture": "unet", "image_size": 128, "sources": sources, "test_by_source": by_source,
        "test": {"dice_mean": test_dice, "false_positive_images": 2, "tumour_free_images": 20}}))
    return folder


def test_outside_sources_are_the_left_out_range_and_the_scored_only_folders(tmp_path: Path) -> None:
    run = write_run(tmp_path / "a", 0.9, {"figshare_seg": 0.4, "lgg_seg": 0.3}, {"input": 0.9})
    metrics = segmenter_choice.read_metrics(run)
    assert segmenter_choice.outside_sources(metrics) == ["figshare_seg", "lgg_seg"]


def test_the_candidate_best_outside_ships_even_when_another_wins_inside(tmp_path: Path) -> None:
    inside = write_run(tmp_path / "inside", 0.95, {"figshare_seg": 0.20, "lgg_seg": 0.30}, {"input": 0.95})
    outside = write_run(tmp_path / "outside", 0.70, {"figshare_seg": 0.60, "lgg_seg": 0.40}, {"input": 0.70})
    chosen, table = segmenter_choice.choose([inside, outside])
    assert chosen == outside
    assert table["shipped"].tolist() == [False, True]
    assert np.allclose(table["outside_dice"], [0.25, 0.50])
    assert table["ranked_by"].iloc[0] == "mean Dice on figshare_seg, lgg_seg"


def test_only_sources_every_candidate_was_scored_on_rank_them(tmp_path: Path) -> None:
    """A source only one candidate was scored on would rank them on different slices: left out."""
    a = write_run(tmp_path / "a", 0.5, {"figshare_seg": 0.50, "lgg_seg": 0.10}, {})
    b = write_run(tmp_path / "b", 0.5, {"figshare_seg": 0.40}, {})
    chosen, table = segmenter_choice.choose([a, b])
    assert chosen == a and "dice_lgg_seg" not in table.columns
    assert table["ranked_by"].iloc[0] == "mean Dice on figshare_seg"


def test_a_source_scored_on_other_slices_is_not_shared(tmp_path: Path) -> None:
    """One candidate left a figshare range out (200 slices), the other scored all 600: same name, other slices."""
    block = write_run(tmp_path / "block", 0.5, {"figshare_seg": 0.2, "lgg_seg": 0.4}, {})
    whole = write_run(tmp_path / "whole", 0.5, {"figshare_seg": 0.9, "lgg_seg": 0.1}, {})
    metrics = json.loads((whole / "metrics.json").read_text())
    metrics["sources"]["figshare_seg"]["test"] = 600
    (whole / "metrics.json").write_text(json.dumps(metrics))
    chosen, table = segmenter_choice.choose([block, whole])
    assert chosen == block and table["ranked_by"].iloc[0] == "mean Dice on lgg_seg"


def test_without_a_shared_outside_source_the_own_test_dice_ranks(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", 0.40, {}, {"input": 0.4})
    b = write_run(tmp_path / "b", 0.60, {}, {"input": 0.6})
    chosen, table = segmenter_choice.choose([a, b])
    assert chosen == b and table["outside_dice"].isna().all()
    assert "no shared outside source" in table["ranked_by"].iloc[0]


def test_a_folder_without_metrics_stops_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="metrics.json is missing; give 09 --unet an 08_unet_train folder"):
        segmenter_choice.choose([tmp_path])


def test_gating_counts_masks_hidden_on_tumour_free_slices_and_tumours_lost(tmp_path: Path) -> None:
    run = write_run(tmp_path / "08", 0.5, {}, {"input": 0.5})
    pd.DataFrame({  # 08's per_image.csv: four tumour-free test slices, two tumour slices, one phantom scored only
        "id": ["f1", "f2", "f3", "f4", "t1", "t2", "p1"],
        "source": ["input"] * 6 + ["phantoms"],
        "label": ["no_tumor"] * 4 + ["tumor", "tumor", "tumor"],
        "dice": [0.0, 0.0, 1.0, 1.0, 0.8, 0.6, 0.9],
        "pred_pixels": [30, 12, 0, 0, 400, 300, 500],
    }).to_csv(run / "per_image.csv", index=False)
    oof = pd.DataFrame({"id": ["f1", "f2", "f3", "f4", "t1", "t2"], "decision": [1, 0, 0, 1, 1, 0]})
    gate = segmenter_choice.gated(run, oof)
    assert gate["tumour_free_images"] == 4 and gate["masks_drawn"] == 2
    assert gate["masks_shown"] == 1  # f2's mask is hidden: the classifier called it tumour-free
    assert gate["dice_mean"] == pytest.approx(0.7) and gate["dice_mean_gated"] == pytest.approx(0.4)
    assert gate["tumours_hidden"] == 1  # t2: a missed call hides a real tumour's mask too
    assert segmenter_choice.gated(run, oof.assign(id=["x"] * 6)) is None  # no shared slice: nothing to say
