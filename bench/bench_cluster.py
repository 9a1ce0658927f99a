"""Benchmark: stage 04 (clustering) speed, and the measurement behind cluster.DEFAULT_K.

Speed mode (default), on cleaned slices of --path (a 02_clean folder), in one run:
  read only            read_image on every file: the floor any stage pays (baseline)
  head mask            clean.head_mask on every slice (what a stage adds before fitting)
  fit, 1 process       cluster.fit at DEFAULT_K on every slice held in memory (one OpenCV thread)
  fit, N processes     the same through lib.common.stage.imap (one OpenCV thread per worker)
  sweep                cluster.sweep over k = 2..20, seconds per slice (median, max)
Prints a table and writes bench/results/cluster.json.
Targets: fit >= 50 images/s in one process; a sweep <= 1 s per slice.

Choose mode (--choose): sweeps --per-set random slices of each of the three
cleaned sets (figshare T1-CE, navoneel, phantoms), averages them per set
(cluster.mean_sweep), applies cluster.choose_k per set and to all sets
together, checks the rule on synthetic slices with known classes, and writes
bench/results/k_choice.json plus one PNG of the four curves per set.

    python bench/bench_cluster.py [--path DIR] [--images 200] [--sweeps 30]
    python bench/bench_cluster.py --choose [--per-set 100]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.timing import best_time  # noqa: E402
from lib.common import manifest  # noqa: E402
from lib.common.io import read_image, write_json_atomic  # noqa: E402
from lib.common.stage import imap  # noqa: E402
from lib.preprocess.clean import head_mask  # noqa: E402
from lib.regions import cluster  # noqa: E402

TARGET_FIT_IMAGES_PER_S = 50
TARGET_SWEEP_SECONDS = 1.0
RESULTS = ROOT / "bench" / "results"
SETS = {
    "figshare": ROOT / "runs" / "figshare" / "02_clean",
    "navoneel": ROOT / "runs" / "navoneel" / "02_clean",
    "phantoms": ROOT / "data" / "02_clean",
}
# Synthetic check of choose_k: grey levels of the known classes, and noise sigmas.
SYNTHETIC_LEVELS = ([40, 120, 200], [30, 90, 150, 210], [30, 80, 130, 180, 230])
SYNTHETIC_NOISE = (5.0, 10.0)

# Slices of the current run, set before the worker pool forks so workers inherit them.
SLICES: list[tuple[np.ndarray, np.ndarray]] = []


def image_paths(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Up to `count` random ok images of a stage folder (all when fewer), reproducibly."""
    rows = manifest.ok_rows(manifest.read(folder))
    rows = rows.sample(n=min(count, len(rows)), random_state=seed)
    return [folder / path for path in rows["image_path"]]



def _fit_job(index: int) -> dict:
    image, head = SLICES[index]
    return {"k": cluster.fit(image, head).k}


def _sweep_job(path: Path) -> dict:
    image = read_image(path).pixels
    return {"path": str(path), "table": cluster.sweep(image, head_mask(image))}


def speed(args: argparse.Namespace) -> int:
    paths = image_paths(args.path, args.images)
    n = len(paths)
    images = [read_image(p).pixels for p in paths]
    SLICES[:] = [(image, head_mask(image)) for image in images]
    indices = list(range(n))
    timings = {
        "read only": best_time(lambda: [read_image(p) for p in paths], args.repeats),
        "head mask": best_time(lambda: [head_mask(image) for image in images], args.repeats),
        f"fit k={cluster.DEFAULT_K}, 1 process": best_time(lambda: [_fit_job(i) for i in indices], args.repeats),
        f"fit k={cluster.DEFAULT_K}, {args.workers} processes": best_time(
            lambda: list(imap(_fit_job, indices, args.workers, desc="fit")), args.repeats),
    }
    cluster.sweep(*SLICES[0], ks=range(2, 3))  # warm-up: the first sweep imports sklearn.metrics (~1-3 s)
    sweep_seconds = []
    for image, head in SLICES[: args.sweeps]:
        start = time.perf_counter()
        cluster.sweep(image, head)
        sweep_seconds.append(time.perf_counter() - start)

    baseline = timings["read only"]
    results = [{"step": step, "seconds": round(s, 3), "images_per_s": round(n / s, 1),
                "time_vs_read": round(s / baseline, 2)} for step, s in timings.items()]
    sweep = {"images": len(sweep_seconds), "ks": "2..20", "median_s": round(float(np.median(sweep_seconds)), 3),
             "max_s": round(float(np.max(sweep_seconds)), 3)}
    print(f"\nstage 04 clustering on {n} slices from {args.path} ({os.cpu_count()} cores)")
    print(f"{'step':28s} {'seconds':>8s} {'images/s':>9s} {'x read':>7s}")
    for r in results:
        print(f"{r['step']:28s} {r['seconds']:8.3f} {r['images_per_s']:9.1f} {r['time_vs_read']:7.2f}")
    print(f"sweep k=2..20 on {sweep['images']} slices: median {sweep['median_s']:.3f} s, max {sweep['max_s']:.3f} s")
    fit_rate = results[2]["images_per_s"]
    print(f"fit {fit_rate:.0f} images/s in one process "
          f"{'meets' if fit_rate >= TARGET_FIT_IMAGES_PER_S else 'misses'} the target of {TARGET_FIT_IMAGES_PER_S}; "
          f"sweep median {'meets' if sweep['median_s'] <= TARGET_SWEEP_SECONDS else 'misses'} "
          f"the target of {TARGET_SWEEP_SECONDS} s")
    write_json(args.json or RESULTS / "cluster.json", {
        "images": n, "path": str(args.path.relative_to(ROOT) if args.path.is_relative_to(ROOT) else args.path),
        "default_k": cluster.DEFAULT_K, "cores": os.cpu_count(), "machine": platform.platform(),
        "target_fit_images_per_s": TARGET_FIT_IMAGES_PER_S, "target_sweep_s": TARGET_SWEEP_SECONDS,
        "results": results, "sweep": sweep})
    return 0


