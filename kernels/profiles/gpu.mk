# GPU profile: Kaggle's T4 / P100, Colab, or any CUDA GPU (make all PROFILE=gpu).
# ImageNet backbones need their weights: internet on, or the Keras cache filled (docs/kaggle.md).
CLASSIFY_ARGS ?= --models cnn,features,medsam_embed,fusion,metadata,efficientnetv2b0 --weights imagenet \
                 --image-size 224 --finetune-epochs 10
SAM_ARGS      ?= --prompt auto
# The fine-tuned LiteMedSAM: the best segmenter measured on outside sources (docs/results.md).
UNET_ARGS     ?= --masks pseudo --architecture litemedsam --epochs 40 --patience 8 --time-budget 120
ENSEMBLE_ARGS ?=
DDIM_ARGS     ?= --size 64 --epochs 500 --samples 256 --grid-every 50 --time-budget 240
CLASSIFY_QUICK_ARGS ?= --models cnn,features,metadata
UNET_QUICK_ARGS     ?= --masks pseudo --epochs 15 --patience 5
