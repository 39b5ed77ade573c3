"""The Triton kernels. Imported lazily (by `triton_rerank`) so that `import ibsr.kernels`
never imports triton, and so that TRITON_INTERPRET=1 can be set before triton's first import.
"""

import triton
import triton.language as tl


@triton.jit
def dense_scores_kernel(
    q_ptr, wq_ptr, views_ptr, out_ptr, best_ptr,
    B, N, V,
    stride_qb, stride_vn, stride_vv, stride_ob, stride_bb,
    D: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_MODE: tl.constexpr,
):
    """One program: BLOCK_B queries x BLOCK_N shapes. Loops over the V views, reading each
    BLOCK_N x D view tile once for the whole query tile; online softmax over views."""
    pid_b = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    mask_b = offs_b < B
    mask_n = offs_n < N

    qoff = offs_b.to(tl.int64)[:, None] * stride_qb + offs_d[None, :]
    q = tl.load(q_ptr + qoff, mask=mask_b[:, None], other=0.0)      # BLOCK_B x D fp32
    wq = tl.load(wq_ptr + qoff, mask=mask_b[:, None], other=0.0)
    # DOT_MODE 0: float16 views, q and W q cast to float16 (tensor cores, fp32 accumulate);
    # 1: float32 views, IEEE float32 dot; 2: bfloat16 views upcast to float32, TF32 dot
    # (q keeps 10 mantissa bits instead of bfloat16's 7; also the interpreter has no
    # bfloat16 dot)
    if DOT_MODE == 0:
        q = q.to(views_ptr.dtype.element_ty)
        wq = wq.to(views_ptr.dtype.element_ty)

    # int64 row offsets: N * V * D exceeds 2**31 for large catalogs
    vbase = views_ptr + offs_n.to(tl.int64)[:, None] * stride_vn + offs_d[None, :]

    m = tl.full((BLOCK_B, BLOCK_N), float("-inf"), tl.float32)     # running max logit
    l = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)                    # running sum of exp
    acc = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)                  # running sum of exp * cos
    best = tl.zeros((BLOCK_B, BLOCK_N), tl.int32)
    for j in range(0, V):
        vt = tl.trans(tl.load(vbase + j * stride_vv, mask=mask_n[:, None], other=0.0))  # D x BLOCK_N
        if DOT_MODE == 0:
            a = tl.dot(wq, vt)
            c = tl.dot(q, vt)
        elif DOT_MODE == 1:
            a = tl.dot(wq, vt, input_precision="ieee")
            c = tl.dot(q, vt, input_precision="ieee")
        else:
            vt = vt.to(tl.float32)
            a = tl.dot(wq, vt, input_precision="tf32")
            c = tl.dot(q, vt, input_precision="tf32")
        m_new = tl.maximum(m, a)
        alpha = tl.exp(m - m_new)
        p = tl.exp(a - m_new)
        l = l * alpha + p
        acc = acc * alpha + p * c
        best = tl.where(a > m, j, best)  # strict: first view wins exact ties
        m = m_new

    score = acc / l
    mask = mask_b[:, None] & mask_n[None, :]
    ob = offs_b.to(tl.int64)[:, None]
    tl.store(out_ptr + ob * stride_ob + offs_n[None, :], score, mask=mask)
    tl.store(best_ptr + ob * stride_bb + offs_n[None, :], best, mask=mask)


@triton.jit
def candidate_scores_kernel(
    q_ptr, wq_ptr, views_ptr, cand_ptr, out_ptr, best_ptr,
    C, V,
    stride_qb, stride_vn, stride_vv, stride_cb, stride_ob, stride_bb,
    D: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """One program: one query x BLOCK_C of its candidates (gathered rows; -1 -> -inf).
    Each query reads its own rows, so there is nothing to share across queries: the dot
    products are vector x tile reductions rather than tl.dot."""
    pid_b = tl.program_id(0)
    pid_c = tl.program_id(1)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, D)
    mask_c = offs_c < C
    b64 = pid_b.to(tl.int64)

    idx = tl.load(cand_ptr + b64 * stride_cb + offs_c, mask=mask_c, other=-1)
    valid = idx >= 0
    rows = tl.where(valid, idx, 0).to(tl.int64)
    q = tl.load(q_ptr + b64 * stride_qb + offs_d)      # D fp32
    wq = tl.load(wq_ptr + b64 * stride_qb + offs_d)
    vbase = views_ptr + rows[:, None] * stride_vn + offs_d[None, :]

    m = tl.full((BLOCK_C,), float("-inf"), tl.float32)
    l = tl.zeros((BLOCK_C,), tl.float32)
    acc = tl.zeros((BLOCK_C,), tl.float32)
    best = tl.zeros((BLOCK_C,), tl.int32)
    for j in range(0, V):
        vt = tl.load(vbase + j * stride_vv, mask=valid[:, None], other=0.0).to(tl.float32)  # BLOCK_C x D
        a = tl.sum(vt * wq[None, :], axis=1)
        c = tl.sum(vt * q[None, :], axis=1)
        m_new = tl.maximum(m, a)
        alpha = tl.exp(m - m_new)
        p = tl.exp(a - m_new)
        l = l * alpha + p
        acc = acc * alpha + p * c
        best = tl.where(a > m, j, best)
        m = m_new

    score = tl.where(valid, acc / l, float("-inf"))
    best = tl.where(valid, best, -1)
    tl.store(out_ptr + b64 * stride_ob + offs_c, score, mask=mask_c)
    tl.store(best_ptr + b64 * stride_bb + offs_c, best, mask=mask_c)
