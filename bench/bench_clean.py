"""Benchmark: stage 02 (clean + crop) throughput on the real navoneel set.

Imports ../shared/data/navoneel (or --path) once, then times, in one run:
  decode only      read_image on every file: the floor any stage pays
  clean, 1 proc    decode + cleanup + crop + resize + PNG write, in process
  clean, N procs   the same through the stage's worker pool (--workers)
  whole stage      scripts/02_clean.py end to end, QC plots and report included
Prints a table and writes bench/results/clean.json. Target: >= 150 images/s at 256.

    python bench/bench_clean.py [--path DIR] [--size 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.timing import best_time  # noqa: E402
from lib.common import manifest  # noqa: E402
from lib.common.io import read_image, write_json_atomic  # noqa: E402
from lib.common.stage import imap  # noqa: E402
from lib.preprocess import run_clean  # noqa: E402

TARGET_IMAGES_PER_S = 150



def _clean_job(job: tuple[dict, str, int]) -> dict:
    row, out, size = job
    return run_clean.clean_one(dict(row), Path(out), size, False)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--path", type=Path, default=ROOT.parent / "shared" / "data" / "navoneel")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "clean.json")
    args = p.parse_args()
    if not args.path.is_dir():
        print(f"error: {args.path} not found; pass --path to a folder of class folders", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as tmp:
        imported, out = Path(tmp) / "01", Path(tmp) / "02"
        py = sys.executable
        subprocess.run([py, str(ROOT / "scripts/01_download.py"), "--source", "folder", "--path", str(args.path),
                        "--out", str(imported)], check=True, capture_output=True)
        rows = manifest.rebase(manifest.ok_rows(manifest.read(imported)), imported, out).to_dict("records")
        n = len(rows)
        jobs = [(row, str(out), args.size) for row in rows]
        out.mkdir()
        timings = {
            "decode only": best_time(lambda: [read_image(out / r["source_path"]) for r in rows], args.repeats),
            "clean, 1 process": best_time(lambda: [_clean_job(j) for j in jobs], args.repeats),
            f"clean, {args.workers} processes": best_time(
                lambda: list(imap(_clean_job, jobs, args.workers, desc="bench")), args.repeats),
        }
        stage_cmd = [py, str(ROOT / "scripts/02_clean.py"), "--in", str(imported), "--out", str(Path(tmp) / "s"),
                     "--size", str(args.size), "--force"]
        timings["whole stage (with QC report)"] = best_time(
            lambda: subprocess.run(stage_cmd, check=True, capture_output=True), 1)

    baseline = timings["decode only"]
    results = [{"step": step, "seconds": round(s, 3), "images_per_s": round(n / s, 1),
                "time_vs_decode": round(s / baseline, 2)} for step, s in timings.items()]
    print(f"\nstage 02 on {n} images from {args.path} at size {args.size} ({os.cpu_count()} cores)")
    print(f"{'step':32s} {'seconds':>8s} {'images/s':>9s} {'x decode':>9s}")
    for r in results:
        print(f"{r['step']:32s} {r['seconds']:8.3f} {r['images_per_s']:9.1f} {r['time_vs_decode']:9.2f}")
    parallel = results[2]["images_per_s"]
    verdict = "meets" if parallel >= TARGET_IMAGES_PER_S else "misses"
    print(f"clean throughput {parallel:.0f} images/s {verdict} the target of {TARGET_IMAGES_PER_S}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.json, {
        "images": n, "size": args.size, "cores": os.cpu_count(), "machine": platform.platform(),
        "target_images_per_s": TARGET_IMAGES_PER_S, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
