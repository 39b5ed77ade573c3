"""The rerank: exact query-conditioned attention scores, one entry for every device.

For a query embedding q (D), its attention vector W q (D) and a shape's view embeddings
v_1..v_V:

    a_j = (W q) . v_j,   w = softmax_j(a),   score = sum_j w_j (q . v_j)

and the shape's *best view* is argmax_j a_j (the view the query attends to most).

    attention_scores(q, wq, views) -> B x N float32
    rerank(q, wq, views, k, candidates=None, rows=None) -> Reranked(scores, indices, best_view)

`q`, `wq`: B x D float32; `views`: N x V x D float16, bfloat16 or float32, on the same
device. CUDA tensors run the fused Triton kernels (`triton_rerank`) when triton is
installed and D is a power of two in [16, 512], else the torch path; CPU tensors run the
chunked torch path (`torch_path`). Neither ever materializes B x N x V, and `rerank` never
materializes B x N. On a CPU `views` may be a memory map (`host_tensor` of the flat sidecar's
float16 array): the torch path reads and converts it chunk by chunk, never copying it whole.

Importing this package never imports triton.
"""

from __future__ import annotations

import torch

from . import torch_path
from ._common import Reranked, check_candidates, check_inputs, check_k, check_rows, host_tensor

__all__ = ["attention_scores", "rerank", "Reranked", "host_tensor"]


def _use_triton(views: torch.Tensor) -> bool:
    if not views.is_cuda:
        return False
    from . import triton_rerank

    if not triton_rerank.supported(views):
        return False
    try:
        triton_rerank._kernels()
    except ImportError:
        return False
    return True


@torch.no_grad()
def attention_scores(q: torch.Tensor, wq: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """B x N float32 attention scores of every query against every shape.

    Materializes B x N: for large catalogs prefer `rerank`, which keeps only the top k.
    """
    check_inputs(q, wq, views)
    if _use_triton(views):
        from .triton_rerank import scores_triton

        return scores_triton(q, wq, views)[0]
    return torch_path.attention_scores(q, wq, views)


@torch.no_grad()
def rerank(q: torch.Tensor, wq: torch.Tensor, views: torch.Tensor, k: int, candidates: torch.Tensor | None = None,
           rows: torch.Tensor | None = None) -> Reranked:
    """Top-k shapes per query by attention score, best first.

    k: >= 1 (else ValueError); clamped to N, so the result is B x min(k, N).
    candidates: optional B x C int64 row indices into `views`, -1 = padding, restricting each
        query to its own list (e.g. a FAISS prefilter). Returned indices are still rows of
        `views`. Padding is never returned, duplicates within a row count once, and a query
        with fewer than k valid candidates gets index -1 / score -inf / best_view -1 in its
        remaining slots.
    rows: optional non-empty 1-D int64 distinct rows of `views` shared by every query: the
        dense pass over those rows only (on a CPU each chunk is gathered as it is scored, so
        the rows are never copied out at once); k is clamped to their number; returned
        indices are rows of `views`. Not together with candidates.
    Ties: equal scores come back in an unspecified order.
    """
    B, N, V, D = check_inputs(q, wq, views)
    k = check_k(k)
    if candidates is not None and rows is not None:
        raise ValueError("give candidates or rows, not both")
    if candidates is not None:
        candidates = check_candidates(candidates, B, N, views.device)
    if rows is not None:
        N = len(check_rows(rows, N, views.device))
    k = min(k, N)
    if B == 0:
        empty = torch.empty(0, k, dtype=torch.int64, device=views.device)
        return Reranked(torch.empty(0, k, dtype=torch.float32, device=views.device), empty, empty.clone())
    if _use_triton(views):
        return _rerank_triton(q, wq, views, k, candidates, rows)
    return Reranked(*torch_path.rerank(q, wq, views, k, candidates, rows))


def _rerank_triton(q, wq, views, k, candidates, rows) -> Reranked:
    from .triton_rerank import rerank_triton

    if rows is None:
        return Reranked(*rerank_triton(q, wq, views, k, candidates))
    # the rows gathered in the device's memory (the host's views are never copied), indices mapped back
    scores, indices, best = rerank_triton(q, wq, views.index_select(0, rows), k)
    return Reranked(scores, torch.where(indices >= 0, rows[indices.clamp(min=0)], indices), best)
