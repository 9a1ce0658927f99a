# Brain-tumour MRI toolkit: `make all` runs the pipeline, `make test` the tests.
# Both create .venv first (reinstalled only when requirements.txt changes).
#
#   make all                                   # phantom data set, offline
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
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

DATA          ?= data
N             ?= 253
SEED          ?= 0
SIZE          ?= 256
DOWNLOAD_ARGS ?= --source phantom --n $(N) --seed $(SEED)
FORCE         ?=
ENHANCE_ARGS  ?=
CLUSTER_ARGS  ?=
# The default model set keeps `make all` short on a 2-core CPU; add medsam_embed and fusion
# (pretrained LiteMedSAM encoder, ~2 s per slice on 2 cores) or a backbone for the full comparison.
CLASSIFY_ARGS ?= --models cnn,features,metadata
SAM_ARGS      ?= --prompt auto
UNET_ARGS     ?= --masks pseudo --epochs 15 --patience 5
ENSEMBLE_ARGS ?=
# 05's CPU quick profile (about 2 minutes of training on 2 cores); a GPU profile for Kaggle or a lent GPU:
# DDIM_ARGS="--size 64 --epochs 500 --grid-every 50"
DDIM_ARGS     ?= --size 32 --widths 32 64 96 --epochs 60 --samples 32 --grid-every 20
# Folders of true masks 08 trains on besides its pseudo-labels (images/ + masks/ or stage folders),
# and folders it is only scored on; e.g. EXTRA_MASKS=runs/figshare/01_download after `make figshare`.
EXTRA_MASKS   ?=
SCORE_ON      ?=
FIGSHARE      ?= runs/figshare
BUNDLE        ?= artifacts/bundle
CHROMIUM      ?= /usr/bin/chromium

MASK_SOURCES := $(if $(EXTRA_MASKS),--extra-masks $(EXTRA_MASKS)) $(if $(SCORE_ON),--score-on $(SCORE_ON))

.PHONY: all selftrain figshare test test-fast venv bench demo space browser clean-data help
.DELETE_ON_ERROR:

all: $(BUNDLE)/bundle.json $(DATA)/05_ddim_train/metrics.json
	@echo "done: reports in $(DATA)/*/report.html; bundle in $(BUNDLE) (make demo serves it)"

venv: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

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

demo: $(STAMP)
	@test -f $(BUNDLE)/bundle.json || { echo "error: no bundle at $(BUNDLE); run 'make all' first"; exit 1; }
	$(PY) demo/app.py --bundle $(BUNDLE)

space: $(STAMP)
	$(PY) demo/make_space.py --bundle $(BUNDLE) --out build/space

# Debian's Chromium for the browser test (tests/test_browser.py), installed once; it skips without it.
browser:
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
		|| echo "note: could not install Debian's chromium (needs root and apt); the browser test will skip"

test: $(STAMP) browser
	$(PY) -m pytest -q --durations=15 tests

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
