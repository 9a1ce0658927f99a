"""Benchmark: 08 segmenters on the test part against true masks: each alone, their mean, and SAM-refined.

For the 08 folders given (each holding model.keras or model.pt and metrics.json, or 08 --refit's search/),
every test slice of the index-range split (the same part 08 scores) is predicted
by each model; their probability maps are also averaged (a seed or architecture
ensemble, threshold 0.5). With --refine, each of those masks is also redrawn by
LiteMedSAM in the box of its largest blob and kept when it passes 07's quality
check (lib.segment.pseudo_label.refine, what 08 --refine sam does); the slice is encoded
once for all of them. Prints Dice mean, median, IoU, HD95 median and misses per
variant; writes bench/results/segmenters.json. With --groups (a table naming each
slice's group, e.g. figshare's tumour type), every variant is also scored per group:
a mean over mixed tumour types hides which kind a model misses. --per-image keeps
every slice's scores for a look at the failures.

    python bench/bench_segmenters.py --in runs/figshare/07_sam_label --models runs/gpu/truth_s0 runs/gpu/truth_s1 \
        --refine --groups ../shared/data/figshare_seg/index.csv --per-image runs/gpu/per_image.csv
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.common import manifest  # noqa: E402
from lib.common.io import write_json_atomic  # noqa: E402
from lib.segment import mask_metrics, models, pseudo_label, run_unet_train, segmenters  # noqa: E402

ENSEMBLE = "mean"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--in", dest="in_dir", type=Path, required=True, help="the folder 08 read (07's, or 04's for truth)")
    p.add_argument("--models", type=Path, nargs="+", required=True, help="08 output folders")
    p.add_argument("--refine", action="store_true", help="also score every variant refined by LiteMedSAM")
    p.add_argument("--groups", type=Path, help="CSV with an id (or file) column and --group-column: score per group")
    p.add_argument("--group-column", default="label_name", help="default: label_name (figshare_seg's tumour type)")
    p.add_argument("--per-image", type=Path, help="also write every slice's scores per variant to this CSV")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "segmenters.json")
    args = p.parse_args()
    sam = segmenters.load("litemedsam") if args.refine else None  # PyTorch before any Keras model
    rows, _ = run_unet_train.with_parts(manifest.read(args.in_dir), args.in_dir)  # 08's own split rule
    test = run_unet_train.scored_slices(rows[rows["part"] == "test"], args.in_dir)
    if not test:
        print(f"error: no test slices with true masks in {args.in_dir}", file=sys.stderr)
        return 2
    images = [s.image for s in test]
    maps, seconds = {}, {}
    for folder in args.models:
        name = folder.name if folder.name not in maps else f"{folder.parent.name}/{folder.name}"  # run/search
        tic = time.perf_counter()
        maps[name] = probability_maps(folder, images)
        seconds[name] = round((time.perf_counter() - tic) / len(images), 4)
    if len(maps) > 1:
        maps[ENSEMBLE] = [np.mean(per_model, axis=0) for per_model in zip(*maps.values())]
    masks = {name: [m > 0.5 for m in per_slice] for name, per_slice in maps.items()}
    if sam is not None:
        masks |= refined(sam, test, masks)
    groups = slice_groups(args.groups, args.group_column, test) if args.groups else ["all"] * len(test)
    scores = {name: pd.DataFrame([mask_metrics.score(m, s.truth) for m, s in zip(per_slice, test)])
              .assign(id=[s.record["id"] for s in test], group=groups) for name, per_slice in masks.items()}
    table = {name: mask_metrics.summary(per_image) for name, per_image in scores.items()}
    by_group = {name: {str(g): mask_metrics.summary(part) for g, part in per_image.groupby("group")}
                for name, per_image in scores.items()} if args.groups else {}
    print_table(table, len(test))
    if by_group:
        print_groups(by_group)
    if args.per_image:
        pd.concat(scores, names=["variant"]).reset_index(level=0).to_csv(args.per_image, index=False)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.json, {"machine": platform.platform(), "in": str(args.in_dir), "test_slices": len(test),
                                  "seconds_per_slice": seconds, "variants": table, "by_group": by_group})
    print(f"wrote {args.json}")
    return 0


def slice_groups(path: Path, column: str, test: list[run_unet_train.ScoredSlice]) -> list[str]:
    """Each test slice's group from a table keyed by id or file name (matched to the slice's id or origin file)."""
    table = pd.read_csv(path, dtype=str)
    key = "id" if "id" in table else "file"
    if column not in table or key not in table:
        raise SystemExit(f"error: {path}: needs an id or file column and a {column!r} column (has {list(table)})")
    keys = table[key] if key == "id" else table[key].map(lambda name: Path(name).stem)
    lookup = dict(zip(keys, table[column].fillna("unknown")))
    return [lookup.get(s.record["id"]) or lookup.get(Path(str(s.record.get("origin", ""))).stem, "unknown")
            for s in test]


def probability_maps(folder: Path, images: list[np.ndarray]) -> list[np.ndarray]:
    """The 08 model's P(tumour) maps at each slice's size (flip-averaged for LiteMedSAM, as 08 scores it).

    A folder without metrics.json (08 --refit's search/) is a fine-tuned LiteMedSAM when it holds model.pt."""
    metrics = folder / "metrics.json"
    architecture = (json.loads(metrics.read_text())["architecture"] if metrics.is_file()
                    else models.TUNED if (folder / models.model_file(models.TUNED)).is_file() else "unet")
    engine = models.engine(architecture)
    model = engine.load(folder / models.model_file(architecture))
    return engine.predict_proba(model, images)


def refined(sam: segmenters.Segmenter, test: list[run_unet_train.ScoredSlice],
            masks: dict[str, list[np.ndarray]]) -> dict[str, list[np.ndarray]]:
    """Every variant's masks refined by SAM; slice by slice so that each is encoded once."""
    out: dict[str, list[np.ndarray]] = {f"{name}+sam": [] for name in masks}
    for i, s in enumerate(tqdm(test, desc="SAM refinement", unit="img")):
        for name, per_slice in masks.items():
            out[f"{name}+sam"].append(pseudo_label.refine(sam, s.image, per_slice[i], s.head)[0])
    return out


def print_table(table: dict[str, dict[str, float]], n: int) -> None:
    print(f"08 segmenters on the test part ({n} slices) against true masks")
    print(f"{'variant':<40} {'Dice mean':>9} {'95 % CI':>11} {'median':>7} {'IoU':>6} {'HD95 med':>8} {'missed':>7}")
    for name, s in table.items():
        ci = "{:.3f}-{:.3f}".format(*s["dice_ci"])
        print(f"{name:<40} {s['dice_mean']:>9.3f} {ci:>11} {s['dice_median']:>7.3f} {s['iou_mean']:>6.3f} "
              f"{s['hd95_median']:>8.1f} {s['missed']:>3}/{s['tumour_images']}")


def print_groups(by_group: dict[str, dict[str, dict[str, float]]]) -> None:
    """One row per variant, one column per group: Dice mean (tumour slices in the group)."""
    names = sorted({g for per_variant in by_group.values() for g in per_variant})
    print("Dice mean per group (slices with a tumour)")
    print(f"{'variant':<40} " + " ".join(f"{g[:14]:>14}" for g in names))
    for variant, per_group in by_group.items():
        cells = [f"{per_group[g]['dice_mean']:.3f} ({per_group[g]['tumour_images']})" if g in per_group else "-"
                 for g in names]
        print(f"{variant:<40} " + " ".join(f"{c:>14}" for c in cells))


if __name__ == "__main__":
    sys.exit(main())
