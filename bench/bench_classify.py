"""Benchmark: stage 06 (grouped 5-fold classification) with the full offline model set, end to end.

Runs scripts/06_classify_kfold.py on a 04_cluster folder of the real navoneel
set (make one with `make all DATA=runs/navoneel DOWNLOAD_ARGS="--source folder
--path ../shared/data/navoneel"`), into a fresh folder so nothing is reused,
then prints per model: wall seconds (and the ratio to the metadata baseline
of the same run), ROC AUC with its 95 % interval, the operating point, and the
figshare sensitivity on an evenly spaced sample of --external (150 slices by
default: LiteMedSAM embeds about one slice per 2 s here). Writes bench/results/classify.json.
Target: the whole set in <= 30 minutes on a 2-core CPU.

    python bench/bench_classify.py [--in runs/navoneel/04_cluster] [--external runs/figshare/04_cluster]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.common.io import write_json_atomic  # noqa: E402

MODELS = "metadata,features,medsam_embed,fusion,cnn,efficientnetv2b0"
TARGET_SECONDS = 30 * 60


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--in", dest="in_dir", type=Path, default=ROOT / "runs" / "navoneel" / "04_cluster")
    p.add_argument("--external", type=Path, default=ROOT / "runs" / "figshare" / "04_cluster")
    p.add_argument("--external-limit", type=int, default=150,
                   help="evenly spaced external images per model (LiteMedSAM needs ~2 s each on 2 cores); 0 = all")
    p.add_argument("--models", default=MODELS)
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "classify.json")
    args = p.parse_args()
    if not (args.in_dir / "manifest.csv").is_file():
        print(f"error: {args.in_dir}/manifest.csv not found; run stages 01-04 on navoneel first (see --help)",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "06"
        command = [sys.executable, str(ROOT / "scripts" / "06_classify_kfold.py"), "--in", str(args.in_dir),
                   "--out", str(out), "--models", args.models, "--weights", "none"]
        if (args.external / "manifest.csv").is_file():
            command += ["--external", str(args.external)]
            if args.external_limit:
                command += ["--external-limit", str(args.external_limit)]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        total = time.perf_counter() - start
        results = json.loads((out / "metrics.json").read_text())["models"]
    base = results.get("metadata", {}).get("seconds")
    print(f"\nstage 06 on {args.in_dir} ({os.cpu_count()} cores), models {args.models}")
    print(f"{'model':<18}{'seconds':>9}{'x meta':>8}{'ROC AUC':>9}  {'95 % CI':<16}{'sens':>6}{'spec':>6}{'ext sens':>9}")
    for name, r in sorted(results.items(), key=lambda kv: -kv[1]["roc_auc"]):
        ratio = f"{r['seconds'] / base:.1f}" if base else "-"
        ext = next(iter((r.get("external") or {}).values()), {}).get("sensitivity")
        low, high = r["roc_auc_ci"]
        print(f"{name:<18}{r['seconds']:>9.0f}{ratio:>8}{r['roc_auc']:>9.3f}  [{low:.3f}, {high:.3f}]  "
              f"{r['operating']['sensitivity']:>6.3f}{r['operating']['specificity']:>6.3f}"
              f"{ext if ext is None else round(ext, 3)!s:>9}")
    verdict = "meets" if total <= TARGET_SECONDS else "misses"
    print(f"total {total / 60:.1f} min {verdict} the target of {TARGET_SECONDS / 60:.0f} min")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.json, {
        "machine": platform.platform(), "cores": os.cpu_count(), "models": args.models,
        "external_limit": args.external_limit,
        "total_seconds": round(total, 1), "target_seconds": TARGET_SECONDS,
        "per_model": {k: {"seconds": v["seconds"], "roc_auc": v["roc_auc"], "roc_auc_ci": v["roc_auc_ci"],
                          "operating": {m: v["operating"][m] for m in ("sensitivity", "specificity", "threshold")},
                          "external": v.get("external")} for k, v in results.items()},
    })
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
