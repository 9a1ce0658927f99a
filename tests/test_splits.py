"""Folds keep duplicate groups together, keep class balance and are reproducible."""

import numpy as np
import pandas as pd
import pytest

from lib.common import splits


def toy_manifest(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    groups = [f"g{i // 3}" if i < 30 else f"g{i}" for i in range(n)]  # ten groups of three, then singles
    labels = ["tumor" if rng.random() < 0.6 else "no_tumor" for _ in range(n)]
    for i in range(0, 30, 3):  # copies share their label, as real duplicates do
        labels[i + 1] = labels[i + 2] = labels[i]
    return pd.DataFrame({"id": [f"im{i}" for i in range(n)], "label": labels, "dup_group": groups,
                         "status": "ok"})


def test_every_duplicate_group_sits_in_one_fold() -> None:
    df = toy_manifest()
    s = splits.from_manifest(df, folds=5, repeats=3)
    for fold_of in s["assignments"]:
        folds_per_group = df.assign(fold=df["id"].map(fold_of)).groupby("dup_group")["fold"].nunique()
        assert (folds_per_group == 1).all()
        assert set(fold_of.values()) == set(range(5))


def test_folds_are_reproducible_and_repeats_differ() -> None:
    df = toy_manifest()
    a, b = splits.from_manifest(df, repeats=2, seed=7), splits.from_manifest(df, repeats=2, seed=7)
    assert a == b
    assert a["assignments"][0] != a["assignments"][1]


def test_train_and_test_never_share_an_image_or_group() -> None:
    df = toy_manifest()
    group = dict(zip(df["id"], df["dup_group"]))
    for train, test in splits.fold_pairs(splits.from_manifest(df)):
        assert not set(train) & set(test)
        assert not {group[i] for i in train} & {group[i] for i in test}
        assert len(train) + len(test) == len(df)


def test_saved_splits_are_reused(tmp_path) -> None:
    df = toy_manifest()
    first = splits.load_or_make(tmp_path / "splits.json", df, 5, 1, 0)
    stamp = (tmp_path / "splits.json").stat().st_mtime_ns
    assert splits.load_or_make(tmp_path / "splits.json", df, 5, 1, 0) == first
    assert (tmp_path / "splits.json").stat().st_mtime_ns == stamp


def test_too_few_images_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="--folds"):
        splits.make(["a", "b", "c"], ["tumor", "no_tumor", "tumor"], ["a", "b", "c"], folds=5)


def test_index_ranges_cut_each_block_in_order() -> None:
    ids = [f"cheng_{i:04d}" for i in [*range(121, 321), *range(1121, 1321)]]
    part = splits.by_index_ranges(list(reversed(ids)))  # input order does not matter
    assert splits.index_blocks(ids) == [ids[:200], ids[200:]]
    for block in (ids[:200], ids[200:]):
        sequence = [part[i] for i in block]
        assert sequence == ["train"] * 140 + ["val"] * 20 + ["test"] * 40  # contiguous, never shuffled


def test_index_ranges_keep_a_duplicate_group_on_one_side() -> None:
    ids = [f"yes_Y{i}" for i in range(20)]
    groups = [f"g{i}" for i in range(20)]
    groups[19] = "g0"  # the last slice duplicates the first
    part = splits.by_index_ranges(ids, groups)
    assert part["yes_Y19"] == part["yes_Y0"] == "train"
    assert {part[i] for i in ids} == {"train", "val", "test"}


def test_interleaved_classes_without_runs_still_reach_every_part() -> None:
    ids = [f"yes_Y{i}" if i % 3 else f"no_no_{i}" for i in range(60)]  # Kaggle-style: classes interleaved
    part = splits.by_index_ranges(ids)
    for prefix in ("yes_Y", "no_no_"):
        assert {part[i] for i in ids if i.startswith(prefix)} == {"train", "val", "test"}


def test_groups_stay_whole_and_both_labels_reach_every_part() -> None:
    ids = [f"s{i}" for i in range(100)]
    groups = [f"g{i // 2}" for i in range(100)]  # pairs of duplicates
    labels = ["tumor" if i < 60 else "no_tumor" for i in range(100)]
    part = splits.by_groups(ids, groups, labels)
    assert all(part[ids[i]] == part[ids[i + 1]] for i in range(0, 100, 2))
    for label in ("tumor", "no_tumor"):
        assert {part[i] for i, lab in zip(ids, labels) if lab == label} == set(splits.PARTS)
    assert splits.by_groups(ids, groups, labels, seed=1) != part  # the seed draws the groups


def test_leave_out_holds_one_block_whole_as_the_test_part() -> None:
    ids = [f"cheng_{i:04d}" for i in (*range(121, 321), *range(1121, 1321), *range(2121, 2321))]
    labels = ["tumor"] * len(ids)
    part, rule = splits.segmentation_parts(ids, ids, labels, leave_out=2)
    assert "cheng_1121-cheng_1320" in rule
    assert {part[f"cheng_{i:04d}"] for i in range(1121, 1321)} == {"test"}
    others = [i for i in ids if not "cheng_1121" <= i <= "cheng_1320"]
    assert {part[i] for i in others} == {"train", "val"}
    assert sum(part[i] == "val" for i in others) == 2 * 25  # 1/8 of each remaining block
    with pytest.raises(ValueError, match="give 1 to 3"):
        splits.segmentation_parts(ids, ids, labels, leave_out=4)


def test_leave_out_takes_the_blocks_a_data_set_names() -> None:
    ids = [f"cheng_{i:04d}" for i in range(1, 31)]
    blocks = ["a"] * 10 + ["b"] * 5 + ["c"] * 15  # uneven, as index.csv may say
    part, rule = splits.segmentation_parts(ids, ids, ["tumor"] * 30, leave_out=2, blocks=blocks)
    assert [i for i in ids if part[i] == "test"] == ids[10:15] and "cheng_0011-cheng_0015" in rule
    part, rule = splits.segmentation_parts(ids, ids, ["tumor"] * 30, leave_out=2, rule="groups")
    assert "ranges only" in rule and "test" in part.values()  # groups: the usual three parts
