"""ibsr.kernels: public API, validation, and the torch path against a float64 numpy reference.

The Triton kernels are tested in test_kernels_triton.py (interpreter, in a subprocess).
"""

import numpy as np
import pytest
import torch

import ibsr.kernels as K
from ibsr.kernels import Reranked, attention_scores, rerank, torch_path
from ibsr.kernels._common import RunningTopK
from ibsr.kernels.reference import reference_scores

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def make_inputs(B, N, V, D, dtype=torch.float32, seed=0, scale=3.0):
    """Normalized q and views; W with N(0, scale^2) entries, so logits W q . v are ~N(0, scale^2)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(B, D, generator=g), dim=-1)
    W = torch.randn(D, D, generator=g) * scale
    wq = (q @ W.T).contiguous()
    views = torch.nn.functional.normalize(torch.randn(N, V, D, generator=g), dim=-1).to(dtype)
    return q, wq, views


def check_topk(res, ref, k, tol, candidates=None):
    """res: Reranked; ref: B x N float64 reference scores. Ties within `tol` may come back in
    any order, so check the set and the order by value, not exact indices."""
    scores, idx = res.scores.numpy(), res.indices.numpy()
    B = ref.shape[0]
    assert scores.shape == idx.shape == (B, k)
    assert not np.isnan(scores).any()
    for b in range(B):
        allowed = np.arange(ref.shape[1])
        if candidates is not None:
            allowed = np.unique(candidates[b][candidates[b] >= 0])
        nvalid = min(k, len(allowed))
        got = idx[b, :nvalid]
        assert (got >= 0).all() and len(set(got.tolist())) == nvalid
        assert np.isin(got, allowed).all()
        # padding slots: -1 / -inf
        assert (idx[b, nvalid:] == -1).all() and np.isneginf(scores[b, nvalid:]).all()
        np.testing.assert_allclose(scores[b, :nvalid], ref[b, got], atol=tol, rtol=0)
        assert (np.diff(scores[b, :nvalid]) <= tol).all()  # best first
        order = np.sort(ref[b, allowed])[::-1]
        if nvalid:
            # the k returned are the reference's top k up to ties within tol
            assert ref[b, got].min() >= order[nvalid - 1] - 2 * tol
            np.testing.assert_allclose(np.sort(ref[b, got])[::-1], order[:nvalid], atol=2 * tol, rtol=0)


def check_best_view(best, indices, wq, views, tol):
    """best view == argmax logit, except where the reference's top two logits are within tol."""
    a = np.einsum("bd,nvd->bnv", wq.double().numpy(), views.double().numpy())
    best, indices = best.numpy(), indices.numpy()
    for b in range(best.shape[0]):
        for j in range(best.shape[1]):
            n = indices[b, j]
            if n < 0:
                assert best[b, j] == -1
                continue
            logits = a[b, n]
            assert 0 <= best[b, j] < logits.shape[0]
            assert logits[best[b, j]] >= logits.max() - tol


SIZES = [(1, 1), (1, 37), (5, 1), (7, 129), (33, 300)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("D", [64, 128, 256])
@pytest.mark.parametrize("V", [1, 12, 24])
@pytest.mark.parametrize("B,N", SIZES)
def test_attention_scores_torch_matches_reference(B, N, V, D, dtype):
    q, wq, views = make_inputs(B, N, V, D, dtype, seed=B * 1000 + N + V + D)
    ref, _ = reference_scores(q, wq, views)
    # small chunks: many chunks, the last one partial
    out = torch_path.attention_scores(q, wq, views, chunk_bytes=V * 2 * B * 4 * 7)
    assert out.dtype == torch.float32 and out.shape == (B, N)
    assert not torch.isnan(out).any()
    np.testing.assert_allclose(out.numpy(), ref, atol=2e-5, rtol=0)
    # the public entry (default chunking) agrees too
    np.testing.assert_allclose(attention_scores(q, wq, views).numpy(), ref, atol=2e-5, rtol=0)


def test_attention_scores_writes_every_element(monkeypatch):
    """Poison the output buffer with NaN: an element the chunk loop skips would stay NaN."""
    real_empty = torch.empty

    def nan_empty(*args, **kw):
        t = real_empty(*args, **kw)
        if t.is_floating_point():
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch_path.torch, "empty", nan_empty)
    q, wq, views = make_inputs(3, 101, 12, 64, torch.float16)
    out = torch_path.attention_scores(q, wq, views, chunk_bytes=12 * 6 * 4 * 10)
    assert not torch.isnan(out).any()
    np.testing.assert_allclose(out.numpy(), reference_scores(q, wq, views)[0], atol=2e-5, rtol=0)


def test_scores_bounded_by_best_cosine():
    q, wq, views = make_inputs(4, 50, 12, 128)
    s = attention_scores(q, wq, views)
    cos_max = torch.einsum("bd,nvd->bnv", q, views).amax(dim=2)
    cos_min = torch.einsum("bd,nvd->bnv", q, views).amin(dim=2)
    assert (s <= cos_max + 1e-5).all() and (s >= cos_min - 1e-5).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("V,D", [(1, 64), (12, 128), (24, 256)])
