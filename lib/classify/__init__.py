"""Phase 5, tumour or not (stage 06_classify_kfold): the k-fold protocol, the image CNNs and
pretrained backbones, the tabular heads on features and LiteMedSAM embeddings."""
