"""Stage 08: train a U-Net, DeepLabV3+ or fine-tuned LiteMedSAM on SAM pseudo-labels or true masks; test vs true masks.

Each source split by its own rule (70 % train, 10 % validation, 20 % test: per
block of consecutive indices where slices come in patient runs, else by whole
duplicate groups), early stopping on validation Dice; --extra-masks adds true
masks to train on, --score-on folders to test on only. Writes
model.keras (litemedsam: model.pt), history.csv, predictions/ (test part), per_image.csv (Dice, IoU,
HD95), metrics.json, training.png, overlays_best/worst.png and report.html; with --refit also search/
(the early-stopped model and its curves).

    python scripts/08_unet_train.py --in data/07_sam_label --out data/08_unet_train [--masks pseudo|truth]
        [--extra-masks ../shared/data/figshare_seg] [--score-on DIR ...] [--leave-out K]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, also as a Kaggle kernel

from lib.common.quiet import quiet  # noqa: E402

quiet()  # before the imports below: TensorFlow reads its log level as it loads (--verbose: all of it)

from lib.common import stage  # noqa: E402
from lib.segment import models, run_unet_train  # noqa: E402


def _min_area(text: str) -> str | int:
    """--min-area: "auto" or a number of pixels (0 keeps every part)."""
    if text == "auto":
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: give auto or a number of pixels")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    p = stage.parser("08_unet_train", __doc__.splitlines()[0], previous="07_sam_label")
    p.add_argument("--masks", default="pseudo", choices=run_unet_train.MASK_SOURCES,
                   help="train on 07's SAM pseudo-labels or on the true masks")
    p.add_argument("--architecture", default="unet", choices=models.ARCHITECTURES,
                   help="unet or deeplabv3plus (Keras, from scratch) or litemedsam (the pretrained medical SAM "
                        "fine-tuned with the head's box as prompt; PyTorch, needs a GPU for real runs)")
    p.add_argument("--tune", default="top", choices=run_unet_train.TUNE_CHOICES,
                   help="litemedsam: fine-tune only the encoder's last stage and the decoder (lower stages "
                        "frozen: a third of the CPU time per step, as good on figshare), or the whole model")
    p.add_argument("--precision", default="auto", choices=run_unet_train.PRECISIONS,
                   help="litemedsam: auto = bfloat16 where the GPU or CPU computes it natively (about 2.2x "
                        "faster per step on an AVX512-BF16 CPU), else float32")
    p.add_argument("--image-size", type=int, default=128, help="network input side in pixels (litemedsam: 256)")
    p.add_argument("--epochs", type=int, default=40, help="upper limit; early stopping on validation Dice")
    p.add_argument("--patience", type=int, default=8, help="epochs without a better validation Dice before stopping")
    p.add_argument("--width", type=int, default=16, help="filters of the first level (16: 144 k weights; 32: ~4x)")
    p.add_argument("--batch-size", type=int, default=None, help="default 16, litemedsam 8")
    p.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                   help="stop training after this many minutes (best weights kept); for Kaggle or lent GPUs "
                        "(with --refit, each of the two runs)")
    p.add_argument("--refit", action="store_true",
                   help="litemedsam: after early stopping has chosen the epoch count, train a fresh model on "
                        "training + validation slices for that many epochs and test it (the first model is "
                        "kept in search/); about twice the training time")
    p.add_argument("--refit-epochs", type=int, default=0, metavar="N",
                   help="litemedsam: skip the early-stopping run and train on training + validation slices for "
                        "N epochs (a count an earlier --refit run or a GPU run chose); 0 = off")
    p.add_argument("--refine", default=None, choices=["sam"],
                   help="test masks redrawn by LiteMedSAM in the box of each predicted mask, kept when they pass "
                        "07's quality check (scored both ways)")
    p.add_argument("--ensemble", type=int, default=1, metavar="N",
                   help="train N networks with seeds --seed .. --seed+N-1 (each in seed-<s>/, each resumable) and "
                        "test the mean of their probability maps, each member also scored alone; N times the "
                        "training time")
    p.add_argument("--extra-masks", nargs="+", type=Path, default=[], metavar="DIR",
                   help="more slices with true masks to train on: images/ + masks/ trees (cleaned as 02 cleans) or "
                        "stage folders, each split by its own rule, e.g. ../shared/data/figshare_seg")
    p.add_argument("--score-on", nargs="+", type=Path, default=[], metavar="DIR",
                   help="folders of true masks only to test on (never trained on): the score on data from elsewhere")
    p.add_argument("--split", default="auto", choices=("auto", "ranges", "groups"),
                   help="how the input is split: ranges of consecutive indices (patients in runs, figshare), whole "
                        "duplicate groups (navoneel, phantoms); auto: ranges where index.csv names index blocks")
    p.add_argument("--leave-out", type=int, default=None, metavar="K",
                   help="in every source split by index ranges, test on block K of consecutive indices (from 1) "
                        "and train on the others: figshare's blocks are its tumour types")
    p.add_argument("--pseudo-weight", type=float, default=1.0, help="loss weight of a slice with a pseudo-label")
    p.add_argument("--truth-weight", type=float, default=1.0,
                   help="loss weight of a slice with a true mask (or tumour-free)")
    p.add_argument("--min-area", default="auto", type=_min_area, metavar="PIXELS",
                   help="drop mask parts smaller than this many pixels; auto: the best on the validation slices")
    p.add_argument("--seed", type=int, default=0)
    run_unet_train.run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
