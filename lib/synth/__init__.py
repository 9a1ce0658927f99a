"""Phase 4, generated slices (stage 05_ddim_train): the place for the diffusion model of issue 30.

Empty for now; it sits between regions and classify so that classifiers may read its samples.
"""
