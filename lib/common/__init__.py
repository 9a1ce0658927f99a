"""What every phase shares: file I/O, manifests, stage folders, reports, plots, metrics, splits,
duplicate groups, checkpoints, the pretrained LiteMedSAM, and the one place that orders the frameworks.

Bottom of the phase order: nothing here imports another lib package.
"""
