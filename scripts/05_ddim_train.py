"""Stage 05: a denoising diffusion model (DDIM) of brain slices; samples, KID against held-out real slices.

Trains lib.synth.diffusion's residual U-Net on 02's cleaned tumour slices (or
both classes with --conditional), resumes after a kill, and writes model.keras
(EMA weights), samples/ (PNGs and a manifest with origin=synthetic, label and
seed), grids/, samples_grid.png, training.png, metrics.json and report.html.
KID is reported with its real-vs-real floor, next to a two-sample test.

    python scripts/05_ddim_train.py --in data/02_clean --out data/05_ddim_train [--size 64] [--epochs 200]
    make all runs a CPU quick profile (DDIM_ARGS in the Makefile); a GPU profile: --size 64 --epochs 500
    one generator per 06 fold, for 06 --synthetic (its images may join that fold's training only):
    python scripts/05_ddim_train.py --in data/02_clean --out data/05_fold0 --conditional \\
        --splits data/06_classify_kfold/splits.json --fold 0
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, also as a Kaggle kernel

from lib.common.quiet import quiet  # noqa: E402

quiet()  # before the imports below: TensorFlow reads its log level as it loads (--verbose: all of it)

from lib.common import stage  # noqa: E402
from lib.synth import diffusion, realism, run_ddim_train  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = stage.parser("05_ddim_train", __doc__.splitlines()[0], previous="02_clean")
    p.add_argument("--size", type=int, default=64, help="slice side in pixels (64; 128 on a GPU)")
    p.add_argument("--conditional", action="store_true",
                   help="one model for both classes with a class embedding (default: tumour slices only)")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--widths", type=int, nargs="+", default=list(diffusion.WIDTHS),
                   help="channels per U-Net level; the size must divide by 2^(levels - 1)")
    p.add_argument("--block-depth", type=int, default=diffusion.BLOCK_DEPTH, help="residual blocks per level")
    p.add_argument("--learning-rate", type=float, default=diffusion.LEARNING_RATE)
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of duplicate groups held out as real slices the model never trains on")
    p.add_argument("--splits", type=Path, default=None, metavar="SPLITS_JSON",
                   help="06's splits.json: train on --fold's inner training part only, so 06 --synthetic can add "
                        "the samples to that fold without leaking its validation or test slices")
    p.add_argument("--fold", type=int, default=None, help="with --splits: the fold whose slices stay unseen")
    p.add_argument("--repeat", type=int, default=0, help="with --splits: the repeat the fold belongs to")
    p.add_argument("--steps", type=int, default=20, help="DDIM sampling steps")
    p.add_argument("--samples", type=int, default=64, help="slices written to samples/")
    p.add_argument("--kid-features", choices=[*realism.FEATURES, "none"], default="litemedsam",
                   help="features for KID and the two-sample test (inception needs its ImageNet weights)")
    p.add_argument("--kid-subsets", type=int, default=10, help="random subsets KID is averaged over")
    p.add_argument("--grid-every", type=int, default=0, help="write a sample grid every N epochs (0: only at the end)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="minutes: stop after the epoch that passes it, EMA weights kept")
    p.add_argument("--seed", type=int, default=0)
    run_ddim_train.run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
