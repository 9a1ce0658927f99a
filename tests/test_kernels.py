"""Kaggle job kernels and Colab notebooks: built, validated, pushed and pulled (network stubbed), and run end to end
under a simulated Kaggle root on a small attached phantom data set."""

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from kernels import build, jobs, notebook
from tests.conftest import ROOT
from tests.test_pipeline import stage

ISSUE_FIELDS = ("id", "title", "code_file", "language", "kernel_type", "is_private", "enable_gpu", "enable_internet",
                "dataset_sources", "competition_sources", "kernel_sources", "model_sources", "machine_shape")


# --- finding what a kernel was given --------------------------------------------------------------


def tree(root: Path, *folders: str, files: tuple[str, ...] = ()) -> None:
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for file in files:
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        (root / file).write_text("x")


def test_inputs_are_found_wherever_kaggle_mounts_them(tmp_path: Path) -> None:
    tree(tmp_path, "datasets/me/navoneel/brain_tumor_dataset/yes", "datasets/me/navoneel/brain_tumor_dataset/no",
         "figshare/data/images", "figshare/data/masks", "lgg/images", "lgg/masks",
         files=("wheels/numpy-2.4.6-cp311-none-any.whl", f"wheels/{jobs.WHEELS_MARKER}"))
    found = jobs.find_inputs(tmp_path)
    assert found.classes == tmp_path / "datasets/me/navoneel/brain_tumor_dataset"
    assert sorted(found.masks) == [tmp_path / "figshare/data", tmp_path / "lgg"]
    assert found.wheels == tmp_path / "wheels"
    tree(tmp_path, "other/yes", "other/no")  # two class-folder sets: --data picks one, else the shallowest
    assert jobs.find_inputs(tmp_path).classes == tmp_path / "other"
    assert jobs.find_inputs(tmp_path, hint="navoneel").classes.name == "brain_tumor_dataset"
    with pytest.raises(SystemExit, match="no data set with class folders"):
        jobs.choose_source("auto", jobs.find_inputs(tmp_path / "lgg"), tmp_path / "lgg")


def test_attached_imagenet_files_are_linked_where_keras_looks(tmp_path: Path) -> None:
    tree(tmp_path, files=(f"wheels/{jobs.WHEELS_MARKER}", "wheels/efficientnetv2-b0_notop.h5"))
    found = jobs.find_inputs(tmp_path)
    assert found.keras_files == [tmp_path / "wheels" / "efficientnetv2-b0_notop.h5"]
    home = jobs.keras_home(found.keras_files)
    linked = home / "models" / "efficientnetv2-b0_notop.h5"
    assert linked.is_symlink() and linked.resolve() == found.keras_files[0].resolve()
    shutil.rmtree(home)


def test_pins_install_from_pypi_online_from_attached_wheels_offline_and_differences_are_named(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"pytest=={jobs.installed('pytest')}\nnumpy==0.0.1  # an old pin\nno-such-package==1.0\n")
    assert jobs.pins(requirements) == {"pytest": jobs.installed("pytest"), "numpy": "0.0.1", "no-such-package": "1.0"}
    differ = jobs.version_report(requirements)
    assert set(differ) == {"numpy", "no-such-package"} and differ["no-such-package"]["installed"] is None
    online = jobs.install_command(requirements, internet=True, wheels=tmp_path)
    offline = jobs.install_command(requirements, internet=False, wheels=tmp_path)
    assert "--no-index" not in online and offline[-3:] == ["--no-index", "--find-links", str(tmp_path)]
    assert jobs.install_command(requirements, internet=False, wheels=None) is None


def test_a_job_runs_the_makefiles_targets_with_its_profile_and_overrides(tmp_path: Path) -> None:
    found = jobs.Found(classes=tmp_path / "in", masks=[tmp_path / "figshare"])
    planned = {}
    for name, job in jobs.JOBS.items():
        command = jobs.make_command(job, "test", tmp_path / "data", tmp_path / "bundle", found, "attached")
        dry = subprocess.run([command[0], "-n", *command[1:]], capture_output=True, text=True, timeout=60)
        assert dry.returncode == 0, dry.stderr
        planned[name] = dry.stdout
    assert f"--source folder --path {tmp_path / 'in'}" in planned["pipeline"]
    assert f"--extra-masks {tmp_path / 'figshare'}" in planned["pipeline"]
    assert "05_ddim_train.py" in planned["pipeline"] and "05_ddim_train.py" not in planned["classify"]
    assert "09_ensemble.py" not in planned["ddim"] and "06_classify_kfold.py" not in planned["ddim"]
    models = {name: next(line for line in planned[name].splitlines() if "06_classify_kfold.py" in line)
              for name in ("pipeline", "segment")}
    assert "--models cnn,features,metadata" in models["pipeline"]  # test.mk's CLASSIFY_ARGS
    assert "--models features,metadata" in models["segment"]  # its CLASSIFY_QUICK_ARGS


