"""Validation: held-out query photos against every shape of their catalog, scored by the model
itself (the attention score, or the mean of view cosines for the no-attention ablation).

Metrics (fractions in [0, 1]):
- `top1` / `top{k}`: instance accuracy, the query's own shape ranked first / within the first k;
- `category`: the top-1 shape has the query's category.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ibsr.model.checkpoint import rendering_id
from ibsr.model.cmic import CMIC
from ibsr.train.augment import apply_mask_mode, plain_queries, plain_views
from ibsr.train.config import views_index
from ibsr.train.data import save_npz


def batch_scores(model: CMIC, q: torch.Tensor, views: torch.Tensor, attention: bool = True) -> torch.Tensor:
    """B x N scores of B query embeddings against N x V x D view embeddings."""
    if attention:
        return model.score(q, views)
    return torch.einsum("bd,nvd->bn", q, views) / views.shape[1]


@torch.no_grad()
def embed_all(model: CMIC, queries: np.ndarray, views: np.ndarray, mask_mode: str = "concat",
              chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode embeddings of uint8 query inputs (M x 4 x Q x Q) and views (N x V x S x S)."""
    return embed_queries(model, queries, mask_mode, chunk), embed_views(model, views, chunk)


@torch.no_grad()
def embed_queries(model: CMIC, queries: np.ndarray, mask_mode: str = "concat", chunk: int = 64) -> torch.Tensor:
    """Eval-mode M x D embeddings of uint8 query inputs (M x 4 x Q x Q)."""
    device = next(model.parameters()).device
    with _eval_mode(model):
        return torch.cat([model.embed_queries(apply_mask_mode(plain_queries(torch.from_numpy(queries[i:i + chunk])
                                                                            .to(device)), mask_mode))
                          for i in range(0, len(queries), chunk)])


@torch.no_grad()
def embed_views(model: CMIC, views: np.ndarray, chunk: int = 64) -> torch.Tensor:
    """Eval-mode N x V x D embeddings of uint8 views (N x V x S x S)."""
    device = next(model.parameters()).device
    shapes_per_chunk = max(1, chunk // 4)
    with _eval_mode(model):
        return torch.cat([model.embed_views(plain_views(torch.from_numpy(views[i:i + shapes_per_chunk]).to(device)))
                          for i in range(0, len(views), shapes_per_chunk)])


def cached_view_embeddings(model: CMIC, views: np.ndarray, cache_dir) -> torch.Tensor:
    """`embed_views`, cached as `<cache>/view-embeddings-<key>.npz`, key = SHA-256 of the views'
    bytes and the model's `rendering_id`. A frozen rendering encoder (query-side training,
    `ibsr-train adapt`) thus embeds a catalog once across its runs, resumes and evaluations:
    on a CPU the views of a catalog cost far more than its photos."""
    digest = hashlib.sha256(rendering_id(model).encode() + str(views.shape).encode())
    digest.update(np.ascontiguousarray(views).data)
    path = Path(cache_dir) / f"view-embeddings-{digest.hexdigest()[:16]}.npz"
    device = next(model.parameters()).device
    if path.is_file():
        return torch.from_numpy(np.load(path)["embeddings"]).to(device)
    embeddings = embed_views(model, views)
    save_npz(path, embeddings=embeddings.float().cpu().numpy())
    return embeddings


@contextmanager
def _eval_mode(model: CMIC):
    """Eval mode for the block; afterwards every module is back in the mode it was in (a
    trainer's frozen modules stay in eval mode)."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


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
    _, _, scores = _embed_and_score(model, data, views_index, mask_mode, attention)
    return retrieval_metrics(scores, data.query_shape, data.shape_category, data.query_category, topk)


def _embed_and_score(model: CMIC, data, views_index: np.ndarray, mask_mode: str, attention: bool):
    """(query embeddings, view embeddings, M x N scores) of every query against every shape."""
    q, v = embed_all(model, data.queries, data.views[:, views_index], mask_mode)
    scores = torch.cat([batch_scores(model, q[i:i + 256], v, attention) for i in range(0, len(q), 256)])
    return q, v, scores


@torch.no_grad()
def attention_spread(model: CMIC, q: torch.Tensor, own_views: torch.Tensor) -> dict:
    """How peaked the attention is on each query's own shape (B x D queries, B x V x D views):
    the mean effective number of views exp(entropy of w) (V = uniform, i.e. the mean of views;
    1 = a single view), the mean largest weight, and the two things that bound it: |W q| (the
    scale of the logits) and how alike a shape's views embed (mean pairwise cosine; alike
    views give alike logits, whatever W is)."""
    wq = model.attend(q)
    weights = torch.softmax(torch.einsum("bd,bvd->bv", wq, own_views), dim=-1)
    entropy = -(weights * weights.clamp_min(1e-12).log()).sum(dim=-1)
    v = own_views.shape[1]
    pairwise = torch.einsum("bvd,bwd->bvw", own_views, own_views)[:, ~torch.eye(v, dtype=torch.bool)]
    return {"effective_views": float(entropy.exp().mean()), "max_weight": float(weights.amax(dim=-1).mean()),
            "wq_norm": float(wq.norm(dim=-1).mean()),
            "view_cosine": float(pairwise.mean()) if v > 1 else 1.0}


def evaluate_checkpoint(model: CMIC, info: dict, data, topk: int = 10, name: str = "") -> dict:
    """Metrics of one checkpoint (`load_checkpoint_with_info`) on a `Dataset`, scored the way it
    was trained (its training config's mask mode, views and attention switch; the method's
    defaults otherwise).

    For attention models it also reports the same embeddings scored by the mean of the view
    cosines (`mean_of_views`) and the attention's spread, which tell whether the attention
    does anything beyond averaging the views."""
    method = info.get("config", {}).get("method", {})
    mask_mode, attention = method.get("mask", "concat"), method.get("attention", True)
    views = views_index(model.config.views)
    q, v, scores = _embed_and_score(model, data, views, mask_mode, attention)
    result = {"checkpoint": name, "step": info.get("step"), "views": len(views), "mask": mask_mode,
              "attention": attention, "category_loss": method.get("category_loss", True),
              **retrieval_metrics(scores, data.query_shape, data.shape_category, data.query_category, topk)}
    if attention:
        mean = retrieval_metrics(batch_scores(model, q, v, attention=False), data.query_shape, data.shape_category, data.query_category, topk)
        result["mean_of_views"] = {k: mean[k] for k in ("top1", f"top{topk}", "category")}
        result["attention_spread"] = attention_spread(model, q, v[torch.from_numpy(data.query_shape)])
    return result
