"""Stage 07: SAM pseudo-labels (tumour masks) for every tumour slice, prompted by a box.

Prompts: auto (04_cluster's candidate box), truth (the true mask's box: an
upper bound, for evaluation), file (a CSV of boxes), unet (the box of a mask
drawn by a U-Net that 08 trained on earlier pseudo-labels: self-training). Engines: litemedsam
(default; pretrained, offline, CPU), keras-hub and transformers (SAM presets /
checkpoints; need a download). Writes masks/<id>.png (0/255), manifest.csv
with prompt_box, sam_score, sam_quality, sam_status, pred_mask_path,
qc/overlays_*.png, metrics.json (rejection rate, s per slice, Dice against
true masks where they exist) and report.html.

    python scripts/07_sam_label.py --in data/04_cluster --out data/07_sam_label [--prompt auto|truth|file]

Self-training (round 2): prompt with the U-Net trained on round 1's labels, then train again:

    python scripts/07_sam_label.py --in data/04_cluster --out data/07_round2 --prompt unet --unet data/08_unet_train
    python scripts/08_unet_train.py --in data/07_round2 --out data/08_round2 --masks pseudo
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, also as a Kaggle kernel

from lib.common.quiet import quiet  # noqa: E402

quiet()  # before the imports below: TensorFlow reads its log level as it loads (--verbose: all of it)

from lib.common import stage  # noqa: E402
from lib.segment import pseudo_label, run_sam_label, segmenters  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = stage.parser("07_sam_label", __doc__.splitlines()[0], previous="04_cluster")
    p.add_argument("--prompt", default="auto", choices=run_sam_label.PROMPTS, help="where each slice's box comes from")
    p.add_argument("--boxes", type=Path, default=None, help="CSV with columns id, box ('x0 y0 x1 y1') for --prompt file")
    p.add_argument("--unet", type=Path, default=None,
                   help="for --prompt unet: an 08_unet_train folder (or its model.keras) trained on earlier labels")
    p.add_argument("--engine", default=segmenters.DEFAULT_ENGINE, choices=segmenters.ENGINES)
    p.add_argument("--sam-preset", default=None,
                   help="keras-hub preset or transformers checkpoint (name or local path) for those engines")
    p.add_argument("--images", default="clean", choices=["clean", "enhanced"], help="which slice SAM sees")
    p.add_argument("--min-quality", type=float, default=pseudo_label.MIN_QUALITY,
                   help="pseudo-labels scoring below this are rejected (kept in the manifest with the reason)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile LiteMedSAM's encoder: ~1 min to compile, then ~25 %% faster per slice")
    args = p.parse_args(argv)
    if args.compile:
        from lib.common import medsam

        medsam.COMPILE = True
    run_sam_label.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
