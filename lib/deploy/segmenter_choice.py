"""Which of 08's segmenters a bundle ships, and what its masks cost once the classifier gates them.

Why choose outside: a segmenter's Dice on the sources it trained on says
little about a scan from elsewhere (issue 29: 0.03 on unseen figshare slices
for a bundle whose own test part looked fine). So when 09 is given several
08 folders, it ranks them by their mean Dice over the sources none of them
trained on: a figshare index range left out (`--leave-out`) and the folders
08 only scored (`--score-on`). Only sources every candidate was scored on
count, so all are ranked on the same slices.

Why gate: a segmenter draws some mask on many tumour-free slices (7 of 21
navoneel test slices in docs/results.md). The bundle draws a mask only where
its classifier says tumour; `gated` measures what that costs and saves with
the classifier's out-of-fold decisions, so no slice is judged by a model
that trained on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MASKS_WHEN = ("tumour", "always")  # bundle setting: draw the mask only on slices called tumour, or on every slice
OUTSIDE_RULES = ("scored only", "left out")  # parts of 08's source rules that mean "never trained on"


def read_metrics(unet_dir: Path) -> dict[str, Any]:
    """08's metrics.json, or SystemExit naming the folder."""
    path = Path(unet_dir) / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"error: {path} is missing; give 09 --unet an 08_unet_train folder")
    return json.loads(path.read_text())


def outside_sources(metrics: dict[str, Any]) -> list[str]:
    """Sources the segmenter was scored on but never trained on, with tumour slices to score."""
    rules = {name: source.get("rule", "") for name, source in (metrics.get("sources") or {}).items()}
    scored = metrics.get("test_by_source") or {}
    return sorted(name for name, rule in rules.items()
                  if any(part in rule for part in OUTSIDE_RULES) and (scored.get(name) or {}).get("dice_mean") is not None)


def shared_sources(metrics: list[dict[str, Any]]) -> list[str]:
    """Outside sources every candidate was scored on with the same number of slices: the same slices, ranked fairly.

    (A figshare range left out by one candidate and the whole figshare set scored by another share a name,
    not their slices.)"""
    def count(m: dict[str, Any], name: str) -> Any:
        return (m.get("sources") or {}).get(name, {}).get("test")

    names = set.intersection(*(set(outside_sources(m)) for m in metrics)) if metrics else set()
    return sorted(name for name in names if len({count(m, name) for m in metrics}) == 1)


def candidate_table(unet_dirs: list[Path]) -> pd.DataFrame:
    """One row per 08 folder: Dice on each shared outside source, their mean, own test Dice, masks on tumour-free.

    `outside_dice` is NaN for every row when the candidates share no outside source; they are then ranked by
    their own test Dice, which the table's `ranked_by` column says.
    """
    metrics = [read_metrics(d) for d in unet_dirs]
    shared = shared_sources(metrics)
    rows = []
    for folder, m in zip(unet_dirs, metrics):
        by_source, test = m.get("test_by_source") or {}, m.get("test") or {}
        row = {"folder": str(folder), "architecture": m.get("architecture", "?"), "image_size": m.get("image_size")}
        row.update({f"dice_{name}": by_source[name]["dice_mean"] for name in shared})
        row["outside_dice"] = float(np.mean([by_source[name]["dice_mean"] for name in shared])) if shared else np.nan
        row["test_dice"] = test.get("dice_mean")
        row["masks_on_tumour_free"] = f"{test.get('false_positive_images', '?')}/{test.get('tumour_free_images', '?')}"
        row["ranked_by"] = f"mean Dice on {', '.join(shared)}" if shared else "own test Dice (no shared outside source)"
        rows.append(row)
    return pd.DataFrame(rows)


def choose(unet_dirs: list[Path]) -> tuple[Path, pd.DataFrame]:
    """The candidate with the best Dice outside its training sources (own test Dice when none is shared)."""
    table = candidate_table(unet_dirs)
    key = "outside_dice" if table["outside_dice"].notna().any() else "test_dice"
    scores = pd.to_numeric(table[key], errors="coerce").fillna(-1.0)
    best = int(scores.to_numpy().argmax())
    table["shipped"] = [i == best for i in range(len(table))]
    return Path(unet_dirs[best]), table


def gated(unet_dir: Path, oof: pd.DataFrame) -> dict[str, Any] | None:
    """08's test masks on 09's own slices before and after hiding those the classifier calls tumour-free.

    Uses the out-of-fold decisions (oof.csv: id, decision), so each slice's decision comes from models that
    never saw it. None when 08's test part shares no slice with 09's input (e.g. a segmenter trained elsewhere).
    """
    per_image = Path(unet_dir) / "per_image.csv"
    if not per_image.is_file():
        return None
    rows = pd.read_csv(per_image)
    rows = rows[rows["source"] == "input"].merge(oof[["id", "decision"]], on="id", how="inner")
    if rows.empty:
        return None
    called = rows["decision"].astype(int) == 1
    free, tumour = rows[rows["label"] != "tumor"], rows[rows["label"] == "tumor"]
    drawn = free["pred_pixels"] > 0
    result = {"tumour_free_images": int(len(free)), "masks_drawn": int(drawn.sum()),
              "masks_shown": int((drawn & called[free.index]).sum()), "tumour_images": int(len(tumour))}
    if len(tumour) and tumour["dice"].notna().any():
        scored = tumour[tumour["dice"].notna()]
        result["dice_mean"] = float(scored["dice"].mean())
        result["dice_mean_gated"] = float(np.where(called[scored.index], scored["dice"], 0.0).mean())
        result["tumours_hidden"] = int((~called[scored.index]).sum())
    return result
