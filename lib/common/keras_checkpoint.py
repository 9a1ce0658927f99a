"""A Keras training run's checkpoint, written after every epoch so that a killed run resumes.

Why not keras.callbacks.BackupAndRestore alone: it brings back the weights, the optimizer and
the epoch, but not what the other callbacks hold (EarlyStopping's best weights and patience
count, ReduceLROnPlateau's plateau count, the time budget already spent) nor the curves of the
finished epochs, so a resumed run would stop at another epoch and keep other weights than the
uninterrupted run. This checkpoint keeps those too. As lib.common.torch_checkpoint (LiteMedSAM), it
names its run (`identity`: options and a hash of the slices): a run with other options or
slices starts afresh and says so.

Files in the checkpoint folder: epoch-<n>.weights.h5 (model and optimizer, Keras' own format),
best-<n>.npz (EarlyStopping's best weights) and state.json, written last and atomically: it
names the files it belongs to, so a kill while writing leaves the previous epoch's state whole.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from lib.common.io import as_json, write_json_atomic

CHECKPOINT_DIR = "checkpoint"  # in a run's output folder
STATE_FILE = "state.json"
# What each stateful callback carries from epoch to epoch (what its on_train_begin resets).
CARRIED = {"EarlyStopping": ("wait", "best", "best_epoch"),
           "ReduceLROnPlateau": ("wait", "best", "cooldown_counter"),
           "TimeBudget": ("spent",)}


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the run after every epoch; on a rerun of the same run, gives the model and callbacks their state back.

    Use: `restore(model)` before fit, `fit(initial_epoch=epochs_done)`, this callback placed after
    the callbacks it carries (their on_train_begin resets first), `finish()` once the model is saved.
    `history` holds the curves of every epoch, the earlier run's included.
    """

    def __init__(self, folder: Path, identity: dict[str, Any], carried: list[keras.callbacks.Callback],
                 fresh: bool = False) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.identity = as_json(identity, default=str)  # as it reads back
        self.carried = carried
        self.saved = None if fresh else self._read()
        self.history: dict[str, list[float]] = {  # a NaN epoch (diverged loss) was written as null
            k: [math.nan if x is None else x for x in v] for k, v in (self.saved or {}).get("history", {}).items()}

    @property
    def epochs_done(self) -> int:
        """Epochs the earlier run finished (0 without one): fit's initial_epoch."""
        return int(self.saved["epochs_done"]) if self.saved else 0

    @property
    def finished(self) -> bool:
        """Whether the earlier run of these options and slices ran to its end."""
        return bool(self.saved and self.saved.get("finished"))

    @property
    def stopped(self) -> bool:
        """Whether the earlier run's last epoch stopped training (early stopping, time budget): none to add."""
        return bool(self.saved and self.saved.get("stopped"))

    def _read(self) -> dict[str, Any] | None:
        path = self.folder / STATE_FILE
        if not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            print(f"{path}: unreadable ({type(err).__name__}); training afresh")
            return None
        if saved.get("identity") != self.identity:
            print(f"{path}: written by a run with other options or slices; training afresh")
            return None
        return saved

    def restore(self, model: keras.Model) -> None:
        """The saved weights and optimizer state into `model` (compiled, not yet trained)."""
        if not self.saved or self.finished:
            return
        model.optimizer.build(model.trainable_variables)
        model.load_weights(self.folder / self.saved["weights"])
        print(f"resuming after epoch {self.epochs_done} ({self.folder})", flush=True)

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not self.saved:
            return
        for callback in self.carried:
            for name, value in self.saved["callbacks"].get(type(callback).__name__, {}).items():
                setattr(callback, name, value)
            if isinstance(callback, keras.callbacks.EarlyStopping) and self.saved.get("best_weights"):
                with np.load(self.folder / self.saved["best_weights"]) as best:
                    callback.best_weights = [best[f"arr_{i}"] for i in range(len(best.files))]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.folder.mkdir(parents=True, exist_ok=True)
        weights = f"epoch-{epoch + 1}.weights.h5"
        self.model.save_weights(self.folder / weights, overwrite=True)
        best = self._save_best_weights(epoch)
        self._write(epochs_done=epoch + 1, weights=weights, best_weights=best, stopped=bool(self.model.stop_training),
                    callbacks={type(c).__name__: {a: _plain(getattr(c, a)) for a in CARRIED.get(type(c).__name__, ())}
                               for c in self.carried})

    def _save_best_weights(self, epoch: int) -> str | None:
        stopping = [c for c in self.carried if isinstance(c, keras.callbacks.EarlyStopping)]
        if not stopping or stopping[0].best_weights is None:
            return None
        name = f"best-{epoch + 1}.npz"
        np.savez(self.folder / name, *stopping[0].best_weights)
        return name

    def finish(self) -> None:
        """Mark the run finished (its model is saved elsewhere) and drop the weight files."""
        self._write(epochs_done=len(next(iter(self.history.values()), [])), finished=True)

    def _write(self, **state: Any) -> None:
        write_json_atomic(self.folder / STATE_FILE, {"identity": self.identity, "history": self.history, **state})
        kept = {state.get("weights"), state.get("best_weights")}
        for old in [*self.folder.glob("epoch-*.weights.h5"), *self.folder.glob("best-*.npz")]:
            if old.name not in kept:
                old.unlink()


class TimeBudget(keras.callbacks.Callback):
    """Stops training after the epoch that ends past `minutes` of wall time.

    Why: a Kaggle kernel or a lent GPU gives a fixed time, and a run killed at its limit keeps
    nothing; stopped here, EarlyStopping still restores the best weights and the test part is scored.
    `spent` (seconds) is carried by a resumed run's checkpoint: the budget spans both runs.
    """

    def __init__(self, minutes: float) -> None:
        super().__init__()
        self.seconds = 60.0 * float(minutes)
        self.spent = 0.0
        self.clock = 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.clock = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        self.spent, self.clock = self.spent + now - self.clock, now
        if self.spent > self.seconds:
            self.model.stop_training = True


def _plain(value: Any) -> Any:
    """A callback attribute as JSON holds it: numpy and backend scalars become Python floats."""
    return value if value is None or isinstance(value, (int, str)) else float(value)
