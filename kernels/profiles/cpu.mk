# CPU profile (the default): `make all` on the phantom set in about 10 minutes on 2 cores.
# Each setting can still be given on the command line, e.g. make all CLASSIFY_ARGS="--models features".
# The default model set keeps `make all` short; add medsam_embed and fusion (pretrained LiteMedSAM
# encoder) or a backbone for the full comparison.
CLASSIFY_ARGS ?= --models cnn,features,metadata
SAM_ARGS      ?= --prompt auto
UNET_ARGS     ?= --masks pseudo --epochs 15 --patience 5
ENSEMBLE_ARGS ?=
# 05's CPU quick profile (about 2 minutes of training on 2 cores).
DDIM_ARGS     ?= --size 32 --widths 32 64 96 --epochs 60 --samples 32 --grid-every 20
# What the classify and segment jobs (kernels/jobs.py) run on the side they do not emphasise.
CLASSIFY_QUICK_ARGS ?= --models cnn,features,metadata
UNET_QUICK_ARGS     ?= --masks pseudo --epochs 15 --patience 5
