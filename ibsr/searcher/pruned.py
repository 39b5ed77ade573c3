"""Exact top-k with bound pruning (`--prefilter exact`): the exhaustive result, fewer shapes scored.

The attention score is a convex combination of a shape's view cosines, so
`score(q, s) <= max_j q . v_sj`. With c_s the mean of the shape's views and
r_s = max_j |v_sj - c_s| its radius,

    q . v_sj = q . c_s + q . (v_sj - c_s) <= q . c_s + |q| r_s =: bound_s(q)

so one D-long dot product per shape (one GEMM for a batch: 1/(2V) of the score's GEMM work,
and no softmax) bounds the score. Per query: score exactly the `first` shapes of highest
bound, take the k-th score t, then score every other shape whose bound is >= t and keep the
top k of both rounds. Every shape left out has bound < t, hence score < t <= the k-th kept
score: the result is the exhaustive top-k (t only grows as more shapes are scored, so two
rounds suffice). A bound *equal* to t is still scored, so exact ties are never lost to
pruning. Radii are padded by `SLACK` so that float32 rounding of a bound or of a score cannot
let a skipped shape beat t.

The bounds of `QUERY_CHUNK` queries are one GEMM. Each group of `QUERY_GROUP` queries then
scores the union of its rows in one dense pass of the rerank kernel (extra exact scores
cannot change a top k). One query per group measured fastest (benchmarks/RESULTS.md): the
queries of a batch usually lie in different categories, so a union of 16 queries' rows
covered ~28% of the catalog where each query alone needs ~2%.

When the bounds prune little (e.g. unclustered random embeddings), the two rounds would cost
more than one dense pass; a group of queries whose rounds would score more than
`max_fraction` of the N shapes is reranked exhaustively instead (same result).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ibsr import kernels

SLACK = 1e-4  # added to every radius: far above float32 rounding of a D <= 1024 dot product
FIRST_ROUND = 256  # shapes of highest bound scored first (at least 4k)
MAX_FRACTION = 0.5  # above this share of shapes to score, a dense pass is cheaper
QUERY_CHUNK = 16  # queries whose bounds are one GEMM (16 x 1M float32 bounds = 64 MB)
QUERY_GROUP = 1  # queries that share each round's union of rows


@dataclass
class ShapeBounds:
    """Each shape's view centre and radius: `bound_s(q) = q . c_s + |q| r_s >= score(q, s)`."""

    centres: torch.Tensor  # N x D float32
    radii: torch.Tensor  # N float32 (SLACK included)

    @classmethod
    def build(cls, views: np.ndarray | torch.Tensor, chunk: int = 1 << 14) -> "ShapeBounds":
        """views: N x V x D, any float dtype (upcast to float32 as the rerank does)."""
        N, V, D = views.shape
        centres, radii = torch.empty(N, D), torch.empty(N)
        for n0 in range(0, N, chunk):
            part = views[n0:n0 + chunk]  # a snapshot's numpy views are read-only: convert per chunk
            v = torch.from_numpy(part.astype(np.float32)) if isinstance(part, np.ndarray) else part.cpu().float()
            c = v.mean(dim=1)
            centres[n0:n0 + chunk] = c
            radii[n0:n0 + chunk] = (v - c[:, None]).norm(dim=2).amax(dim=1)
        return cls(centres, radii + SLACK)

    def bounds(self, q: torch.Tensor) -> torch.Tensor:
        """B x N upper bounds on the scores (on the bounds' device)."""
        q = q.to(self.centres.device)
        return torch.addmm(self.radii.unsqueeze(0) * q.norm(dim=1, keepdim=True), q, self.centres.t())


@dataclass
class PrunedResult:
    ranked: kernels.Reranked
    scored: np.ndarray  # B: shapes scored exactly for each query (N where the dense pass ran)


@torch.no_grad()
def pruned_rerank(q: torch.Tensor, wq: torch.Tensor, views: torch.Tensor, bounds: ShapeBounds, k: int,
                  first: int = FIRST_ROUND, max_fraction: float = MAX_FRACTION) -> PrunedResult:
    """The exhaustive `kernels.rerank(q, wq, views, k)`, scoring only shapes whose bound can matter."""
    k = min(k, views.shape[0])
    parts = []
    for c in range(0, max(1, q.shape[0]), QUERY_CHUNK):
        ub = bounds.bounds(q[c:c + QUERY_CHUNK])  # one GEMM for the chunk
        parts += [_rerank_group(q[i:i + QUERY_GROUP], wq[i:i + QUERY_GROUP], views, ub[i - c:i - c + QUERY_GROUP],
                                k, first, max_fraction)
                  for i in range(c, min(q.shape[0], c + QUERY_CHUNK), QUERY_GROUP)]
    if not parts:  # no queries
        return PrunedResult(kernels.rerank(q, wq, views, k), np.zeros(0, dtype=np.int64))
    ranked = kernels.Reranked(*(torch.cat([p.ranked[f] for p in parts]) for f in range(3)))
    return PrunedResult(ranked, np.concatenate([p.scored for p in parts]))


def _rerank_group(q, wq, views, ub, k, first, max_fraction) -> PrunedResult:
    """Both rounds for a group of queries; each round scores the union of their rows in one dense pass."""
    B, N = q.shape[0], views.shape[0]
    first_rows = ub.topk(min(N, max(first, 4 * k)), dim=1).indices
    round1_rows = first_rows.unique()
    round1 = _rerank_rows(q, wq, views, round1_rows, k)
    kth = round1.scores[:, -1].to(ub.device)
    ub[:, round1_rows] = float("-inf")  # scored already
    rest = torch.nonzero((ub >= kth[:, None]).any(dim=0)).flatten()  # >=: equal bounds are still scored
    scored = len(round1_rows) + len(rest)
    if scored > max_fraction * N:
        return PrunedResult(kernels.rerank(q, wq, views, k), np.full(B, N))
    final_rows = torch.cat([round1.indices.flatten().unique().to(rest.device), rest])
    return PrunedResult(_rerank_rows(q, wq, views, final_rows, k), np.full(B, scored))


def _rerank_rows(q, wq, views, rows: torch.Tensor, k: int) -> kernels.Reranked:
    """The top k of `rows` (distinct, at least k of them) for every query, as rows of `views`."""
    rows = rows.to(views.device)
    ranked = kernels.rerank(q, wq, views.index_select(0, rows), k)
    return kernels.Reranked(ranked.scores, rows[ranked.indices], ranked.best_view)
