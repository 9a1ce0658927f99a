"""Stage 04: k-means intensity regions, a tumour-candidate box and handcrafted features per slice.

With --k auto (default) a k = 2..20 sweep on a sample of slices picks k and
records why. Writes clusters/ (colour-coded regions, darkest black to
brightest red), labels/, features/ + features.csv (columns in features.md),
manifest.csv with cand_box / cand_score, qc/, metrics.json and report.html.

    python scripts/04_cluster.py --in data/03_enhance --out data/04_cluster [--k auto] [--regions watershed,chanvese]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, also as a Kaggle kernel

from lib.common.quiet import quiet  # noqa: E402

quiet()  # before the imports below: TensorFlow reads its log level as it loads (--verbose: all of it)

from lib.common import stage  # noqa: E402
from lib.regions import run_cluster  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = stage.parser("04_cluster", __doc__.splitlines()[0], previous="03_enhance")
    p.add_argument("--k", default="auto", help="clusters per slice, or 'auto' to choose it by the k sweep")
    p.add_argument("--sweep-images", type=int, default=run_cluster.SWEEP_IMAGES,
                   help="slices in the k sweep (--k auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the k-sweep sample")
    p.add_argument("--features", default="intensity", choices=["intensity", "intensity+position", "intensity+texture"],
                   help="what k-means clusters on")
    p.add_argument("--regions", default="none",
                   help=f"extra region maps, comma separated: {', '.join(run_cluster.REGION_TOOLS)}")
    p.add_argument("--candidate-on", default="clean", choices=["clean", "enhanced"],
                   help="which image the tumour candidate is sought on")
    run_cluster.run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
