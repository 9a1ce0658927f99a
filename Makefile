# Brain-tumour MRI toolkit: `make all` runs the pipeline, `make test` the tests.
# Both create .venv first (reinstalled only when requirements.txt changes).
#
#   make all                                   # phantom data set, offline
#   make all PROFILE=gpu                       # GPU settings (kernels/profiles/gpu.mk): Kaggle, Colab, a local GPU
#   make all N=500                             # a larger phantom set
#   make all DATA=runs/navoneel DOWNLOAD_ARGS="--source folder --path ../shared/data/navoneel"
#   make all DATA=runs/kaggle DOWNLOAD_ARGS="--source kaggle"
#   make all EXTRA_MASKS=../shared/data/figshare_seg       # 08 also trains on true masks (make figshare: Kaggle)
#   make all FORCE=--force                     # redo every item (after a code change)
#   make demo                                  # serve artifacts/bundle on http://127.0.0.1:7860
#   make test-fast                             # the tests not marked slow, for the edit loop
#   make selftrain                             # pseudo-labels round 2: 07 prompted by 08's U-Net, 08 again
#   make figshare                              # Cheng's figshare slices + true masks from Kaggle (CC BY 4.0)

PYTHON ?= python3
VENV   := .venv
# SYSTEM_PYTHON=python3 runs the stages with that interpreter and its packages, no .venv: Kaggle kernels
# and Colab notebooks (kernels/jobs.py) install the pins into their own Python instead.
ifdef SYSTEM_PYTHON
PY     := $(SYSTEM_PYTHON)
STAMP  :=
else
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
endif

