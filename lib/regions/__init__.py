"""Phase 3, where the tissue classes and tumour candidates are (stage 04_cluster): k-means regions,
candidate boxes and the handcrafted features the classifiers read."""
