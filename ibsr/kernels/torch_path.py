"""The rerank in plain torch: the CPU path (and a fallback on any device).

Layout of one dense chunk of n shapes (n x V x D views, B queries):

    Y = views_chunk.reshape(n*V, D) @ [wq; q].T       one GEMM, (n*V) x 2B, float32
    a, c = Y[..., :B], Y[..., B:]                     logits and cosines, n x V x B (strided)
    e = exp(a - max_V a)                              in place, on the V axis (B contiguous)
    score = sum_V(e * c) / sum_V(e)                   n x B -> written as B x n

so every elementwise pass vectorizes over the query axis and runs on a cache-sized chunk
held in reused buffers (no per-chunk allocation, no B x N x V tensor). Chunks are sized so
that the GEMM output stays under `chunk_bytes` (default 8 MiB: fits the L3 of small CPUs;
measured on a 2-core EPYC, see benchmarks/RESULTS.md).

Precision: float16/bfloat16 views are upcast per chunk to float32 and the GEMM runs in
float32 (accumulation always float32). A bfloat16 GEMM is opt-in (`compute_dtype`) because
on CPUs without AVX512-BF16/AMX torch's bf16 matmul is ~20x *slower* than float32 (1.3 s
vs 0.06 s for 81k x 128 by 128 x 128 on the benchmark machine), and it rounds the logits to
bf16.

Top-k never materializes B x N: each chunk's scores go through `RunningTopK`. The best view
of the k winners is recomputed at the end from the k gathered shapes (cheap: B x k x V x D).
"""

from __future__ import annotations

import torch

from ._common import RunningTopK

DEFAULT_CHUNK_BYTES = 8 << 20


def _compute_dtype(views: torch.Tensor, compute_dtype: torch.dtype | None) -> torch.dtype:
    if compute_dtype is not None:
        return compute_dtype
    if views.is_cuda and views.dtype in (torch.float16, torch.bfloat16):
        return views.dtype  # tensor cores; the matmul accumulates in float32
    return torch.float32


