"""Phase 4, generated slices (stage 05_ddim_train): a DDIM of brain slices and how real its samples are.

It sits between regions and classify so that classifiers may read its samples.
"""
