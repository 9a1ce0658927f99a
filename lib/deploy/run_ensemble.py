"""Stage 09: ensemble 06's model families, calibrate, choose the operating point, export the bundle.

Reads 06's out-of-fold predictions and fold models (and 08's segmentation
model); writes oof.csv (nested, honest ensemble predictions), metrics.json,
comparison.md, plots, report.html, and with --bundle the self-contained
bundle that scripts/predict.py and the demo load (lib.deploy.bundle).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lib.common import metrics, plots, report
from lib.common.io import write_json_atomic, write_text_atomic
from lib.common.stage import write_lineage
from lib.deploy import bundle, ensemble, segmenter_choice


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Stage 09 from parsed arguments (see scripts/09_ensemble.py)."""
    out: Path = args.out
    names = [n.strip() for n in args.members.split(",") if n.strip()] if args.members else None
    try:
        members = ensemble.load_members(args.in_dir, names)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}") from None
    out.mkdir(parents=True, exist_ok=True)
    print(f"ensemble of {', '.join(members.names)} on {len(members.ids)} slices (OOF of {args.in_dir})")
    oof = ensemble.nested_oof(members, args.target_sensitivity).set_index("id").loc[members.ids].reset_index()
    oof.to_csv(out / "oof.csv", index=False)
    result = evaluate(members, oof, args.in_dir)
    final = ensemble.fit(members.prob, members.y, members.fold, members.names, args.target_sensitivity)
    result["deployed"] = final.to_json()
    result["plots"] = _plots(members, oof, result["ensemble"]["operating"], out)
    candidates = [args.unet] if isinstance(args.unet, (str, Path)) else list(args.unet or [])
    args.unet = candidates or None
    if candidates:
        result.update(choose_segmenter(args, oof, out))
    write_json_atomic(out / "metrics.json", result)
    lineage = write_lineage(out, "09_ensemble", args, {"in": args.in_dir, "unet": args.unet},
                            unet_candidates=[str(path) for path in candidates])
    table = comparison(result)
    write_text_atomic(out / "comparison.md", report.markdown_table(table))
    write_report(out, table, result)
    print(report.markdown_table(table))
    if args.bundle:
        path = export_bundle(args, final, result, lineage)
        print(f"  bundle: {path} (model card: {path / 'README.md'})")
    print(f"  report: {out / 'report.html'}")
    return result


def choose_segmenter(args: argparse.Namespace, oof: pd.DataFrame, out: Path) -> dict[str, Any]:
    """Pick the shipped segmenter among args.unet (sets args.unet to it) and measure its classifier-gated masks."""
    chosen, table = segmenter_choice.choose(args.unet)
    if len(args.unet) > 1:
        table.to_csv(out / "segmenter_choice.csv", index=False)
        print(f"segmenter: {chosen} ({table['ranked_by'].iloc[0]})")
        print(report.markdown_table(table.round(3)))
    args.unet = chosen
    found = {"segmenter_choice": table.to_dict("records"), "masks_when": getattr(args, "masks_when", "tumour"),
             "segmenter_gated": segmenter_choice.gated(chosen, oof)}
    gate = found["segmenter_gated"]
    if gate:
        print(f"masks on tumour-free test slices: {gate['masks_drawn']}/{gate['tumour_free_images']} drawn by the "
              f"segmenter, {gate['masks_shown']} shown once the classifier (out of fold) gates them")
    return found


def evaluate(members: ensemble.Members, oof: pd.DataFrame, classify_dir: Path) -> dict[str, Any]:
    """Nested ensemble metrics, each member's 06 metrics, and the paired AUC difference to the best member."""
    y = oof["label"].to_numpy(int)
    summary = metrics.summary(y, oof["prob"].to_numpy(float), oof["threshold"].to_numpy(float))
    saved = json.loads((Path(classify_dir) / "metrics.json").read_text())["models"]
    singles = {name: saved[name] for name in saved}
    best = max(members.names, key=lambda n: singles[n]["roc_auc"])
    column = members.names.index(best)
    return {
        "members": members.names, "images": len(y), "tumours": int(y.sum()),
        "folds": int(len(np.unique(members.fold))), "ensemble": summary,
        "chosen_per_fold": oof.groupby("fold")[["combiner", "calibrator"]].first().to_dict("index"),
        "singles": singles, "best_single": {"name": best, "metrics": singles[best]},
        "auc_difference": metrics.auc_difference(y, oof["prob"].to_numpy(float), members.prob[:, column]),
    }


def comparison(result: dict[str, Any]) -> pd.DataFrame:
    """Ensemble and every 06 model, sorted by ROC AUC, with intervals and the operating point."""
    rows = [_row("ensemble", result["ensemble"])]
    rows += [_row(name + ("" if name in result["members"] else " (not a member)"), m)
             for name, m in result["singles"].items()]
    return pd.DataFrame(rows).sort_values("roc_auc", ascending=False).round(3)


