"""The rerank with fused Triton kernels (CUDA; CPU tensors only under TRITON_INTERPRET=1).

`scores_triton` and `rerank_triton` run the kernels on whatever device the tensors are on:
the public dispatch calls them for CUDA tensors, and the tests call them on CPU tensors in a
subprocess with TRITON_INTERPRET=1. triton is imported on first use only (`_kernels()`), so
importing this module never needs triton or a GPU.

Dense kernel: a program is a tile of BLOCK_B queries x BLOCK_N shapes. For each of the V
views it loads the BLOCK_N x D view tile once (float16/bfloat16/float32, as stored), runs
two tl.dot (W q . v and q . v, BLOCK_B x BLOCK_N each, float32 accumulation) and updates an
online softmax over views (running max, denominator, numerator) plus the argmax view. q and
W q are cast to float16 for float16 views (tensor cores, float32 accumulation); bfloat16
view tiles are upcast to float32 and use TF32 dots (more mantissa for q than bfloat16, and
Triton's interpreter has no bfloat16 dot); float32 views use IEEE float32 dots. The error is
of the order of the views' own storage rounding.

Top-k over large N: the kernel writes scores for a chunk of `chunk` shapes (default 65536)
into a reused B x chunk buffer, torch.topk reduces each chunk and `RunningTopK` merges the
chunks, so B x N is never materialized. Fusing a partial top-k into the kernel would save
writing 4 + 4 bytes per (query, shape), which is small next to the V * D * 2 = 3 KiB of
float16 views read per shape and query tile for B up to a few hundred, and torch.topk is
well tuned; the chunk bounds the extra memory to B x chunk x 8 bytes.
"""

from __future__ import annotations

import functools

import torch

from ._common import RunningTopK

DEFAULT_CHUNK = 1 << 16


@functools.lru_cache(maxsize=None)
def _kernels():
    from . import _triton_src  # imports triton

    return _triton_src


def supported(views: torch.Tensor) -> bool:
    """The dense kernel needs D a power of two in [16, 512] (a constexpr tile width)."""
    D = views.shape[-1]
    return 16 <= D <= 512 and (D & (D - 1)) == 0


_DOT_MODE = {torch.float16: 0, torch.float32: 1, torch.bfloat16: 2}


def _block_b(B: int) -> int:
    return 16 if B <= 16 else 32 if B <= 32 else 64


def _launch_dense(q, wq, views, out, best, block_b=None, block_n=None, num_warps=4):
    """Scores of all B queries against `views` (n x V x D) into out/best (B x n, any row stride)."""
    ker = _kernels()
    B, D = q.shape
    n, V, _ = views.shape
    bb = block_b or _block_b(B)
    bn = block_n or (64 if D >= 256 else 128)
    grid = (triton_cdiv(B, bb), triton_cdiv(n, bn))
    ker.dense_scores_kernel[grid](
        q, wq, views, out, best,
        B, n, V,
        q.stride(0), views.stride(0), views.stride(1), out.stride(0), best.stride(0),
        D=D, BLOCK_B=bb, BLOCK_N=bn, DOT_MODE=_DOT_MODE[views.dtype],
        num_warps=num_warps,
    )


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _prep(q, wq, views):
    q = q.contiguous()
    wq = wq.contiguous()
    if views.stride(2) != 1:
        views = views.contiguous()
    return q, wq, views


def scores_triton(q, wq, views, *, block_b=None, block_n=None):
    """(B x N float32 scores, B x N int32 best view) with the dense kernel."""
    q, wq, views = _prep(q, wq, views)
    B, N = q.shape[0], views.shape[0]
    out = torch.empty(B, N, dtype=torch.float32, device=views.device)
    best = torch.empty(B, N, dtype=torch.int32, device=views.device)
    if B:
        _launch_dense(q, wq, views, out, best, block_b, block_n)
    return out, best


def candidate_scores_triton(q, wq, views, candidates, *, block_c=None):
    """(B x C float32 scores, -inf at padding; B x C int32 best view, -1 at padding)."""
    q, wq, views = _prep(q, wq, views)
    candidates = candidates.contiguous()
    B, D = q.shape
    C = candidates.shape[1]
    V = views.shape[1]
    out = torch.empty(B, C, dtype=torch.float32, device=views.device)
    best = torch.empty(B, C, dtype=torch.int32, device=views.device)
    if B == 0 or C == 0:
        return out, best
    bc = block_c or (32 if D >= 256 else 64)
    _kernels().candidate_scores_kernel[(B, triton_cdiv(C, bc))](
        q, wq, views, candidates, out, best,
        C, V,
        q.stride(0), views.stride(0), views.stride(1), candidates.stride(0), out.stride(0), best.stride(0),
        D=D, BLOCK_C=bc, num_warps=4,
    )
    return out, best


def rerank_triton(q, wq, views, k, candidates=None, *, chunk=DEFAULT_CHUNK, block_b=None, block_n=None, block_c=None):
    """(scores, indices, best_view), each B x k (inputs validated, k already clamped)."""
    q, wq, views = _prep(q, wq, views)
    B, N = q.shape[0], views.shape[0]
    dev = views.device
    top = RunningTopK(B, k, dev)
    if candidates is not None:
        C = candidates.shape[1]
        for c0 in range(0, C, chunk):
            cand = candidates[:, c0 : c0 + chunk].contiguous()
            s, bv = candidate_scores_triton(q, wq, views, cand, block_c=block_c)
            top.add(s, cand.masked_fill(cand < 0, -1), bv)
    elif B:
        chunk = min(chunk, N)
        out = torch.empty(B, chunk, dtype=torch.float32, device=dev)
        best = torch.empty(B, chunk, dtype=torch.int32, device=dev)
        ar = torch.arange(N, device=dev)
        for n0 in range(0, N, chunk):
            n1 = min(N, n0 + chunk)
            o, b = out[:, : n1 - n0], best[:, : n1 - n0]
            _launch_dense(q, wq, views[n0:n1], o, b, block_b, block_n)
            top.add(o, ar[n0:n1], b)
    scores, indices, best_view = top.result()
    if best_view is None:
        best_view = torch.full_like(indices, -1)
    return scores, indices, best_view
