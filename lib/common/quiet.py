"""A normal run prints its own progress and result lines only; `--verbose` brings TensorFlow's back.

Why: every run that loads TensorFlow printed its absl and oneDNN banners (twice), `failed call to cuInit`
on machines without a GPU and the graph optimiser's `remapper failed`: harmless lines that read like
failures, among which a real one is easy to miss. Scripts call `quiet()` first thing, before they import
the lib modules that load TensorFlow, since TensorFlow reads its log level only as it loads:

- TF_CPP_MIN_LOG_LEVEL=3 silences TensorFlow's C++ logging from then on (cuInit, remapper, CPU features);
- the `tensorflow` logger at ERROR drops Python-side warnings such as `tf.function retracing`;
- the banners the libraries log while they load come before any level applies (absl prints everything
  until it is initialised), so `import tensorflow` runs with stderr captured and those log lines dropped;
  every other line of it, a Python warning or an error, is passed on.

A TF_CPP_MIN_LOG_LEVEL the user set is kept. TF_ENABLE_ONEDNN_OPTS is left alone: it changes numerics.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

VERBOSE = "--verbose"
MUTED = "tensorflow"  # the package whose loading prints the banners
# absl's log line (`I0000 00:00:1796532946.634108    5001 port.cc:153] ...`) and the notice absl prints
# before it is initialised. Fatal lines (F) are kept: they end the process and say why.
LOG_LINE = re.compile(r"([IWE]\d{4} [\d:.]+\s+\d+ \S+:\d+\] |WARNING: All log messages before absl::)")


def quiet(argv: Sequence[str] | None = None) -> None:
    """Silence TensorFlow's own log lines for this process and its children, unless `argv` holds --verbose."""
    if VERBOSE in (sys.argv[1:] if argv is None else argv):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if MUTED not in sys.modules and not any(isinstance(f, _MuteImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _MuteImport())


class _MuteImport(importlib.abc.MetaPathFinder):
    """Finds MUTED as the other finders do, with a loader that mutes its log lines; then steps aside."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name != MUTED:
            return None
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _MuteImport)]
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _MutedLoader(spec.loader)
        return spec


class _MutedLoader(importlib.abc.Loader):
    """The real loader, run with LOG_LINE lines dropped from stderr; anything else is asked of the real one."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with without_log_lines():
            self.loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


@contextmanager
def without_log_lines() -> Iterator[None]:
    """Capture file descriptor 2 (C++ libraries write there, not to sys.stderr) and pass on all but LOG_LINE."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not LOG_LINE.match(line)))
            sys.stderr.flush()
