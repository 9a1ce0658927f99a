"""What every numbered stage shares: its command line, its folders, resuming.

A stage is `python scripts/NN_name.py --in DIR --out DIR [options]`. On Kaggle
the folders default to /kaggle/input and /kaggle/working, so the same script
runs as a kernel unchanged. A stage checkpoints its manifest while it works;
a rerun skips items that finished (their outputs exist) unless --force.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.pool
import os
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from lib.common import manifest
from lib.common.io import as_json, remove_stale_temps, write_json_atomic

KAGGLE_INPUT = Path("/kaggle/input")
KAGGLE_WORKING = Path("/kaggle/working")
LOCAL_ROOT = Path(os.environ.get("BRAINMRI_DATA", "data"))


def default_out(stage: str) -> Path:
    root = KAGGLE_WORKING if KAGGLE_WORKING.is_dir() else LOCAL_ROOT
    return root / stage


def default_in(previous: str) -> Path:
    """The previous stage's folder: this run's, an attached Kaggle data set, or local."""
    candidates = [KAGGLE_WORKING / previous]
    if KAGGLE_INPUT.is_dir():
        candidates += sorted(KAGGLE_INPUT.glob(f"*/{previous}")) + sorted(KAGGLE_INPUT.glob(f"*/*/{previous}"))
    for candidate in candidates:  # a stage folder holds a manifest, or at least its metrics (06, 08)
        if (candidate / manifest.MANIFEST).is_file() or (candidate / "metrics.json").is_file():
            return candidate
    return LOCAL_ROOT / previous


class StageParser(argparse.ArgumentParser):
    """An argument parser that also tidies --out once the arguments are known.

    Why here: parsing is the one step every stage passes through before its work starts, and a stage killed
    mid-write leaves the atomic writer's hidden temporary files in --out, which nothing else ever removes.
    """

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        parsed = super().parse_args(args, namespace)
        remove_stale_temps(parsed.out)
        return parsed


def parser(stage: str, description: str, previous: str | None) -> StageParser:
    """Argument parser with the options every stage has."""
    p = StageParser(
        prog=f"{stage}.py", description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    if previous is not None:
        p.add_argument(
            "--in", dest="in_dir", type=Path, default=default_in(previous),
            help=f"output folder of {previous} (read only, never modified)",
        )
    p.add_argument("--out", type=Path, default=default_out(stage), help="folder this stage writes")
    p.add_argument("--force", action="store_true", help="redo items that a previous run finished")
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes for per-image work (1 = in process)"
    )
    p.add_argument("--verbose", action="store_true",  # acted on by lib.common.quiet, before TensorFlow loads
                   help="also print TensorFlow's own log lines (banners, CUDA probing, graph optimiser, retracing)")
    return p


def check_in_dir(in_dir: Path, out_dir: Path) -> pd.DataFrame:
    """Verify the input folder before any work starts; return its manifest."""
    if in_dir.resolve() == out_dir.resolve():
        raise SystemExit(f"error: --in and --out are the same folder ({in_dir}); a stage never writes into its input")
    try:
        df = manifest.read(in_dir)
    except FileNotFoundError as err:
        raise SystemExit(f"error: {err}") from None
    if df.empty:
        raise SystemExit(f"error: {in_dir / manifest.MANIFEST} lists no images; nothing to do")
    return df


SIGNATURE = "stage.json"
LINEAGE = "lineage.json"
NOT_SETTINGS = ("in_dir", "out", "force", "workers", "verbose")  # where and how a stage ran, not what it computed


def write_lineage(out: Path, stage: str, args: Any, inputs: dict[str, Path | None],
                  **derived: Any) -> dict[str, Any]:
    """Record what made this folder: the stage, its options (plus values it chose, such as 04's k)
    and, nested, the lineage.json of each input folder.

    Why: 09 and the bundle need settings from several stages back (02's size, 03's
    chain). Read from their direct input's lineage, they need no walk back through
    folders that may have moved (a Kaggle kernel's output lands one level deeper).
    """
    options = {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS}
    record = {"stage": stage, "settings": {**options, **derived},
              "inputs": {name: {"path": os.path.relpath(path, out), "lineage": read_lineage(path)}
                         for name, path in inputs.items() if path is not None}}
    record = as_json(record, default=str)
    write_json_atomic(out / LINEAGE, record)
    return record


def read_lineage(folder: Path) -> dict[str, Any] | None:
    """A stage folder's lineage.json, or None when it has none (made before stages wrote one)."""
    return _read_json(Path(folder) / LINEAGE)


def settings_of(lineage: dict[str, Any] | None, stage: str) -> dict[str, Any] | None:
    """The settings `stage` ran with: the record itself or the nearest input folder, depth first."""
    if not lineage:
        return None
    if lineage.get("stage") == stage:
        return lineage["settings"]
    for entry in lineage.get("inputs", {}).values():
        found = settings_of(entry.get("lineage"), stage)
        if found is not None:
            return found
    return None


class Progress:
    """Rows of a stage across runs: what is finished, checkpoints, final write.

    `signature` names what the outputs depend on (options, the input
    manifest's hash). Earlier rows are reused only when it is unchanged, so a
    rerun after a new seed or size never mixes old and new outputs.
    """

    def __init__(self, out_dir: Path, force: bool, signature: dict[str, Any], checkpoint_every: int = 50):
        self.out_dir = out_dir
        self.checkpoint_every = checkpoint_every
        signature = as_json(signature, default=str)
        stale = _read_json(out_dir / SIGNATURE) != signature
        if stale and not force and manifest.read_partial(out_dir) is not None:
            print(f"{out_dir}: inputs or options changed since the last run; redoing every item")
        previous = None if (force or stale) else manifest.read_partial(out_dir)
        write_json_atomic(out_dir / SIGNATURE, signature)
        self.previous: dict[str, dict[str, str]] = (
            {} if previous is None else {row["id"]: row for row in previous.to_dict("records")}
        )
        self.rows: dict[str, dict[str, Any]] = {}
        self._since_checkpoint = 0

    def finished(self, item_id: str, outputs: Iterable[Path] = ()) -> dict[str, str] | None:
        """The earlier row for `item_id` if it ended ok and its outputs still exist.

        A reused row is kept, so checkpoints stay complete across reruns.
        """
        row = self.previous.get(item_id)
        if row is None or row.get("status") != "ok" or not all(Path(p).is_file() for p in outputs):
            return None
        self.rows[item_id] = row
        return row

    def add(self, row: dict[str, Any]) -> None:
        self.rows[str(row["id"])] = row
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.checkpoint_every:
            manifest.write(self.frame(), self.out_dir, partial=True)
            self._since_checkpoint = 0

    def frame(self) -> pd.DataFrame:
        return manifest.frame(list(self.rows.values()))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def imap(
    fn: Callable[[Any], dict[str, Any]], items: list[Any], workers: int, desc: str
) -> Iterator[dict[str, Any]]:
    """Apply `fn` to items in `workers` processes, in order, with a progress bar."""
    bar = dict(total=len(items), desc=desc, unit="img", mininterval=1.0, dynamic_ncols=True)
    if workers <= 1 or len(items) < 8:
        yield from tqdm(map(fn, items), **bar)
        return
    # A child forked while OpenCV's thread pool is live can deadlock on its first
    # OpenCV call (seen after k-means in the parent); one thread in the parent
    # before forking avoids it, and the parent only waits while workers run.
    import cv2

    cv2.setNumThreads(1)
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with _QuietPool(workers, initializer=_init_worker, context=context) as pool:
        yield from tqdm(pool.imap(fn, items, chunksize=4), **bar)


def require_some_ok(df: pd.DataFrame, out_dir: Path) -> None:
    """Stop with the first reason when every item failed: that is a broken
    set-up (wrong folder, missing model), not a few bad files."""
    failed = df[df["status"] == "error"]
    if len(df) and len(failed) == len(df):
        raise SystemExit(f"error: all {len(df)} items failed (see {out_dir / manifest.MANIFEST}); "
                         f"first: {failed['id'].iloc[0]}: {failed['error'].iloc[0]}")


class _QuietPool(multiprocessing.pool.Pool):
    """A pool whose workers end without a traceback when the stage is stopped.

    Why: a killed stage printed a BrokenPipeError (or KeyboardInterrupt) traceback per worker, which read
    like the cause. The parent says what happened; a worker whose parent is gone just ends."""

    @staticmethod
    def Process(ctx: Any, *args: Any, **kwds: Any) -> Any:  # noqa: N802 - the name Pool calls
        kwds["args"] = (kwds.pop("target"), *kwds.get("args", ()))
        return ctx.Process(*args, target=_quiet_worker, **kwds)


def _quiet_worker(worker: Callable[..., None], *args: Any) -> None:
    """Pool's worker loop; a result pipe broken by the parent's death or an interrupt ends it quietly."""
    try:
        worker(*args)
    except (BrokenPipeError, KeyboardInterrupt):
        raise SystemExit(1) from None


def _init_worker() -> None:
    """Each worker process uses one OpenCV thread: N busy processes already fill N
    cores, and OpenCV's own thread pool on top only adds contention (measured:
    clean at 256 went from 168 to about 247 images/s on 2 cores).

    Ctrl-C reaches the whole process group: each worker ends quietly on its
    KeyboardInterrupt (_quiet_worker) while the parent reports the stop. Workers
    that ignored it instead left the parent to stop them at exit, which hung
    once under load in CI."""
    import cv2

    cv2.setNumThreads(1)


def error_row(row: dict[str, Any], err: Exception, file: str | os.PathLike | None = None) -> dict[str, Any]:
    """Record a per-item failure as data: status error plus a one-line reason.

    With `file` (the item's image) the reason starts with it unless it names it already: an error such as
    "no head in this slice" is of no use without the slice it is about."""
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    if not isinstance(err, (ValueError, OSError)):
        # Unexpected: keep the place it happened, still on one line.
        frame = traceback.extract_tb(err.__traceback__)[-1]
        reason = f"{type(err).__name__} at {Path(frame.filename).name}:{frame.lineno}: {reason}"
    if file is not None and Path(file).name not in reason:
        reason = f"{file}: {reason}"
    return {**row, "status": "error", "error": reason}
