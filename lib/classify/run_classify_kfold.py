"""Stage 06: grouped k-fold tumour classification for every requested model, compared on identical folds.

Per model: models/<name>/oof.csv, metrics.json (intervals, operating point,
calibration), fold models under models/<name>/repeat*_fold*/, and plots (ROC
and PR, confusion matrix, calibration, training curves). Across models:
comparison.md and report.html, sorted by ROC AUC, the metadata shortcut
baseline included. With --external, each model's fold models also predict
another labelled folder (e.g. figshare, all tumours) and its sensitivity there
is reported: a model that learned one data set's quirks misses them.
With --synthetic, each model also trains with generated slices (stage 05) added
to each fold's training part, reported as "<model>+ddim", and the ROC AUC
difference is given with a paired bootstrap interval (lib.classify.synthetic
says which generator may serve which fold).
A model whose metrics.json matches the current settings is not retrained.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lib.classify import kfold, synthetic
from lib.common import manifest, metrics, plots, report, splits
from lib.common.dedup import sha256_file
from lib.common.io import as_json, read_image, write_json_atomic, write_text_atomic
from lib.common.metrics import interval_text, number_text, rounded
from lib.common.stage import check_in_dir, write_lineage
from lib.regions import slice_features

COMPARISON_KEYS = ("roc_auc", "pr_auc")
OPERATING_KEYS = ("sensitivity", "specificity", "precision", "f1")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Stage 06 from parsed arguments (see scripts/06_classify_kfold.py)."""
    out: Path = args.out
    models = _parse_models(args.models)
    df = check_in_dir(args.in_dir, out)
    out.mkdir(parents=True, exist_ok=True)
    _check_weights(models, args.weights)
    rows = df[(df["status"] == "ok") & df["label"].isin(["tumor", "no_tumor"])].reset_index(drop=True)
    try:
        folds = splits.load_or_make(out / "splits.json", rows, args.folds, args.repeats, args.seed)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    external = [_external_rows(folder, getattr(args, "external_limit", None)) for folder in args.external]
    chosen = plan_generators(getattr(args, "synthetic", None) or [], rows, folds)
    results = {}
    for family in models:
        results[family] = train_family(family, rows, args, folds, out, external)
        if chosen and family not in kfold.SHORTCUTS:  # the same family again, generated slices added
            results[family + synthetic.SUFFIX] = train_family(family, rows, args, folds, out, external, chosen)
    selection = external_verdict(results)
    table = comparison(results)
    effect = synthetic_effect(results, out, args.synthetic_ratio, chosen) if chosen else None
    write_text_atomic(out / "comparison.md", report.markdown_table(table))
    summary = {"models": results, "input": os.path.relpath(args.in_dir, out), "folds": args.folds,
               "repeats": args.repeats, "images": args.images,
               "target_sensitivity": args.target_sensitivity, "selection": selection, "synthetic": effect}
    write_json_atomic(out / "metrics.json", summary)
    write_lineage(out, "06_classify_kfold", args,
                  {"in": args.in_dir, **{f"external_{i + 1}": f for i, f in enumerate(args.external)}})
    write_report(out, table, results, selection, effect)
    print(report.markdown_table(table))
    for line in selection["verdicts"] + (effect_lines(effect) if effect else []):
        print(f"  {line}")
    print(f"  report: {out / 'report.html'}")
    return summary


def _parse_models(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in kfold.FAMILIES]
    if unknown or not names:
        raise SystemExit(f"error: unknown model {unknown[0] if unknown else '(none)'!r}; "
                         f"choose from {', '.join(kfold.FAMILIES)}")
    return names


def _check_weights(models: list[str], weights: str) -> None:
    """Fail before any training when a backbone's weights cannot be had."""
    backbones_wanted = [m for m in models if m in kfold.IMAGE_FAMILIES and m != "cnn"]
    if not backbones_wanted:
        return
    from lib.classify import backbones

    for name in backbones_wanted:
        try:
            backbones.check_weights(name, weights)
        except backbones.WeightsUnavailable as err:
            raise SystemExit(f"error: {err}") from None


