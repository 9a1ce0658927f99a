"""Compare two pipeline runs stage by stage: manifests, metrics, tables and per-image outputs.

Why: a change meant to keep behaviour (a refactor, a dependency bump) should
give the same manifests and the same metrics. Timestamps, durations and
package versions differ between any two runs and are left out; everything
else is compared exactly, except that two numbers within a relative 1e-5
(`--rtol`) count as equal: float32 sums in OpenCV's threads round the last
digit differently from run to run. Each difference is printed with its path.

    python bench/compare_runs.py BEFORE/data AFTER/data [--bundles BEFORE/bundle AFTER/bundle]

Exit status 0 when nothing but the ignored keys differ, 1 otherwise.
Writes bench/results/compare_runs.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd

IGNORED_KEY = re.compile(r"(^|_)(seconds|minutes_taken|created|date|versions|lineage)($|_)|per_second|duration")
IGNORED_COLUMN = re.compile(r"seconds|duration|created")
PIXEL_FOLDERS = ("images", "masks", "heads", "clusters", "labels", "regions", "predictions", "pseudo", "raw")
SKIPPED = {"stage.json", "lineage.json", "report.html", "bundle_check.json"}
RTOL = 1e-5


def same(a: Any, b: Any, rtol: float = RTOL) -> bool:
    """Equal, or two numbers (numbers in text included) within a relative `rtol`."""
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return False
    return not isinstance(a, bool) and not isinstance(b, bool) and math.isclose(x, y, rel_tol=rtol, abs_tol=1e-12)


def json_differences(a: Any, b: Any, path: str = "", rtol: float = RTOL) -> list[str]:
    """Every leaf where two JSON documents differ, keys matching IGNORED_KEY left out."""
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b)):
            if IGNORED_KEY.search(str(key)):
                continue
            if key not in a or key not in b:
                found.append(f"{path}.{key}: only in {'after' if key not in a else 'before'}")
            else:
                found += json_differences(a[key], b[key], f"{path}.{key}", rtol)
        return found
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items before, {len(b)} after"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in json_differences(x, y, f"{path}[{i}]", rtol)]
    return [] if same(a, b, rtol) else [f"{path}: {a!r} -> {b!r}"]


def table_differences(a: Path, b: Path, rtol: float = RTOL) -> list[str]:
    """Cells that differ between two CSV tables (same rows and columns expected)."""
    x, y = pd.read_csv(a, dtype=str, keep_default_na=False), pd.read_csv(b, dtype=str, keep_default_na=False)
    x = x[[c for c in x.columns if not IGNORED_COLUMN.search(c)]]
    y = y[[c for c in y.columns if not IGNORED_COLUMN.search(c)]]
    if list(x.columns) != list(y.columns) or len(x) != len(y):
        return [f"shape or columns differ: {x.shape} {list(x.columns)[:5]}... vs {y.shape}"]
    unequal = zip(*(x != y).to_numpy().nonzero())
    return [f"row {r} {x.columns[c]}: {x.iat[r, c]!r} -> {y.iat[r, c]!r}" for r, c in unequal
            if not same(x.iat[r, c], y.iat[r, c], rtol)]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compare_folder(before: Path, after: Path, rtol: float = RTOL) -> dict[str, Any]:
    """One stage folder: tables and JSON compared by content, per-image PNGs by bytes."""
    result: dict[str, Any] = {"compared": 0, "identical": 0, "differences": {}}
    for path in sorted(p for p in before.rglob("*") if p.is_file()):
        rel = path.relative_to(before)
        other = after / rel
        if rel.name in SKIPPED or "checkpoint" in rel.parts or "cache" in rel.parts:
            continue
        if path.suffix == ".csv":
            found = table_differences(path, other, rtol) if other.is_file() else ["missing after"]
        elif path.suffix == ".json":
            found = (json_differences(json.loads(path.read_text()), json.loads(other.read_text()), rtol=rtol)
                     if other.is_file() else ["missing after"])
        elif path.suffix == ".png" and rel.parts[0] in PIXEL_FOLDERS:
            found = [] if other.is_file() and _digest(path) == _digest(other) else ["bytes differ"]
        else:
            continue  # plots, reports, model files: they carry timings or timestamps
        result["compared"] += 1
        result["identical"] += not found
        if found:
            result["differences"][rel.as_posix()] = found
    return result


HEADLINES = {  # (folder, path in metrics.json): the numbers a user reads first
    "06 ROC AUC, each model": ("06_classify_kfold", "models.*.roc_auc"),
    "07 pseudo-label Dice": ("07_sam_label", "dice_vs_truth.all_tumour_slices_mean"),
    "08 test Dice (mean)": ("08_unet_train", "test.dice_mean"),
    "09 ensemble ROC AUC": ("09_ensemble", "ensemble.roc_auc"),
    "09 ensemble PR AUC": ("09_ensemble", "ensemble.pr_auc"),
}


def _pick(document: Any, path: str) -> Any:
    for i, key in enumerate(path.split(".")):
        if key == "*" and isinstance(document, dict):
            return {name: _pick(value, ".".join(path.split(".")[i + 1:])) for name, value in document.items()}
        document = document.get(key) if isinstance(document, dict) else None
    return document


def headlines(data: Path) -> dict[str, Any]:
    """The headline metrics of one run, None where a stage did not run."""
    found = {}
    for name, (folder, path) in HEADLINES.items():
        metrics = data / folder / "metrics.json"
        found[name] = _pick(json.loads(metrics.read_text()), path) if metrics.is_file() else None
    return found


def compare(before: Path, after: Path, rtol: float = RTOL) -> dict[str, dict[str, Any]]:
    folders = sorted(p.name for p in before.iterdir() if p.is_dir())
    return {name: compare_folder(before / name, after / name, rtol) for name in folders}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", type=Path, help="data folder of the first run (holds 01_download, 02_clean, ...)")
    p.add_argument("after", type=Path, help="data folder of the second run")
    p.add_argument("--bundles", type=Path, nargs=2, metavar=("BEFORE", "AFTER"), help="also compare two bundles")
    p.add_argument("--rtol", type=float, default=RTOL, help="relative tolerance for numbers (0: exact)")
    p.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "compare_runs.json")
    args = p.parse_args(argv)
    results = compare(args.before, args.after, args.rtol)
    if args.bundles:
        results["bundle"] = compare_folder(*args.bundles, args.rtol)
    print(f"{'folder':<20} {'compared':>9} {'identical':>10}  first difference")
    for name, r in results.items():
        first = next(iter(r["differences"].items()), ("", [""]))
        print(f"{name:<20} {r['compared']:>9} {r['identical']:>10}  {first[0]} {first[1][0]}"[:160])
    heads = {"before": headlines(args.before), "after": headlines(args.after)}
    print(f"\n{'headline metric':<26} {'before':>28} {'after':>28}  exactly equal")
    for name in HEADLINES:
        a, b = heads["before"][name], heads["after"][name]
        print(f"{name:<26} {json.dumps(a)[:28]:>28} {json.dumps(b)[:28]:>28}  {a == b}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"folders": results, "headlines": heads}, indent=1))
    return 0 if all(not r["differences"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
