"""Kaggle kernels and Colab notebooks that run one whole job (kernels/jobs.py) on a free GPU, and the way back.

A kernel is one Python file: a short bootstrap carrying the project's code
(lib/, scripts/, kernels/, the Makefile, requirements.txt) as an embedded zip.
It unpacks them into /kaggle/working/brainmri_src and runs `kernels/jobs.py
run JOB`, which finds the attached data, installs the pins and runs the
Makefile's targets with the chosen profile. The Colab notebook carries the
same code and runs the same job. No data travels in either: only code.

    python kernels/build.py build pipeline --user ME --dataset navoneel/brain-mri-images-for-brain-tumor-detection
    python kernels/build.py push --job pipeline        # upload and start (needs a Kaggle API token)
    python kernels/build.py status --job pipeline
    python kernels/build.py pull --job pipeline        # -> artifacts/pipeline-<date>/, bundle checked
    python kernels/build.py wheels --user ME           # offline kernels: the pins as a Kaggle data set
    python kernels/build.py colab pipeline             # -> build/colab/pipeline.ipynb
"""

from __future__ import annotations

import argparse
import base64
import datetime
import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kernels import jobs  # noqa: E402

BUILD = ROOT / "build"
ARTIFACTS = ROOT / "artifacts"
TOKEN_ADVICE = ("create a token at https://www.kaggle.com/settings/api ('Generate New Token') and export "
                "KAGGLE_API_TOKEN=<token> (or save it to ~/.kaggle/access_token), then retry")
# kernel-metadata.json as the kaggle client reads it (kaggle_api_extended.kernels_push, kaggle 2.2.1).
LANGUAGES = ("python", "r", "rmarkdown")
KERNEL_TYPES = ("script", "notebook")
MACHINE_SHAPES = ("NvidiaTeslaP100", "NvidiaTeslaT4", "NvidiaTeslaT4Highmem", "NvidiaL4", "NvidiaL4X1",
                  "NvidiaTeslaA100", "NvidiaH100", "NvidiaRtxPro6000", "TpuV38", "Tpu1VmV38", "TpuV5E8", "TpuV6E8")
SOURCE_FIELDS = ("dataset_sources", "competition_sources", "kernel_sources", "model_sources")
BOOL_FIELDS = ("is_private", "enable_gpu", "enable_tpu", "enable_internet")
SLUG = re.compile(r"^[A-Za-z0-9_-]+/[A-Za-z0-9_.-]+(/.+)?$")  # owner/slug (models: owner/model/framework/...)

BOOTSTRAP = '''\
"""{title}: the brain-tumour MRI toolkit's {job} job ({profile} profile), packed by kernels/build.py.

Research and education only; not a medical device. What it runs: kernels/jobs.py.
"""
import base64, io, os, subprocess, sys, zipfile
from pathlib import Path

PAYLOAD = "{payload}"
ROOT = Path(os.environ.get("KAGGLE_ROOT", "/kaggle"))  # a test points this at a simulated Kaggle tree
src = ROOT / "working" / "brainmri_src"
zipfile.ZipFile(io.BytesIO(base64.b64decode(PAYLOAD))).extractall(src)
sys.exit(subprocess.call([sys.executable, str(src / "kernels" / "jobs.py"), "run", {job!r}, "--profile", {profile!r},
                          "--root", str(ROOT), *{args!r}]))
'''


# --- the code a kernel carries ------------------------------------------------------------


def payload_files() -> list[Path]:
    """What a job needs to run: the packages, the stage scripts, the job runner, Makefile and pins."""
    files = [*ROOT.glob("lib/**/*.py"), *ROOT.glob("scripts/*.py"), *ROOT.glob("kernels/*.py"),
             *ROOT.glob("kernels/profiles/*.mk"), ROOT / "Makefile", ROOT / "requirements.txt"]
    return sorted(f for f in files if "__pycache__" not in f.parts)


