"""The ONNX Runtime backend: export a loaded module, cache the file, run it on a CPU.

    load(module, component, input_shape) -> OnnxEncoder   (x: B x C x H x W float32 torch tensor or numpy array)

Export: `torch.onnx.export(dynamo=True)` from the module in memory (never a download), batch
dimension dynamic, spatial size fixed to `input_shape`, opset `OPSET`. The torch.export-based
exporter is used, not the legacy TorchScript one: the legacy graph recomputes EfficientNet's
TF "SAME" padding from the input's shape at run time, around every convolution, and ran slower
in ONNX Runtime; the new one folds it into constant pads (benchmarks/RESULTS.md, "CPU runtime":
which exporter, and what an export costs, once per weights).

Cache: `$IBSR_CACHE/onnx/` (default `~/.cache/ibsr/onnx/`), one file per
`<component>-<weights id>-<C>x<H>x<W>-opset<OPSET>-v<EXPORT_VERSION>[-int8q<quantize.VERSION>].onnx`
(the int8 files: `ibsr.runtime.quantize`, checked against torch float32 with the looser
`INT8_PROBE_COSINE`); the weights id is
`digest.module_digest` of the module and the input size (the digest behind
`rendering_id`), so a file can only ever be reused for the same numbers. Files are
written atomically (temp file + rename). Each file carries its name and torch float32's output
on a fixed probe input (metadata); a file that fails to load, was exported for another name,
or whose output on the probe disagrees with it (cosine < PROBE_COSINE) is exported again and
replaced, and a fresh export that disagrees is refused (then torch runs). An unwritable cache
only costs the export on every process start.

Sessions: one intra-op thread, sequential execution. ibsr parallelizes over photos and shapes
with single-threaded workers (`ibsr.cpus.parallel_map`; an intra-op team would stall whenever
another process takes a core), and `InferenceSession.run` is safe to call from several threads
at once and releases the GIL, so the workers share one session. A 2-thread
intra-op pool was slower than one thread even for a single photo, and far slower than two
single-threaded workers for a batch (benchmarks/RESULTS.md, "CPU runtime").
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ibsr.files import atomic_write
from ibsr.runtime import quantize
from ibsr.runtime.digest import module_digest

OPSET = 18
EXPORT_VERSION = 1  # bump when the export changes what a file holds: the file name changes with it
CACHE_ENV = "IBSR_CACHE"
PROBE_COSINE = 0.999  # ONNX vs torch float32 on the probe: measured >= 0.99999 for healthy files
# An int8 file against the same. The probe is noise, unlike the photos the file was calibrated
# on: 0.9997 for the shipped mask network, 0.983 for the query encoder (0.997-0.999 on photos).
INT8_PROBE_COSINE = 0.97
PROBE_KEY = "ibsr.probe_output"  # metadata: torch float32's output fingerprint on probe_input
NAME_KEY = "ibsr.name"  # metadata: the cache file's name (stem) it was exported for


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV, "").strip()
    return (Path(root) if root else Path.home() / ".cache" / "ibsr") / "onnx"


def cache_path(module: torch.nn.Module, component: str, input_shape: tuple, int8: bool = False) -> Path:
    shape = "x".join(map(str, input_shape))
    wid = module_digest(module, f"{component}/{shape}")
    suffix = f"-int8q{quantize.VERSION}" if int8 else ""
    return cache_dir() / f"{component}-{wid}-{shape}-opset{OPSET}-v{EXPORT_VERSION}{suffix}.onnx"


class OnnxEncoder:
    """`module(x)` through ONNX Runtime: B x C x H x W float32 torch tensor (or numpy array) in,
    torch tensor out."""

    def __init__(self, session):
        self.session = session
        self.input = session.get_inputs()[0].name

    def __call__(self, x: "torch.Tensor | np.ndarray") -> torch.Tensor:
        array = x if isinstance(x, np.ndarray) else x.detach().to(torch.float32).numpy()
        array = np.ascontiguousarray(array, np.float32)  # channels_last -> NCHW; a no-op when already so
        return torch.from_numpy(self.session.run(None, {self.input: array})[0])


def session(model: bytes, threads: int = 1):
    """An InferenceSession on the CPU with `threads` intra-op threads, sequential execution."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def export_bytes(module: torch.nn.Module, input_shape: tuple, name: str = "") -> bytes:
    """The module as an ONNX model (float32, dynamic batch) that carries its cache `name`
    (`NAME_KEY`) and torch float32's outputs on the probe input (`PROBE_KEY`), exported
    without the exporter's chatter."""
    example = probe_input(input_shape)  # batch 2: torch.export specializes a dimension of size 1
    batch = torch.export.Dim("batch", min=1, max=4096)
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(module, (example,), None, input_names=["x"], output_names=["y"],
                                    opset_version=OPSET, dynamo=True, verbose=False,
                                    dynamic_shapes=({0: batch},))
        reference = _fingerprint(module(example))
    proto = program.model_proto
    proto.metadata_props.add(key=PROBE_KEY, value=base64.b64encode(reference.numpy().tobytes()).decode())
    proto.metadata_props.add(key=NAME_KEY, value=name)
    return proto.SerializeToString()


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's warnings and log lines (e.g. about torchvision) for one export."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def probe_input(input_shape: tuple) -> torch.Tensor:
    """A fixed 2 x C x H x W input in [-1, 1] (the encoders' range)."""
    return torch.rand(2, *input_shape, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _fingerprint(y: torch.Tensor) -> torch.Tensor:
    """At most ~1024 evenly spaced float32 values per row of an output (the mask's logits are
    50,176 a row): enough to tell a healthy model from a damaged one."""
    flat = y.detach().float().flatten(1)
    return flat[:, ::max(1, flat.shape[1] // 1024)].contiguous()


def agrees(encoder: OnnxEncoder, input_shape: tuple, name: str = "", minimum: float = PROBE_COSINE) -> bool:
    """Whether the model was exported for `name` and its output on the probe matches the torch
    float32 output it carries (cosine per row >= `minimum`): checks a fresh export and every
    cached file it loads, without running torch (whose first call costs seconds of warm-up)."""
    meta = encoder.session.get_modelmeta().custom_metadata_map
    stored = meta.get(PROBE_KEY)
    if stored is None or meta.get(NAME_KEY) != name:
        return False
    got = _fingerprint(encoder(probe_input(input_shape)))
    ref = torch.from_numpy(np.frombuffer(base64.b64decode(stored), dtype=np.float32).copy())
    if ref.numel() != got.numel():
        return False
    return bool(F.cosine_similarity(got, ref.reshape(got.shape), dim=1).min() >= minimum)


def _cached(path: Path, input_shape: tuple, threads: int, minimum: float) -> OnnxEncoder | None:
    """The cached file's encoder, or None when it is missing, unreadable or disagrees with torch."""
    try:
        encoder = OnnxEncoder(session(path.read_bytes(), threads))
    except Exception:  # missing, truncated, not a model: all mean "export again"
        return None
    return encoder if agrees(encoder, input_shape, path.stem, minimum) else None


NETWORK_NAMES = {"queries": "query encoder", "views": "rendering encoder", "mask": "mask network"}


def _notice_on_terminal(message: str) -> None:
    """One line on a terminal's stderr, so that a first search's silent minute does not look like
    a hang; nothing in logs, pipes and tests (a service says how long it prepared once it is ready)."""
    if sys.stderr is not None and sys.stderr.isatty():
        print(message, file=sys.stderr, flush=True)


class ExportError(Exception):
    """The export failed or its model disagrees with torch (the caller decides: warn or fail);
    `int8`: it was the int8 file (float32 ONNX may still work)."""

    def __init__(self, message: str, int8: bool = False):
        super().__init__(message)
        self.int8 = int8


def load(module: torch.nn.Module, component: str, input_shape: tuple, threads: int = 1,
         warn=lambda message: None, calibration=None) -> OnnxEncoder:
    """The module as an OnnxEncoder: from the cache, else exported, checked against torch float32
    and cached. With `calibration` (a function returning inputs of `input_shape`, called only
    when the file is made), quantized to int8 (`ibsr.runtime.quantize`)."""
    int8 = calibration is not None
    path = cache_path(module, component, input_shape, int8)
    minimum = INT8_PROBE_COSINE if int8 else PROBE_COSINE
    encoder = _cached(path, input_shape, threads, minimum)
    if encoder is not None:
        return encoder
    _notice_on_terminal(f"ibsr: preparing the {NETWORK_NAMES.get(component, component)} for this machine "
                        f"(ONNX Runtime{', int8' if int8 else ''}): once per weights, up to a minute; "
                        f"cached in {path.parent}")
    try:
        data = export_bytes(module, input_shape, path.stem)
        if int8:
            data = quantize.int8_bytes(data, calibration(), quantize.FLOAT32_CONVS.get(component, 0))
        encoder = OnnxEncoder(session(data, threads))
    except Exception as e:
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        step = "int8 ONNX export" if int8 else "ONNX export"
        raise ExportError(f"{step} of the {component} network failed ({reason})", int8=int8) from None
    if not agrees(encoder, input_shape, path.stem, minimum):
        raise ExportError(f"the {'int8 ' if int8 else ''}ONNX export of the {component} network disagrees with torch",
                          int8=int8)
    try:
        atomic_write(path, data, fsync=True, mode=0o644)  # 0o644: a shared cache, readable by other users
    except OSError as e:
        warn(f"cannot cache the ONNX {component} network in {path.parent} ({e.strerror}); "
             f"it is exported again in each process (set ${CACHE_ENV} to a writable folder)")
    return encoder
