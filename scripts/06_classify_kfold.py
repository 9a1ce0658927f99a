"""Stage 06: grouped k-fold tumour / no-tumour classification, every model on the same saved folds.

Models (--models, comma separated): cnn (custom CNN), vgg16, resnet50,
efficientnetv2b0, efficientnetv2s, convnext_tiny (keras.applications, --weights
imagenet|none|PATH), features (04_cluster's handcrafted features),
medsam_embed (frozen pretrained LiteMedSAM encoder + linear head), fusion
(mean of the features and medsam_embed heads), metadata (file properties
only: the shortcut baseline every model must beat).

    python scripts/06_classify_kfold.py --in data/04_cluster --out data/06_classify_kfold \\
        --models cnn,features,medsam_embed,fusion,metadata,efficientnetv2b0 --weights none
    with generated slices from one 05 generator per fold (05 --splits <out>/splits.json --fold k):
    python scripts/06_classify_kfold.py ... --synthetic data/05_fold0 ... data/05_fold4 --synthetic-ratio 0.5
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, also as a Kaggle kernel

from lib.common.quiet import quiet  # noqa: E402

quiet()  # before the imports below: TensorFlow reads its log level as it loads (--verbose: all of it)

from lib.classify import run_classify_kfold  # noqa: E402
from lib.common import metrics, splits, stage  # noqa: E402

DEFAULT_MODELS = "cnn,features,medsam_embed,fusion,metadata"


def main(argv: list[str] | None = None) -> int:
    p = stage.parser("06_classify_kfold", __doc__.splitlines()[0], previous="04_cluster")
    p.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated model families")
    p.add_argument("--weights", default="imagenet", help="keras.applications weights: imagenet, none or a file")
    p.add_argument("--images", default="clean", choices=["clean", "enhanced"],
                   help="which slices the image models see (measures the effect of MUSICA)")
    p.add_argument("--folds", type=int, default=splits.FOLDS)
    p.add_argument("--repeats", type=int, default=splits.REPEATS, help="repeated k-fold with seeds seed, seed+1, ...")
    p.add_argument("--seed", type=int, default=splits.SEED)
    p.add_argument("--rebalance", default="class_weight", choices=["class_weight", "oversample", "none"])
    p.add_argument("--target-sensitivity", type=float, default=metrics.TARGET_SENSITIVITY,
                   help="the threshold is chosen on inner validation data to find this share of tumours")
    p.add_argument("--epochs", type=int, default=None, help="override the image models' epoch limit")
    p.add_argument("--image-size", type=int, default=None, help="override the image models' input size")
    p.add_argument("--finetune-epochs", type=int, default=None,
                   help="backbones: epochs of phase 2 (top blocks unfrozen, lower learning rate); 0 on a CPU")
    p.add_argument("--external", nargs="+", type=Path, default=[], metavar="DIR",
                   help="other labelled stage folders (04_cluster) to test the fold models on, e.g. figshare's "
                        "(all tumours: sensitivity) and the phantoms' (both classes)")
    p.add_argument("--external-limit", type=int, default=None,
                   help="use an evenly spaced sample of this many external images (quicker)")
    p.add_argument("--synthetic", nargs="+", type=Path, default=[], metavar="DIR",
                   help="05_ddim_train folders: each model also trains with their slices added to each fold's "
                        "training part (never validation or test), reported as <model>+ddim with the ROC AUC "
                        "difference; a fold takes only a generator that never saw its slices (05 --splits --fold)")
    p.add_argument("--synthetic-ratio", type=float, default=0.5,
                   help="generated slices added per real training slice of a fold")
    run_classify_kfold.run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