def payload() -> str:
    """Base64 zip of payload_files(), paths relative to the repository."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in payload_files():
            archive.write(path, path.relative_to(ROOT).as_posix())
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def check_job(job: str) -> None:
    if job not in jobs.JOBS:
        raise SystemExit(f"error: no job {job!r}; jobs: {', '.join(jobs.JOBS)}")


def slug(job: str) -> str:
    return "brainmri-" + re.sub(r"[^a-z0-9]+", "-", job.lower()).strip("-")


# --- Kaggle kernel ----------------------------------------------------------------------


def metadata(job: str, user: str, **fields: Any) -> dict[str, Any]:
    """kernel-metadata.json: every field the kaggle client reads, defaults for a private GPU script kernel.

    The title is the slug, so Kaggle derives the same id from it (a mismatch makes a second kernel)."""
    meta = {"id": f"{user}/{slug(job)}", "title": slug(job), "code_file": f"{slug(job)}.py", "language": "python",
            "kernel_type": "script", "is_private": True, "enable_gpu": True, "enable_tpu": False,
            "enable_internet": False, "dataset_sources": [], "competition_sources": [], "kernel_sources": [],
            "model_sources": [], "keywords": [], "machine_shape": None}
    unknown = set(fields) - set(meta)
    if unknown:
        raise ValueError(f"unknown kernel-metadata field(s) {sorted(unknown)}; known: {', '.join(meta)}")
    meta.update({k: v for k, v in fields.items() if v is not None})
    if fields.get("title") and not fields.get("id"):  # Kaggle derives the slug from the title
        meta["id"] = f"{user}/{re.sub(r'[^a-z0-9]+', '-', meta['title'].lower()).strip('-')}"
    return meta


def validate(meta: dict[str, Any], folder: Path | None = None) -> list[str]:
    """What Kaggle would refuse in a kernel-metadata.json, one line each (empty: fine)."""
    problems = []
    if not isinstance(meta.get("id"), str) or not SLUG.match(meta["id"]) or meta["id"].count("/") != 1:
        problems.append(f"id {meta.get('id')!r} is not OWNER/SLUG")
    title = meta.get("title") or ""
    if len(title) < 5 or re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") != str(meta.get("id", "")).split("/")[-1]:
        problems.append(f"title {title!r} must have 5+ characters and turn into the id's slug (lower case, dashes)")
    if folder is not None and not (folder / str(meta.get("code_file"))).is_file():
        problems.append(f"code_file {meta.get('code_file')!r} is not in {folder}")
    if meta.get("language") not in LANGUAGES:
        problems.append(f"language {meta.get('language')!r} is not one of {', '.join(LANGUAGES)}")
    if meta.get("kernel_type") not in KERNEL_TYPES:
        problems.append(f"kernel_type {meta.get('kernel_type')!r} is not one of {', '.join(KERNEL_TYPES)}")
    problems += [f"{k} must be true or false" for k in BOOL_FIELDS if not isinstance(meta.get(k), bool)]
    for key in SOURCE_FIELDS:
        values = meta.get(key)
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            problems.append(f"{key} must be a list of strings")
        elif key != "competition_sources" and any(not SLUG.match(v) for v in values):
            problems.append(f"{key} {values} must be OWNER/SLUG entries")
    if meta.get("machine_shape") not in (None, *MACHINE_SHAPES):
        problems.append(f"machine_shape {meta['machine_shape']!r} is not one of {', '.join(MACHINE_SHAPES)}")
    if meta.get("enable_gpu") and meta.get("enable_tpu"):
        problems.append("enable_gpu and enable_tpu exclude each other")
    return problems


def build(job: str, out: Path, user: str, profile: str = "gpu", job_args: list[str] | None = None,
          **fields: Any) -> Path:
    """Write <out>/<slug>/{kernel-metadata.json, <slug>.py}; return the folder. Nothing is written when the
    job or a metadata field is wrong."""
    check_job(job)
    meta = metadata(job, user, **fields)
    problems = validate(meta)
    if problems:
        raise SystemExit(f"error: kernel-metadata.json: {problems[0]}")
    args = [*(job_args or []), *(["--internet"] if meta["enable_internet"] else [])]
    code = BOOTSTRAP.format(title=meta["title"], job=job, profile=profile, payload=payload(), args=args)
    folder = out / slug(job)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    (folder / meta["code_file"]).write_text(code)
    return folder


def kaggle_api() -> Any:
    """The authenticated kaggle client; SystemExit in one line, saying how to get a token, without one."""
    try:
        import kaggle  # authenticates on import and exits without a token
    except SystemExit:
        raise SystemExit(f"error: no Kaggle API token; {TOKEN_ADVICE}") from None
    except OSError as err:  # kaggle 2.x raises OSError when it finds no credentials
        raise SystemExit(f"error: no Kaggle API token ({' '.join(str(err).split())[:80]}...); {TOKEN_ADVICE}") from None
    return kaggle.api


def kernel_folder(job: str, out: Path = BUILD / "kernels") -> Path:
    folder = out / slug(job)
    if not (folder / "kernel-metadata.json").is_file():
        raise SystemExit(f"error: no kernel built for {job} in {folder}; run: make kaggle-build JOB={job} "
                         "KAGGLE_USER=<you>")
    return folder


def kernel_id(folder: Path) -> str:
    return json.loads((folder / "kernel-metadata.json").read_text())["id"]


def push(folder: Path) -> str:
    """Check the metadata, then upload and start the kernel; returns its URL."""
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    problems = validate(meta, folder)
    if problems:
        raise SystemExit(f"error: {folder}/kernel-metadata.json: {problems[0]}")
    response = kaggle_api().kernels_push(str(folder))
    error = getattr(response, "error", "")
    if error:
        raise SystemExit(f"error: Kaggle refused the kernel in {folder}: {error}")
    url = getattr(response, "url", "") or f"https://www.kaggle.com/code/{meta['id']}"
    print(f"pushed {meta['id']}: {url} (make kaggle-status JOB=..., then make kaggle-pull JOB=...)")
    return url


def status(folder: Path) -> str:
    """The kernel's run status as Kaggle reports it (queued, running, complete, error ...)."""
    found = kaggle_api().kernels_status(kernel_id(folder))
    text = str(getattr(found, "status", found))
    message = getattr(found, "failure_message", "") or ""
    print(f"{kernel_id(folder)}: {text}{f' ({message})' if message else ''}")
    return text


