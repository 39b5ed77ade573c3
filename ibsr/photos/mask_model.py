"""The learned automatic mask at search time: the MaskNet loaded once per process, run per photo.

The photo is resized (INTER_AREA) to the network's `MaskConfig.size` square, whatever its
aspect ratio (training crops with aspect ratios 1/2-2 and resizes them the same way), the
probability map is resized back to the photo's size (bilinear) and thresholded at 0.5.
The network runs on the CPU as one work item of the torch worker pool (`ibsr.cpus.parallel_map`:
in the calling thread while a worker's slot is free), single-threaded, never an OpenMP team that
stalls when another process takes a core (`ibsr.cpus`),
and the calling thread's torch keeps one thread, as around the encoders. ONNX Runtime or torch
runs it as `ibsr.runtime` picks (IBSR_RUNTIME, or `runtime=`), ONNX Runtime in int8 where
`ibsr.precision` says so, calibrated on the packaged photos fed as a search feeds them.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import torch

from ibsr.cpus import parallel_map
from ibsr.errors import IbsrError
from ibsr.model import segmenter
from ibsr.model.inputs import scale_pixels
from ibsr.model.segmenter import MaskNet, load_mask_checkpoint, mask_certainty
from ibsr.runtime import onnx_encoder, quantize

_cache: dict[tuple[str, int], MaskNet] = {}  # (resolved path, mtime_ns) -> model
_lock = threading.Lock()


def load_mask_model(path: str | Path | None = None, required: bool = False) -> MaskNet | None:
    """The MaskNet in `path` (default: the shipped `ibsr/model/weights/mask.pt`), read once per
    process and file version. None when the default file is absent and not `required`."""
    path = Path(path) if path is not None else segmenter.default_mask_weights_path()
    if not path.is_file():
        if required:
            load_mask_checkpoint(path)  # raises the one-line "not found" error
        return None
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    with _lock:  # concurrent first searches (ibsr-serve) load it once
        if key not in _cache:
            model = load_mask_checkpoint(path)[0]
            # channels_last: faster on a CPU (benchmarks/RESULTS.md, "Learned mask")
            _cache[key] = model.to(memory_format=torch.channels_last)
        return _cache[key]


def network_input(rgb: np.ndarray, size: int) -> np.ndarray:
    """1 x 3 x size x size float32, C-contiguous as ONNX Runtime takes it: an H x W x 3 uint8
    photo as the network sees it (the channels moved while still uint8: a quarter of the bytes)."""
    x = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return scale_pixels(np.ascontiguousarray(x.transpose(2, 0, 1))[None])


def calibration_inputs(size: int) -> list[np.ndarray]:
    """The int8 network's calibration photos (`ibsr.runtime.quantize`), fed as searches feed it."""
    return [network_input(rgb, size) for rgb, _ in quantize.calibration_photos()]


@torch.no_grad()
def network_probability(model: MaskNet, rgb: np.ndarray, runtime: str | None = None) -> np.ndarray:
    """size x size float32 object probability of an H x W x 3 uint8 photo, at the network's input
    resolution (`MaskConfig.size`)."""
    size = model.config.size
    x = network_input(rgb, size)
    net = onnx_encoder(model, "mask", tuple(x.shape[1:]), runtime, calibration=lambda: calibration_inputs(size))
    if net is None:
        net, x = model, torch.from_numpy(x).contiguous(memory_format=torch.channels_last)  # torch: the model's layout
    logits = next(iter(parallel_map(lambda item: net(item)[0, 0], [x])))
    return torch.sigmoid(logits).numpy()


def mask_probability(model: MaskNet, rgb: np.ndarray, runtime: str | None = None) -> np.ndarray:
    """H x W float32 object probability of an H x W x 3 uint8 photo."""
    h, w = rgb.shape[:2]
    return cv2.resize(network_probability(model, rgb, runtime), (w, h), interpolation=cv2.INTER_LINEAR)


def predict_mask_and_certainty(model: MaskNet, rgb: np.ndarray, runtime: str | None = None) -> tuple[np.ndarray, float]:
    """(H x W bool object mask of the photo, the network's certainty of it: `mask_certainty`)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise IbsrError(f"mask network needs an H x W x 3 RGB image, got shape {rgb.shape}")
    prob = network_probability(model, rgb, runtime)
    h, w = rgb.shape[:2]
    return cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR) >= 0.5, mask_certainty(prob)


def predict_mask(model: MaskNet, rgb: np.ndarray, runtime: str | None = None) -> np.ndarray:
    """H x W bool: the network's object mask of the photo."""
    return predict_mask_and_certainty(model, rgb, runtime)[0]