# --- inputs per family ---------------------------------------------------------


def _image_column(rows: pd.DataFrame, images: str) -> str:
    if images == "clean" and "clean_image_path" in rows.columns:
        return "clean_image_path"
    if images == "enhanced" and "clean_image_path" not in rows.columns:
        raise SystemExit("error: --images enhanced needs a folder from 03_enhance or later (no enhanced images here)")
    return "image_path"


def family_matrix(family: str, rows: pd.DataFrame, folder: Path, args: argparse.Namespace, out: Path) -> np.ndarray:
    """The x a family trains on, one entry per row: images, features, embeddings or metadata."""
    if family in kfold.IMAGE_FAMILIES:
        column = _image_column(rows, args.images)
        return np.stack([read_image(folder / p).pixels for p in rows[column]])
    if family == "fusion":
        return np.hstack([family_matrix("features", rows, folder, args, out),
                          family_matrix("medsam_embed", rows, folder, args, out)])
    if family == "features":
        table = features_table(folder)
        missing = set(rows["id"]) - set(table.index)
        if missing:
            raise SystemExit(f"error: {folder}/features.csv lacks {len(missing)} images "
                             f"(e.g. {sorted(missing)[0]}); rerun 04_cluster")
        return table.loc[rows["id"]].to_numpy(float)
    if family == "medsam_embed":
        column = _image_column(rows, args.images)
        paths = [str(folder / p) for p in rows[column]]
        return _medsam_embeddings(list(rows["id"]), paths, out / "cache" / "medsam_embeddings.npz")
    from lib.classify import tabular

    return tabular.metadata_matrix(rows)


def features_table(folder: Path) -> pd.DataFrame:
    """04_cluster's handcrafted features, indexed by id, label column dropped."""
    path = folder / "features.csv"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found; the features model needs --in pointing at 04_cluster's folder")
    return pd.read_csv(path).set_index("id").drop(columns=["label"], errors="ignore")


def _medsam_embeddings(ids: list[str], paths: list[str], cache_path: Path) -> np.ndarray:
    """Pooled LiteMedSAM embeddings of the images at `paths`, through the on-disk cache."""
    from lib.common import medsam

    images = [read_image(p).pixels for p in paths]
    hashes = [sha256_file(Path(p)) for p in paths]
    return medsam.EmbeddingCache(cache_path).get_or_compute(ids, images, hashes)


def external_name(folder: Path) -> str:
    """What an external folder is called in tables: its data set's name ("figshare" for runs/figshare/04_cluster)."""
    folder = Path(folder).resolve()
    return folder.parent.name if re.match(r"^\d\d(_|$)", folder.name) else folder.name


def _external_rows(folder: Path, limit: int | None = None) -> tuple[pd.DataFrame, Path]:
    """The labelled rows of another stage folder; `limit` keeps an evenly spaced sample (a quicker check)."""
    if not (Path(folder) / manifest.MANIFEST).is_file():
        raise SystemExit(f"error: --external {folder}: no manifest.csv; give a stage folder made by 04_cluster "
                         "(run 01-04 on that data set first)")
    df = manifest.read(folder)
    rows = df[(df["status"] == "ok") & df["label"].isin(["tumor", "no_tumor"])].reset_index(drop=True)
    if limit and limit < len(rows):
        rows = rows.iloc[np.linspace(0, len(rows) - 1, limit).round().astype(int)].reset_index(drop=True)
    return rows, folder


