"""`--prefilter none`: bound-pruned search returns the exhaustive top-k (ibsr/searcher/pruned.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ibsr import kernels
from ibsr.cli import search as search_cli
from ibsr.errors import IbsrError
from ibsr.index.bounds import ShapeBounds
from ibsr.searcher import SearchOptions, Searcher
from ibsr.searcher.pruned import pruned_rerank

from test_index_search import N_SHAPES, view_photo

D, V = 32, 12


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def random_views(n: int, seed: int, clustered: bool) -> torch.Tensor:
    """n x V x D float16 unit views: i.i.d. (bounds prune little) or tight per-shape clusters
    around 8 category centres (bounds prune most shapes)."""
    g = torch.Generator().manual_seed(seed)
    if not clustered:
        return unit(torch.randn(n, V, D, generator=g)).half()
    centres = unit(torch.randn(8, D, generator=g))
    shapes = unit(centres[torch.randint(0, 8, (n,), generator=g)] + 0.1 * torch.randn(n, D, generator=g))
    return unit(shapes[:, None] + 0.05 * torch.randn(n, V, D, generator=g)).half()


def random_queries(b: int, seed: int):
    g = torch.Generator().manual_seed(seed + 1000)
    q = unit(torch.randn(b, D, generator=g))
    return q, q @ torch.randn(D, D, generator=g).t()


def assert_same_top_k(views, q, wq, got: kernels.Reranked, k: int):
    """Scores equal the exhaustive top-k's; each returned shape really has its score (ties at
    the k-th place may be broken either way, so ids are checked through their scores)."""
    want = kernels.rerank(q, wq, views, k)
    full = kernels.attention_scores(q, wq, views)
    torch.testing.assert_close(got.scores, want.scores, rtol=0, atol=1e-5)
    torch.testing.assert_close(full.gather(1, got.indices), got.scores, rtol=0, atol=1e-5)
    assert all(len(set(row)) == len(row) for row in got.indices.tolist())  # no shape twice
    logits = torch.einsum("bd,bkvd->bkv", wq, views[got.indices].float())  # W q . v_j of each hit
    assert (logits.gather(2, got.best_view[..., None]) >= logits.amax(dim=2, keepdim=True) - 1e-5).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("clustered", [False, True])
@pytest.mark.parametrize("b", [1, 37])
@pytest.mark.parametrize("k", [1, 10, 5000])  # 5000: larger than the catalog (clamped as rerank does)
def test_pruned_equals_exhaustive(seed, clustered, b, k):
    views = random_views(700, seed, clustered)
    q, wq = random_queries(b, seed)
    bounds = ShapeBounds.build(views)
    # max_fraction=inf: always take the pruned rounds, never the dense fallback
    got = pruned_rerank(q, wq, views, bounds, k, first=8, max_fraction=float("inf"))
    assert_same_top_k(views, q, wq, got.ranked, min(k, 700))
    # same ids at every rank whose score stands clear of its neighbours' (within float rounding
    # two nearly equal scores may come back in either order)
    want = kernels.rerank(q, wq, views, k)
    gaps = want.scores[:, :-1] - want.scores[:, 1:]
    pad = torch.full((b, 1), float("inf"))
    clear = (torch.cat([pad, gaps], 1) > 1e-5) & (torch.cat([gaps, pad], 1) > 1e-5)
    assert clear.float().mean() > 0.5  # the check below is not vacuous
    assert torch.equal(got.ranked.indices[clear], want.indices[clear])
    default = pruned_rerank(q, wq, views, bounds, k)  # with the dense fallback allowed
    assert_same_top_k(views, q, wq, default.ranked, min(k, 700))


@pytest.mark.parametrize("clustered", [False, True])
@pytest.mark.parametrize("sharpness", [0.01, 0.1, 1.0, 10.0])  # |W q| from ~0.06 to ~60
def test_bounds_hold_for_every_shape(clustered, sharpness):
    views = random_views(500, 5, clustered)
    q, wq = random_queries(20, 5)
    wq = wq * sharpness
    bound = ShapeBounds.build(views).bounds(q, wq)
    assert (bound >= kernels.attention_scores(q, wq, views)).all()


def test_attention_bound_holds_where_the_attention_leans_hardest():
    """Half the views at c + r u, half at c - r u, q and W q along u: the cosines take their
    extremes +-r and the attention leans to the + side as far as |W q| allows
    (score = r tanh(|W q| r)). The bound must hold, stay close for mild attention, and reach
    the best view's cosine (r) for sharp attention."""
    g = torch.Generator().manual_seed(3)
    c, u = unit(torch.randn(2, D, generator=g)).unbind(0)
    u = unit(u - (u @ c) * c)
    r = 0.5
    views = torch.stack([c + (r if j % 2 else -r) * u for j in range(V)])[None]
    bounds = ShapeBounds.build(views)
    for beta in (0.1, 0.5, 2.0, 100.0):
        score = kernels.attention_scores(u[None], beta * u[None], views)[0, 0]
        assert score == pytest.approx(r * np.tanh(beta * r), abs=1e-5)
        bound = bounds.bounds(u[None], beta * u[None])[0, 0]
        assert score <= bound <= score + 0.7 * (r - score) + 2e-4  # below the best-view bound, r
        if beta <= 0.5:
            assert bound - score < 0.01


def test_attention_bound_prunes_more_than_the_best_view_bound():
    """Near-uniform attention (small |W q|, as the shipped model has): the bound sits well
    below the best view's cosine bound q . c + |q| r on most shapes."""
    views = random_views(500, 5, clustered=True)
    q, wq = random_queries(20, 5)
    wq = wq * (0.7 / wq.norm(dim=1, keepdim=True))
    b = ShapeBounds.build(views)
    best_view = q @ b.centres.t() + b.radii[None] * q.norm(dim=1, keepdim=True)
    assert (b.bounds(q, wq) < best_view - 0.5 * b.radii[None]).float().mean() > 0.9