def synthetic_check(seed: int = 0) -> list[dict]:
    """choose_k on head discs split into bands of known grey levels plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    size = 256
    yy, xx = np.indices((size, size))
    head = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.43 * size) ** 2
    checks = []
    for levels in SYNTHETIC_LEVELS:
        band = np.clip(xx * len(levels) // size, 0, len(levels) - 1)
        for noise in SYNTHETIC_NOISE:
            image = np.asarray(levels, np.float32)[band] + rng.normal(0, noise, (size, size))
            image = np.where(head, np.clip(image, 0, 255), 0).astype(np.uint8)
            k, reason = cluster.choose_k(cluster.sweep(image, head, seed=seed))
            checks.append({"classes": len(levels), "noise_sigma": noise, "chosen_k": k, "reason": reason})
    return checks


def choose(args: argparse.Namespace) -> int:
    report: dict = {"per_set_images": args.per_set, "ks": "2..20", "sets": {}}
    all_tables = []
    for name, folder in SETS.items():
        if not (folder / manifest.MANIFEST).is_file():
            print(f"skipping {name}: {folder} has no manifest (run stage 02 there first)", file=sys.stderr)
            continue
        start = time.perf_counter()
        tables = [r["table"] for r in imap(_sweep_job, image_paths(folder, args.per_set), args.workers, desc=name)]
        mean = cluster.mean_sweep(tables)
        k, reason = cluster.choose_k(mean)
        per_image = np.bincount([cluster.choose_k(t)[0] for t in tables], minlength=21)
        best_silhouette = np.array([t["silhouette"].max() for t in tables])
        cluster.plot_sweep(mean, RESULTS / f"k_sweep_{name}.png", f"{name}: mean of {len(tables)} normalised sweeps")
        report["sets"][name] = {
            "folder": str(folder.relative_to(ROOT)), "images": len(tables), "chosen_k": k, "reason": reason,
            "per_image_k": {int(i): int(c) for i, c in enumerate(per_image) if c},
            "per_image_silhouette_max": {
                "median": round(float(np.median(best_silhouette)), 3), "max": round(float(best_silhouette.max()), 3),
                f"share_at_least_{cluster.SILHOUETTE_STRONG}": round(float(np.mean(
                    best_silhouette >= cluster.SILHOUETTE_STRONG)), 3)},
            "mean_sweep": mean.round(4).to_dict("records"), "seconds": round(time.perf_counter() - start, 1)}
        print(f"{name:9s} {len(tables):4d} slices: k={k}  {reason}")
        print(f"          per-image choice of k (k: slices): {report['sets'][name]['per_image_k']}; "
              f"per-image silhouette maximum {report['sets'][name]['per_image_silhouette_max']}")
        all_tables += tables
    if not all_tables:
        print("error: none of the cleaned sets is present", file=sys.stderr)
        return 2
    pooled = cluster.mean_sweep(all_tables)
    k, reason = cluster.choose_k(pooled)
    cluster.plot_sweep(pooled, RESULTS / "k_sweep_all.png", f"all sets: mean of {len(all_tables)} normalised sweeps")
    report["all"] = {"images": len(all_tables), "chosen_k": k, "reason": reason,
                     "mean_sweep": pooled.round(4).to_dict("records")}
    report["synthetic"] = synthetic_check()
    report["default_k_in_code"] = cluster.DEFAULT_K
    print(f"all sets  {len(all_tables):4d} slices: k={k}  {reason}")
    for check in report["synthetic"]:
        print(f"synthetic {check['classes']} classes, noise {check['noise_sigma']:.0f}: k={check['chosen_k']}")
    if k != cluster.DEFAULT_K:
        print(f"note: cluster.DEFAULT_K is {cluster.DEFAULT_K}, this measurement says {k}")
    write_json(RESULTS / "k_choice.json", report)
    return 0


def write_json(path: Path, obj: dict) -> None:
    write_json_atomic(path, obj)
    print(f"wrote {path}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--path", type=Path, default=SETS["figshare"], help="02_clean folder for the speed mode")
    p.add_argument("--images", type=int, default=200, help="slices timed in the speed mode")
    p.add_argument("--sweeps", type=int, default=30, help="slices swept in the speed mode")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", type=Path, default=None, help="speed results file (default bench/results/cluster.json)")
    p.add_argument("--choose", action="store_true", help="measure the number of clusters instead of speed")
    p.add_argument("--per-set", type=int, default=100, help="slices swept per set in --choose mode")
    args = p.parse_args()
    # One OpenCV thread here too, not only in the workers: a process forked
    # while OpenCV's thread pool exists can hang in its first OpenCV call
    # (seen here: 1 run in ~20). Each process then uses one core, as in a stage.
    cv2.setNumThreads(1)
    if not args.choose and not (args.path / manifest.MANIFEST).is_file():
        print(f"error: {args.path} has no {manifest.MANIFEST}; pass --path to a 02_clean folder", file=sys.stderr)
        return 2
    return choose(args) if args.choose else speed(args)


if __name__ == "__main__":
    sys.exit(main())
