"""Stage 09: ensemble 06's models (mean, weighted or stacking, chosen by nested CV), calibrate, export the bundle.

Reads 06's out-of-fold predictions and fold models, and 08's segmentation
model. Writes oof.csv (nested: each fold's ensemble chosen and fitted without
it), metrics.json (intervals, operating point, ensemble minus best single
model), comparison.md, plots and report.html; with --bundle the folder that
scripts/predict.py and demo/app.py load.

    python scripts/09_ensemble.py --in data/06_classify_kfold --unet data/08_unet_train --bundle artifacts/bundle
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, also as a Kaggle kernel

from lib.common.quiet import quiet  # noqa: E402

quiet()  # before the imports below: TensorFlow reads its log level as it loads (--verbose: all of it)

from lib.common import metrics, stage  # noqa: E402
from lib.deploy import run_ensemble, segmenter_choice  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = stage.parser("09_ensemble", __doc__.splitlines()[0], previous="06_classify_kfold")
    p.add_argument("--unet", type=Path, nargs="+", default=[stage.default_in("08_unet_train")],
                   help="08_unet_train folder(s): the bundle's segmenter; of several, the one with the best Dice "
                        "on sources none of them trained on ('' for none)")
    p.add_argument("--masks-when", choices=segmenter_choice.MASKS_WHEN, default="tumour",
                   help="draw the mask only on slices the classifier calls tumour (default), or always")
    p.add_argument("--bundle", type=Path, default=stage.default_out("09_ensemble") / "bundle",
                   help="write the self-contained bundle here ('' for none)")
    p.add_argument("--members", default="",
                   help="comma-separated 06 models to combine (default: all that 06 ran, except metadata)")
    p.add_argument("--target-sensitivity", type=float, default=metrics.TARGET_SENSITIVITY,
                   help="the operating threshold finds this share of tumours")
    args = p.parse_args(argv)
    args.unet = [path for path in args.unet if str(path) not in ("", ".")] or None
    args.bundle = args.bundle if str(args.bundle) not in ("", ".") else None
    run_ensemble.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