@pytest.mark.parametrize("B,N,k", [(1, 1, 1), (1, 1, 5), (5, 37, 5), (9, 129, 20), (3, 300, 300)])
def test_rerank_torch_dense(B, N, k, V, D, dtype):
    q, wq, views = make_inputs(B, N, V, D, dtype, seed=N + k)
    ref, _ = reference_scores(q, wq, views)
    res = rerank(q, wq, views, k)
    assert isinstance(res, Reranked)
    kk = min(k, N)  # clamped
    assert res.indices.dtype == torch.int64 and res.best_view.dtype == torch.int64
    assert res.scores.dtype == torch.float32
    check_topk(res, ref, kk, 2e-5)
    check_best_view(res.best_view, res.indices, wq, views, 1e-5)
    # many small chunks through the running top-k give the same answer
    s2, i2, b2 = torch_path.rerank(q, wq, views, kk, chunk_bytes=V * 2 * B * 4 * 3)
    check_topk(Reranked(s2, i2, b2), ref, kk, 2e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rerank_torch_candidates(dtype):
    B, N, V, D, k = 4, 60, 12, 128, 6
    q, wq, views = make_inputs(B, N, V, D, dtype, seed=7)
    ref, _ = reference_scores(q, wq, views)
    cand = torch.tensor(
        [
            [3, -1, 17, 59, 0, 8, 8, 22, -1, 41],  # a duplicate (8) counts once
            [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1],  # no valid candidate at all
            [5, 6, -1, -1, -1, -1, -1, -1, -1, -1],  # fewer than k
            list(range(50, 60)),
        ]
    )
    res = rerank(q, wq, views, k, candidates=cand)
    check_topk(res, ref, k, 2e-5, candidates=cand.numpy())
    check_best_view(res.best_view, res.indices, wq, views, 1e-5)
    assert (res.indices[1] == -1).all() and torch.isneginf(res.scores[1]).all()
    assert (res.best_view[1] == -1).all() and (res.best_view[2, 2:] == -1).all()
    # chunked over C (one candidate column at a time) gives the same result
    from ibsr.kernels._common import check_candidates

    s2, i2, b2 = torch_path.rerank(q, wq, views, k, check_candidates(cand, B, N, cand.device), chunk_bytes=1)
    check_topk(Reranked(s2, i2, b2), ref, k, 2e-5, candidates=cand.numpy())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("B,k", [(1, 5), (6, 12)])
def test_rerank_rows_equals_the_rerank_of_the_gathered_rows(B, k, dtype):
    """rows=: each chunk gathered as it is scored gives the bits of one whole gather (the
    search's category groups did that copy before), indices mapped to rows of views."""
    N, V, D = 300, 12, 128
    q, wq, views = make_inputs(B, N, V, D, dtype, seed=B + k)
    rows = torch.randperm(N, generator=torch.Generator().manual_seed(1))[:170].sort().values
    ref, _ = reference_scores(q, wq, views)
    for chunk_bytes in (torch_path.DEFAULT_CHUNK_BYTES, V * 2 * B * 4 * 7):  # one chunk; many
        whole = torch_path.rerank(q, wq, views.index_select(0, rows), k, chunk_bytes=chunk_bytes)
        got = torch_path.rerank(q, wq, views, k, rows=rows, chunk_bytes=chunk_bytes)
        assert torch.equal(got[0], whole[0]) and torch.equal(got[1], rows[whole[1]]) and torch.equal(got[2], whole[2])
    res = rerank(q, wq, views, k, rows=rows)
    check_topk(res, ref, k, 2e-5, candidates=rows.expand(B, -1).numpy())
    check_best_view(res.best_view, res.indices, wq, views, 1e-5)
    assert rerank(q, wq, views, 500, rows=rows[:3]).indices.shape == (B, 3)  # k clamps to the rows


def test_rerank_reads_a_read_only_memory_map_in_place(tmp_path, recwarn):
    """host_tensor: a tensor over the map itself (no copy, no warning), reranked as a copy is."""
    q, wq, views = make_inputs(3, 200, 12, 64, torch.float16, seed=5)
    np.save(tmp_path / "views.npy", views.numpy())
    mapped = np.load(tmp_path / "views.npy", mmap_mode="r")
    tensor = K.host_tensor(mapped)
    assert not mapped.flags.writeable and tensor.data_ptr() == mapped.ctypes.data
    for args in ({}, {"rows": torch.arange(5, 150, 3)}, {"candidates": torch.randint(0, 200, (3, 40))}):
        got, want = rerank(q, wq, tensor, 7, **args), rerank(q, wq, views, 7, **args)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert not [w for w in recwarn if "not writable" in str(w.message)]


def test_rerank_candidates_k_above_c_and_n():
    q, wq, views = make_inputs(2, 10, 12, 64, seed=3)
    ref, _ = reference_scores(q, wq, views)
    cand = torch.tensor([[1, 2, 3], [9, -1, 0]])
    res = rerank(q, wq, views, 50, candidates=cand)  # k clamps to N = 10
    assert res.indices.shape == (2, 10)
    check_topk(res, ref, 10, 2e-5, candidates=cand.numpy())


def test_rerank_bf16_compute_opt_in():
    q, wq, views = make_inputs(5, 80, 12, 128, torch.bfloat16, seed=11)
    ref, _ = reference_scores(q, wq, views)
    out = torch_path.attention_scores(q, wq, views, compute_dtype=torch.bfloat16)
    np.testing.assert_allclose(out.numpy(), ref, atol=5e-2, rtol=0)


def test_running_topk_merges():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 500, generator=g)
    top = RunningTopK(3, 7, "cpu", merge_cols=4)
    top.merge_cols = 10  # force many merges
    for n0 in range(0, 500, 13):
        top.add(s[:, n0 : n0 + 13], torch.arange(n0, min(500, n0 + 13)))
    vals, idx, _ = top.result()
    rv, ri = s.topk(7, dim=1)
    assert torch.equal(vals, rv) and torch.equal(idx, ri)