def pull(folder: Path, job: str, out: Path = ARTIFACTS, today: datetime.date | None = None) -> Path:
    """Fetch the kernel's output into <out>/<job>-<date>/ (a new folder each time) and check the bundle in it;
    returns that folder."""
    target = fresh_folder(out / f"{job}-{(today or datetime.date.today()).isoformat()}")
    kaggle_api().kernels_output(kernel_id(folder), str(target), force=True, quiet=False)
    found = json.loads((target / "job.json").read_text()) if (target / "job.json").is_file() else {}
    if jobs.JOBS[job].makes_bundle:
        from lib.deploy import bundle

        try:
            checked = bundle.verify(target / "bundle")
        except ValueError as err:
            raise SystemExit(f"error: {target}: {err}") from None
        print(f"bundle checked: {len(checked['files'])} files, built with "
              f"{', '.join(f'{k} {v}' for k, v in checked['versions'].items())}")
        print(f"serve it: make demo BUNDLE={target / 'bundle'}")
    if found.get("versions_differing"):
        print(f"note: the kernel ran {len(found['versions_differing'])} packages at other versions than the pins "
              f"(see {target / 'job.json'})")
    return target


def fresh_folder(wanted: Path) -> Path:
    """`wanted`, or wanted-2, -3 ... when it holds an earlier pull: a new pull never mixes with or replaces one."""
    folder, n = wanted, 1
    while folder.exists() and any(folder.iterdir()):
        n += 1
        folder = wanted.with_name(f"{wanted.name}-{n}")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --- offline kernels: the pins as a data set -------------------------------------------------


def wheels(user: str, out: Path = BUILD / "kaggle-wheels", python: str = "3.11",
           keras_weights: tuple[str, ...] = ()) -> Path:
    """Download every pinned wheel for Kaggle's Linux Python into `out`, with its dataset-metadata.json.

    Why: competitions and offline kernels have no internet; a data set of wheels attached to the kernel
    lets jobs.py install the same pins with `pip --no-index --find-links`."""
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "-r", str(ROOT / "requirements.txt"),
               "-d", str(out), "--only-binary=:all:", "--platform", "manylinux2014_x86_64",
               "--platform", "manylinux_2_28_x86_64", "--python-version", python, "--implementation", "cp"]
    done = subprocess.run(command)
    if done.returncode:
        raise SystemExit(f"error: pip download exited with {done.returncode}; see its message above")
    for relative in keras_weights:
        from lib.common import keras_weights as weights

        path, why = weights.fetch(relative)
        if why:
            raise SystemExit(f"error: could not fetch {relative}: {why}")
        shutil.copy2(path, out / path.name)
    (out / jobs.WHEELS_MARKER).write_text("wheels for requirements.txt, made by kernels/build.py wheels\n")
    meta = {"title": "brainmri-wheels", "id": f"{user}/brainmri-wheels", "licenses": [{"name": "other"}]}
    (out / "dataset-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{len(list(out.glob('*.whl')))} wheels in {out}; upload: kaggle datasets create -p {out} "
          f"(then attach {user}/brainmri-wheels with --dataset)")
    return out


