"""Benchmark: LiteMedSAM's frozen encoder per slice, float32 against bfloat16, with the tolerance checks.

Why: the encoder (about 75 GFLOP per 256 px slice) is what LiteMedSAM costs in
06's medsam_embed / fusion, 07's labels, 08's --refine sam and the demo. Each
route is timed on the same slices in the same run, after a warm-up, at batch 1
(what the demo and predict.py do), and checked against float32:
- pooled embeddings (what the classifiers read): cosine >= 0.999;
- masks from the true tumour box: mean Dice >= 0.99 (the lowest slice is
  printed too: on a small tumour a few boundary pixels move Dice by 0.01);
- with --classifier DIR (a stage folder with labels, e.g. navoneel's 02_clean):
  grouped 5-fold logistic regression on the pooled embeddings, ROC AUC within
  0.005 of float32's.
Routes: `float32`; `bf16-autocast` (float32 weights under torch.autocast);
`bfloat16` (weights and input cast: what medsam.PRECISION "auto" takes where
bfloat16 is native). Writes bench/results/medsam_speed.json.

    python bench/bench_medsam_speed.py [--slices 12] [--real ../shared/data/figshare_seg]
                                       [--classifier runs/navoneel/02_clean]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.acquire import phantom  # noqa: E402
from lib.common import manifest, medsam  # noqa: E402
from lib.common.io import read_image, write_json_atomic  # noqa: E402
from lib.preprocess import clean  # noqa: E402
from lib.regions import candidates  # noqa: E402
from lib.segment.mask_metrics import dice  # noqa: E402

ROUTES = {  # name -> (encoder precision, autocast around it)
    "float32": ("float32", False),
    "bf16-autocast": ("float32", True),
    "bfloat16": ("bfloat16", False),
}
TOLERANCE = {"pooled_cosine_min": 0.999, "mask_dice_mean": 0.99, "auc_change_max": 0.005}


def encode(images: list[np.ndarray], route: str) -> tuple[np.ndarray, list[float]]:
    """Encoder maps of `images` one at a time, and the seconds each took (a warm-up first)."""
    precision, autocast = ROUTES[route]
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with context:
        medsam.embed_image(images[:1], precision=precision)  # builds the model, warms the kernels
        maps, seconds = [], []
        for image in images:
            start = time.perf_counter()
            maps.append(medsam.embed_image([image], precision=precision)[0])
            seconds.append(time.perf_counter() - start)
    return np.stack(maps), seconds


def phantom_slices(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cleaned 256 px phantoms with one tumour each, and the true tumour mask in that frame."""
    found = []
    for seed in range(count):
        ph = phantom.make_slice(np.random.default_rng(seed), n_tumors=1)
        result = clean.clean_image(ph.image, size=256)
        found.append((result.image, clean.warp_mask(ph.tumor_mask, result.square_box, 256)))
    return found