# --- kernel-metadata.json -------------------------------------------------------------------------


def test_every_documented_metadata_field_is_settable_and_checked(tmp_path: Path) -> None:
    build.main(["build", "segment", "--user", "me", "--out", str(tmp_path), "--title", "Brain MRI segment job",
                "--public", "--internet", "--machine-shape", "NvidiaTeslaT4", "--dataset", "me/phantoms",
                "--competition", "some-competition", "--kernel-source", "me/earlier", "--model",
                "me/litemedsam/pyTorch/default/1", "--keyword", "mri"])
    folder = tmp_path / "brainmri-segment"
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert set(ISSUE_FIELDS) <= set(meta)
    assert meta["id"] == "me/brain-mri-segment-job" and meta["title"] == "Brain MRI segment job"
    assert (folder / meta["code_file"]).is_file() and meta["language"] == "python" and meta["kernel_type"] == "script"
    assert meta["is_private"] is False and meta["enable_gpu"] is True and meta["enable_internet"] is True
    assert meta["dataset_sources"] == ["me/phantoms"] and meta["competition_sources"] == ["some-competition"]
    assert meta["kernel_sources"] == ["me/earlier"] and meta["model_sources"] == ["me/litemedsam/pyTorch/default/1"]
    assert meta["machine_shape"] == "NvidiaTeslaT4" and build.validate(meta, folder) == []
    assert "'--internet'" in (folder / meta["code_file"]).read_text()  # internet on: the kernel installs the pins
    broken = {"id": "no-slash", "title": "x", "code_file": "missing.py", "language": "julia", "kernel_type": "app",
              "is_private": "true", "enable_tpu": True, "dataset_sources": "me/a",
              "model_sources": ["not a slug"], "machine_shape": "NvidiaK80"}
    for key, value in broken.items():
        problems = build.validate({**meta, key: value}, folder)
        assert problems and any(key in p or (key == "enable_tpu" and "exclude" in p) for p in problems), key


def fake_bundle(folder: Path) -> Path:
    """A bundle's shape: bundle.json naming model files, and those files."""
    (folder / "segmenter").mkdir(parents=True)
    (folder / "segmenter" / "model.keras").write_text("weights")
    (folder / "classifiers").mkdir()
    (folder / "classifiers" / "fold0.joblib").write_text("model")
    (folder / "bundle.json").write_text(json.dumps({
        "versions": {"keras": "3"}, "classifier": {"members": {"features": {"folds": ["classifiers/fold0.joblib"]}}},
        "segmenter": {"path": "segmenter/model.keras"}}))
    return folder


