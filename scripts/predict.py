"""Predict tumour / no tumour (and optionally the tumour mask) for an image file or a folder, with a bundle.

Each input is cleaned and cropped exactly as in training (the bundle holds the
settings). Writes one CSV row per file (per slice, plus a volume row, for a
DICOM or NIfTI file): file, slice, prob_tumor, label_pred, threshold,
mask_path, tumour_ml, error, and `ood`, which says why a slice does not look
like brain MRI (a photo, a screenshot...) when it does not. A bad file gets an error row; the rest go on;
a rerun resumes. Research and education only, not a medical device.

    python scripts/predict.py --bundle artifacts/bundle --in slices/ --out predictions.csv [--masks masks/ [--sam]]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, also as a Kaggle kernel

from lib.common.quiet import quiet  # noqa: E402

quiet()  # before the imports below: TensorFlow reads its log level as it loads (--verbose: all of it)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="predict.py", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--bundle", type=Path, default=Path("artifacts/bundle"), help="folder written by 09_ensemble")
    p.add_argument("--in", dest="source", type=Path, required=True, help="an image, DICOM or NIfTI file, or a folder of them")
    p.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV to write")
    p.add_argument("--masks", type=Path, default=None, help="also save tumour masks (0/255 PNG, input size) here")
    p.add_argument("--sam", action="store_true", help="refine each mask with LiteMedSAM on the U-Net mask's box")
    p.add_argument("--ood", choices=["full", "rules", "off"], default="full",
                   help="check each slice looks like brain MRI: traits + LiteMedSAM embedding (full, ~0.2 s a "
                        "slice), traits only (rules) or not at all (off); the verdict goes to the ood column")
    p.add_argument("--force", action="store_true", help="predict every file again instead of resuming")
    p.add_argument("--verbose", action="store_true", help="also print TensorFlow's own log lines")
    args = p.parse_args(argv)
    if args.sam and args.masks is None:
        p.error("--sam refines masks: give --masks DIR too")
    check_paths(args)
    from lib.deploy import predict_files  # here, after the checks: loading the models takes seconds
    from lib.deploy.predictor import BundleError, Predictor

    try:
        predictor = Predictor(args.bundle, sam=args.sam, ood_check=args.ood)
    except BundleError as err:
        raise SystemExit(f"error: {err}") from None
    table = predict_files.predict_all(predictor, args.source, args.out, args.masks, args.sam, args.force)
    errors = int(table["error"].ne("").sum())
    tumours = int(table["label_pred"].eq(predictor.class_names[1]).sum())
    odd = int(table["ood"].ne("").sum())
    print(f"{len(table)} rows: {tumours} predicted tumour, {len(table) - tumours - errors} no tumour, "
          f"{errors} errors, {odd} not like brain MRI (see the ood column) -> {args.out}")
    return 0


def check_paths(args: argparse.Namespace) -> None:
    """Stop in one line on a missing --in or --bundle before anything loads, not after the models have."""
    if not args.source.exists():
        raise SystemExit(f"error: --in {args.source} not found; give an image file or a folder of them")
    if not args.bundle.is_dir():
        raise SystemExit(f"error: --bundle {args.bundle} is not a folder; build a bundle with `make all` "
                         "(or scripts/09_ensemble.py --bundle DIR)")


if __name__ == "__main__":
    sys.exit(main())
