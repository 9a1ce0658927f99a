"""Generated slices for 06's training folds (06 --synthetic): which generator may serve a fold, and what it adds.

Why the care: a generator that saw a fold's validation or test slices can hand
back near copies of them, and a classifier trained on those scores its own
memory. So every fold gets a generator that never trained on any of the
fold's validation or test slices, by id (same data set) or by content hash
(copies across data sets). Stage 05 trains such a generator per fold with
--splits / --fold (it learns from the fold's inner training part only); a
generator trained on another data set serves every fold. The generated slices
join the training part only: kfold.cross_validate appends them after the
inner split, so they never reach a validation or test part.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from lib.common import manifest
from lib.common.io import read_image

TRAINED_ON = "trained_on.csv"  # written by 05 (lib.synth.run_ddim_train.write_trained_on)
SUFFIX = "+ddim"  # a family trained with generated slices is reported as e.g. "cnn+ddim"


@dataclass(frozen=True)
class Generator:
    """A 05_ddim_train folder: what it learned from and the slices it generated."""

    folder: Path
    fold: dict[str, Any] | None  # 05's --splits fold (digest, fold, repeat), None when trained without
    trained_ids: frozenset[str]
    trained_hashes: frozenset[str]
    samples: pd.DataFrame  # samples/manifest.csv's usable rows: id, image_path, label

    @classmethod
    def load(cls, folder: Path) -> Generator:
        """Read a 05 folder; SystemExit naming what is missing."""
        folder = Path(folder)
        trained, found = folder / TRAINED_ON, folder / "metrics.json"
        if not trained.is_file() or not found.is_file() or not (folder / "samples" / manifest.MANIFEST).is_file():
            raise SystemExit(f"error: --synthetic {folder}: not a finished 05_ddim_train folder (needs "
                             f"{TRAINED_ON}, metrics.json and samples/); run scripts/05_ddim_train.py into it")
        table = pd.read_csv(trained, dtype=str, keep_default_na=False)
        samples = manifest.ok_rows(manifest.read(folder / "samples"))
        samples = samples[samples["label"].isin(["tumor", "no_tumor"])].reset_index(drop=True)
        if samples.empty:
            raise SystemExit(f"error: --synthetic {folder}: samples/ holds no labelled slices")
        hashes = table["sha256"] if "sha256" in table.columns else []
        return cls(folder, json.loads(found.read_text()).get("fold"), frozenset(table["id"]),
                   frozenset(h for h in hashes if h), samples)

    def leaked(self, held: pd.DataFrame) -> list[str]:
        """Ids of the `held` slices (a fold's validation and test rows) this generator trained on."""
        hashes = held["sha256"] if "sha256" in held.columns else pd.Series("", index=held.index)
        seen = held["id"].isin(self.trained_ids) | hashes.isin(self.trained_hashes)
        return held.loc[seen, "id"].tolist()

    def made_for(self, repeat: int, k: int) -> bool:
        """Whether 05 trained it for exactly this fold (--splits --fold k --repeat repeat)."""
        return bool(self.fold) and self.fold.get("fold") == k and self.fold.get("repeat", 0) == repeat


def plan(generators: list[Generator], rows: pd.DataFrame, parts: dict[tuple[int, int], tuple[np.ndarray, ...]]
         ) -> dict[tuple[int, int], Generator]:
    """The generator each (repeat, fold) draws from: one made for it, else any that leaks none of its slices.

    `parts` maps (repeat, fold) to (inner train, validation, test) positions into `rows`.
    SystemExit (before any training) when a fold has no clean generator, saying how to make one."""
    chosen = {}
    for (repeat, k), (_, val, test) in parts.items():
        held = rows.iloc[np.concatenate([val, test])]
        clean = [g for g in generators if not g.leaked(held)]
        if not clean:
            worst = generators[0]
            raise SystemExit(
                f"error: no --synthetic generator may serve repeat {repeat} fold {k}: {worst.folder} trained on "
                f"{len(worst.leaked(held))} of its validation or test slices (e.g. {worst.leaked(held)[0]}); train "
                f"one per fold: scripts/05_ddim_train.py --splits <06 out>/splits.json --fold {k}")
        chosen[(repeat, k)] = next((g for g in clean if g.made_for(repeat, k)), clean[0])
    return chosen


def draw(generator: Generator, n: int, seed: int) -> pd.DataFrame:
    """n of the generator's slices, drawn at random (all of them, with a warning, when it has fewer)."""
    if n > len(generator.samples):
        print(f"warning: {generator.folder} has {len(generator.samples)} generated slices, fewer than the {n} "
              "asked for; using all (05 --samples makes more)")
    order = np.random.default_rng(seed).permutation(len(generator.samples))[:n]
    return generator.samples.iloc[np.sort(order)].reset_index(drop=True)


def pixels(generator: Generator, drawn: pd.DataFrame, shape: tuple[int, int]) -> list[np.ndarray]:
    """The drawn slices as grey uint8 at the real slices' shape (bicubic: 05 generates at 64 px or so)."""
    out = []
    for path in drawn["image_path"]:
        grey = read_image(manifest.resolve(generator.folder / "samples", path)).pixels
        grey = grey if grey.ndim == 2 else cv2.cvtColor(grey, cv2.COLOR_RGB2GRAY)
        out.append(grey if grey.shape == shape else cv2.resize(grey, shape[::-1], interpolation=cv2.INTER_CUBIC))
    return out


def describe(chosen: dict[tuple[int, int], Generator]) -> dict[str, str]:
    """{'repeat/fold': 'folder (made for this fold | trained on other slices)'} for metrics.json and the report."""
    return {f"{r}/{k}": f"{g.folder} ({'made for this fold' if g.made_for(r, k) else 'trained on other slices'})"
            for (r, k), g in sorted(chosen.items())}