def real_slices(folder: Path, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` evenly spaced slices of an images/ + masks/ tree (e.g. ../shared/data/figshare_seg), as stored."""
    paths = sorted((folder / "images").glob("*.png"))
    if not paths:
        raise SystemExit(f"error: {folder}/images holds no PNG slices; give an images/ + masks/ folder")
    picked = [paths[i] for i in np.linspace(0, len(paths) - 1, min(count, len(paths))).round().astype(int)]
    return [(read_image(path).pixels, read_image(folder / "masks" / path.name).pixels > 127) for path in picked]


def compare(reference: np.ndarray, maps: np.ndarray, slices: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """How far `maps` are from the float32 maps: pooled cosine, map cosine, true-box mask Dice."""
    cosine = torch.nn.functional.cosine_similarity
    pooled = cosine(medsam.pool(torch.from_numpy(reference)), medsam.pool(torch.from_numpy(maps)))
    flat = cosine(torch.from_numpy(reference).flatten(1), torch.from_numpy(maps).flatten(1))
    dices = []
    for (image, truth), a, b in zip(slices, reference, maps):
        box = candidates.mask_box(truth)
        dices.append(dice(medsam.predict_box(a, box, image.shape)[0], medsam.predict_box(b, box, image.shape)[0]))
    return {"pooled_cosine_min": float(pooled.min()), "map_cosine_min": float(flat.min()),
            "mask_dice_min": min(dices), "mask_dice_mean": float(np.mean(dices))}


def classifier_auc(folder: Path, route: str) -> float:
    """Grouped 5-fold ROC AUC of a logistic regression on the pooled embeddings of a labelled stage folder."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = manifest.read(folder)
    rows = rows[(rows["status"] == "ok") & rows["label"].isin(["tumor", "no_tumor"])]
    images = [read_image(folder / p).pixels for p in rows["image_path"]]
    precision, autocast = ROUTES[route]
    with torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
        x = medsam.pooled_embeddings(images, precision=precision)
    y = (rows["label"] == "tumor").to_numpy(int)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    folds = StratifiedGroupKFold(5, shuffle=True, random_state=0)
    prob = cross_val_predict(model, x, y, groups=rows["dup_group"].to_numpy(), cv=folds, method="predict_proba")
    return float(roc_auc_score(y, prob[:, 1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slices", type=int, default=12, help="slices timed and checked per route")
    p.add_argument("--real", type=Path, default=None,
                   help="images/ + masks/ folder of real slices to use instead of phantoms (e.g. figshare_seg)")
    p.add_argument("--routes", nargs="+", default=list(ROUTES), choices=list(ROUTES))
    p.add_argument("--classifier", type=Path, default=None, help="labelled stage folder for the AUC check")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "medsam_speed.json")
    args = p.parse_args()
    slices = real_slices(args.real, args.slices) if args.real else phantom_slices(args.slices)
    images = [image for image, _ in slices]
    rows, reference = [], None
    for route in ["float32"] + [r for r in args.routes if r != "float32"]:
        maps, seconds = encode(images, route)
        reference = maps if reference is None else reference
        row = {"route": route, "seconds_per_slice": float(np.median(seconds)), **compare(reference, maps, slices)}
        if args.classifier:
            row["roc_auc"] = classifier_auc(args.classifier, route)
        rows.append(row)
    for row in rows:
        row["speedup"] = rows[0]["seconds_per_slice"] / row["seconds_per_slice"]
        row["auc_change"] = abs(row["roc_auc"] - rows[0]["roc_auc"]) if args.classifier else None
        row["within_tolerance"] = (row["pooled_cosine_min"] >= TOLERANCE["pooled_cosine_min"]
                                   and row["mask_dice_mean"] >= TOLERANCE["mask_dice_mean"]
                                   and (row["auc_change"] is None or row["auc_change"] <= TOLERANCE["auc_change_max"]))
    print_table(rows, args)
    write_json_atomic(args.json, {"machine": platform.platform(), "cores": os.cpu_count(), "torch": torch.__version__,
                                  "bf16_native": medsam.bf16_native("cpu"), "slices": args.slices,
                                  "source": str(args.real or "phantom"), "classifier": str(args.classifier or ""),
                                  "tolerance": TOLERANCE, "rows": rows})
    print(f"wrote {args.json}")
    return 0


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    source = args.real or "phantom"
    print(f"LiteMedSAM encoder, batch 1, median of {args.slices} slices of {source}; {os.cpu_count()} cores; "
          f"bfloat16 native: {medsam.bf16_native('cpu')}")
    print(f"{'route':<14} {'s/slice':>8} {'speedup':>8} {'pooled cos':>11} {'map cos':>8} {'mask Dice':>17} "
          f"{'ROC AUC':>8} {'ok':>4}")
    for r in rows:
        auc = f"{r['roc_auc']:.4f}" if "roc_auc" in r else "-"
        print(f"{r['route']:<14} {r['seconds_per_slice']:>8.3f} {r['speedup']:>7.2f}x {r['pooled_cosine_min']:>11.5f} "
              f"{r['map_cosine_min']:>8.4f} {r['mask_dice_min']:>8.4f} (mean {r['mask_dice_mean']:.3f}) {auc:>8} "
              f"{'yes' if r['within_tolerance'] else 'NO':>4}")


if __name__ == "__main__":
    sys.exit(main())