class _DenseScorer:
    """Scores chunks of shapes against one batch of queries, reusing its buffers."""

    def __init__(self, q, wq, views, chunk_bytes, compute_dtype):
        self.B, self.D = q.shape
        self.V = views.shape[1]
        self.cdt = _compute_dtype(views, compute_dtype)
        # D x 2B: columns 0..B-1 give the logits W q . v, columns B..2B-1 the cosines q . v
        self.w2t = torch.cat([wq, q], dim=0).t().contiguous().to(self.cdt)
        rows_out = max(1, chunk_bytes // (2 * self.B * 4))
        rows_in = max(1, chunk_bytes // (self.D * 4))
        self.chunk = max(1, min(rows_out, rows_in) // self.V)  # shapes per chunk
        self.chunk = min(self.chunk, views.shape[0])
        dev = views.device
        rows = self.chunk * self.V
        self.out_dtype = self.cdt
        self.buf_out = torch.empty(rows, 2 * self.B, dtype=self.cdt, device=dev)
        self.buf_in = torch.empty(rows, self.D, dtype=self.cdt, device=dev) if views.dtype != self.cdt else None

    def scores(self, views_chunk: torch.Tensor) -> torch.Tensor:
        """views_chunk n x V x D (n <= self.chunk) -> n x B float32 scores."""
        n, V, D = views_chunk.shape
        B = self.B
        x = views_chunk.reshape(n * V, D)
        if self.buf_in is not None:
            x = self.buf_in[: n * V].copy_(x)
        y = torch.mm(x, self.w2t, out=self.buf_out[: n * V])
        if y.dtype != torch.float32:
            y = y.float()
        y = y.view(n, V, 2 * B)
        a, c = y[:, :, :B], y[:, :, B:]
        a.sub_(a.amax(dim=1, keepdim=True)).exp_()
        den = a.sum(dim=1)
        num = c.mul_(a).sum(dim=1)
        return num.div_(den)


def attention_scores(q, wq, views, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES, compute_dtype=None) -> torch.Tensor:
    """B x N float32 scores (inputs already validated)."""
    B, N = q.shape[0], views.shape[0]
    out = torch.empty(B, N, dtype=torch.float32, device=views.device)
    if B == 0:
        return out
    sc = _DenseScorer(q, wq, views, chunk_bytes, compute_dtype)
    for n0 in range(0, N, sc.chunk):
        n1 = min(N, n0 + sc.chunk)
        out[:, n0:n1].copy_(sc.scores(views[n0:n1]).t())
    return out


def best_views(wq: torch.Tensor, views: torch.Tensor, indices: torch.Tensor, *, chunk_bytes: int = 64 << 20):
    """argmax_j (W q . v_j) for the shapes in `indices` (B x k, -1 -> -1), chunked over k."""
    B, k = indices.shape
    V, D = views.shape[1], views.shape[2]
    out = torch.full((B, k), -1, dtype=torch.int64, device=views.device)
    if B == 0 or k == 0:
        return out
    kc = max(1, chunk_bytes // max(1, B * V * D * 4))
    for k0 in range(0, k, kc):
        idx = indices[:, k0 : k0 + kc]
        g = views[idx.clamp(min=0)].float()  # B x kc x V x D
        logits = torch.bmm(g.reshape(B, -1, D), wq.unsqueeze(2)).view(B, idx.shape[1], V)
        out[:, k0 : k0 + kc] = logits.argmax(dim=2).masked_fill_(idx < 0, -1)
    return out


def _rerank_dense(q, wq, views, k, chunk_bytes, compute_dtype):
    B, N = q.shape[0], views.shape[0]
    sc = _DenseScorer(q, wq, views, chunk_bytes, compute_dtype)
    top = RunningTopK(B, k, views.device)
    ar = torch.arange(N, device=views.device)
    for n0 in range(0, N, sc.chunk):
        n1 = min(N, n0 + sc.chunk)
        top.add(sc.scores(views[n0:n1]).t(), ar[n0:n1])
    scores, indices, _ = top.result()
    return scores, indices


def _rerank_candidates(q, wq, views, k, candidates, chunk_bytes, compute_dtype):
    B, D = q.shape
    V = views.shape[1]
    C = candidates.shape[1]
    cdt = _compute_dtype(views, compute_dtype)
    qw = torch.stack([wq, q], dim=2).to(cdt)  # B x D x 2: logits, cosines
    cc = max(1, chunk_bytes // max(1, B * V * D * 4))  # candidates per chunk
    top = RunningTopK(B, k, views.device)
    for c0 in range(0, C, cc):
        idx = candidates[:, c0 : c0 + cc]
        n = idx.shape[1]
        valid = idx >= 0
        g = views[idx.clamp(min=0)].to(cdt)  # B x n x V x D
        y = torch.bmm(g.view(B, n * V, D), qw).float().view(B, n, V, 2)
        a, c = y[..., 0], y[..., 1]
        a.sub_(a.amax(dim=2, keepdim=True)).exp_()
        s = c.mul_(a).sum(dim=2).div_(a.sum(dim=2))
        s.masked_fill_(~valid, float("-inf"))
        top.add(s, idx.masked_fill(~valid, -1))
    scores, indices, _ = top.result()
    return scores, indices


def rerank(q, wq, views, k, candidates=None, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES, compute_dtype=None):
    """(scores, indices, best_view), each B x k (inputs validated, k already clamped)."""
    if candidates is None:
        scores, indices = _rerank_dense(q, wq, views, k, chunk_bytes, compute_dtype)
    else:
        scores, indices = _rerank_candidates(q, wq, views, k, candidates, chunk_bytes, compute_dtype)
    return scores, indices, best_views(wq, views, indices)
