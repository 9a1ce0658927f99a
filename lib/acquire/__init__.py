"""Phase 1, getting slices (stage 01_download): Kaggle download, folder import, the phantom generator."""