def test_push_validates_then_uploads_and_pull_checks_the_bundle(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    made = fake_bundle(tmp_path / "made")

    def kernels_output(kernel, path, force=False, quiet=True):
        calls.append(("output", kernel))
        shutil.copytree(made, Path(path) / "bundle", dirs_exist_ok=True)
        (Path(path) / "job.json").write_text(json.dumps({"versions_differing": {}}))
        return [], ""

    api = types.SimpleNamespace(
        kernels_push=lambda folder: calls.append(("push", folder)) or types.SimpleNamespace(error="", url="u"),
        kernels_status=lambda kernel: types.SimpleNamespace(status="complete", failure_message=""),
        kernels_output=kernels_output)
    monkeypatch.setitem(sys.modules, "kaggle", types.SimpleNamespace(api=api))
    folder = build.build("classify", tmp_path / "k", "me")
    assert build.push(folder) == "u" and calls == [("push", str(folder))]
    assert build.status(folder) == "complete"
    pulled = build.pull(folder, "classify", tmp_path / "artifacts")
    assert pulled.parent == tmp_path / "artifacts" and pulled.name.startswith("classify-")
    assert (pulled / "bundle" / "bundle.json").is_file() and calls[-1] == ("output", "me/brainmri-classify")
    (made / "segmenter" / "model.keras").unlink()  # a cut-short output
    with pytest.raises(SystemExit, match="1 of the 2 model files bundle.json names are missing"):
        build.pull(folder, "classify", tmp_path / "artifacts")  # into a new folder: the first pull stays whole
    assert (pulled / "bundle" / "segmenter" / "model.keras").is_file()
    assert len(list((tmp_path / "artifacts").iterdir())) == 2
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    (folder / "kernel-metadata.json").write_text(json.dumps({**meta, "enable_gpu": "yes"}))
    with pytest.raises(SystemExit, match="enable_gpu"):
        build.push(folder)  # refused here, before any upload
    assert [c for c in calls if c[0] == "push"] == [("push", str(folder))]


@pytest.mark.slow
def test_push_without_a_token_says_how_to_get_one(tmp_path: Path) -> None:
    folder = build.build("ddim", tmp_path / "k", "me")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env["HOME"] = str(tmp_path)  # no ~/.kaggle here
    code = (f"import sys, pathlib; sys.path.insert(0, {str(ROOT)!r}); from kernels import build; "
            f"build.push(pathlib.Path({str(folder)!r}))")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "KAGGLE_API_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_unknown_job_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="jobs: pipeline, classify, segment, ddim"):
        build.build("everything", tmp_path, "me")
    assert list(tmp_path.iterdir()) == []


# --- end to end under a simulated Kaggle root --------------------------------------------------------


@pytest.fixture(scope="module")
def phantom_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small phantom data set as a Kaggle data set looks: class folders yes/ and no/."""
    root = tmp_path_factory.mktemp("phantom_dataset")
    stage("01_download.py", "--source", "phantom", "--n", "16", "--seed", "4", "--out", str(root / "01"))
    return root / "01" / "raw"


def run_kernel(job: str, dataset: Path, root: Path) -> Path:
    """Build the job's kernel, mount `dataset` as Kaggle does, run the kernel file there; the working folder."""
    folder = build.build(job, root / "kernels", "me", profile="test", dataset_sources=["me/brain-phantoms"])
    kaggle = root / "kaggle"
    shutil.copytree(dataset, kaggle / "input" / "datasets" / "me" / "brain-phantoms")
    (kaggle / "working").mkdir(parents=True)
    env = {**os.environ, "KAGGLE_ROOT": str(kaggle), "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, str(folder / f"{build.slug(job)}.py")], cwd=kaggle / "working", env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout[-1500:], done.stderr[-1500:])
    assert "every pinned package at its pin" in done.stdout or "differ from the pins" in done.stdout
    return kaggle / "working"


@pytest.mark.slow
@pytest.mark.parametrize("job", ["pipeline", "classify", "segment"])
def test_a_job_kernel_ends_with_a_bundle_predict_accepts(job: str, phantom_dataset: Path, tmp_path: Path) -> None:
    working = run_kernel(job, phantom_dataset, tmp_path)
    record = json.loads((working / "job.json").read_text())
    assert record["job"] == job and record["source"] == "attached" and record["returncode"] == 0
    assert record["data"].endswith("brain-phantoms")
    slice_path = next((phantom_dataset / "yes").iterdir())
    out = tmp_path / "predictions.csv"
    stage("predict.py", "--bundle", str(working / "bundle"), "--in", str(slice_path), "--out", str(out))
    rows = pd.read_csv(out)
    assert len(rows) == 1 and rows["prob_tumor"].between(0, 1).all()
    assert (working / "data" / "05_ddim_train").is_dir() == (job == "pipeline")


@pytest.mark.slow
def test_the_ddim_job_kernel_trains_and_samples(phantom_dataset: Path, tmp_path: Path) -> None:
    working = run_kernel("ddim", phantom_dataset, tmp_path)
    found = json.loads((working / "data" / "05_ddim_train" / "metrics.json").read_text())
    assert found["epochs_run"] == 1 and (working / "data" / "05_ddim_train" / "samples" / "manifest.csv").is_file()
    assert not (working / "bundle").exists()


# --- Colab ---------------------------------------------------------------------------------------


def test_every_job_builds_a_valid_colab_notebook(tmp_path: Path) -> None:
    for job in jobs.JOBS:
        path = build.colab(job, tmp_path)
        book = nbformat.read(str(path), as_version=4)
        nbformat.validate(book)
        assert book.cells[0].cell_type == "markdown" and "not for diagnosis" in book.cells[0].source
        assert f"JOB = {job!r}" in book.cells[1].source
    assert "colab.research.google.com" in (ROOT / "docs" / "kaggle.md").read_text()  # the "open in Colab" line


@pytest.mark.slow
def test_the_notebook_runs_cell_by_cell_on_phantoms(phantom_dataset: Path, tmp_path: Path) -> None:
    path = build.colab("ddim", tmp_path / "colab")
    code = [cell.source for cell in nbformat.read(str(path), as_version=4).cells if cell.cell_type == "code"]
    script = tmp_path / "cells.py"
    script.write_text("\n\n".join(code))  # one namespace, the cells in order, as Run all does
    env = {**os.environ, "BRAINMRI_PROFILE": "test", "BRAINMRI_DATA": str(phantom_dataset),
           "BRAINMRI_ROOT": str(tmp_path / "colab_run"), "BRAINMRI_SKIP_INSTALL": "1", "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, (done.stdout[-1500:], done.stderr[-1500:])
    assert "results zipped at" in done.stdout and (tmp_path / "colab_run" / "brainmri-ddim.zip").is_file()
    assert (tmp_path / "colab_run" / "working" / "data" / "05_ddim_train" / "metrics.json").is_file()
    assert notebook.NAVONEEL in code[3]  # the Kaggle route is the default one
