"""Validation: held-out query photos against every shape of their catalog, scored by the model
itself (the attention score, or the mean of view cosines for the no-attention ablation).

Metrics (fractions in [0, 1]):
- `top1` / `top{k}`: instance accuracy, the query's own shape ranked first / within the first k;
- `category`: the top-1 shape has the query's category.
"""

from __future__ import annotations

import numpy as np
import torch

from ibsr.model.cmic import CMIC
from ibsr.train.augment import apply_mask_mode, plain_queries, plain_views


def batch_scores(model: CMIC, q: torch.Tensor, views: torch.Tensor, attention: bool = True) -> torch.Tensor:
    """B x N scores of B query embeddings against N x V x D view embeddings."""
    if attention:
        return model.score(q, views)
    return torch.einsum("bd,nvd->bn", q, views) / views.shape[1]


@torch.no_grad()
def embed_all(model: CMIC, queries: np.ndarray, views: np.ndarray, mask_mode: str = "concat",
              chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode embeddings of uint8 query inputs (M x 4 x Q x Q) and views (N x V x S x S)."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        q = torch.cat([model.embed_queries(apply_mask_mode(plain_queries(torch.from_numpy(queries[i:i + chunk])
                                                                         .to(device)), mask_mode))
                       for i in range(0, len(queries), chunk)])
        shapes_per_chunk = max(1, chunk // 4)
        v = torch.cat([model.embed_views(plain_views(torch.from_numpy(views[i:i + shapes_per_chunk]).to(device)))
                       for i in range(0, len(views), shapes_per_chunk)])
    finally:
        model.train(was_training)
    return q, v


def retrieval_metrics(scores: torch.Tensor, query_shape: np.ndarray, shape_category: np.ndarray,
                      query_category: np.ndarray, topk: int = 10) -> dict:
    """Metrics of an M x N score matrix (higher = better) against the true shapes."""
    k = min(topk, scores.shape[1])
    ranked = torch.topk(scores, k, dim=1).indices.cpu().numpy()
    truth = np.asarray(query_shape).reshape(-1, 1)
    return {
        "top1": float((ranked[:, 0] == truth[:, 0]).mean()),
        f"top{topk}": float((ranked == truth).any(axis=1).mean()),
        "category": float((np.asarray(shape_category)[ranked[:, 0]] == np.asarray(query_category)).mean()),
        "queries": int(scores.shape[0]),
        "shapes": int(scores.shape[1]),
    }


@torch.no_grad()
def evaluate(model: CMIC, data, views_index: np.ndarray, mask_mode: str = "concat", attention: bool = True,
             topk: int = 10) -> dict:
    """Metrics of `data` (an `ibsr.train.data.Dataset`): all its queries against all its shapes."""
    q, v = embed_all(model, data.queries, data.views[:, views_index], mask_mode)
    scores = torch.cat([batch_scores(model, q[i:i + 256], v, attention) for i in range(0, len(q), 256)])
    return retrieval_metrics(scores, data.query_shape, data.shape_category, data.query_category, topk)