def test_zero_queries():
    _, _, views = make_inputs(1, 10, 12, 64)
    q = torch.zeros(0, 64)
    assert attention_scores(q, q, views).shape == (0, 10)
    res = rerank(q, q, views, 3)
    assert res.scores.shape == res.indices.shape == res.best_view.shape == (0, 3)


def test_validation_errors():
    q, wq, views = make_inputs(2, 10, 12, 64)
    with pytest.raises(ValueError, match="k must be >= 1"):
        rerank(q, wq, views, 0)
    with pytest.raises(ValueError, match="k must be an integer"):
        rerank(q, wq, views, "3")
    with pytest.raises(ValueError, match="float32"):
        attention_scores(q.half(), wq, views)
    with pytest.raises(ValueError, match="wq must have"):
        attention_scores(q, wq[:1], views)
    with pytest.raises(ValueError, match="D=32"):
        attention_scores(q, wq, views[..., :32])
    with pytest.raises(ValueError, match="N x V x D"):
        attention_scores(q, wq, views[0])
    with pytest.raises(ValueError, match="float16, bfloat16 or float32"):
        attention_scores(q, wq, views.double())
    with pytest.raises(ValueError, match="non-empty"):
        attention_scores(q, wq, views[:0])
    with pytest.raises(ValueError, match=r"in \[0, 10\)"):
        rerank(q, wq, views, 2, candidates=torch.tensor([[0, 10], [1, 2]]))
    with pytest.raises(ValueError, match=r"in \[0, 10\)"):
        rerank(q, wq, views, 2, candidates=torch.tensor([[0, -2], [1, 2]]))
    with pytest.raises(ValueError, match="int64"):
        rerank(q, wq, views, 2, candidates=torch.tensor([[0, 1], [1, 2]], dtype=torch.int32))
    with pytest.raises(ValueError, match="B x C"):
        rerank(q, wq, views, 2, candidates=torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match=r"rows must be in \[0, 10\)"):
        rerank(q, wq, views, 2, rows=torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        rerank(q, wq, views, 2, rows=torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match="not both"):
        rerank(q, wq, views, 2, candidates=torch.tensor([[0, 1], [1, 2]]), rows=torch.tensor([0, 1]))


def test_import_does_not_import_triton():
    import subprocess
    import sys

    code = "import sys, ibsr.kernels; assert 'triton' not in sys.modules, 'triton imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert K._use_triton(torch.zeros(1, 1, 64)) is False  # CPU tensors never take Triton


def test_reused_workspaces_change_no_score():
    """The CPU path keeps each thread's chunk buffers between calls: a call after a larger or a
    smaller one, in this thread or in others at the same time, gives the same bits as alone."""
    from concurrent.futures import ThreadPoolExecutor

    calls = [make_inputs(3, 90, 12, 64, torch.float16, seed=1), make_inputs(9, 700, 12, 64, torch.float16, seed=2),
             make_inputs(1, 40, 12, 64, torch.float32, seed=3)]
    alone = [torch_path.attention_scores(*inputs, chunk_bytes=1 << 14) for inputs in calls]
    for inputs, first in zip(calls * 2, alone * 2):  # each after another size
        assert torch.equal(torch_path.attention_scores(*inputs, chunk_bytes=1 << 14), first)
    with ThreadPoolExecutor(3) as pool:
        again = list(pool.map(lambda inputs: torch_path.attention_scores(*inputs, chunk_bytes=1 << 14), calls * 4))
    assert all(torch.equal(a, b) for a, b in zip(again, alone * 4))
    for inputs, first in zip(calls, alone):
        np.testing.assert_allclose(first.numpy(), reference_scores(*inputs)[0], atol=1e-4)
