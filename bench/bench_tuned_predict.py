"""Benchmark: a saved fine-tuned LiteMedSAM (08 litemedsam's model.pt) predicting one slice at a time, per runtime.

Why: a bundle's fine-tuned LiteMedSAM segments one slice per request in the
demo and predict.py (flip-averaged: two forward passes). lib.segment.medsam_tuning.load
compiles it with OpenVINO on a CPU; this times that route against PyTorch
float32 and bfloat16 (autocast) on the same slices in the same run, and checks
its masks against PyTorch float32's (tolerance: mean Dice >= 0.99, as for the
frozen encoder in bench/bench_medsam_speed.py). Writes bench/results/tuned_predict.json.

    python bench/bench_tuned_predict.py --model runs/seg_selection/litemedsam-refined/fold-1/model.pt \
        --real ../shared/data/figshare_seg [--slices 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.common.io import read_image, write_json_atomic  # noqa: E402
from lib.segment import medsam_tuning  # noqa: E402
from lib.segment.mask_metrics import dice  # noqa: E402

ROUTES = {  # name -> (precision, OpenVINO)
    "float32": ("float32", False),
    "bfloat16": ("bfloat16", False),
    "openvino-f32": ("float32", True),
    "openvino-bf16": ("bfloat16", True),
}
DICE_TOLERANCE = 0.99


def masks_and_times(model_path: Path, route: str, images: list[np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
    """Flip-averaged masks of each slice, one call per slice, and the seconds each took (after a warm-up)."""
    precision, openvino = ROUTES[route]
    model = medsam_tuning.load(model_path, precision=precision)
    if not openvino:
        model.compiled = None  # the PyTorch route that load() replaces on a CPU
    elif model.compiled is None:
        raise SystemExit("error: OpenVINO is not installed or could not convert the model; see requirements.txt")
    medsam_tuning.predict(model, images[:1])
    masks, seconds = [], []
    for image in images:
        start = time.perf_counter()
        masks.append(medsam_tuning.predict(model, [image])[0])
        seconds.append(time.perf_counter() - start)
    return masks, seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="08 litemedsam's model.pt (or its folder)")
    p.add_argument("--real", type=Path, required=True, help="images/ folder's parent, e.g. ../shared/data/figshare_seg")
    p.add_argument("--slices", type=int, default=10)
    p.add_argument("--routes", nargs="+", default=list(ROUTES), choices=list(ROUTES))
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "tuned_predict.json")
    args = p.parse_args()
    paths = sorted((args.real / "images").glob("*.png"))
    if not paths:
        raise SystemExit(f"error: {args.real}/images holds no PNG slices")
    picked = [paths[i] for i in np.linspace(0, len(paths) - 1, min(args.slices, len(paths))).round().astype(int)]
    images = [read_image(path).pixels for path in picked]
    rows, reference = [], None
    for route in ["float32"] + [r for r in args.routes if r != "float32"]:
        masks, seconds = masks_and_times(args.model, route, images)
        reference = masks if reference is None else reference
        dices = [dice(a, b) for a, b in zip(reference, masks)]
        rows.append({"route": route, "seconds_per_slice": float(np.median(seconds)),
                     "mask_dice_mean": float(np.mean(dices)), "mask_dice_min": float(np.min(dices))})
    for row in rows:
        row["speedup"] = rows[0]["seconds_per_slice"] / row["seconds_per_slice"]
        row["within_tolerance"] = row["mask_dice_mean"] >= DICE_TOLERANCE
    print(f"fine-tuned LiteMedSAM {args.model}, flip-averaged, one slice per call, median of {len(images)} slices "
          f"of {args.real}; {os.cpu_count()} cores")
    print(f"{'route':<14} {'s/slice':>8} {'speedup':>8} {'mask Dice vs float32':>22} {'ok':>4}")
    for r in rows:
        print(f"{r['route']:<14} {r['seconds_per_slice']:>8.3f} {r['speedup']:>7.2f}x "
              f"{r['mask_dice_mean']:>10.4f} (min {r['mask_dice_min']:.3f}) {'yes' if r['within_tolerance'] else 'NO':>4}")
    write_json_atomic(args.json, {"machine": platform.platform(), "cores": os.cpu_count(), "model": str(args.model),
                                  "source": str(args.real), "slices": len(images), "tolerance": DICE_TOLERANCE,
                                  "rows": rows})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
