"""Stage 01: import brain MRI slices (Kaggle, a local folder, or phantoms) and describe them.

Writes `raw/` (byte-for-byte copies or generated files, with `masks/` where
true masks exist), `manifest.csv` (one row per file: hashes, real format, mode,
size, duplicate group, status) and `metrics.json` (counts and duplicates).

    python scripts/01_download.py --source phantom --n 253 --out data/01_download
    python scripts/01_download.py --source folder --path ../shared/data/navoneel --out runs/navoneel/01_download
    python scripts/01_download.py --source kaggle --out data/01_download
    python scripts/01_download.py --source figshare --out runs/figshare/01_download   # masks for 08 --extra-masks
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, also as a Kaggle kernel

from lib.common.quiet import quiet  # noqa: E402

quiet()  # before the imports below: TensorFlow reads its log level as it loads (--verbose: all of it)

from lib.acquire import run_download, sources  # noqa: E402
from lib.common import stage  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = stage.parser("01_download", __doc__.splitlines()[0], previous=None)
    p.add_argument("--source", choices=("phantom", "folder", "kaggle", "figshare"), default="phantom",
                   help="phantom: generate offline; folder: import --path; kaggle: download the navoneel set "
                        "(or --dataset); figshare: download Cheng's slices with true masks (CC BY 4.0)")
    p.add_argument("--path", type=Path, help="folder to import (--source folder): class folders or images/ + masks/")
    p.add_argument("--classes", help="class folder names, e.g. 'yes=tumor,no=no_tumor' (default: common names)")
    p.add_argument("--label", default="tumor", choices=("tumor", "no_tumor", "unknown"),
                   help="label of an images/ + masks/ tree")
    p.add_argument("--dataset", default=sources.KAGGLE_DATASET, help="Kaggle data set handle (--source kaggle)")
    p.add_argument("--n", type=int, default=253, help="number of phantom slices (--source phantom)")
    p.add_argument("--seed", type=int, default=0, help="phantom seed: same seed, same images")
    p.add_argument("--tumor-fraction", type=float, default=run_download.NAVONEEL_TUMOR_FRACTION,
                   help="share of phantom slices with a tumour (default: navoneel's 155/253)")
    args = p.parse_args(argv)
    try:
        run_download.run(args)
    except sources.DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
