"""Benchmark: how often lib.deploy.ood accepts real brain MRI slices, and how often pictures that are not.

Targets (issue 32): at least 99 % of real MRI slices accepted (navoneel,
figshare, scanner files; lgg and phantoms shown too), at most 5 % of non-MRI
pictures accepted (scikit-image photos, pictures shipped in packages, drawn
screenshots and gradients; colour ones also converted to grey). The images
come from bench/ood_corpus.py; MRI slices of its `tune` part choose the
limits and centres (`--choose` writes lib/deploy/ood_reference.json), the
`held` part and every non-MRI picture are only scored. Every image is
embedded at both encoder sizes the check uses (256 px, and the 128 px quick
pass); the shipped column is lib.deploy.ood.judge, and the table also counts
how many held-out MRI slices the quick pass could not settle. Prints a table
with Wilson 95 % intervals, the non-MRI pictures accepted and the MRI slices
refused, and writes bench/results/ood.json.

    python bench/bench_ood.py [--choose] [--shared ../shared/data] [--cache runs/bench_ood]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import ood_corpus  # noqa: E402

from lib.common.io import write_json_atomic  # noqa: E402
from lib.deploy import ood  # noqa: E402
from lib.preprocess import clean  # noqa: E402

MRI_TARGET, NOT_MRI_TARGET = 0.99, 0.05


def measure_all(shared: Path, cache: Path) -> list[dict]:
    """Traits and LiteMedSAM pooled embeddings (`pooled` at FULL_SIZE, `quick` at SHORTCUT_SIZE) of every
    corpus image, and for tuning slices those of their low-resolution views too; cached by part/source/name,
    one file per encoder size."""
    rows = _measure_at(shared, cache / f"cache-{ood.FULL_SIZE}px.npz", ood.FULL_SIZE)
    quick = _measure_at(shared, cache / f"cache-{ood.SHORTCUT_SIZE}px.npz", ood.SHORTCUT_SIZE, low=False)
    return [{**row, "quick": fast["pooled"]} for row, fast in zip(rows, quick)]


def _measure_at(shared: Path, cache: Path, size: int, low: bool = True) -> list[dict]:
    known = np.load(cache, allow_pickle=True)["rows"].item() if cache.is_file() else {}
    rows = []
    images = list(ood_corpus.all_images(shared))
    for part, source, name, pixels in tqdm(images, desc=f"ood corpus at {size} px", unit="image", mininterval=10):
        key = f"{part}|{source}|{name}"
        if key not in known:
            known[key] = {"part": part, "source": source, "name": name, **measure(pixels, size)}
            if part == "tune" and low:
                known[key]["low_pooled"] = np.stack([measure(view, size)["pooled"]
                                                     for view in ood.low_resolution_views(pixels)])
        rows.append(known[key])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, rows=np.array(known, dtype=object))
    return rows


def measure(pixels: np.ndarray, size: int) -> dict:
    """What the check reads of one image, as the Predictor computes it (the encoder at `size` px)."""
    cleaned = clean.clean_image(pixels)
    return {"traits": ood.traits(pixels, cleaned), "pooled": ood.embed([cleaned.image], size)[0]}


def choose(rows: list[dict]) -> ood.Reference:
    tune = [r for r in rows if r["part"] == "tune"]
    counts = {s: sum(r["source"] == s for r in tune) for s in sorted({r["source"] for r in tune})}
    provenance = {"command": "python bench/bench_ood.py --choose", "date": datetime.date.today().isoformat(),
                  "tuning_slices": counts, "rule_margin": ood.RULE_MARGIN,
                  "embedding_margin": ood.EMBEDDING_MARGIN, "embedding_quantile": ood.EMBEDDING_QUANTILE,
                  "low_side": ood.LOW_SIDE, "low_sides": list(ood.LOW_SIDES), "full_size": ood.FULL_SIZE,
                  "shortcut_size": ood.SHORTCUT_SIZE, "shortcut_quantile": ood.SHORTCUT_QUANTILE}
    return ood.Reference.build([r["traits"] for r in tune], np.stack([r["pooled"] for r in tune]),
                               np.concatenate([r["low_pooled"] for r in tune]), provenance,
                               np.stack([r["quick"] for r in tune]))


def wilson(k: int, n: int) -> list[float]:
    from scipy.stats import binomtest

    if n == 0:
        return [float("nan")] * 2
    ci = binomtest(k, n).proportion_ci(method="wilson")
    return [float(ci.low), float(ci.high)]


def score(rows: list[dict], reference: ood.Reference) -> dict:
    """Acceptance per (part, source) for traits only, embedding only and both (the shipped check)."""
    table, accepted_not_mri, refused_mri = {}, [], []
    for row in rows:
        rules = ood.trait_reasons(row["traits"], reference.limits)
        full_size = ood.reasons(row["traits"], row["pooled"], reference)
        asked: list[int] = []

        def embed_at(size: int, row: dict = row, asked: list[int] = asked) -> np.ndarray:
            asked.append(size)
            return row["quick"] if size == ood.SHORTCUT_SIZE else row["pooled"]

        both = ood.judge(row["traits"], embed_at, reference)
        row["verdict"] = {"rules": not rules, "embedding": len(full_size) == len(rules), "full": not both,
                          "full_size_pass": ood.FULL_SIZE in asked}
        if row["part"] == "not_mri" and not both:
            accepted_not_mri.append(f"{row['source']}: {row['name']}")
        if row["part"] == "held" and both:
            refused_mri.append(f"{row['source']}: {row['name']}: {'; '.join(both)}")
    groups = sorted({(r["part"], r["source"]) for r in rows}) + [("held", "ALL MRI"), ("not_mri", "ALL NOT MRI")]
    for part, source in groups:
        members = [r for r in rows if r["part"] == part and (source.startswith("ALL") or r["source"] == source)]
        if source == "ALL MRI":
            members = [r for r in members if r["source"] in ("navoneel", "figshare", "scanner")]
        entry = {"n": len(members), "full_size_pass": sum(r["verdict"]["full_size_pass"] for r in members)}
        for how in ("rules", "embedding", "full"):
            k = sum(r["verdict"][how] for r in members)
            entry[how] = {"accepted": k, "share": k / max(1, len(members)), "interval": wilson(k, len(members))}
        table[f"{part}/{source}"] = entry
    return {"table": table, "accepted_not_mri": accepted_not_mri, "refused_mri": refused_mri}


def print_table(result: dict) -> None:
    print(f"{'part/source':28s} {'n':>5s}  {'traits only':>22s}  {'embedding only':>22s}  {'both (shipped)':>22s}"
          f"  {'256 px pass':>11s}")
    for key, entry in result["table"].items():
        cells = [f"{100 * e['share']:5.1f} % [{100 * e['interval'][0]:4.1f}, {100 * e['interval'][1]:5.1f}]"
                 for e in (entry["rules"], entry["embedding"], entry["full"])]
        print(f"{key:28s} {entry['n']:5d}  " + "  ".join(f"{c:>22s}" for c in cells)
              + f"  {entry['full_size_pass']:>11d}")
    print("embedding only: the full-size (256 px) embedding; both: the shipped check (traits, then the 128 px "
          "quick pass, then 256 px where it is unsure); 256 px pass: images the quick pass left to full size")
    print("\nnot-MRI pictures accepted:", *result["accepted_not_mri"] or ["none"], sep="\n  ")
    print("\nheld-out MRI slices refused:", *result["refused_mri"] or ["none"], sep="\n  ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "bench_ood",
                        help="folder of the measured images (one file per encoder size)")
    parser.add_argument("--choose", action="store_true", help="choose the limits and centres; write the reference")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ood.json")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = measure_all(args.shared, args.cache)
    if args.choose:
        reference = choose(rows)
        write_json_atomic(ood.REFERENCE_FILE, reference.to_json())
        print(f"wrote {ood.REFERENCE_FILE.relative_to(ROOT)}: limits {reference.limits}, embedding limits "
              f"{reference.embedding_limit:.3f} (low resolution {reference.low_limit:.3f}), quick pass sure "
              f"within {reference.shortcut.sure:.3f}")
    else:
        reference = ood.shipped()
    result = score(rows, reference)
    print_table(result)
    targets = {"mri_accepted": result["table"]["held/ALL MRI"]["full"]["share"] >= MRI_TARGET,
               "not_mri_accepted": result["table"]["not_mri/ALL NOT MRI"]["full"]["share"] <= NOT_MRI_TARGET}
    print(f"\ntargets met: {targets}  ({time.perf_counter() - start:.0f} s)")
    write_json_atomic(args.out, {"date": datetime.date.today().isoformat(), "reference": reference.provenance,
                                 "limits": reference.limits, "embedding_limit": reference.embedding_limit,
                                 "low_limit": reference.low_limit,
                                 "targets": targets, **result})


if __name__ == "__main__":
    main()
