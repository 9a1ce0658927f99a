"""Packaging of stages as Kaggle kernels."""