def train_family(family: str, rows: pd.DataFrame, args: argparse.Namespace, folds: dict[str, Any], out: Path,
                 external: list[tuple[pd.DataFrame, Path]],
                 chosen: dict[tuple[int, int], synthetic.Generator] | None = None) -> dict[str, Any]:
    """Cross-validate one family (or reuse its finished run); write its outputs; return its metrics.

    With `chosen` (06 --synthetic) each fold's training part also gets generated slices from its generator;
    the run is reported as "<family>+ddim" next to the family's own."""
    name = family + synthetic.SUFFIX if chosen else family
    model_dir = out / "models" / name
    settings = {"rebalance": args.rebalance, "weights": args.weights, "backbone": family,
                "epochs": args.epochs, "image_size": args.image_size,
                "finetune_epochs": getattr(args, "finetune_epochs", None)}
    settings = {k: v for k, v in settings.items() if v is not None}
    signature = {"folds": folds, "settings": settings, "images": args.images,
                 "external": [str(f) for f in args.external] if args.external else "",
                 "external_limit": getattr(args, "external_limit", None),
                 "target": args.target_sensitivity}
    if chosen:
        signature["synthetic"] = {"ratio": args.synthetic_ratio, "generators": synthetic.describe(chosen)}
    done = model_dir / "metrics.json"
    if done.is_file() and not args.force:
        saved = json.loads(done.read_text())
        if saved.get("signature") == as_json(signature, default=str) and has_fold_models(model_dir):
            print(f"{name}: finished earlier with the same folds and settings; reusing {done}")
            return saved["metrics"]
    start = time.perf_counter()
    data = kfold.Inputs(
        ids=list(rows["id"]), x=family_matrix(family, rows, args.in_dir, args, out),
        y=(rows["label"] == "tumor").to_numpy(int), groups=rows.get("dup_group", rows["id"]).to_numpy(),
        extra_x=np.vstack([family_matrix(family, ext, folder, args, out) for ext, folder in external])
        if external else None,
        synthetic=GeneratedSlices(family, chosen, args, out, _slice_shape(rows, args)) if chosen else None,
    )
    if family == "fusion":  # its matrix is [features | embeddings]: tell the heads where the cut is
        settings = {**settings, "feature_columns": len(features_table(args.in_dir).columns)}
    cv = kfold.cross_validate(family, data, folds, settings, model_dir, args.target_sensitivity)
    result = kfold.evaluate(cv.oof)
    result["seconds"] = round(time.perf_counter() - start, 1)
    if cv.extra_prob is not None:
        result["external"] = external_scores(external, cv.extra_prob, cv.extra_threshold)
    cv.oof.to_csv(model_dir / "oof.csv", index=False)
    if data.synthetic is not None:
        result["generated_slices_added"] = data.synthetic.added
    result["plots"] = _family_plots(name, cv, result, model_dir, out)
    write_json_atomic(done, {"signature": signature, "metrics": result, "histories": cv.histories})
    op = result["operating"]
    print(f"{name}: ROC AUC {number_text(result['roc_auc'])} {interval_text(result['roc_auc_ci'])}, "
          f"sensitivity {number_text(op['sensitivity'])}, specificity {number_text(op['specificity'])}"
          f" ({result['seconds']:.0f} s)")
    return result


# --- generated training slices (--synthetic) ------------------------------------------


def plan_generators(folders: list[Path], rows: pd.DataFrame,
                    folds: dict[str, Any]) -> dict[tuple[int, int], synthetic.Generator] | None:
    """Each fold's generator (lib.classify.synthetic.plan), checked before anything trains; None without any."""
    if not folders:
        return None
    generators = [synthetic.Generator.load(f) for f in folders]
    ids, y = list(rows["id"]), (rows["label"] == "tumor").to_numpy(int)
    groups = rows.get("dup_group", rows["id"]).to_numpy()
    parts = {(r, k): splits.fold_parts(folds, ids, y, groups, r, k)
             for r in range(len(folds["assignments"])) for k in range(folds["folds"])}
    chosen = synthetic.plan(generators, rows, parts)
    for fold, text in synthetic.describe(chosen).items():
        print(f"generated slices for repeat/fold {fold}: {text}")
    return chosen


