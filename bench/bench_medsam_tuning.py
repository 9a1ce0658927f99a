"""Benchmark: 08 --architecture litemedsam's training step and prediction, float32 against bfloat16.

Times lib.segment.medsam_tuning's own code (one training epoch over one batch, and
flip-averaged prediction) on phantom slices, for each --tune choice and
precision, on this machine's default device. bfloat16 runs under autocast;
08's --precision auto takes it wherever the hardware computes it natively
(uses_bf16), so this table is what that choice buys. Ratios are to float32,
measured in the same run. Writes bench/results/medsam_tuning.json.

    python bench/bench_medsam_tuning.py [--tune top all] [--repeats 3] [--batch 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.timing import best_time  # noqa: E402
from lib.acquire import phantom  # noqa: E402
from lib.common import medsam  # noqa: E402
from lib.common.io import write_json_atomic  # noqa: E402
from lib.segment import medsam_tuning  # noqa: E402

PRECISIONS = ("float32", "bfloat16")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tune", nargs="+", default=["top"], choices=["top", "all"])
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per cell (the best is kept), after a warm-up")
    p.add_argument("--batch", type=int, default=medsam_tuning.BATCH_SIZE, help="slices per training step")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "medsam_tuning.json")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    slices = [phantom.make_slice(rng, 1) for _ in range(args.batch)]
    images, masks = [s.image for s in slices], [s.tumor_mask for s in slices]
    rows = [time_cell(images, masks, tune, precision, args.repeats) for tune in args.tune for precision in PRECISIONS]
    for row in rows:
        base = next(r for r in rows if r["tune"] == row["tune"] and r["precision"] == "float32")
        row["step_speedup"] = round(base["step_seconds"] / row["step_seconds"], 2)
        row["predict_speedup"] = round(base["predict_seconds_per_slice"] / row["predict_seconds_per_slice"], 2)
    print_table(rows, args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.json, {"machine": platform.platform(), "cores": os.cpu_count(),
                                  "device": medsam.default_device(),
                                  "bf16_native": medsam.bf16_native(medsam.default_device()),
                                  "batch": args.batch, "rows": rows})
    print(f"wrote {args.json}")
    return 0


def time_cell(images: list[np.ndarray], masks: list[np.ndarray], tune: str, precision: str,
              repeats: int) -> dict[str, object]:
    """Best training-step and prediction times of one tune choice in one precision."""
    run = medsam_tuning._Run(images, masks, epochs=repeats + 1, batch_size=len(images), seed=0,
                             learning_rate=medsam_tuning.LEARNING_RATE, minutes=None, tune=tune, precision=precision)
    run.epoch()  # warm-up: first-call allocations and kernel choices
    step = best_time(run.epoch, repeats)
    frames = run.x[..., 0]
    medsam_tuning.frame_proba(run.model, frames[:1])
    predict = best_time(lambda: medsam_tuning.frame_proba(run.model, frames), repeats)
    loss, _ = run.epoch()
    return {"tune": tune, "precision": precision, "step_seconds": round(step, 2),
            "step_seconds_per_slice": round(step / len(images), 3),
            "predict_seconds_per_slice": round(predict / len(images), 3), "loss_after": round(loss, 4)}


def print_table(rows: list[dict[str, object]], args: argparse.Namespace) -> None:
    print(f"\nLiteMedSAM fine-tuning on {medsam.default_device()} ({os.cpu_count()} cores), batch {args.batch}, "
          f"best of {args.repeats}; bfloat16 native here: {medsam.bf16_native(medsam.default_device())}")
    print(f"{'tune':<5} {'precision':<9} {'step s':>7} {'s/slice':>8} {'speedup':>8} "
          f"{'predict s/slice':>16} {'speedup':>8}")
    for r in rows:
        print(f"{r['tune']:<5} {r['precision']:<9} {r['step_seconds']:>7} {r['step_seconds_per_slice']:>8} "
              f"{r['step_speedup']:>7}x {r['predict_seconds_per_slice']:>16} {r['predict_speedup']:>7}x")


if __name__ == "__main__":
    sys.exit(main())
