"""Stage 02: clean up and crop every slice to the head, as square 8-bit grey PNGs.

Removes white backgrounds, white frames and burned-in text outside the head,
crops to the head (Otsu 'hard' or adaptive 'soft', chosen per image with the
reason recorded), pads to square and resizes. True masks follow the same
geometry. Writes images/, masks/, manifest.csv, metrics.json, qc/ and report.html.

    python scripts/02_clean.py --in data/01_download --out data/02_clean --size 256
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, also as a Kaggle kernel

from lib.common.quiet import quiet  # noqa: E402

quiet()  # before the imports below: TensorFlow reads its log level as it loads (--verbose: all of it)

from lib.common import stage  # noqa: E402
from lib.preprocess import run_clean  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = stage.parser("02_clean", __doc__.splitlines()[0], previous="01_download")
    p.add_argument("--size", type=int, default=256, help="side of the square output images, in pixels")
    p.add_argument("--skull-strip", action="store_true", help="also remove scalp and skull (morphological)")
    run_clean.run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