def _slice_shape(rows: pd.DataFrame, args: argparse.Namespace) -> tuple[int, int]:
    """The real slices' (height, width): generated ones are resized to it."""
    first = read_image(args.in_dir / rows[_image_column(rows, args.images)].iloc[0]).pixels
    return first.shape[:2]


class GeneratedSlices:
    """kfold.Inputs.synthetic for one family: per fold, --synthetic-ratio x the inner training size of that
    fold's generator's slices, in the family's input form; `added` counts them per fold and class."""

    def __init__(self, family: str, chosen: dict[tuple[int, int], synthetic.Generator],
                 args: argparse.Namespace, out: Path, shape: tuple[int, int]) -> None:
        self.family, self.chosen, self.args, self.out, self.shape = family, chosen, args, out, shape
        self.added: dict[str, dict[str, int]] = {}

    def __call__(self, repeat: int, k: int, inner_size: int) -> tuple[np.ndarray, np.ndarray]:
        generator = self.chosen[(repeat, k)]
        drawn = synthetic.draw(generator, round(self.args.synthetic_ratio * inner_size),
                               seed=self.args.seed + 100 * repeat + k)
        x, kept = generated_matrix(self.family, generator, drawn, self.args, self.out, self.shape)
        y = (kept["label"] == "tumor").to_numpy(int)
        self.added[f"{repeat}/{k}"] = {"tumor": int(y.sum()), "no_tumor": int(len(y) - y.sum())}
        return x, y


def generated_matrix(family: str, generator: synthetic.Generator, drawn: pd.DataFrame, args: argparse.Namespace,
                     out: Path, shape: tuple[int, int]) -> tuple[np.ndarray, pd.DataFrame]:
    """What `family` trains on for the drawn generated slices, and the rows kept (a slice in which 02's head
    finder finds no head has no features: it is left out, and said so)."""
    images = synthetic.pixels(generator, drawn, shape)
    if family in kfold.IMAGE_FAMILIES:
        return np.stack(images), drawn
    parts, keep = [], np.ones(len(drawn), bool)
    if family in ("features", "fusion"):
        recipe = slice_features.FeatureRecipe.of(args.in_dir)
        vectors = []
        for i, grey in enumerate(images):
            try:
                vectors.append(slice_features.vector(grey, recipe))
            except ValueError as err:
                keep[i] = False
                print(f"warning: {generator.folder}/samples {drawn['id'].iloc[i]}: {err}; left out")
        parts.append(np.array(vectors).reshape(len(vectors), len(recipe.columns)))
    if family in ("medsam_embed", "fusion"):
        from lib.common import medsam

        kept_images = [im for im, ok in zip(images, keep) if ok]
        cache = medsam.EmbeddingCache(out / "cache" / "medsam_embeddings.npz")
        parts.append(cache.get_or_compute(list(drawn["id"][keep]), kept_images))
    if not parts:
        raise SystemExit(f"error: --synthetic cannot feed the {family} model (it reads file properties)")
    return np.hstack(parts), drawn[keep].reset_index(drop=True)


def synthetic_effect(results: dict[str, dict[str, Any]], out: Path, ratio: float,
                     chosen: dict[tuple[int, int], synthetic.Generator]) -> dict[str, Any]:
    """Per family: out-of-fold ROC AUC with generated slices minus without, with a paired bootstrap interval.

    Why paired: both runs predict the same test slices from the same folds, so the interval is of the
    difference itself, and a small gain is not mistaken for noise (or noise for a gain)."""
    effects = {}
    for name in results:
        if not name.endswith(synthetic.SUFFIX):
            continue
        family = name[:-len(synthetic.SUFFIX)]
        with_, without = (pd.read_csv(out / "models" / n / "oof.csv").query("repeat == 0").set_index("id")
                          for n in (name, family))
        without = without.loc[with_.index]
        found = metrics.auc_difference(with_["label"].to_numpy(bool), with_["prob"].to_numpy(float),
                                       without["prob"].to_numpy(float))
        effects[family] = {"with": results[name]["roc_auc"], "without": results[family]["roc_auc"], **found,
                           "added": results[name].get("generated_slices_added")}
    return {"ratio": ratio, "generators": synthetic.describe(chosen), "effects": effects}


