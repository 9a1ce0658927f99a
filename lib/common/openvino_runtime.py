"""A frozen PyTorch network run through OpenVINO on the CPU: same outputs, several times faster.

Why: LiteMedSAM's image encoder (about 75 GFLOP per slice) is what every
LiteMedSAM use costs on a laptop: 06's medsam_embed / fusion, 07's labels,
08's --refine sam, the demo. On the 2-core AMX dev box, at batch 1, OpenVINO
runs it in float32 1.7-2.0x faster than eager PyTorch with the same maps
(cosine 1.0), and with bfloat16 inference precision 3.8-4.5x faster, within
the tolerances the project set (bench/bench_medsam_speed.py, docs/results.md).

The network is converted once (`openvino.convert_model` traces it, about 7 s)
and the IR is kept under the cache folder, named by a key the caller chooses
(e.g. the weights' hash), so later processes only compile it (0.3 s).
Nothing here knows about LiteMedSAM: lib.common.medsam picks the runtime.
PyTorch is imported only to convert: running a converted IR needs OpenVINO
alone (lib.common.medsam_encoder relies on that to keep torch out of predict.py).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

DEVICE = "CPU"
# IR files live here: $BRAINMRI_CACHE_DIR, else ~/.cache/brainmri.
CACHE_ENV = "BRAINMRI_CACHE_DIR"


def available() -> bool:
    """Whether the openvino package is installed (it is pinned in requirements.txt)."""
    return importlib.util.find_spec("openvino") is not None


def cache_dir() -> Path:
    """Where converted networks are kept; read at call time so tests can point it elsewhere."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "brainmri")


def ir_path(key: str) -> Path:
    """The IR (.xml, with its .bin beside it) of network `key` for the installed OpenVINO version."""
    return cache_dir() / f"{key}-openvino-{importlib.metadata.version('openvino')}.xml"


def convert(build: Callable[[], torch.nn.Module], examples: tuple[torch.Tensor, ...], path: Path,
            shapes: tuple[tuple[int, ...], ...] | None = None) -> None:
    """Trace `build()` on `examples` and save its IR at `path`, atomically: a killed run leaves no half file.

    `shapes`: the inputs' shapes with -1 where a size may vary (e.g. the number of prompt points); default:
    the examples' own, fixed."""
    import openvino
    import torch

    network = build().eval().requires_grad_(False).float()
    inputs = None if shapes is None else [openvino.PartialShape(list(shape)) for shape in shapes]
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks, harmless at a fixed size
        model = openvino.convert_model(network, example_input=examples if len(examples) > 1 else examples[0],
                                       input=inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.stem}."))
    try:
        openvino.save_model(model, staging / path.name, compress_to_fp16=False)
        os.replace(staging / path.with_suffix(".bin").name, path.with_suffix(".bin"))
        os.replace(staging / path.name, path)  # the .xml last: its presence means both files are whole
    finally:
        shutil.rmtree(staging, ignore_errors=True)


Network = Callable[..., np.ndarray]  # input arrays, in the traced order -> the first output
_COMPILED: dict[tuple, Network] = {}  # one compiled network per key and setting in a process


def clear() -> None:
    """Forget the compiled networks, as a new process starts (the IR files stay)."""
    _COMPILED.clear()


def compiled(key: str, build: Callable[[], torch.nn.Module], examples: tuple[torch.Tensor, ...], bf16: bool,
             threads: int, family: str | None = None) -> Network:
    """The network `key` (made by `build()` the first time) compiled for the CPU: a function arrays -> array.

    `key` names the network and its weights: a new key for new weights.
    `examples` are inputs of the fixed shapes the network is traced and
    compiled at (batch 1: what the demo and predict.py run, and the fastest
    per slice on a few cores). `bf16` asks for bfloat16 inference precision,
    which only pays where the CPU has it natively (AMX or AVX512-BF16).
    `family` (a prefix of `key`) marks networks that come and go, such as each
    fine-tuned model 08 trains: only the KEEP most recently used of a family
    stay in the cache folder (about 30 MB each).
    """
    shapes = tuple(tuple(example.shape) for example in examples)
    setting = (key, shapes, bool(bf16), int(threads))
    if setting not in _COMPILED:
        _COMPILED[setting] = _compile(key, build, examples, bf16, threads)
        if family:
            prune(family)
    return _COMPILED[setting]


KEEP = 4


def prune(family: str, keep: int = KEEP) -> list[Path]:
    """Delete all but the `keep` most recently used IRs whose key starts with `family`; returns what went."""
    irs = sorted(cache_dir().glob(f"{family}*.xml"), key=lambda path: path.stat().st_mtime, reverse=True)
    gone = irs[keep:]
    for path in gone:
        path.with_suffix(".bin").unlink(missing_ok=True)
        path.unlink(missing_ok=True)
    return gone


def _compile(key: str, build: Callable[[], torch.nn.Module], examples: tuple[torch.Tensor, ...], bf16: bool,
             threads: int) -> Network:
    path = ir_path(key)
    if path.is_file():
        path.touch()  # used now: `prune` keeps the most recently used
    else:
        convert(build, examples, path)
    return compile_ir(path, tuple(tuple(example.shape) for example in examples), bf16, threads)


def compile_ir(path: Path, input_shapes: tuple[tuple[int, ...], ...], bf16: bool, threads: int,
               all_outputs: bool = False) -> Network:
    """An IR file (from `convert`, e.g. one a bundle carries) compiled for the CPU: needs OpenVINO only.

    `input_shapes` may hold -1 where the IR takes any size; `all_outputs`: the run returns every output (a
    list) instead of the first."""
    import openvino

    key = path.stem
    core = openvino.Core()
    network = core.compile_model(core.read_model(path), DEVICE, {
        "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
    })
    request, lock = network.create_infer_request(), threading.Lock()  # the demo may call from several threads

    def fits(shapes: tuple[tuple[int, ...], ...]) -> bool:
        return len(shapes) == len(input_shapes) and all(
            len(got) == len(want) and all(w in (-1, g) for g, w in zip(got, want))
            for got, want in zip(shapes, input_shapes))

    def run(*inputs: np.ndarray) -> np.ndarray | list[np.ndarray]:
        if not fits(tuple(tuple(a.shape) for a in inputs)):
            raise ValueError(f"{key}: compiled for inputs {input_shapes}, got {[tuple(a.shape) for a in inputs]}")
        with lock:  # the request's output buffers are reused: copy them before the next call
            outputs = request.infer([np.ascontiguousarray(a, dtype=np.float32) for a in inputs])
            return [outputs[i].copy() for i in range(len(outputs))] if all_outputs else outputs[0].copy()

    return run