# Stage settings come from a profile: cpu (default), gpu (Kaggle, Colab, any CUDA GPU) or test.
PROFILE ?= cpu
ifeq ($(wildcard kernels/profiles/$(PROFILE).mk),)
$(error no profile $(PROFILE): choose one of $(basename $(notdir $(wildcard kernels/profiles/*.mk))))
endif
include kernels/profiles/$(PROFILE).mk

DATA          ?= data
N             ?= 253
SEED          ?= 0
SIZE          ?= 256
DOWNLOAD_ARGS ?= --source phantom --n $(N) --seed $(SEED)
FORCE         ?=
ENHANCE_ARGS  ?=
CLUSTER_ARGS  ?=
# Folders of true masks 08 trains on besides its pseudo-labels (images/ + masks/ or stage folders),
# and folders it is only scored on; e.g. EXTRA_MASKS=runs/figshare/01_download after `make figshare`.
EXTRA_MASKS   ?=
SCORE_ON      ?=
FIGSHARE      ?= runs/figshare
BUNDLE        ?= artifacts/bundle
JOB           ?= pipeline
KAGGLE_USER   ?=
KAGGLE_ARGS   ?=
KERNEL_PROFILE ?= gpu
CHROMIUM      ?= /usr/bin/chromium

MASK_SOURCES := $(if $(EXTRA_MASKS),--extra-masks $(EXTRA_MASKS)) $(if $(SCORE_ON),--score-on $(SCORE_ON))

.PHONY: all selftrain figshare test test-fast venv bench demo space browser clean-data help \
	kaggle-build kaggle-push kaggle-status kaggle-pull kaggle-wheels colab
.DELETE_ON_ERROR:

all: $(BUNDLE)/bundle.json $(DATA)/05_ddim_train/metrics.json
	@echo "done: reports in $(DATA)/*/report.html; bundle in $(BUNDLE) (make demo serves it)"

venv: $(STAMP)

ifndef SYSTEM_PYTHON
$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@
endif

# Stage folders are the contract: each rule reads the previous manifest.
$(DATA)/01_download/manifest.csv: | $(STAMP)
	$(PY) scripts/01_download.py --out $(DATA)/01_download $(DOWNLOAD_ARGS) $(FORCE)

$(DATA)/02_clean/manifest.csv: $(DATA)/01_download/manifest.csv | $(STAMP)
	$(PY) scripts/02_clean.py --in $(DATA)/01_download --out $(DATA)/02_clean --size $(SIZE) $(FORCE)

$(DATA)/03_enhance/manifest.csv: $(DATA)/02_clean/manifest.csv | $(STAMP)
	$(PY) scripts/03_enhance.py --in $(DATA)/02_clean --out $(DATA)/03_enhance $(ENHANCE_ARGS) $(FORCE)

$(DATA)/04_cluster/manifest.csv: $(DATA)/03_enhance/manifest.csv | $(STAMP)
	$(PY) scripts/04_cluster.py --in $(DATA)/03_enhance --out $(DATA)/04_cluster $(CLUSTER_ARGS) $(FORCE)

$(DATA)/05_ddim_train/metrics.json: $(DATA)/02_clean/manifest.csv | $(STAMP)
	$(PY) scripts/05_ddim_train.py --in $(DATA)/02_clean --out $(DATA)/05_ddim_train $(DDIM_ARGS) $(FORCE)

$(DATA)/06_classify_kfold/metrics.json: $(DATA)/04_cluster/manifest.csv | $(STAMP)
	$(PY) scripts/06_classify_kfold.py --in $(DATA)/04_cluster --out $(DATA)/06_classify_kfold $(CLASSIFY_ARGS) $(FORCE)

$(DATA)/07_sam_label/manifest.csv: $(DATA)/04_cluster/manifest.csv | $(STAMP)
	$(PY) scripts/07_sam_label.py --in $(DATA)/04_cluster --out $(DATA)/07_sam_label $(SAM_ARGS) $(FORCE)

$(DATA)/08_unet_train/metrics.json: $(DATA)/07_sam_label/manifest.csv | $(STAMP)
	$(PY) scripts/08_unet_train.py --in $(DATA)/07_sam_label --out $(DATA)/08_unet_train $(UNET_ARGS) $(MASK_SOURCES)

$(BUNDLE)/bundle.json: $(DATA)/06_classify_kfold/metrics.json $(DATA)/08_unet_train/metrics.json | $(STAMP)
	$(PY) scripts/09_ensemble.py --in $(DATA)/06_classify_kfold --unet $(DATA)/08_unet_train \
		--out $(DATA)/09_ensemble --bundle $(BUNDLE) $(ENSEMBLE_ARGS)

# Self-training, round 2 (optional): the round-1 U-Net draws the SAM prompt boxes, then 08 trains again.
selftrain: $(DATA)/08_round2/metrics.json

$(DATA)/07_round2/manifest.csv: $(DATA)/08_unet_train/metrics.json | $(STAMP)
	$(PY) scripts/07_sam_label.py --in $(DATA)/04_cluster --out $(DATA)/07_round2 --prompt unet \
		--unet $(DATA)/08_unet_train $(FORCE)

$(DATA)/08_round2/metrics.json: $(DATA)/07_round2/manifest.csv | $(STAMP)
	$(PY) scripts/08_unet_train.py --in $(DATA)/07_round2 --out $(DATA)/08_round2 $(UNET_ARGS) $(MASK_SOURCES)

# Cheng's figshare set (3064 slices with true masks) from Kaggle, for EXTRA_MASKS=$(FIGSHARE)/01_download.
figshare: $(FIGSHARE)/01_download/manifest.csv

$(FIGSHARE)/01_download/manifest.csv: | $(STAMP)
	$(PY) scripts/01_download.py --source figshare --out $(FIGSHARE)/01_download

# Kaggle and Colab (docs/kaggle.md): a whole job per kernel, JOB = pipeline, classify, segment or ddim.
#   make kaggle-build JOB=pipeline KAGGLE_USER=me KAGGLE_ARGS="--dataset navoneel/brain-mri-images-for-brain-tumor-detection --internet"
kaggle-build: $(STAMP)
	@test -n "$(KAGGLE_USER)" || { echo "error: give KAGGLE_USER=<your Kaggle user name>"; exit 1; }
	$(PY) kernels/build.py build $(JOB) --user $(KAGGLE_USER) --profile $(KERNEL_PROFILE) $(KAGGLE_ARGS)

kaggle-push kaggle-status kaggle-pull: kaggle-%: $(STAMP)
	$(PY) kernels/build.py $* --job $(JOB)

kaggle-wheels: $(STAMP)
	@test -n "$(KAGGLE_USER)" || { echo "error: give KAGGLE_USER=<your Kaggle user name>"; exit 1; }
	$(PY) kernels/build.py wheels --user $(KAGGLE_USER)

colab: $(STAMP)
	$(PY) kernels/build.py colab $(JOB) --profile $(KERNEL_PROFILE)

demo: $(STAMP)
	@test -f $(BUNDLE)/bundle.json || { echo "error: no bundle at $(BUNDLE); run 'make all' first"; exit 1; }
	$(PY) demo/app.py --bundle $(BUNDLE)

# The Hugging Face Space folder (docs/demo.md). BUNDLE=DIR on the command line ships that bundle; without it,
# make_space.py takes artifacts/bundle, or a real-data bundle under runs/ when artifacts/bundle is phantom-trained.
space: $(STAMP)
	$(PY) demo/make_space.py $(if $(filter file,$(origin BUNDLE)),,--bundle $(BUNDLE)) --out build/space

# Debian's Chromium for the browser test (tests/test_browser.py), installed once; it skips without it.
browser:
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
		|| echo "note: could not install Debian's chromium (needs root and apt); the browser test will skip"

test: $(STAMP) browser
	$(PY) -m pytest -q --durations=15 tests
	@if [ -f build/test-artifacts/demo_browser.png ]; then \
	  echo "the browser test's screenshot: build/test-artifacts/demo_browser.png"; fi

# The edit loop: every test not marked slow (no stage runs, no subprocesses), about 2 minutes.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --durations=5 tests

bench: $(STAMP)
	$(PY) -m pip install --quiet -r bench/requirements.txt
	$(PY) bench/bench_clean.py
	$(PY) bench/bench_enhance.py
	$(PY) bench/bench_cluster.py
	$(PY) bench/bench_candidates.py
	$(PY) bench/bench_classify.py
	$(PY) bench/bench_predict.py
	$(PY) bench/bench_demo.py
	$(PY) bench/bench_medsam_tuning.py
	$(PY) bench/bench_medsam_speed.py

clean-data:
	rm -rf $(DATA)

help:
	@sed -n '1,14p' Makefile