def effect_lines(effect: dict[str, Any]) -> list[str]:
    """One sentence per family: the ROC AUC difference the generated slices made."""
    return [f"{family} with generated slices: ROC AUC {number_text(e['with'])} against {number_text(e['without'])} "
            f"without, difference {e['difference']:+.3f} {interval_text(e['ci'])} (paired bootstrap)"
            for family, e in effect["effects"].items()]


def external_scores(external: list[tuple[pd.DataFrame, Path]], prob: np.ndarray,
                    threshold: float) -> dict[str, dict[str, Any]]:
    """Per external folder: the fold models' mean probability scored at their threshold (lib.common.metrics.summary:
    ROC and PR AUC where both classes are present, the operating point with 95 % intervals).

    Why per folder: an all-tumour set (figshare) says only how many tumours are found, a two-class one
    (phantoms) also how many tumour-free slices are spared, and they fail in different ways."""
    scores, start = {}, 0
    for rows, folder in external:
        y = (rows["label"] == "tumor").to_numpy(bool)
        part = prob[start:start + len(y)]
        start += len(y)
        found = metrics.summary(y, part, threshold)
        op = found["operating"]
        scores[external_name(folder)] = {"folder": str(folder), "images": int(len(y)), "tumours": int(y.sum()),
                                         "roc_auc": found["roc_auc"], "roc_auc_ci": found["roc_auc_ci"],
                                         "sensitivity": op["sensitivity"] if y.any() else None,
                                         "sensitivity_ci": op.get("sensitivity_ci"),
                                         "specificity": op["specificity"] if (~y).any() else None,
                                         "specificity_ci": op.get("specificity_ci"), "threshold": threshold}
    return scores


