"""The encoders at inference time (search, serve, index builds): precision and threads.

    embed_queries(model, x[, mirror]) -> B x D float32      x: B x 4 x H x W in [-1, 1]
    embed_views(model, x)   -> N x V x D float32  x: N x V x 1 x H x W in [-1, 1]

On a CPU every photo, and every shape's V views, is one work item for the single-threaded
workers of `ibsr.cpus.parallel_map`: a batch spreads over the usable CPUs with no OpenMP team
to stall when another process takes a core (issue 12), and one photo per call was also the
fastest per photo for the shipped encoder (activations of larger batches outgrow the caches;
benchmarks/RESULTS.md). Each item is encoded alone, so an embedding never depends on which
other photos or shapes shared its batch, nor on the number of workers. On CUDA the batch goes
through in one call.

Precision: `ibsr.precision` (IBSR_PRECISION=auto: the query encoder under bf16 autocast on
CPUs with AVX512-BF16/AMX, the rendering encoder in float32); bf16 outputs are re-normalized
in float32, so they are unit vectors to float32 precision too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ibsr.cpus import parallel_map
from ibsr.model.cmic import CMIC
from ibsr.precision import encoder_autocast


@torch.no_grad()
def _run(encode, component: str, x: torch.Tensor) -> torch.Tensor:
    """encode(x) under the component's precision, in the calling thread, as float32 unit vectors."""
    with encoder_autocast(component, x.device.type):
        y = encode(x)
    if y.dtype != torch.float32:
        y = F.normalize(y.float(), dim=-1)
    return y


def _per_item(encode, component: str, x: torch.Tensor) -> torch.Tensor:
    if x.device.type != "cpu" or len(x) == 0:
        return _run(encode, component, x)
    return torch.cat(list(parallel_map(lambda i: _run(encode, component, x[i:i + 1]), range(len(x)))))


def embed_queries(model: CMIC, x: torch.Tensor, mirror: bool = False) -> torch.Tensor:
    """B x D float32 query embeddings, one photo per work item on a CPU.

    mirror: average each photo's embedding with its mirror image's (re-normalized). The
    training flips photos and views alike, and most objects are left-right symmetric, so the
    mirror is a second, independent look at the same shape (benchmarks/RESULTS.md, "Mirror averaging")."""
    q = _per_item(model.embed_queries, "queries", x)
    if mirror:
        q = F.normalize(q + _per_item(model.embed_queries, "queries", x.flip(-1)), dim=-1)
    return q


def embed_views(model: CMIC, x: torch.Tensor) -> torch.Tensor:
    """N x V x D float32 view embeddings, one shape (its V views) per work item on a CPU."""
    return _per_item(model.embed_views, "views", x)

