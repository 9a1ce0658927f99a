"""04's handcrafted feature vector for a slice that never went through stages 02-04 (a generated one).

Why: 06 --synthetic adds DDIM slices to a fold's training part. The features
model can only learn from them if they are described exactly as the real
slices were: the head found as 02/03 find it, 03's enhancement chain, 04's
clustering with the k it chose, and the same feature columns in the same
order. The settings are read from the real slices' lineage, never restated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.common.stage import read_lineage, settings_of
from lib.preprocess.clean import head_mask
from lib.preprocess.enhance import enhance
from lib.regions import cluster, features


@dataclass(frozen=True)
class FeatureRecipe:
    """How the real slices of a 04 folder got their features."""

    chain: tuple[str, ...]  # 03's enhancement steps (empty when 04 read 02's slices)
    k: int  # the cluster count 04 chose
    cluster_features: str  # 04 --features: what k-means clusters on
    columns: tuple[str, ...]  # features.csv's columns, in order

    @classmethod
    def of(cls, folder: Path) -> FeatureRecipe:
        """The recipe recorded in a 04_cluster folder's lineage.json; SystemExit when it has none."""
        lineage = read_lineage(folder)
        found = settings_of(lineage, "04_cluster")
        if not found or "chosen_k" not in found or "feature_columns" not in found:
            raise SystemExit(f"error: {folder}/lineage.json does not say how 04_cluster made its features; "
                             "rerun 04_cluster on this folder")
        chain = (settings_of(lineage, "03_enhance") or {}).get("chain") or ()
        return cls(tuple(chain), int(found["chosen_k"]), found.get("features", "intensity"),
                   tuple(found["feature_columns"]))


def vector(grey: np.ndarray, recipe: FeatureRecipe) -> np.ndarray:
    """The feature row of one grey uint8 slice (already at the real slices' size), in recipe.columns' order.

    ValueError when no head is found in it (an all-dark generated slice)."""
    head = head_mask(grey)
    if not head.any():
        raise ValueError("no head found in the slice")
    image = enhance(grey, head, recipe.chain) if recipe.chain else grey
    fitted = cluster.fit(image, head, k=recipe.k, features=recipe.cluster_features)
    values = features.extract(image, head, fitted.labels)
    return np.array([values[c] for c in recipe.columns], float)