# --- Colab ------------------------------------------------------------------------------


def colab(job: str, out: Path = BUILD / "colab", profile: str = "gpu") -> Path:
    """Write <out>/<job>.ipynb: the same job as a Colab notebook (lib: kernels/notebook.py)."""
    check_job(job)
    from kernels import notebook

    return notebook.write(job, profile, payload(), out / f"{job}.ipynb")


# --- command line -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write a job kernel under build/kernels/")
    b.add_argument("job", help=f"one of {', '.join(jobs.JOBS)}")
    b.add_argument("--user", required=True, help="your Kaggle user name (owner of the kernel)")
    b.add_argument("--profile", default="gpu", help="kernels/profiles/<profile>.mk: gpu, cpu or test")
    b.add_argument("--out", type=Path, default=BUILD / "kernels")
    b.add_argument("--title", default=None, help="kernel title (default brainmri-<job>; the id follows it)")
    b.add_argument("--public", action="store_true", help="a public kernel (default private)")
    b.add_argument("--no-gpu", action="store_true", help="run on Kaggle's CPU")
    b.add_argument("--tpu", action="store_true", help="run on a TPU (instead of the GPU)")
    b.add_argument("--internet", action="store_true", help="internet on: pip installs the pins, weights download")
    b.add_argument("--machine-shape", default=None, choices=MACHINE_SHAPES, help="accelerator, e.g. NvidiaTeslaT4")
    b.add_argument("--dataset", action="append", default=[], help="OWNER/SLUG data set to attach (repeatable)")
    b.add_argument("--competition", action="append", default=[], help="competition to attach (repeatable)")
    b.add_argument("--kernel-source", action="append", default=[], help="OWNER/SLUG kernel output to attach")
    b.add_argument("--model", action="append", default=[], help="OWNER/MODEL/FRAMEWORK/VARIATION/VERSION to attach")
    b.add_argument("--keyword", action="append", default=[], help="kernel keyword (repeatable)")
    b.add_argument("--data", default="", help="the attached data set to use: the first whose path contains this")
    b.add_argument("--source", default="auto", choices=["auto", "attached", "phantom", "kaggle"],
                   help="where the job's slices come from (auto: the attached data set)")
    for name, text in (("push", "upload and start the built kernel"), ("status", "the kernel's run status"),
                       ("pull", "fetch its output into artifacts/<job>-<date>/ and check the bundle")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--job", default="pipeline")
        s.add_argument("--kernels", type=Path, default=BUILD / "kernels", help="where build wrote the kernel")
        if name == "pull":
            s.add_argument("--out", type=Path, default=ARTIFACTS)
    w = sub.add_parser("wheels", help="the pins as a Kaggle data set for kernels without internet")
    w.add_argument("--user", required=True)
    w.add_argument("--out", type=Path, default=BUILD / "kaggle-wheels")
    w.add_argument("--keras-weights", nargs="*", default=[],
                   help="keras-applications files to add, e.g. efficientnet_v2/efficientnetv2-b0_notop.h5")
    c = sub.add_parser("colab", help="write build/colab/<job>.ipynb")
    c.add_argument("job")
    c.add_argument("--profile", default="gpu")
    c.add_argument("--out", type=Path, default=BUILD / "colab")
    return p


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    if a.command == "build":
        job_args = ["--source", a.source, *(["--data", a.data] if a.data else [])]
        folder = build(a.job, a.out, a.user, a.profile, job_args, title=a.title, is_private=not a.public,
                       enable_gpu=not a.no_gpu and not a.tpu, enable_tpu=a.tpu, enable_internet=a.internet,
                       machine_shape=a.machine_shape, dataset_sources=a.dataset, competition_sources=a.competition,
                       kernel_sources=a.kernel_source, model_sources=a.model, keywords=a.keyword)
        print(f"kernel written to {folder} (make kaggle-push JOB={a.job} uploads and starts it)")
    elif a.command in ("push", "status", "pull"):
        check_job(a.job)
        folder = kernel_folder(a.job, a.kernels)
        {"push": lambda: push(folder), "status": lambda: status(folder),
         "pull": lambda: pull(folder, a.job, a.out)}[a.command]()
    elif a.command == "wheels":
        wheels(a.user, a.out, keras_weights=tuple(a.keras_weights))
    else:
        print(f"notebook written to {colab(a.job, a.out, a.profile)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
