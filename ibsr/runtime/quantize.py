"""int8 ONNX files: static quantization calibrated on photos, for the mask network.

    int8_bytes(float32 model bytes, calibration inputs) -> int8 model bytes
    calibration_photos() -> the packaged photos, for the caller to feed as its network sees them

ONNX Runtime's `quantize_static` in QDQ format (uint8 activations, int8 weights per output
channel), after its `quant_pre_process` (shape inference, graph clean-up). Activation ranges
come from `mask_calibration.npz`, 48 generated query photos shipped with the package (made by
scripts/mask_calibration.py from `ibsr.synth`: the runtime cannot render, and a download is
never an option), which the caller turns into network inputs exactly as it feeds its network
(`ibsr.photos.mask_model`). Percentile calibration (99.99) clips the rare extreme activation,
which MinMax lets stretch a whole tensor's scale; it agreed better with float32 on held-out
photos (benchmarks/RESULTS.md, "The mask network in int8").

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
CALIBRATION_FILE = Path(__file__).with_name("mask_calibration.npz")
CALIBRATION_PERCENTILE = 99.99


def calibration_photos() -> list[np.ndarray]:
    """The packaged calibration photos, H x W x 3 uint8 RGB."""
    import cv2

    with np.load(CALIBRATION_FILE) as data:
        jpeg, ends = data["jpeg"], data["ends"]
    starts = np.concatenate([[0], ends[:-1]])
    return [cv2.imdecode(jpeg[a:b], cv2.IMREAD_COLOR)[:, :, ::-1].copy() for a, b in zip(starts, ends)]


def int8_bytes(model: bytes, inputs: list[np.ndarray]) -> bytes:
    """The float32 ONNX `model` quantized to int8 with activation ranges from `inputs` (arrays of
    its input's shape); its metadata (cache name, probe output) kept."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Inputs(CalibrationDataReader):
        def __init__(self):
            self.inputs = iter(inputs)

        def get_next(self):
            x = next(self.inputs, None)
            return None if x is None else {"x": np.ascontiguousarray(x, dtype=np.float32)}

    with tempfile.TemporaryDirectory(prefix="ibsr-int8-") as tmp:
        source, prepared, out = (Path(tmp) / name for name in ("float32.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(model)
        with contextlib.redirect_stdout(io.StringIO()):  # its progress prints would corrupt --json output
            quant_pre_process(str(source), str(prepared))
            quantize_static(str(prepared), str(out), Inputs(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            calibrate_method=CalibrationMethod.Percentile,
                            extra_options={"CalibPercentile": CALIBRATION_PERCENTILE})
        return out.read_bytes()