def external_verdict(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Which model wins inside (out-of-fold ROC AUC) and which on each external set (ROC AUC where it has both
    classes, else sensitivity); a model that wins inside but not outside is said to, in words.

    Why: a number inside one data set is not the product's number; what ships should hold elsewhere.
    The shortcut baseline (kfold.SHORTCUTS) is left out: it finds every tumour of an all-tumour set by
    calling every slice of that format a tumour, which is no model to ship."""
    results = {name: r for name, r in results.items() if name not in kfold.SHORTCUTS}
    ranked = {name: r["roc_auc"] for name, r in results.items() if _finite(r["roc_auc"])}
    inside = max(ranked, key=ranked.get) if ranked else None
    outside, verdicts = {}, []
    sources = sorted({src for r in results.values() for src in (r.get("external") or {})})
    for src in sources:
        scored = {name: r["external"][src] for name, r in results.items() if src in (r.get("external") or {})}
        key = "roc_auc" if all(_finite(s["roc_auc"]) for s in scored.values()) else "sensitivity"
        best = max(scored, key=lambda name: scored[name][key] if scored[name][key] is not None else -1)
        outside[src] = {"best": best, "by": key, "values": {n: s[key] for n, s in scored.items()}}
        if inside and best != inside and scored[best][key] > scored[inside][key]:
            verdicts.append(f"{inside} wins inside (ROC AUC {number_text(ranked[inside])}) but loses on {src}: "
                            f"{key} {number_text(scored[inside][key])} against {number_text(scored[best][key])} "
                            f"for {best}" + _overlap(scored[inside].get(f"{key}_ci"), scored[best].get(f"{key}_ci")))
        elif inside:
            verdicts.append(f"{inside} wins inside and on {src} ({key} {number_text(scored[inside][key])})")
    return {"inside": inside, "outside": outside, "verdicts": verdicts}


def _overlap(first: Any, second: Any) -> str:
    """"; the 95 % intervals overlap" where two scores' intervals do: a difference chance may explain."""
    if not first or not second or not all(_finite(v) for v in (*first, *second)):
        return ""
    return "; the 95 % intervals overlap" if first[0] <= second[1] and second[0] <= first[1] else ""


def _finite(value: float | None) -> bool:
    """A metric that exists: not NaN in memory, not null as read back from metrics.json."""
    return value is not None and value == value


def has_fold_models(model_dir: Path) -> bool:
    """Whether every fold folder holds a saved model (runs before tabular models were saved lack them)."""
    folds = list(model_dir.glob("repeat*_fold*"))
    return bool(folds) and all(any(f.rglob("model.*")) for f in folds)


def _family_plots(family: str, cv: kfold.CrossValidation, result: dict[str, Any], model_dir: Path,
                  out: Path) -> list[str]:
    first = cv.oof[cv.oof["repeat"] == 0]
    y, prob = first["label"].to_numpy(int), first["prob"].to_numpy(float)
    paths = [
        plots.roc_pr(y, prob, result["operating"], model_dir / "roc_pr.png", f"{family}: out-of-fold"),
        plots.confusion(result["operating"]["confusion"], model_dir / "confusion.png", f"{family} at the threshold"),
        plots.calibration(y, prob, model_dir / "calibration.png", f"{family}: calibration"),
        plots.training_curves(cv.histories, model_dir / "training.png", f"{family}: training curves"),
    ]
    return [str(p.relative_to(out)) for p in paths if p is not None]


# --- comparison -------------------------------------------------------------------


def comparison(results: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per model, sorted by ROC AUC, with intervals and the operating point."""
    rows = []
    for name, r in results.items():
        op = r["operating"]
        row = {"model": name, "roc_auc": rounded(r["roc_auc"]), "roc_auc_95ci": interval_text(r["roc_auc_ci"]),
               "pr_auc": rounded(r["pr_auc"])}
        row.update({k: rounded(op[k]) for k in OPERATING_KEYS})
        row.update(threshold=rounded(op["threshold"]), accuracy_at_0_5=rounded(r["at_0.5"]["accuracy"]),
                   brier=rounded(r["brier"]), ece=rounded(r["ece"]), seconds=r.get("seconds", ""))
        for src, ext in (r.get("external") or {}).items():
            if ext["tumours"] and ext["tumours"] < ext["images"]:
                row[f"{src}_roc_auc"] = rounded(ext["roc_auc"])
            row[f"{src}_sensitivity"] = rounded(ext["sensitivity"])
            if ext["specificity"] is not None:
                row[f"{src}_specificity"] = rounded(ext["specificity"])
        rows.append(row)
    return pd.DataFrame(rows).sort_values("roc_auc", ascending=False)


def write_report(out: Path, table: pd.DataFrame, results: dict[str, dict[str, Any]],
                 selection: dict[str, Any] | None = None, effect: dict[str, Any] | None = None) -> Path:
    sections = [("Models compared on identical grouped folds (sorted by ROC AUC; metadata = shortcut baseline; "
                 "<name>_... columns: the fold models on an external set)",
                 report.table_html(table.to_dict("records")))]
    if selection and selection["verdicts"]:
        sections.append(("Inside against outside", "".join(f"<p>{v}</p>" for v in selection["verdicts"])))
    if effect:
        generators = report.dict_table_html({f"repeat/fold {k}": v for k, v in effect["generators"].items()})
        sections.append((f"Generated training slices (05; {effect['ratio']:g} per real training slice)",
                         "".join(f"<p>{line}</p>" for line in effect_lines(effect)) + generators))
    for name in table["model"]:
        images = "".join(report.img_html(out, out / p) for p in results[name]["plots"])
        sections.append((name, images))
    return report.html_page(out / "report.html", "06_classify_kfold: tumour / no tumour", sections)
