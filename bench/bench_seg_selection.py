"""Choose the segmenter by data it never saw: leave one figshare index range out, score phantoms and LGG too.

Why: a Dice inside one split of one set flatters a model (the navoneel-only bundle
scored 0.03 on unseen figshare ranges). Figshare's three blocks of consecutive
indices are three tumour types; each candidate trains on two blocks (08
`--masks truth --leave-out K`), is tested on the third, and is scored on the
phantoms and on the LGG FLAIR set (`--score-on`), which it never trained on.
Every fold is one stage-08 run in RUNS/<candidate>/fold-K (resumable: a finished
run is reused). Prints one table and writes bench/results/seg_selection.json.

    python bench/bench_seg_selection.py --figshare runs/figshare/02_clean \
        --score-on data/02_clean ../shared/data/lgg_seg --candidates unet128 deeplab
    python bench/bench_seg_selection.py --candidates litemedsam --refine --score-on data/02_clean
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.common import metrics as common_metrics  # noqa: E402

CANDIDATES = {  # 08's options per candidate; with --refine, each is tested refined and unrefined
    "unet128": ["--architecture", "unet", "--image-size", "128"],
    "unet256": ["--architecture", "unet", "--image-size", "256", "--batch-size", "8"],
    "deeplab": ["--architecture", "deeplabv3plus", "--image-size", "128"],
    "litemedsam": ["--architecture", "litemedsam", "--refit-epochs", "2"],
}
FOLDS = (1, 2, 3)


def run_fold(candidate: str, fold: int, args: argparse.Namespace) -> Path:
    """One 08 run: train on the other blocks, test on block `fold`; skipped when metrics.json exists."""
    out = args.runs / (candidate + ("-refined" if args.refine else "")) / f"fold-{fold}"
    if not (out / "metrics.json").is_file():
        command = [sys.executable, str(ROOT / "scripts" / "08_unet_train.py"), "--in", str(args.figshare),
                   "--out", str(out), "--masks", "truth", "--leave-out", str(fold),
                   *(["--refine", "sam"] if args.refine else []), *CANDIDATES[candidate], *args.extra]
        if args.score_on:
            command += ["--score-on", *map(str, args.score_on)]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True)
    return out


def mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean Dice and its bootstrap 95 % interval (resampling slices)."""
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    low, high = common_metrics.bootstrap_interval(np.ones(len(values), bool), values, lambda _, v: float(v.mean()))
    return float(values.mean()), low, high


def candidate_rows(candidate: str, folders: dict[int, Path]) -> list[dict[str, object]]:
    """Table rows of one candidate: each fold, all folds pooled, each tumour type, then each --score-on source
    (each fold's model scores the source; the pooled slices give one mean)."""
    tables = [pd.read_csv(f / "per_image.csv", dtype={"kind": str}).fillna({"kind": ""}).assign(fold=k)
              for k, f in folders.items()]
    per_image = pd.concat(tables, ignore_index=True)
    rows = []
    held = per_image[per_image["role"] == "input"]
    by_fold = [(f"fold {k}", held[held["fold"] == k]) for k in folders]
    by_type = [(f"type {kind}", part) for kind, part in held.groupby("kind") if kind]
    for name, part in [*by_fold, *(([("all folds", held)] + by_type) if len(folders) > 1 else [])]:
        rows.append(_row(candidate, "figshare left out", name, part))
    for source, part in per_image[per_image["role"] == "score"].groupby("source"):
        rows.append(_row(candidate, source, "every fold's model", part))
    return rows


def _row(candidate: str, source: str, what: str, part: pd.DataFrame) -> dict[str, object]:
    tumour = part[part["true_pixels"] > 0]
    free = part[part["true_pixels"] == 0]
    dice, low, high = mean_ci(tumour["dice"].to_numpy(float))
    unrefined = tumour["dice_unrefined"].mean() if "dice_unrefined" in tumour else float("nan")
    return {"candidate": candidate, "source": source, "what": what, "tumour slices": len(tumour),
            "Dice": round(dice, 3), "95 % CI": f"[{low:.3f}, {high:.3f}]",
            "Dice before --refine": round(float(unrefined), 3),
            "missed": int((tumour["pred_pixels"] == 0).sum()),
            "masks on tumour-free": f"{int((free['pred_pixels'] > 0).sum())}/{len(free)}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--figshare", type=Path, default=ROOT / "runs" / "figshare" / "02_clean",
                   help="figshare stage folder (02 or later) with true masks")
    p.add_argument("--score-on", nargs="*", type=Path, default=[], help="sources scored only (phantoms, LGG)")
    p.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    p.add_argument("--folds", nargs="+", type=int, default=list(FOLDS), choices=FOLDS,
                   help="the figshare blocks to leave out, one run each (a CPU may manage one LiteMedSAM fold)")
    p.add_argument("--refine", action="store_true", help="test with 08 --refine sam (scores both ways; slower)")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "seg_selection")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "seg_selection.json")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more 08 options for every run")
    args = p.parse_args(argv)
    args.extra = [a for a in args.extra if a != "--"]
    rows = []
    for candidate in args.candidates:
        name = candidate + (" --refine sam" if args.refine else "")
        rows += candidate_rows(name, {k: run_fold(candidate, k, args) for k in args.folds})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(args.out.read_text()) if args.out.is_file() else []  # other candidates' rows are kept
    names = {row["candidate"] for row in rows}
    args.out.write_text(json.dumps([r for r in saved if r["candidate"] not in names] + rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
