"""int8 ONNX files: static quantization calibrated on photos, for the mask network and the query encoder.

    int8_bytes(float32 model bytes, calibration inputs, float32_convs) -> int8 model bytes
    calibration_photos() -> the packaged photos and masks, for the caller to feed as it feeds its network

ONNX Runtime's `quantize_static` in QDQ format (uint8 activations, int8 weights per output
channel), after its `quant_pre_process` (shape inference, graph clean-up). Activation ranges
come from `calibration_photos.npz`, 48 generated query photos and their exact masks shipped
with the package (made by scripts/calibration_photos.py from `ibsr.synth`: the runtime cannot
render, and a download is never an option), which the caller turns into network inputs exactly
as it feeds its network (`ibsr.photos.mask_model`, `ibsr.photos.query`). Percentile calibration
(99.99) clips the rare extreme activation, which MinMax lets stretch a whole tensor's scale; it
agreed better with float32 on held-out photos (benchmarks/RESULTS.md, "The mask network in int8").

The mask network is quantized whole: its output is thresholded at 0.5, so int8's small error
moves few pixels. The query encoder's embeddings are compared by cosine, and quantized whole
they fell to cosine 0.92 of float32's; nearly all of that error comes from its first
convolutions, which see the raw photo and mask (`FLOAT32_CONVS`): with its first five and its
head (pooling, projection) kept in float32 the cosine is 0.995 or more at most of the speed-up
(benchmarks/RESULTS.md, "The query encoder in int8 ...").
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np

VERSION = 1  # bump when the calibration or the quantization changes: the cache file's name changes with it
CALIBRATION_FILE = Path(__file__).with_name("calibration_photos.npz")
CALIBRATION_PERCENTILE = 99.99
# Per component: how many of its first convolutions stay float32 (with everything after its last
# convolution); a component not named is quantized whole.
FLOAT32_CONVS = {"queries": 5}


def calibration_photos() -> list[tuple[np.ndarray, np.ndarray]]:
    """The packaged calibration photos: (H x W x 3 uint8 RGB, H x W bool exact object mask) each."""
    import cv2

    def files(data, key: str, ends: str) -> list[np.ndarray]:
        blob, stops = data[key], data[ends]
        return [blob[a:b] for a, b in zip(np.concatenate([[0], stops[:-1]]), stops)]

    with np.load(CALIBRATION_FILE) as data:
        photos, masks = files(data, "jpeg", "ends"), files(data, "png", "png_ends")
    return [(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[:, :, ::-1].copy(), cv2.imdecode(png, cv2.IMREAD_GRAYSCALE) > 127)
            for jpeg, png in zip(photos, masks)]


def float32_nodes(model: bytes, first_convs: int) -> list[str]:
    """The nodes kept in float32: the first `first_convs` convolutions, and every node after the
    last convolution (pooling, projection, normalization); none when `first_convs` is 0."""
    if first_convs == 0:
        return []
    import onnx

    nodes = onnx.load_from_string(model).graph.node  # topologically sorted, as ONNX requires
    convs = [i for i, node in enumerate(nodes) if node.op_type == "Conv"]
    keep = convs[:first_convs] + list(range(convs[-1] + 1, len(nodes)))
    return [nodes[i].name for i in keep]


def int8_bytes(model: bytes, inputs: list[np.ndarray], float32_convs: int = 0) -> bytes:
    """The float32 ONNX `model` quantized to int8 with activation ranges from `inputs` (arrays of
    its input's shape), its first `float32_convs` convolutions and its head left in float32
    (`float32_nodes`); its metadata (cache name, probe output) kept."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = onnx.load_from_string(model).graph.input[0].name  # the network's one input, as exported

    class Inputs(CalibrationDataReader):
        def __init__(self):
            self.inputs = iter(inputs)

        def get_next(self):
            x = next(self.inputs, None)
            return None if x is None else {input_name: np.ascontiguousarray(x, dtype=np.float32)}

    with tempfile.TemporaryDirectory(prefix="ibsr-int8-") as tmp:
        source, prepared, out = (Path(tmp) / name for name in ("float32.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(model)
        with contextlib.redirect_stdout(io.StringIO()):  # its progress prints would corrupt --json output
            try:
                quant_pre_process(str(source), str(prepared))
            except Exception:  # its symbolic shape inference fails on the query encoder's graph: ONNX's own then
                quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(out), Inputs(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            calibrate_method=CalibrationMethod.Percentile,
                            extra_options={"CalibPercentile": CALIBRATION_PERCENTILE},
                            nodes_to_exclude=float32_nodes(prepared.read_bytes(), float32_convs))
        return out.read_bytes()
