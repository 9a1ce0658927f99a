# Test profile: every stage for seconds on a handful of slices (tests/test_jobs.py). Numbers mean nothing.
N             ?= 16
SIZE          ?= 96
CLASSIFY_ARGS ?= --models cnn,features,metadata --folds 3 --epochs 1 --image-size 32
SAM_ARGS      ?= --prompt auto
UNET_ARGS     ?= --masks pseudo --image-size 32 --epochs 1 --batch-size 4
ENSEMBLE_ARGS ?=
DDIM_ARGS     ?= --size 16 --widths 8 16 --block-depth 1 --epochs 1 --samples 4 --steps 3 --kid-features none
CLASSIFY_QUICK_ARGS ?= --models features,metadata --folds 3
UNET_QUICK_ARGS     ?= --masks pseudo --image-size 32 --epochs 1 --batch-size 4
