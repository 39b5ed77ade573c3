"""End to end: build an index of generated meshes, search it, check every score in float64."""

import shutil
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from ibsr.errors import IbsrError
from ibsr.geometry.mesh import load_mesh
from ibsr.geometry.render import render_views
from ibsr.index.layout import META_FILE, IndexMeta
from ibsr.index.snapshot import IndexSnapshot
from ibsr.index.table import ShapeReader
from ibsr.indexer import Indexer
from ibsr.model import load_checkpoint
from ibsr.photos.query import load_query, query_tensor
from ibsr.searcher import Searcher

from conftest import CATEGORIES, SHAPES_PER_CATEGORY

N_SHAPES = len(CATEGORIES) * SHAPES_PER_CATEGORY


def view_photo(mesh_path, out, view=1, size=96):
    """A 'photo' of a catalog mesh: one of its renderings, as RGB."""
    gray = render_views(load_mesh(mesh_path), size)[view]
    Image.fromarray(np.dstack([gray] * 3)).save(out)
    return out


def float64_scores(weights, image, snapshot):
    model = load_checkpoint(weights)
    x = torch.from_numpy(query_tensor(load_query(image), model.config.query_size))[None]
    with torch.no_grad():
        q = model.embed_queries(x).double().numpy()[0]
    w = model.attention.linear_in.weight.detach().double().numpy()
    views = snapshot.views.astype(np.float64)  # exactly what the index stores
    logits = views @ (w @ q)
    attn = np.exp(logits - logits.max(axis=1, keepdims=True))
    attn /= attn.sum(axis=1, keepdims=True)
    return (attn * (views @ q)).sum(axis=1)


def test_build_writes_every_shape(built_index, tiny_weights):
    reader = ShapeReader(built_index)
    info = reader.info()
    assert info["shapes"] == N_SHAPES
    assert info["categories"] == {c: SHAPES_PER_CATEGORY for c in CATEGORIES}
    assert info["format_version"] == 1 and info["views"] == 12
    snap = IndexSnapshot.read(reader)
    assert snap.views.dtype == np.float16 and snap.views.shape == (N_SHAPES, 12, 64)
    norms = np.linalg.norm(snap.views.astype(np.float32), axis=2)
    assert np.allclose(norms, 1, atol=2e-3)
    pooled = snap.views.astype(np.float64).mean(axis=1)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    assert np.allclose(snap.vectors, pooled, atol=1e-3)
    thumbs = reader.thumbnails(snap.shape_ids[:2])
    assert all(png.startswith(b"\x89PNG") for png in thumbs.values()) and len(thumbs) == 2


def test_scores_match_float64_attention(built_index, tiny_weights, catalog, tmp_path, monkeypatch):
    monkeypatch.setenv("IBSR_PRECISION", "float32")  # the rerank's accuracy; bf16 queries: test_precision.py
    searcher = Searcher(built_index, weights=tiny_weights)
    mesh = sorted((catalog / "table").iterdir())[1]
    photo = view_photo(mesh, tmp_path / "q.png")
    [result] = searcher.search([photo], topk=N_SHAPES, prefilter="none")
    expected = float64_scores(tiny_weights, photo, searcher.shapes)
    got = {h.shape_id: h.score for h in result.hits}
    assert len(got) == N_SHAPES
    for i, shape_id in enumerate(searcher.shapes.shape_ids):
        assert got[shape_id] == pytest.approx(expected[i], abs=2e-3)
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    # ranks follow the float64 order wherever the reference separates shapes clearly
    order = np.argsort(-expected)
    ref_ids = [searcher.shapes.shape_ids[i] for i in order]
    gaps = -np.diff(expected[order])
    for rank, hit in enumerate(result.hits[:-1]):
        if gaps[rank] > 4e-3 and (rank == 0 or gaps[rank - 1] > 4e-3):
            assert hit.shape_id == ref_ids[rank]
    assert [h.rank for h in result.hits] == list(range(1, N_SHAPES + 1))


def test_batch_search_equals_single_searches(built_index, tiny_weights, catalog, tmp_path):
    searcher = Searcher(built_index, weights=tiny_weights)
    meshes = sorted((catalog / "chair").iterdir())[:2]
    photos = [view_photo(m, tmp_path / f"q{i}.png", view=i) for i, m in enumerate(meshes)]
    batch = searcher.search(photos, topk=5)
    for photo, result in zip(photos, batch):
        [single] = searcher.search([photo], topk=5)
        assert [h.shape_id for h in single.hits] == [h.shape_id for h in result.hits]
        assert np.allclose([h.score for h in single.hits], [h.score for h in result.hits], atol=1e-4)


def test_category_restricts_results(built_index, tiny_weights, catalog, tmp_path):
    searcher = Searcher(built_index, weights=tiny_weights)
    photo = view_photo(sorted((catalog / "chair").iterdir())[0], tmp_path / "q.png")
    [result] = searcher.search([photo], topk=3, category="lamp")
    assert [h.category for h in result.hits] == ["lamp"] * 3
    with pytest.raises(IbsrError, match="no shapes of category 'boat'"):
        searcher.search([photo], topk=3, category="boat")


