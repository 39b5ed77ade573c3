"""The Triton kernels against the float64 numpy reference.

Without a GPU they run under Triton's interpreter (TRITON_INTERPRET=1, CPU tensors). The
variable is read when triton is first imported, and other test modules may already have
imported it in this pytest process, so `test_triton_interpreter_suite` re-runs this file in
a fresh pytest subprocess with the variable set (IBSR_TRITON_CHILD=1 marks the child). Sizes
are tiny: the interpreter runs every program in numpy. With CUDA the same checks also run on
the GPU, compiled, in this process.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ibsr.kernels import triton_rerank as TR
from ibsr.kernels._common import check_candidates
from ibsr.kernels.reference import reference_scores

CHILD = os.environ.get("IBSR_TRITON_CHILD") == "1"
if CHILD:
    assert os.environ.get("TRITON_INTERPRET") == "1"

# float16 views: q and W q are rounded to float16 for the tensor-core dot -> ~1e-3 errors
TOL = {torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 2e-5}


def tol_for(dtype, device):
    if device != "cpu" and dtype == torch.bfloat16:
        return 5e-3  # TF32 dot on the GPU (the interpreter computes it in float32)
    if device != "cpu" and dtype == torch.float32:
        return 1e-4
    return TOL[dtype]


def make_inputs(B, N, V, D, dtype, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(B, D, generator=g), dim=-1)
    W = torch.randn(D, D, generator=g) * 3.0
    wq = (q @ W.T).contiguous()
    views = torch.nn.functional.normalize(torch.randn(N, V, D, generator=g), dim=-1).to(dtype)
    return q.to(device), wq.to(device), views.to(device)


def _logit_ok(best, idx, wq, views, tol):
    a = np.einsum("bd,nvd->bnv", wq.double().cpu().numpy(), views.double().cpu().numpy())
    best, idx = best.cpu().numpy(), idx.cpu().numpy()
    for b in range(best.shape[0]):
        for j in range(best.shape[1]):
            n = idx[b, j]
            if n < 0:
                assert best[b, j] == -1
            else:
                assert a[b, n, best[b, j]] >= a[b, n].max() - tol


# (B, N, V, D, dtype): every V, D, dtype; B, N not multiples of the tiles; B=1, N=1; B > 16
DENSE_CASES = [
    (1, 1, 1, 64, torch.float32),
    (1, 37, 12, 64, torch.float16),
    (17, 37, 12, 128, torch.bfloat16),
    (3, 1, 24, 256, torch.float16),
    (5, 21, 24, 128, torch.float32),
    (2, 19, 1, 256, torch.bfloat16),
    (18, 5, 12, 64, torch.float32),
]


def check_dense(B, N, V, D, dtype, device):
    q, wq, views = make_inputs(B, N, V, D, dtype, seed=B + N + V + D, device=device)
    ref, ref_best = reference_scores(q, wq, views)
    out = torch.full((B, N), float("nan"), device=device)  # poisoned
    best = torch.full((B, N), -7, dtype=torch.int32, device=device)
    TR._launch_dense(q, wq, views, out, best, block_b=16, block_n=16)
    assert not torch.isnan(out).any(), "unwritten score"
    assert (best >= 0).all() and (best < V).all(), "unwritten best view"
    np.testing.assert_allclose(out.cpu().numpy(), ref, atol=tol_for(dtype, device), rtol=0)
    idx = torch.arange(N, device=device).expand(B, N)
    _logit_ok(best, idx, wq, views, 1e-5 if dtype != torch.float16 else 2e-2)
    # the public-shaped helper (default tiles) agrees
    s, _ = TR.scores_triton(q, wq, views)
    np.testing.assert_allclose(s.cpu().numpy(), ref, atol=tol_for(dtype, device), rtol=0)


def check_rerank(device):
    B, N, V, D, k = 17, 45, 12, 64, 20
    for dtype in (torch.float16, torch.float32):
        q, wq, views = make_inputs(B, N, V, D, dtype, seed=5, device=device)
        ref, _ = reference_scores(q, wq, views)
        tol = tol_for(dtype, device)
        # chunk (16) < k (20): the running top-k must copy out of the reused chunk buffer
        s, i, bv = TR.rerank_triton(q, wq, views, k, chunk=16, block_b=16, block_n=16)
        s, i = s.cpu().numpy(), i.cpu().numpy()
        assert s.shape == i.shape == bv.shape == (B, k) and not np.isnan(s).any()
        for b in range(B):
            assert len(set(i[b].tolist())) == k and (i[b] >= 0).all()
            np.testing.assert_allclose(s[b], ref[b, i[b]], atol=tol, rtol=0)
            assert (np.diff(s[b]) <= tol).all()
            kth = np.sort(ref[b])[::-1][k - 1]
            assert ref[b, i[b]].min() >= kth - 2 * tol
        _logit_ok(bv, torch.as_tensor(i), wq, views, 1e-5 if dtype != torch.float16 else 2e-2)


def check_candidates_mode(device):
    B, N, V, D, k = 4, 50, 12, 128, 5
    for dtype in (torch.bfloat16, torch.float16):
        q, wq, views = make_inputs(B, N, V, D, dtype, seed=9, device=device)
        ref, _ = reference_scores(q, wq, views)
        cand = torch.tensor(
            [
                [3, -1, 17, 49, 0, 8, 8, 22, -1, 41, 30, 31, 32, 33, 34, 35, 36, 37, 38],
                [-1] * 19,
                [5, 6] + [-1] * 17,
                list(range(31, 50)),
            ],
            device=device,
        )
        c = check_candidates(cand, B, N, cand.device)
        # raw kernel, poisoned buffers, tiles smaller than C so there is a partial tile
        out = torch.full(c.shape, float("nan"), device=device)
        bvb = torch.full(c.shape, -7, dtype=torch.int32, device=device)
        TR._kernels().candidate_scores_kernel[(B, TR.triton_cdiv(c.shape[1], 8))](
            q, wq, views, c, out, bvb, c.shape[1], V,
            q.stride(0), views.stride(0), views.stride(1), c.stride(0), out.stride(0), bvb.stride(0),
            D=D, BLOCK_C=8,
        )
        assert not torch.isnan(out).any() and not (bvb == -7).any()
        cc, oo = c.cpu().numpy(), out.cpu().numpy()
        valid = cc >= 0
        np.testing.assert_allclose(oo[valid], ref[np.nonzero(valid)[0], cc[valid]], atol=2e-5, rtol=0)
        assert np.isneginf(oo[~valid]).all() and (bvb.cpu().numpy()[~valid] == -1).all()

        s, i, bv = TR.rerank_triton(q, wq, views, k, c, block_c=8)
        s, i = s.cpu().numpy(), i.cpu().numpy()
        for b in range(B):
            allowed = np.unique(cc[b][cc[b] >= 0])
            nv = min(k, len(allowed))
            assert np.isin(i[b, :nv], allowed).all() and len(set(i[b, :nv].tolist())) == nv
            assert (i[b, nv:] == -1).all() and np.isneginf(s[b, nv:]).all()
            np.testing.assert_allclose(s[b, :nv], ref[b, i[b, :nv]], atol=2e-5, rtol=0)
            if nv:
                assert ref[b, i[b, :nv]].min() >= np.sort(ref[b, allowed])[::-1][nv - 1] - 4e-5
        _logit_ok(bv, torch.as_tensor(i), wq, views, 1e-5)


def check_rows_mode(device):
    """rerank(rows=) on Triton: the rows gathered on the device, indices mapped back to rows of views."""
    import ibsr.kernels as K

    B, N, V, D, k = 3, 40, 12, 64, 6
    q, wq, views = make_inputs(B, N, V, D, torch.float16, seed=13, device=device)
    ref, _ = reference_scores(q, wq, views)
    rows = torch.arange(1, N, 3, device=device)
    tol = tol_for(torch.float16, device)
    s, i, bv = K._rerank_triton(q, wq, views, k, None, rows)
    s, i, allowed = s.cpu().numpy(), i.cpu().numpy(), rows.cpu().numpy()
    for b in range(B):
        assert np.isin(i[b], allowed).all() and len(set(i[b].tolist())) == k
        np.testing.assert_allclose(s[b], ref[b, i[b]], atol=tol, rtol=0)
        assert ref[b, i[b]].min() >= np.sort(ref[b, allowed])[::-1][k - 1] - 2 * tol
    _logit_ok(bv, torch.as_tensor(i), wq, views, 2e-2)


if not CHILD:

    def test_triton_interpreter_suite():
        pytest.importorskip("triton")
        env = dict(os.environ, TRITON_INTERPRET="1", IBSR_TRITON_CHILD="1")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", os.path.abspath(__file__)],
            env=env, cwd=root, capture_output=True, text=True, timeout=900,
        )
        assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
        assert " passed" in r.stdout and "skipped" not in r.stdout, r.stdout[-2000:]

    cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

    @cuda
    @pytest.mark.parametrize("case", DENSE_CASES, ids=str)
    def test_dense_cuda(case):
        check_dense(*case, device="cuda")

    @cuda
    def test_rerank_cuda():
        check_rerank("cuda")

    @cuda
    def test_candidates_cuda():
        check_candidates_mode("cuda")

    @cuda
    def test_rows_cuda():
        check_rows_mode("cuda")

    @cuda
    def test_public_dispatch_cuda():
        import ibsr.kernels as K

        q, wq, views = make_inputs(7, 300, 12, 128, torch.float16, device="cuda")
        assert K._use_triton(views)
        ref, _ = reference_scores(q, wq, views)
        np.testing.assert_allclose(K.attention_scores(q, wq, views).cpu().numpy(), ref, atol=5e-3, rtol=0)
        r = K.rerank(q, wq, views, 10)
        assert r.indices.is_cuda and r.indices.shape == (7, 10)

else:

    @pytest.mark.parametrize("case", DENSE_CASES, ids=str)
    def test_dense_interpreter(case):
        check_dense(*case, device="cpu")

    def test_rerank_interpreter():
        check_rerank("cpu")

    def test_candidates_interpreter():
        check_candidates_mode("cpu")

    def test_rows_interpreter():
        check_rows_mode("cpu")

    def test_interpreter_is_on():
        import triton  # noqa: F401

        from ibsr.kernels import _triton_src

        assert type(_triton_src.dense_scores_kernel).__name__ == "InterpretedFunction"
