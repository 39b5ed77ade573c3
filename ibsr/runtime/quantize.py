"""int8 ONNX files for the mask network: static quantization calibrated on generated photos.

    int8_bytes(float32 model bytes, component, input_shape) -> int8 model bytes

ONNX Runtime's `quantize_static` in QDQ format (uint8 activations, int8 weights per output
channel), after its `quant_pre_process` (shape inference, graph clean-up). Activation ranges
come from `CALIBRATION_PHOTOS` synthetic query photos (`ibsr.synth`, fixed seed: the same file
from the same weights on every machine; never a download) resized and scaled as the searcher
feeds the network (`ibsr.photos.mask_model`), over the training categories in the default and
home styles. Percentile calibration (99.99) clips the rare extreme activation, which MinMax
lets stretch a whole tensor's scale; it agreed better with float32 on held-out photos
(benchmarks/RESULTS.md, "The mask network in int8").

Only the mask network: its output is thresholded at 0.5, so int8's small error moves few
pixels, whereas the query encoder's int8 embeddings fell to cosine 0.61 of float32 (RESULTS,
"CPU runtime"), far below the 0.999 the encoders must keep.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np

VERSION = 1  # bump when the calibration or the quantization changes: the cache file's name changes with it
CALIBRATION_PHOTOS = 48
CALIBRATION_SEED = 2026
CALIBRATION_PERCENTILE = 99.99
COMPONENTS = ("mask",)


def calibration_inputs(component: str, input_shape: tuple) -> list[np.ndarray]:
    """1 x C x H x W float32 arrays, as the searcher feeds `component`'s network."""
    if component not in COMPONENTS:
        raise ValueError(f"int8 calibration exists for {COMPONENTS}, not {component!r}")
    import cv2
    import torch

    from ibsr.model.inputs import scale_pixels
    from ibsr.synth.photo import render_query_photo
    from ibsr.synth.shapes import TRAIN, catalog_shape, derive_rng

    _, height, width = input_shape
    inputs = []
    for i in range(CALIBRATION_PHOTOS):
        category, style = TRAIN[i % len(TRAIN)], ("default", "home")[i % 2]
        shape = catalog_shape(category, 1000 + i, CALIBRATION_SEED)
        rgb, _ = render_query_photo(shape, derive_rng(CALIBRATION_SEED, 1, category, i), 256, style=style)
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        inputs.append(scale_pixels(torch.from_numpy(rgb).permute(2, 0, 1)[None]).numpy().astype(np.float32))
    return inputs


def int8_bytes(model: bytes, component: str, input_shape: tuple) -> bytes:
    """The float32 ONNX `model` quantized to int8; its metadata (cache name, probe output) kept."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Photos(CalibrationDataReader):
        def __init__(self, inputs):
            self.inputs = iter(inputs)

        def get_next(self):
            x = next(self.inputs, None)
            return None if x is None else {"x": x}

    photos = Photos(calibration_inputs(component, input_shape))
    with tempfile.TemporaryDirectory(prefix="ibsr-int8-") as tmp:
        source, prepared, out = (Path(tmp) / name for name in ("float32.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(model)
        with contextlib.redirect_stdout(io.StringIO()):  # its progress prints would corrupt --json output
            quant_pre_process(str(source), str(prepared))
            quantize_static(str(prepared), str(out), photos, quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            calibrate_method=CalibrationMethod.Percentile,
                            extra_options={"CalibPercentile": CALIBRATION_PERCENTILE})
        return out.read_bytes()