@pytest.mark.parametrize("topk, message", [(0, "at least 1"), (N_SHAPES + 1, "larger than the index")])
def test_bad_topk(built_index, tiny_weights, catalog, tmp_path, topk, message):
    photo = view_photo(sorted((catalog / "chair").iterdir())[0], tmp_path / "q.png")
    with pytest.raises(IbsrError, match=message):
        Searcher(built_index, weights=tiny_weights).search([photo], topk=topk)


def test_rerun_skips_unchanged_and_reindexes_changed(index_copy, tiny_weights, catalog_copy):
    first = Indexer(index_copy, weights=tiny_weights).build(catalog_copy, progress=False)
    assert (first.indexed, first.unchanged) == (0, N_SHAPES)
    chairs = sorted((catalog_copy / "chair").iterdir())
    shutil.copy(chairs[1], chairs[0])  # chair 0 now has chair 1's geometry
    second = Indexer(index_copy, weights=tiny_weights).build(catalog_copy, progress=False)
    assert (second.indexed, second.unchanged) == (1, N_SHAPES - 1)
    snap = IndexSnapshot.open(index_copy)
    assert len(snap.shape_ids) == len(set(snap.shape_ids)) == N_SHAPES
    row = {s: i for i, s in enumerate(snap.shape_ids)}
    a, b = f"chair/{chairs[0].stem}", f"chair/{chairs[1].stem}"
    assert np.array_equal(snap.views[row[a]], snap.views[row[b]])


def test_bad_meshes_are_skipped_then_listed(index_copy, tiny_weights, catalog_copy):
    before = IndexSnapshot.open(index_copy)
    (catalog_copy / "chair" / "broken.obj").write_text("this is not a mesh\n")
    (catalog_copy / "chair" / "empty.obj").write_bytes(b"")
    (catalog_copy / "chair" / "nan.obj").write_text("v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    report = Indexer(index_copy, weights=tiny_weights).build(catalog_copy, progress=False)
    assert sorted(f["path"].rsplit("/", 1)[-1] for f in report.failed) == ["broken.obj", "empty.obj", "nan.obj"]
    assert report.indexed == 0 and report.unchanged == N_SHAPES
    with pytest.raises(IbsrError, match="empty.obj|broken.obj|nan.obj"):
        Indexer(index_copy, weights=tiny_weights).build(catalog_copy, strict=True, progress=False)
    after = IndexSnapshot.open(index_copy)
    assert after.shape_ids == before.shape_ids and np.array_equal(after.views, before.views)


def test_prune_removes_shapes_gone_from_the_catalog(index_copy, tiny_weights, catalog_copy):
    shutil.rmtree(catalog_copy / "lamp")
    kept = Indexer(index_copy, weights=tiny_weights).build(catalog_copy, progress=False)
    assert kept.not_in_catalog == SHAPES_PER_CATEGORY and ShapeReader(index_copy).info()["shapes"] == N_SHAPES
    pruned = Indexer(index_copy, weights=tiny_weights).build(catalog_copy, prune=True, progress=False)
    assert pruned.pruned == SHAPES_PER_CATEGORY
    assert "lamp" not in ShapeReader(index_copy).info()["categories"]


def test_other_encoder_is_refused(index_copy, other_weights, catalog):
    with pytest.raises(IbsrError, match="index was built with encoder"):
        Searcher(index_copy, weights=other_weights)
    with pytest.raises(IbsrError, match="encoder_id"):
        Indexer(index_copy, weights=other_weights).build(catalog, progress=False)
    assert ShapeReader(index_copy).info()["shapes"] == N_SHAPES


def test_missing_and_foreign_index_dirs(tmp_path, tiny_weights, catalog):
    with pytest.raises(IbsrError, match="no index here"):
        Searcher(tmp_path / "nope", weights=tiny_weights)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.txt").write_text("mine")
    with pytest.raises(IbsrError, match="not an ibsr index"):
        Searcher(foreign, weights=tiny_weights)
    with pytest.raises(IbsrError, match="not an ibsr index"):
        Indexer(foreign, weights=tiny_weights).build(catalog, progress=False)
    assert [p.name for p in foreign.iterdir()] == ["data.txt"]  # nothing written into it
    (foreign / META_FILE).write_text("{broken")
    with pytest.raises(IbsrError, match="unreadable index metadata"):
        IndexMeta.read(foreign)


def test_search_during_build_sees_consistent_versions(tmp_path, tiny_weights, catalog):
    index = tmp_path / "live"
    indexer = Indexer(index, weights=tiny_weights, batch_size=1)
    photo = view_photo(sorted((catalog / "chair").iterdir())[0], tmp_path / "q.png")
    errors, sizes = [], []
    builder = threading.Thread(target=lambda: indexer.build(catalog, progress=False))
    builder.start()
    while builder.is_alive() or not sizes:
        try:
            searcher = Searcher(index, weights=tiny_weights)
        except IbsrError:
            continue  # table not created yet
        n = len(searcher)
        if n == 0:
            continue
        [result] = searcher.search([photo], topk=n)
        sizes.append(n)
        ids = {h.shape_id for h in result.hits}
        if len(ids) != n or not ids <= set(searcher.shapes.shape_ids):
            errors.append((n, sorted(ids)))
    builder.join()
    assert not errors
    assert sizes == sorted(sizes) and sizes[-1] <= N_SHAPES
    assert len(Searcher(index, weights=tiny_weights)) == N_SHAPES
