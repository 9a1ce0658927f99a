"""Phase 6, outlining the tumour (stages 07_sam_label and 08_unet_train): the promptable SAM
engines, pseudo-labels, the U-Net / DeepLabV3+ and the fine-tuned LiteMedSAM, and the model registry
(lib.segment.models) that deployment reads instead of the training runner."""
