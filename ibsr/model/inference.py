"""The encoders at inference time (search, serve, index builds): runtime, precision and threads.

    embed_queries(model, x[, runtime]) -> B x D float32      x: B x 4 x H x W in [-1, 1]
    embed_views(model, x[, runtime])   -> N x V x D float32  x: N x V x 1 x H x W in [-1, 1]

On a CPU every photo, and every shape's V views, is one work item for the single-threaded
workers of `ibsr.cpus.parallel_map`: a batch spreads over the usable CPUs with no OpenMP team
to stall when another process takes a core, and one photo per call was also the
fastest per photo for the shipped encoder (activations of larger batches outgrow the caches;
benchmarks/RESULTS.md). Each item is encoded alone, so an embedding never depends on which
other photos or shapes shared its batch, nor on the number of workers. On CUDA the batch goes
through in one call.

Batch size and thread split, measured again for ONNX Runtime (benchmarks/runtime.py,
benchmarks/RESULTS.md "CPU runtime"): batching does not pay on a CPU there either (a photo
or a shape costs more in a batch than alone), and neither does a 2-thread intra-op pool (slower
per photo than single-threaded workers, and much slower beside a competing process). So the
runtime keeps this split: one photo or one shape per call, one thread per worker, as many
workers as usable CPUs.

Runtime: `ibsr.runtime` (IBSR_RUNTIME=auto|torch|onnx, or `runtime=`): ONNX Runtime float32 or
torch. Precision (torch only): `ibsr.precision` (IBSR_PRECISION=auto: the query encoder under
bf16 autocast on CPUs with AVX512-BF16/AMX, the rendering encoder in float32).
"""

from __future__ import annotations

import torch

from ibsr.cpus import parallel_map
from ibsr.model.cmic import CMIC
from ibsr.runtime import onnx_encoder
from ibsr.runtime.torch_backend import encode


def _per_item(encode_item, x: torch.Tensor) -> torch.Tensor:
    if x.device.type != "cpu" or len(x) == 0:
        return encode_item(x)
    return torch.cat(list(parallel_map(lambda i: encode_item(x[i:i + 1]), range(len(x)))))


def _on_cpu(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and len(x) > 0  # an empty batch needs no export


def _query_encoder(model: CMIC, x: torch.Tensor, runtime: str | None, calibration=None):
    """x -> B x D float32: ONNX Runtime where `ibsr.runtime` picks it, else torch."""
    onnx = _on_cpu(x) and onnx_encoder(model.query_encoder, "queries", tuple(x.shape[1:]), runtime, calibration)
    return onnx or (lambda item: encode(model.embed_queries, "queries", item))


def _view_encoder(model: CMIC, x: torch.Tensor, runtime: str | None):
    """N x V x 1 x H x W -> N x V x D float32; the ONNX rendering encoder takes one view per row."""
    onnx = _on_cpu(x) and onnx_encoder(model.rendering_encoder, "views", tuple(x.shape[2:]), runtime)
    if not onnx:
        return lambda item: encode(model.embed_views, "views", item)
    return lambda item: onnx(item.flatten(0, 1)).reshape(*item.shape[:2], -1)


@torch.no_grad()
def embed_queries(model: CMIC, x: torch.Tensor, runtime: str | None = None, calibration=None) -> torch.Tensor:
    """B x D float32 query embeddings, one photo per work item on a CPU.

    runtime: "auto", "torch" or "onnx" (default: $IBSR_RUNTIME; `ibsr.runtime`). calibration: a
    function returning query inputs made as `x` is (`ibsr.photos.query.calibration_inputs`), which
    lets the encoder run in int8 where `ibsr.precision` asks for it; without one it runs float32."""
    return _per_item(_query_encoder(model, x, runtime, calibration), x)


@torch.no_grad()
def embed_views(model: CMIC, x: torch.Tensor, runtime: str | None = None) -> torch.Tensor:
    """N x V x D float32 view embeddings, one shape (its V views) per work item on a CPU."""
    return _per_item(_view_encoder(model, x, runtime), x)