def _row(name: str, m: dict[str, Any]) -> dict[str, Any]:
    op = m["operating"]
    return {"model": name, "roc_auc": m["roc_auc"], "roc_auc_ci": metrics.interval_text(m["roc_auc_ci"]),
            "pr_auc": m["pr_auc"], "sensitivity": op["sensitivity"], "specificity": op["specificity"],
            "precision": op["precision"], "f1": op["f1"], "ece": m["ece"]}


def _plots(members: ensemble.Members, oof: pd.DataFrame, operating: dict[str, Any], out: Path) -> list[str]:
    """ROC/PR and confusion at the nested operating point; calibration before (plain mean) and after."""
    y, prob = oof["label"].to_numpy(int), oof["prob"].to_numpy(float)
    paths = [plots.roc_pr(y, prob, operating, out / "roc_pr.png", "Ensemble (nested OOF)"),
             plots.calibration(members.y, members.prob.mean(axis=1), out / "calibration_raw.png",
                               "Mean of members, uncalibrated"),
             plots.calibration(y, prob, out / "calibration.png", "Ensemble, calibrated"),
             plots.confusion(operating["confusion"], out / "confusion.png", "Ensemble at its threshold")]
    return [p.name for p in paths]


def write_report(out: Path, table: pd.DataFrame, result: dict[str, Any]) -> Path:
    diff = result["auc_difference"]
    deployed = result["deployed"]
    text = (f"<p>Members: {', '.join(result['members'])}. Deployed: combiner <b>{deployed['combiner']['kind']}</b>, "
            f"calibrator <b>{deployed['calibrator']['kind']}</b>, threshold {deployed['threshold']:.3f} "
            f"(target sensitivity {deployed['target_sensitivity']:.2f}). Ensemble minus best single model "
            f"({result['best_single']['name']}) ROC AUC: {diff['difference']:+.3f} "
            f"{metrics.interval_text(diff['ci'])}.</p>")
    sections = [("Comparison (nested out-of-fold)", table.to_html(index=False, float_format="%.3f")),
                *_segmenter_sections(result),
                ("Choices", text + report.dict_table_html({f"{k} (cross-validated)": json.dumps(v)
                                                          for k, v in deployed["choices"].items()})),
                ("Plots", "".join(report.img_html(out, out / p) for p in result["plots"]))]
    return report.html_page(out / "report.html", "09 ensemble", sections)


def _segmenter_sections(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The candidate segmenters (when 09 chose among several) and the classifier-gated masks, for report.html."""
    sections = []
    if len(result.get("segmenter_choice") or []) > 1:
        choice = pd.DataFrame(result["segmenter_choice"])
        sections.append(("Segmenter shipped", f"<p>Ranked by {choice['ranked_by'].iloc[0]}.</p>"
                         + choice.drop(columns="ranked_by").to_html(index=False, float_format="%.3f")))
    gate = result.get("segmenter_gated")
    if gate:
        sections.append(("Masks gated by the classifier", report.dict_table_html(
            {k.replace("_", " "): v for k, v in gate.items()})))
    return sections


def export_bundle(args: argparse.Namespace, final: ensemble.Ensemble, result: dict[str, Any],
                  lineage: dict[str, Any]) -> Path:
    """Settings + model card + copied models in args.bundle; `lineage` (09's) says what made it."""
    try:
        settings = {
            "format": bundle.FORMAT, "created": bundle.created(), "class_names": bundle.CLASS_NAMES,
            "intended_use": bundle.INTENDED_USE, "preprocessing": bundle.preprocessing(lineage["inputs"]["in"]),
            "classifier": {"ensemble": final.to_json()},
            "segmenter": _segmenter(args.unet, result) if args.unet else None,
            "metrics": {k: result[k] for k in ("ensemble", "best_single", "auc_difference")},
            "versions": bundle.versions(),
            "lineage": lineage,
        }
        data = {"input": json.loads((args.in_dir / "metrics.json").read_text()).get("input", str(args.in_dir)),
                "images": result["images"], "tumours": result["tumours"], "folds": result["folds"]}
        settings["data"] = {"source": bundle.training_source(settings), "images": data["images"],
                            "tumours": data["tumours"], "folds": data["folds"]}
        return bundle.export(args.bundle, settings, args.in_dir, args.unet, bundle.model_card(settings, data))
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}") from None


def _segmenter(unet_dir: Path, result: dict[str, Any]) -> dict[str, Any]:
    m = segmenter_choice.read_metrics(unet_dir)
    return {"architecture": m["architecture"], "masks": m["masks"], "image_size": m["image_size"],
            "threshold": 0.5, "min_area": int(m.get("min_area") or 0), "masks_when": result["masks_when"],
            "gated": result.get("segmenter_gated"), "choice": result.get("segmenter_choice", []),
            "test": m.get("test", {}), "members": (m.get("ensemble") or {}).get("folders"),
            "test_by_source": m.get("test_by_source", {}),
            "sources": {name: source.get("rule", "") for name, source in (m.get("sources") or {}).items()}}
