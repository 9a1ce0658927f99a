"""A PyTorch training run's checkpoint, written after every epoch so that a killed run resumes.

Why: 08 --architecture litemedsam takes hours on a CPU (10-25 min per figshare
epoch) and a Kaggle session can end mid-run; losing every finished epoch to a
crash is what the brief's "a long job can resume" forbids.
The checkpoint names the run it belongs to (`identity`: options and a hash of
the slices and masks). A rerun with a different identity starts afresh and
says so, so an old run's weights never leak into a new one. Written
atomically (a temporary file, then a rename): a kill during the write leaves
the previous epoch's checkpoint intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lib.common.io import as_json

CHECKPOINT_FILE = "checkpoint.pt"


class TrainingCheckpoint:
    """checkpoint.pt in a run's folder: `load` what a matching earlier run saved, `save` after each epoch."""

    def __init__(self, folder: Path | None, identity: dict[str, Any], fresh: bool = False) -> None:
        self.path = None if folder is None else Path(folder) / CHECKPOINT_FILE
        self.identity = as_json(identity, default=str)  # as it reads back
        self.fresh = fresh

    def load(self) -> dict[str, Any] | None:
        """The saved state of this same run, or None (no folder or file, `fresh`, or another run's file)."""
        if self.path is None or self.fresh or not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - a damaged file must not stop a new run
            print(f"{self.path}: unreadable ({type(err).__name__}); training afresh")
            return None
        if saved.get("identity") != self.identity:
            print(f"{self.path}: written by a run with other options or slices; training afresh")
            return None
        return saved["state"]

    def save(self, state: dict[str, Any]) -> None:
        """Replace the checkpoint with `state` (atomically); nothing is written without a folder."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        torch.save({"identity": self.identity, "state": state}, partial)
        partial.replace(self.path)
