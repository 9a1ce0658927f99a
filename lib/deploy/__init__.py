"""Phase 7, using the models (stage 09_ensemble, predict.py, the demo): the ensemble and its
calibration, the self-contained bundle, the predictor, Grad-CAM.

Top of the phase order; no module here imports a training runner (lib.*.run_*), so a
bundle loads without the code that trained it.
"""
