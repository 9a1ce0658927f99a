"""Benchmark: stage 03 enhancement, speed of every step and choice of the default chain.

Speed (default mode): on cleaned 256x256 slices (runs/figshare/02_clean, or
--speed-dir), times in one run, best of --repeats, in 1 process and in
--workers processes (a fork Pool, OpenCV at one thread per process):
  decode           read_image of each slice: the floor any stage pays
  head_mask        lib.preprocess.clean.head_mask: what the stage adds before enhancing
  identity         enhance() with no steps (copy + zero background): the baseline
  <step>           each step of lib.preprocess.enhance.STEPS alone (musica is MUSICA)
  default chain    lib.preprocess.enhance.DEFAULT_CHAIN
Prints a table and writes bench/results/enhance.json. Target: >= 200 images/s
for MUSICA and for the default chain with 2 processes.

--choose: scores CANDIDATE_CHAINS on every slice with a true tumour mask, the
600 figshare T1-CE slices and the phantoms of data/02_clean, by tumour CNR
(lib.preprocess.enhance.tumour_cnr, and its gain over no enhancement, per slice), edge
strength, rms contrast and clipping, plus speed in --workers processes.
Prints a table per data set, writes bench/results/enhance_chains.json, and
names the chain DEFAULT_CHAIN should be: the best median CNR gain on the
real slices among chains that reach the speed target.

    python bench/bench_enhance.py [--repeats 5] [--workers 2] [--choose]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.timing import best_time  # noqa: E402
from lib.common import manifest  # noqa: E402
from lib.common.io import read_image, read_mask, write_json_atomic  # noqa: E402
from lib.preprocess import enhance as enh  # noqa: E402
from lib.preprocess.clean import head_mask  # noqa: E402

TARGET_IMAGES_PER_S = 200
# Slices timed in speed mode: enough that a pool's start-up and chunking are noise.
SPEED_IMAGES = 300
# Chains compared by --choose: nothing, each step alone, denoise-then-amplify,
# amplify-then-equalise and the reverse.
CANDIDATE_CHAINS = [
    "none", "musica", "clahe", "gaussian", "bilateral", "nlmeans", "unsharp",
    "gaussian,musica", "bilateral,musica", "nlmeans,musica",
    "musica,clahe", "clahe,musica", "gaussian,unsharp", "bilateral,clahe",
]
DATA_SETS = {"figshare": ROOT / "runs" / "figshare" / "02_clean", "phantoms": ROOT / "data" / "02_clean"}

# Slices for the worker processes: set before the Pool forks, so workers inherit them.
_SLICES: list[dict] = []


def load_slices(folder: Path, limit: int | None = None, tumour_only: bool = False) -> list[dict]:
    """Cleaned slices of a stage-02 folder, with head mask and (when known) tumour mask."""
    rows = manifest.read(folder)
    rows = rows[rows["status"] == "ok"]
    if tumour_only:
        rows = rows[(rows["label"] == "tumor") & (rows["mask_path"] != "")]
    slices = []
    for row in rows.head(limit).to_dict("records") if limit else rows.to_dict("records"):
        image = read_image(folder / row["image_path"]).pixels
        tumour = read_mask(folder / row["mask_path"]) if row["mask_path"] else None
        if tumour_only and (tumour is None or not tumour.any()):
            continue
        slices.append({"id": row["id"], "path": str(folder / row["image_path"]), "image": image,
                       "head": head_mask(image), "tumour": tumour})
    return slices


def _one_thread() -> None:
    cv2.setNumThreads(1)


def _run(job: tuple[str, tuple[str, ...], int]) -> int:
    """One timed unit of work on slice `index`; returns a byte so results stay cheap to send."""
    kind, chain, index = job
    item = _SLICES[index]
    if kind == "decode":
        return int(read_image(item["path"]).pixels[0, 0])
    if kind == "head":
        return int(head_mask(item["image"])[0, 0])
    return int(enh.enhance(item["image"], item["head"], chain)[0, 0])


def _score(job: tuple[tuple[str, ...], int]) -> dict[str, float]:
    """Tumour CNR and contrast stats of slice `index` after `chain`."""
    chain, index = job
    item = _SLICES[index]
    out = enh.enhance(item["image"], item["head"], chain)
    return {"cnr": enh.tumour_cnr(out, item["tumour"], item["head"]), **enh.contrast_stats(out, item["head"])}



def time_jobs(
    pool, workers: int, kind: str, chain: tuple[str, ...], repeats: int, single: bool = True
) -> tuple[float, float]:
    """Seconds for SPEED_IMAGES slices in this process (nan unless `single`) and through `pool`."""
    jobs = [(kind, chain, i) for i in range(min(len(_SLICES), SPEED_IMAGES))]
    chunk = max(1, len(jobs) // (8 * workers))  # 8 chunks per worker: balanced, little overhead
    single = best_time(lambda: [_run(job) for job in jobs], repeats) if single else float("nan")
    parallel = best_time(lambda: pool.map(_run, jobs, chunksize=chunk), repeats)
    return single, parallel


def speed(pool, workers: int, repeats: int) -> list[dict]:
    """The speed table: decode, head_mask, identity, every step, the default chain."""
    n = min(len(_SLICES), SPEED_IMAGES)
    plan = [("decode", "decode", ()), ("head_mask", "head", ()), ("identity (no steps)", "chain", ())]
    plan += [(name, "chain", (name,)) for name in enh.STEPS]
    plan += [(f"default chain {','.join(enh.DEFAULT_CHAIN)}", "chain", enh.DEFAULT_CHAIN)]
    timings = {name: time_jobs(pool, workers, kind, chain, repeats) for name, kind, chain in plan}
    decode = timings["decode"][0]
    return [{"step": name, "ms_per_image": round(1000 * single / n, 3), "images_per_s_1": round(n / single, 1),
             f"images_per_s_{workers}": round(n / parallel, 1), "time_vs_decode": round(single / decode, 2)}
            for name, (single, parallel) in timings.items()]


def print_speed(results: list[dict], workers: int) -> None:
    print(f"\n{'step':32s} {'ms/img':>7s} {'img/s 1p':>9s} {f'img/s {workers}p':>9s} {'x decode':>9s}")
    for r in results:
        print(f"{r['step']:32s} {r['ms_per_image']:7.3f} {r['images_per_s_1']:9.1f} "
              f"{r[f'images_per_s_{workers}']:9.1f} {r['time_vs_decode']:9.2f}")


def score_chains(pool, workers: int, repeats: int) -> list[dict]:
    """Median CNR, CNR gain over 'none', edge strength, rms contrast, clipping and speed per chain."""
    indices = range(len(_SLICES))
    per_chain = {}
    for text in CANDIDATE_CHAINS:
        chain = enh.parse_chain(text)
        per_chain[text] = (chain, pool.map(_score, [(chain, i) for i in indices], chunksize=8))
    base = np.array([s["cnr"] for s in per_chain["none"][1]])
    rows = []
    for text, (chain, scores) in per_chain.items():
        cnr = np.array([s["cnr"] for s in scores])
        known = np.isfinite(cnr) & np.isfinite(base)
        _, parallel = time_jobs(pool, workers, "chain", chain, repeats, single=False) if repeats else (0, np.nan)
        rows.append({
            "chain": text,
            "median_cnr": round(float(np.nanmedian(cnr)), 3),
            "median_cnr_gain": round(float(np.median(cnr[known] / base[known])), 3),
            "share_cnr_up": round(float(np.mean(cnr[known] > base[known])), 3),
            "median_edge_strength": round(float(np.median([s["edge_strength"] for s in scores])), 2),
            "median_rms_contrast": round(float(np.median([s["rms_contrast"] for s in scores])), 3),
            "median_clipped": round(float(np.median([s["clipped"] for s in scores])), 4),
            f"images_per_s_{workers}": round(min(len(_SLICES), SPEED_IMAGES) / parallel, 1),
        })
    return rows


def print_chains(name: str, n: int, rows: list[dict], workers: int) -> None:
    print(f"\n{name}: {n} slices with a tumour mask (medians over slices; gain = CNR / CNR without enhancement)")
    print(f"{'chain':18s} {'CNR':>6s} {'gain':>6s} {'% up':>5s} {'edge':>6s} {'rms':>6s} {'clip':>6s} "
          f"{f'img/s {workers}p':>9s}")
    for r in rows:
        print(f"{r['chain']:18s} {r['median_cnr']:6.3f} {r['median_cnr_gain']:6.3f} {100 * r['share_cnr_up']:5.0f} "
              f"{r['median_edge_strength']:6.2f} {r['median_rms_contrast']:6.3f} {r['median_clipped']:6.4f} "
              f"{r[f'images_per_s_{workers}']:9.1f}")


def choose(rows: list[dict], workers: int) -> dict:
    """Best median CNR gain among chains at or above the speed target."""
    fast = [r for r in rows if r[f"images_per_s_{workers}"] >= TARGET_IMAGES_PER_S]
    return max(fast, key=lambda r: r["median_cnr_gain"])


def speed_mode(args: argparse.Namespace, info: dict) -> None:
    """Time every step on SPEED_IMAGES slices; print the table, write enhance.json."""
    global _SLICES
    _SLICES = load_slices(args.speed_dir, limit=SPEED_IMAGES)
    with multiprocessing.get_context("fork").Pool(args.workers, initializer=_one_thread) as pool:
        results = speed(pool, args.workers, args.repeats)
    shape = _SLICES[0]["image"].shape
    print(f"enhancement speed on {len(_SLICES)} slices {shape[1]}x{shape[0]} from {args.speed_dir} "
          f"({os.cpu_count()} cores)", end="")
    print_speed(results, args.workers)
    for r in (results[-1], next(r for r in results if r["step"] == "musica")):
        rate = r[f"images_per_s_{args.workers}"]
        verdict = "meets" if rate >= TARGET_IMAGES_PER_S else "misses"
        print(f"{r['step']}: {rate:.0f} images/s on {args.workers} processes {verdict} the target of "
              f"{TARGET_IMAGES_PER_S}")
    write_json_atomic(args.results / "enhance.json",
        {**info, "images": len(_SLICES), "size": list(shape), "source": str(args.speed_dir),
         "results": results})


def choose_mode(args: argparse.Namespace, info: dict) -> None:
    """Score CANDIDATE_CHAINS on both data sets; print the tables and the pick, write enhance_chains.json."""
    global _SLICES
    report = {**info, "data_sets": {}}
    rate_key = f"images_per_s_{args.workers}"
    for name, folder in DATA_SETS.items():
        _SLICES = load_slices(folder, tumour_only=True)
        timed = name == "figshare"  # speed does not depend on the data set: time once
        with multiprocessing.get_context("fork").Pool(args.workers, initializer=_one_thread) as pool:
            rows = score_chains(pool, args.workers, args.repeats if timed else 0)
        if not timed:
            rates = {r["chain"]: r[rate_key] for r in report["data_sets"]["figshare"]["chains"]}
            for r in rows:
                r[rate_key] = rates[r["chain"]]
        print_chains(name, len(_SLICES), rows, args.workers)
        report["data_sets"][name] = {"folder": str(folder), "slices": len(_SLICES), "chains": rows}
    best = report["chosen"] = choose(report["data_sets"]["figshare"]["chains"], args.workers)
    print(f"\nbest median CNR gain on figshare at >= {TARGET_IMAGES_PER_S} images/s ({args.workers} processes): "
          f"{best['chain']} (gain {best['median_cnr_gain']:.3f}, {best[rate_key]:.0f} images/s); "
          f"DEFAULT_CHAIN is now {','.join(enh.DEFAULT_CHAIN)}")
    write_json_atomic(args.results / "enhance_chains.json", report)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--speed-dir", type=Path, default=DATA_SETS["figshare"], help="stage-02 folder timed")
    p.add_argument("--repeats", type=int, default=5, help="best of this many runs (other load only slows runs)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--choose", action="store_true", help="score CANDIDATE_CHAINS on slices with tumour masks")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args()
    cv2.setNumThreads(1)  # the 1-process column is one core, like each pool worker
    args.results.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"note: load average {load:.1f} at the start; other work on the machine slows the timings")
    info = {"cores": os.cpu_count(), "machine": platform.platform(), "load_average": round(load, 2),
            "workers": args.workers, "target_images_per_s": TARGET_IMAGES_PER_S,
            "default_chain": list(enh.DEFAULT_CHAIN)}
    (choose_mode if args.choose else speed_mode)(args, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
