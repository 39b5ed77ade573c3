"""The rerank in plain torch: the CPU path (and a fallback on any device).

Layout of one dense chunk of n shapes (n x V x D views, B queries):

    Y = views_chunk.reshape(n*V, D) @ [wq; q].T       one GEMM, (n*V) x 2B, float32
    a, c = Y[..., :B], Y[..., B:]                     logits and cosines, n x V x B (strided)
    e = exp(a - max_V a)                              in place, on the V axis (B contiguous)
    score = sum_V(e * c) / sum_V(e)                   n x B -> written as B x n

so every elementwise pass vectorizes over the query axis and runs on a cache-sized chunk
held in reused buffers (no per-chunk allocation, no B x N x V tensor). For up to
`FEW_QUERIES` queries [wq; q] is stored 2B x D (row-major per query) and the GEMM gets its
transposed view; for more, it is stored D x 2B. MKL on an AMD EPYC (Zen 3, AVX2) ran the dense
pass over 200-500k shapes 1.5-2.2x faster the first way for 1-4 queries and 1.2-1.3x slower
for 8-16 (the candidate `bmm`, 2 columns per query, always the first way: 1.4-2.8x;
benchmarks/RESULTS.md, "Every core for the torch pool"). Chunks are sized so
that the GEMM output stays under `chunk_bytes` (default 8 MiB: fits the L3 of small CPUs;
the rerank's figures: benchmarks/RESULTS.md, "Rerank on a quiet machine").

Precision: float16/bfloat16 views are upcast per chunk to float32 and the GEMM runs in
float32 (accumulation always float32). The upcast is each worker's copy of its own chunk into
its own buffer, so `views` can be the flat sidecar's read-only memory map itself: it is read,
never written, and never copied whole. A bfloat16 GEMM is opt-in (`compute_dtype`, or
IBSR_PRECISION=bf16 via `ibsr.precision`): on CPUs without AVX512-BF16/AMX torch's bf16
matmul is far *slower* than float32 (benchmarks/RESULTS.md, "Rerank under load"); on CPUs with
it, it gains nothing for one query (the pass is memory-bound) and it rounds the logits to bf16,
so `auto` keeps float32 (benchmarks/RESULTS.md, "Thread cliffs and precision by CPU").

Top-k never materializes B x N: each chunk's scores go through `RunningTopK`. The best view
of the k winners is recomputed at the end from the k gathered shapes (cheap: B x k x V x D).

Threads: on a CPU the chunks are independent work items for the single-threaded workers of
`ibsr.cpus.parallel_map` (dynamic scheduling; one OpenMP team stalls whenever another process
holds one of its cores: `ibsr.cpus`). Each worker reduces its chunk to its own top-k and
the pieces are merged in chunk order; chunk boundaries depend only on N, B, V, D and
`chunk_bytes`, so the result is the same bits for any number of workers.
"""

from __future__ import annotations

import threading

import torch

from ibsr.cpus import parallel_map
from ibsr.precision import rerank_dtype

from ._common import RunningTopK

DEFAULT_CHUNK_BYTES = 8 << 20
FEW_QUERIES = 4  # up to this many queries the dense GEMM takes the query side transposed (module docstring)


def _compute_dtype(views: torch.Tensor, compute_dtype: torch.dtype | None) -> torch.dtype:
    if compute_dtype is not None:
        return compute_dtype
    if views.is_cuda and views.dtype in (torch.float16, torch.bfloat16):
        return views.dtype  # tensor cores; the matmul accumulates in float32
    return rerank_dtype(views.device.type) or torch.float32  # float32 unless IBSR_PRECISION=bf16


_workspace = threading.local()


def _thread_buffer(name: str, rows: int, cols: int, dtype: torch.dtype, device) -> torch.Tensor:
    """A rows x cols scratch tensor, on a CPU from this thread's workspace, kept between calls.

    A chunk's buffers are megabytes: allocated afresh for every rerank call, the kernel's page
    faults on first touch cost about as much as the scoring itself for a search of a few
    categories (~2 ms of a ~4 ms rerank of 833 shapes; benchmarks/RESULTS.md, "Every core for
    the torch pool"). Each worker thread finishes one chunk (write the buffers, reduce the
    scores) before it takes the next, so one workspace per thread is never used by two chunks
    at once. CUDA has its caching allocator."""
    if torch.device(device).type != "cpu":
        return torch.empty(rows, cols, dtype=dtype, device=device)
    buffers = _workspace.__dict__.setdefault("buffers", {})
    flat = buffers.get((name, dtype))
    if flat is None or flat.numel() < rows * cols:
        flat = buffers[(name, dtype)] = torch.empty(rows * cols, dtype=dtype)
    return flat[: rows * cols].view(rows, cols)