def test_clustered_catalog_scores_a_fraction_of_it():
    """Queries near a shape (as photos are) on clustered views: most shapes are never scored."""
    views = random_views(4000, 3, clustered=True)
    bounds = ShapeBounds.build(views)
    g = torch.Generator().manual_seed(9)
    for row in torch.randint(0, 4000, (4,), generator=g).tolist():
        q = unit(views[row].float().mean(0, keepdim=True) + 0.05 * torch.randn(1, D, generator=g))
        wq = q @ torch.randn(D, D, generator=g).t()
        got = pruned_rerank(q, wq, views, bounds, 10, first=64)
        assert_same_top_k(views, q, wq, got.ranked, 10)
        assert got.scored[0] < 0.5 * len(views)


def test_exact_ties_beyond_the_first_round_are_kept():
    """The best shape and its duplicate sit behind decoys of higher bound: the first round
    scores only decoys, and both tied copies must still come back."""
    q = unit(torch.randn(1, D, generator=torch.Generator().manual_seed(7)))
    wq = 10 * q  # sharp attention: a decoy's bound is its best view's cosine, ~1
    u = unit(torch.randn(D, generator=torch.Generator().manual_seed(8)))
    u = unit(u - (u @ q[0]) * q[0])  # orthogonal to q: decoys score ~0 but bound ~1
    decoy = torch.stack([u if j % 2 else -u for j in range(V)])
    best = unit(q[0] + 0.3 * u).expand(V, D)  # score = q . best, bound = the same + SLACK
    filler = unit(-q[0] + 0.5 * u).expand(V, D)  # scores below zero
    views = torch.stack([decoy] * 10 + [best] + [filler] * 20 + [best]).half()
    got = pruned_rerank(q, wq, views, ShapeBounds.build(views), 2, first=1, max_fraction=float("inf"))
    assert sorted(got.ranked.indices[0].tolist()) == [10, 31]
    assert got.ranked.scores[0, 0] == got.ranked.scores[0, 1]
    assert got.scored[0] < len(views)  # the fillers were pruned
    default = pruned_rerank(q, wq, views, ShapeBounds.build(views), 2)  # the default mode's settings
    assert sorted(default.ranked.indices[0].tolist()) == [10, 31]


def test_searcher_none_mode_is_the_exhaustive_top_k(built_index, tiny_weights, catalog, tmp_path):
    """`--prefilter none` (pruned) returns the dense pass's top k."""
    searcher = Searcher(built_index, weights=tiny_weights)
    meshes = [sorted((catalog / c).iterdir())[0] for c in ("chair", "table", "lamp")]
    photos = [view_photo(m, tmp_path / f"q{i}.png", view=i) for i, m in enumerate(meshes)]
    q, wq = searcher.encode(searcher.load_queries(photos))
    for topk in (1, N_SHAPES):
        dense = kernels.rerank(q, wq, searcher.views, topk)
        for r, scores, rows in zip(searcher.search(photos, topk=topk, prefilter="none"), dense.scores, dense.indices):
            assert [h.score for h in r.hits] == pytest.approx(scores.tolist(), abs=1e-5)
            assert {h.shape_id for h in r.hits} == {searcher.shapes.row(i)[0] for i in rows.tolist()}
            assert 0 < r.shapes_scored <= 1
    assert searcher.shapes_scored > 0


def test_a_batch_turns_dense_when_pruning_would_cost_more():
    """Loose bounds (i.i.d. views): the batch's rows pass the budget, one dense pass runs (every
    shape scored). Tight bounds: each query scores a fraction. The same top k either way."""
    q, wq = random_queries(2, 3)
    for clustered, dense in ((False, True), (True, False)):
        views = random_views(3000, 3, clustered)
        if clustered:  # queries near shapes, as photos are
            q = unit(views[:2].float().mean(1) + 0.05 * torch.randn(2, D, generator=torch.Generator().manual_seed(1)))
            wq = q @ torch.randn(D, D, generator=torch.Generator().manual_seed(2)).t()
        got = pruned_rerank(q, wq, views, ShapeBounds.build(views), 10, first=64)
        assert_same_top_k(views, q, wq, got.ranked, 10)
        assert (got.scored == 3000).all() == dense and (got.scored < 3000).all() != dense


def test_searcher_none_mode_on_random_queries(built_index, tiny_weights):
    """Many encoded queries through the Searcher's own views and bounds (float16 as stored): the
    dense pass's top k."""
    searcher = Searcher(built_index, weights=tiny_weights)
    q = unit(torch.randn(50, searcher.views.shape[2], generator=torch.Generator().manual_seed(4)))
    wq = searcher.model.attend(q).detach()
    queries = [type("Q", (), {"path": f"q{i}", "mask_source": "given"})() for i in range(50)]
    for k in (1, 5):
        none = searcher.search_encoded(queries, q, wq, topk=k, prefilter="none")
        dense = kernels.rerank(q, wq, searcher.views, k)
        for a, scores in zip(none, dense.scores):
            assert [h.score for h in a.hits] == pytest.approx(scores.tolist(), abs=1e-5)


def test_exact_is_refused_naming_none(tmp_path):
    """`exact`, the former name of `none`, is gone: the command and the API say what to use."""
    result = CliRunner().invoke(search_cli.main, [str(tmp_path / "q.png"), "--prefilter", "exact"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if "--prefilter" in line and "exact" in line]
    assert "'none'" in line
    with pytest.raises(IbsrError, match=r"^--prefilter must be one of .*\bnone\b.*, not 'exact'$"):
        SearchOptions(prefilter="exact")
