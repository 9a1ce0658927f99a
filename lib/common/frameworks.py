"""The one place that orders the deep-learning frameworks in a process: triton before TensorFlow.

Why: the CUDA build of PyTorch imports triton (its GPU kernel compiler) the first
time a model is built, e.g. LiteMedSAM through timm. Loaded after TensorFlow,
triton's native extension crashes the process with a segmentation fault
(torch 2.14.1, tensorflow 2.21.0: any torch model build after `import tensorflow`);
loaded before it, both live together. The orders tried: docs/results.md; the
fix is tested in tests/test_frameworks.py.

`install()` runs when `lib` is imported (lib/__init__.py), so no stage, test or
demo has to remember the order:
- TensorFlow not imported yet: a meta-path hook imports triton just before
  TensorFlow loads (about 0.2 s, paid only by processes that use TensorFlow);
- TensorFlow already imported (a notebook that imported it before `lib`):
  triton can no longer load safely, so it is hidden and torch runs without it,
  as it does on a CPU anyway (triton only compiles GPU kernels).
Without PyTorch or triton installed (the JAX or TensorFlow-only machines) it does nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from typing import Any

GUARDED = "tensorflow"  # the framework that must come second
FIRST = "triton"  # what must load before it (PyTorch imports it lazily)


class _LoadFirst(importlib.abc.MetaPathFinder):
    """Imports FIRST the moment anything imports GUARDED, then steps aside."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == GUARDED:
            uninstall()
            _import_first()
        return None  # let the normal finders load the module


def install() -> None:
    """Make every later import in this process safe, whatever imports which framework first."""
    if _has_hook() or FIRST in sys.modules:
        return
    if GUARDED in sys.modules:
        _hide_first()
    else:
        sys.meta_path.insert(0, _LoadFirst())


def uninstall() -> None:
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _LoadFirst)]


def _has_hook() -> bool:
    return any(isinstance(finder, _LoadFirst) for finder in sys.meta_path)


def _import_first() -> None:
    if FIRST not in sys.modules and importlib.util.find_spec(FIRST) is not None:
        importlib.import_module(FIRST)


def _hide_first() -> None:
    """After TensorFlow, `import triton` raises ImportError instead of crashing; torch falls back without it."""
    sys.modules.setdefault(FIRST, None)  # type: ignore[arg-type]