class _DenseScorer:
    """Scores chunks of shapes against one batch of queries, reusing its buffers."""

    def __init__(self, q, wq, views, chunk_bytes, compute_dtype, n: int):
        """n: the shapes to score (all of `views`, or the rows picked from them)."""
        self.B, self.D = q.shape
        self.V = views.shape[1]
        self.cdt = _compute_dtype(views, compute_dtype)
        # D x 2B: columns 0..B-1 give the logits W q . v, columns B..2B-1 the cosines q . v;
        # for a few queries a transposed view of the row-major 2B x D (module docstring: why)
        w2 = torch.cat([wq, q], dim=0).to(self.cdt)
        self.w2t = w2.contiguous().t() if self.B <= FEW_QUERIES else w2.t().contiguous()
        self.chunk = self.chunk_size(self.B, (n, *views.shape[1:]), chunk_bytes)
        dev = views.device
        rows = self.chunk * self.V
        self.out_dtype = self.cdt
        self.buf_out = _thread_buffer("out", rows, 2 * self.B, self.cdt, dev)
        self.buf_in = _thread_buffer("in", rows, self.D, self.cdt, dev) if views.dtype != self.cdt else None

    @staticmethod
    def chunk_size(B: int, views_shape, chunk_bytes: int) -> int:
        """Shapes per chunk: the GEMM's input and output each under chunk_bytes."""
        N, V, D = views_shape
        rows_out = max(1, chunk_bytes // (2 * B * 4))
        rows_in = max(1, chunk_bytes // (D * 4))
        return min(max(1, min(rows_out, rows_in) // V), N)

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


def _chunks(N: int, chunk: int) -> list[tuple[int, int]]:
    return [(n0, min(N, n0 + chunk)) for n0 in range(0, N, chunk)]


def _map_chunks(views: torch.Tensor, fn, items):
    """fn over items, results in order: on a CPU by the pool's workers, on a GPU in this thread
    (the GPU parallelizes)."""
    return parallel_map(fn, items) if views.device.type == "cpu" else map(fn, items)


def _scorer_per_thread(q, wq, views, chunk_bytes, compute_dtype, n: int):
    """(scorer(): the calling thread's `_DenseScorer` for n shapes, each worker reusing its own
    buffers; the chunk size they all share)."""
    local = threading.local()

    def scorer() -> _DenseScorer:
        if not hasattr(local, "sc"):
            local.sc = _DenseScorer(q, wq, views, chunk_bytes, compute_dtype, n)
        return local.sc

    return scorer, _DenseScorer.chunk_size(q.shape[0], (n, *views.shape[1:]), chunk_bytes)


def attention_scores(q, wq, views, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES, compute_dtype=None) -> torch.Tensor:
    """B x N float32 scores (inputs already validated)."""
    B, N = q.shape[0], views.shape[0]
    out = torch.empty(B, N, dtype=torch.float32, device=views.device)
    if B == 0:
        return out
    scorer, chunk = _scorer_per_thread(q, wq, views, chunk_bytes, compute_dtype, N)

    def score(span):
        n0, n1 = span
        out[:, n0:n1].copy_(scorer().scores(views[n0:n1]).t())  # disjoint columns per chunk

    for _ in _map_chunks(views, score, _chunks(N, chunk)):
        pass
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


def _rerank_dense(q, wq, views, k, chunk_bytes, compute_dtype, rows=None):
    """The dense pass over every shape, or over `rows` only: each chunk of rows is gathered by
    the worker that scores it (a chunk of the same rows as a gather of them all, hence the same
    bits, without the whole gather's copy)."""
    B = q.shape[0]
    ids = torch.arange(views.shape[0], device=views.device) if rows is None else rows
    scorer, chunk = _scorer_per_thread(q, wq, views, chunk_bytes, compute_dtype, len(ids))

    def top_of_chunk(span):
        n0, n1 = span
        part = views[n0:n1] if rows is None else views.index_select(0, rows[n0:n1])
        return RunningTopK.reduce(scorer().scores(part).t(), ids[n0:n1], k)

    top = RunningTopK(B, k, views.device)
    for piece in _map_chunks(views, top_of_chunk, _chunks(len(ids), chunk)):
        top.add_reduced(*piece)
    scores, indices, _ = top.result()
    return scores, indices


def _rerank_candidates(q, wq, views, k, candidates, chunk_bytes, compute_dtype):
    B, D = q.shape
    V = views.shape[1]
    C = candidates.shape[1]
    cdt = _compute_dtype(views, compute_dtype)
    qw = torch.stack([wq, q], dim=1).to(cdt).transpose(1, 2)  # B x D x 2 (logits, cosines), transposed view
    cc = max(1, chunk_bytes // max(1, B * V * D * 4))  # candidates per chunk

    def top_of_chunk(span):
        idx = candidates[:, span[0]:span[1]]
        n = idx.shape[1]
        valid = idx >= 0
        g = views[idx.clamp(min=0)].to(cdt)  # B x n x V x D
        y = torch.bmm(g.view(B, n * V, D), qw).float().view(B, n, V, 2)
        a, c = y[..., 0], y[..., 1]
        a.sub_(a.amax(dim=2, keepdim=True)).exp_()
        s = c.mul_(a).sum(dim=2).div_(a.sum(dim=2))
        s.masked_fill_(~valid, float("-inf"))
        return RunningTopK.reduce(s, idx.masked_fill(~valid, -1), k)

    top = RunningTopK(B, k, views.device)
    for piece in _map_chunks(views, top_of_chunk, _chunks(C, cc)):
        top.add_reduced(*piece)
    scores, indices, _ = top.result()
    return scores, indices


def rerank(q, wq, views, k, candidates=None, rows=None, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
           compute_dtype=None):
    """(scores, indices, best_view), each B x k (inputs validated, k already clamped)."""
    if candidates is None:
        scores, indices = _rerank_dense(q, wq, views, k, chunk_bytes, compute_dtype, rows)
    else:
        scores, indices = _rerank_candidates(q, wq, views, k, candidates, chunk_bytes, compute_dtype)
    return scores, indices, best_views(wq, views, indices)
