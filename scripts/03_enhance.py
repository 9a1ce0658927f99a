"""Stage 03: enhance cleaned slices (MUSICA by default) inside the head; measure contrast before/after.

The chain is a comma-separated list of steps (musica, clahe, gaussian,
bilateral, nlmeans, unsharp; 'none' copies the slice). Writes images/,
heads/ (head masks shared by later stages), manifest.csv, qc/, metrics.json
and report.html.

    python scripts/03_enhance.py --in data/02_clean --out data/03_enhance [--chain musica]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, also as a Kaggle kernel

from lib.common.quiet import quiet  # noqa: E402

quiet()  # before the imports below: TensorFlow reads its log level as it loads (--verbose: all of it)

from lib.common import stage  # noqa: E402
from lib.preprocess import enhance, run_enhance  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = stage.parser("03_enhance", __doc__.splitlines()[0], previous="02_clean")
    p.add_argument("--chain", default=",".join(enhance.DEFAULT_CHAIN),
                   help=f"steps in order, from: {', '.join(enhance.STEPS)}; 'none' for no enhancement")
    run_enhance.run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
