"""Benchmark: warm per-image latency of a bundle's prediction (clean + classify + U-Net mask) on this machine.

Loads the bundle once (lib.deploy.predictor.Predictor), warms it up, then predicts
phantom slices (new ones, drawn with --seed, never the training files) one at
a time, as the demo and scripts/predict.py do. Prints the median and 95th
percentile per stage, and the same pipeline with Keras' `Model.predict` per
call instead of the compiled `predict_on_batch` step, measured in the same
run, as the baseline ratio. Writes bench/results/predict.json.
Target: median <= 150 ms for classification + mask on 2 CPU cores, with the
brain-MRI check's traits (`--ood rules`); `--ood full` shows what LiteMedSAM's
embedding adds (predict.py's and the demo's default). `--prompts` also times
the demo's LiteMedSAM box prompt on each slice (OpenVINO, no PyTorch): the
first prompt on a slice (encoder maps, unless the check already made them,
and decoder) and a second one (decoder only).

    python bench/bench_predict.py [--bundle artifacts/bundle] [--n 40] [--ood rules|full|off] [--prompts]
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

from lib.acquire import phantom  # noqa: E402
from lib.common.io import write_json_atomic  # noqa: E402
from lib.deploy import predictor  # noqa: E402

TARGET_MS = 150.0


def slices(n: int, seed: int) -> list[np.ndarray]:
    """Half tumour, half clear phantom slices, as decoded pixels."""
    rng = np.random.default_rng(seed)
    return [phantom.make_slice(rng, i % 2).image for i in range(n)]


def measure(model: predictor.Predictor, images: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """Per-stage milliseconds (median, p95) over `images`, one slice per call."""
    per_stage: dict[str, list[float]] = {}
    for image in images:
        start = time.perf_counter()
        result = model.predict(image, segment=True)
        result.seconds["wall"] = time.perf_counter() - start
        for stage, seconds in result.seconds.items():
            per_stage.setdefault(stage, []).append(1000 * seconds)
    return {s: {"median_ms": float(np.median(v)), "p95_ms": float(np.percentile(v, 95))} for s, v in per_stage.items()}


def prompt_times(model: predictor.Predictor, images: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """Milliseconds (median, p95) of a box prompt on each predicted slice: the first, then a second one."""
    first, second = [], []
    for image in images:
        prepared = model.predict(image, segment=False).prepared
        a, b, c = (prepared.clean.shape[0] // k for k in (4, 3, 2))
        for times, box in ((first, (a, a, c, c)), (second, (b, b, c, c))):
            tic = time.perf_counter()
            model.segment_prompt(prepared, box=box)
            times.append(1000 * (time.perf_counter() - tic))
    return {name: {"median_ms": float(np.median(v)), "p95_ms": float(np.percentile(v, 95))}
            for name, v in (("first prompt", first), ("next prompt", second))}


def with_model_predict(model: predictor.Predictor, images: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """The same pipeline with `Model.predict(x)` per call: the straightforward Keras way, as baseline."""
    fast = predictor._call
    predictor._call = lambda m, x: np.asarray(m.predict(x, verbose=0))
    try:
        return measure(model, images)
    finally:
        predictor._call = fast


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=ROOT / "artifacts" / "bundle")
    p.add_argument("--n", type=int, default=40, help="slices timed per variant")
    p.add_argument("--seed", type=int, default=99)
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "predict.json")
    p.add_argument("--ood", choices=["full", "rules", "off"], default="rules",
                   help="the brain-MRI check (lib.deploy.ood): full adds LiteMedSAM's embedding, shown as 'ood'")
    p.add_argument("--prompts", action="store_true", help="also time the demo's LiteMedSAM box prompt")
    args = p.parse_args()
    try:
        model = predictor.Predictor(args.bundle, sam=args.prompts, ood_check=args.ood)
    except predictor.BundleError as err:
        raise SystemExit(f"error: {err}") from None
    images = slices(args.n, args.seed)
    model.predict(images[0])  # warm: first-call tracing is not what a user waits for on the next slice
    fast = measure(model, images)
    baseline = with_model_predict(model, images[: max(args.n // 4, 5)])
    prompts = prompt_times(model, images) if args.prompts else {}
    print_table(fast | prompts, baseline)
    median = fast["wall"]["median_ms"]
    result = {"bundle": str(args.bundle), "members": model.ensemble.members, "slices": args.n, "ood": args.ood,
              "predict_on_batch": fast, "model_predict_baseline": baseline, "prompts": prompts,
              "speedup_median": baseline["wall"]["median_ms"] / median, "target_ms": TARGET_MS,
              "meets_target": median <= TARGET_MS, "machine": platform.machine(), "cpus": os.cpu_count()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.json, result)
    print(f"warm median {median:.0f} ms per slice (target {TARGET_MS:.0f} ms: "
          f"{'met' if median <= TARGET_MS else 'NOT met'}); {result['speedup_median']:.1f}x faster than Model.predict;"
          f" {os.cpu_count()} CPUs; JSON: {args.json}")
    return 0


def print_table(fast: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]]) -> None:
    print(f"{'stage':<12} {'median ms':>10} {'p95 ms':>8} {'Model.predict median ms':>24}")
    for stage, values in fast.items():
        base = baseline.get(stage, {}).get("median_ms", float("nan"))
        print(f"{stage:<12} {values['median_ms']:>10.1f} {values['p95_ms']:>8.1f} {base:>24.1f}")


if __name__ == "__main__":
    sys.exit(main())
