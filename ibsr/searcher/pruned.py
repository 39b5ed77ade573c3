"""Exact top-k with bound pruning (`--prefilter none`): the exhaustive result, fewer shapes scored.

The attention score of shape s is a convex combination of its view cosines,
`score(q, s) = sum_j a_j q . v_sj` with `a = softmax_j(W q . v_sj)`. With c_s the mean of the
shape's views, r_s = max_j |v_sj - c_s| its radius and x_j = q . (v_sj - c_s) (|x_j| <= |q| r_s):

    score(q, s) = q . c_s + sum_j a_j x_j = q . c_s + sum_j (a_j - 1/V) x_j
               <= q . c_s + |q| r_s min(1, |a - 1/V|_1)

(the first form is at most the largest x_j; the second, with sum_j x_j = 0, at most
|q| r_s |a - 1/V|_1). The logits W q . v_sj all lie within delta_s = |W q| r_s of W q . c_s,
and over logits confined to such a band the L1 distance of the softmax from uniform is at most
2 tanh(delta_s / 2) (all weight pushed to the band's two ends; the maximum over the share p of
views at the top end is at p = (1 - e^-d) / (e^d - e^-d)). Hence

    bound_s(q) = q . c_s + |q| r_s min(1, 2 tanh(|W q| r_s / 2))

one D-long dot product per shape (one GEMM for a batch: 1/(2V) of the score's GEMM work) and a
tanh. The attention term matters: a view-agnostic bound (`|q| r_s`, the best view's cosine)
let 19% of a realistic million-shape catalog through, because a shape's views spread (radius
~0.5) while its attention stays close to uniform (|W q| ~ 0.7 for the shipped model: the
factor is ~0.34); see benchmarks/RESULTS.md "Scale".

Per query: score exactly the `first` shapes of highest bound, take the k-th score t, then
score every other shape whose bound is >= t and keep the top k of both rounds. Every shape left
out has bound < t, hence score < t <= the k-th kept score: the result is the exhaustive top-k
(t only grows as more shapes are scored, so two rounds suffice). A bound *equal* to t is still
scored, so exact ties are never lost to pruning. Every bound is padded by `SLACK` (`ibsr.index.bounds`) so that
float32 rounding of a bound or of a score cannot let a skipped shape beat t.

The bounds of `QUERY_CHUNK` queries are one GEMM; each query then runs its own two rounds (a
union of a batch's rows measured slower: the queries of a batch usually lie in different
categories, so a union of 16 queries' rows covered ~28% of the catalog where each query alone
needed ~2%; benchmarks/RESULTS.md "Exact pruned rerank").

When the bounds prune little, the rounds cost more than one dense pass over all N shapes; then
the dense pass runs instead (same result). A dense pass scores a batch of B queries for little
more than one (each view is read and converted once for all of them: `DENSE_QUERY_COST` per
extra query, measured), while each pruned query pays for its own rows, so the dense pass wins
once the batch's rows to score exceed `max_fraction * N * (1 + DENSE_QUERY_COST * (B - 1))`.
The rows are counted after each query's first round; the batch turns dense as soon as the
count so far, extrapolated to the whole batch, passes that budget (so a batch that will go dense
does so after its first query, not after wasting most of its first rounds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ibsr import kernels
from ibsr.index.bounds import ShapeBounds

FIRST_ROUND = 256  # shapes of highest bound scored first (at least 4k)
# Above this share of shapes to score (B = 1) a dense pass is cheaper: gathering and scoring
# scattered rows costs ~1.6-2x a dense pass per shape (5.7 vs 3.6 us at 1M shapes, 2-core EPYC).
MAX_FRACTION = 0.3
# A dense pass over N shapes for B queries costs (1 + DENSE_QUERY_COST * (B - 1)) times one for a
# single query: 0.05 from 162 ms (B = 1) and 684 ms (B = 64) at N = 100,000 on the 2-core EPYC
# (benchmarks/RESULTS.md, "Scale").
DENSE_QUERY_COST = 0.05
QUERY_CHUNK = 16  # queries whose bounds are one pass (16 x 1M float32 bounds = 64 MB)


@dataclass
class PrunedResult:
    ranked: kernels.Reranked
    scored: np.ndarray  # B: shapes scored exactly for each query (N where the dense pass ran)


@dataclass
class _Plan:
    """One query after its first round: its top k so far and the rows still to score."""

    first: kernels.Reranked
    rest: torch.Tensor
    scored: int


@torch.no_grad()
def pruned_rerank(q: torch.Tensor, wq: torch.Tensor, views: torch.Tensor, bounds: ShapeBounds, k: int,
                  first: int = FIRST_ROUND, max_fraction: float = MAX_FRACTION) -> PrunedResult:
    """The exhaustive `kernels.rerank(q, wq, views, k)`, scoring only shapes whose bound can matter."""
    B, N = q.shape[0], views.shape[0]
    k = min(k, N)
    budget = max_fraction * N * (1 + DENSE_QUERY_COST * max(B - 1, 0))
    plans, total = [], 0
    for c in range(0, B, QUERY_CHUNK):
        ub = bounds.bounds(q[c:c + QUERY_CHUNK], wq[c:c + QUERY_CHUNK])  # one GEMM for the chunk
        for i in range(c, min(B, c + QUERY_CHUNK)):
            plans.append(_first_round(q[i:i + 1], wq[i:i + 1], views, ub[i - c], k, first))
            total += plans[-1].scored
            if total / len(plans) * B > budget:  # the batch, extrapolated: one dense pass is cheaper
                return PrunedResult(kernels.rerank(q, wq, views, k), np.full(B, N))
    if not plans:  # no queries
        return PrunedResult(kernels.rerank(q, wq, views, k), np.zeros(0, dtype=np.int64))
    parts = [_second_round(q[i:i + 1], wq[i:i + 1], views, plan, k) for i, plan in enumerate(plans)]
    ranked = kernels.Reranked(*(torch.cat([p[f] for p in parts]) for f in range(3)))
    return PrunedResult(ranked, np.array([p.scored for p in plans]))


def _first_round(q, wq, views, ub: torch.Tensor, k: int, first: int) -> _Plan:
    """Score the shapes of highest bound; what remains: every other shape whose bound reaches the k-th score."""
    N = views.shape[0]
    rows = ub.topk(min(N, max(first, 4 * k))).indices
    ranked = _rerank_rows(q, wq, views, rows, k)
    ub = ub.clone()
    ub[rows] = float("-inf")  # scored already
    rest = torch.nonzero(ub >= ranked.scores[0, -1].to(ub.device)).flatten()  # >=: equal bounds are still scored
    return _Plan(ranked, rest, len(rows) + len(rest))


def _second_round(q, wq, views, plan: _Plan, k: int) -> kernels.Reranked:
    """The top k of the first round's top k and the remaining rows."""
    rows = torch.cat([plan.first.indices[0].to(plan.rest.device), plan.rest])
    return _rerank_rows(q, wq, views, rows, k)


def _rerank_rows(q, wq, views, rows: torch.Tensor, k: int) -> kernels.Reranked:
    """The top k of `rows` (distinct, at least k of them) for the query, as rows of `views`.
    As the rerank's candidate list: each worker gathers its own chunk of rows (one gather of
    20,000 scattered shapes took 33 ms in one thread at 1M shapes, as long as their scoring)."""
    return kernels.rerank(q, wq, views, k, candidates=rows.to(views.device)[None])
