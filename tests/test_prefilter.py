"""FAISS prefilter: stored beside the table, rebuilt when stale, and the three search modes."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from ibsr.cli import index as index_cli
from ibsr.errors import IbsrError
from ibsr.index.faiss_index import read_faiss
from ibsr.index.layout import FAISS_DIR, FAISS_IDS_FILE
from ibsr.index.snapshot import IndexSnapshot
from ibsr.index.table import ShapeReader
from ibsr.indexer import Indexer
from ibsr.searcher import SearchOptions, Searcher
from ibsr.searcher.prefilters import prefilter_names
from index_helpers import rewrite_derived

from test_index_search import N_SHAPES, view_photo


@pytest.fixture(scope="module")
def photos(catalog, tmp_path_factory):
    out = tmp_path_factory.mktemp("photos")
    meshes = [sorted((catalog / c).iterdir())[0] for c in ("chair", "table", "lamp")]
    return [view_photo(m, out / f"q{i}.png", view=2 * i) for i, m in enumerate(meshes)]


def test_build_writes_a_current_prefilter(built_index):
    index, meta = read_faiss(built_index)
    assert index.ntotal == N_SHAPES and meta["factory"] == "Flat"
    snapshot = IndexSnapshot.open(built_index)
    assert meta["table_version"] == ShapeReader(built_index).version and snapshot.faiss_source == "stored"
    assert sorted(meta["shape_ids"]) == sorted(snapshot.shape_ids)


def test_missing_prefilter_is_rebuilt_by_the_next_build(index_copy, tiny_weights, catalog):
    shutil.rmtree(index_copy / FAISS_DIR)
    report = Indexer(index_copy, weights=tiny_weights).build(catalog, progress=False)
    assert report.indexed == 0 and report.faiss["count"] == N_SHAPES
    assert IndexSnapshot.open(index_copy).faiss_source == "stored"


def test_none_is_exhaustive_and_ann_reranks_exactly(built_index, tiny_weights, photos):
    searcher = Searcher(built_index, weights=tiny_weights)
    full = searcher.search(photos, topk=N_SHAPES, prefilter="none")
    ann = searcher.search(photos, topk=3, prefilter="ann", candidates=4)
    nearest = searcher.lookup.nearest(searcher.encode(searcher.load_queries(photos))[0].numpy(), 4)
    for f, a, near in zip(full, ann, nearest):
        exact = {h.shape_id: h.score for h in f.hits}
        allowed = {searcher.shapes.shape_ids[r] for r in near}
        assert len(a.hits) == 3 and {h.shape_id for h in a.hits} <= allowed
        for hit in a.hits:  # same exact score as the exhaustive search
            assert hit.score == pytest.approx(exact[hit.shape_id], abs=1e-5)
        best_allowed = sorted(allowed, key=lambda s: -exact[s])[:3]
        assert [h.shape_id for h in a.hits] == best_allowed


@pytest.mark.parametrize("name", prefilter_names())
def test_every_prefilter_puts_each_query_in_one_set_scored_exactly(built_index, tiny_weights, photos, name):
    """What every registered prefilter promises: each query in exactly one candidate set, and its
    hits carry the exhaustive search's exact scores, best first."""
    searcher = Searcher(built_index, weights=tiny_weights)
    queries = searcher.load_queries(photos)
    q, wq = searcher.encode(queries)
    options = SearchOptions(topk=3, prefilter=name, candidates=4, neighbors=2)
    sets = searcher.candidate_sets(q.numpy(), options)
    assert sorted(i for s in sets for i in s.queries.tolist()) == list(range(len(photos)))
    full = searcher.search_encoded(queries, q, wq, topk=N_SHAPES, prefilter="none")
    for result, f in zip(searcher.search_encoded(queries, q, wq, options), full):
        exact = {h.shape_id: h.score for h in f.hits}
        assert len(result.hits) == 3 and 0 < result.shapes_scored <= 1
        assert [h.score for h in result.hits] == pytest.approx([exact[h.shape_id] for h in result.hits], abs=1e-5)
        assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)


def test_category_mode_reranks_predicted_categories(built_index, tiny_weights, photos):
    searcher = Searcher(built_index, weights=tiny_weights)
    results = searcher.search(photos, topk=3, prefilter="category", neighbors=2)
    full = searcher.search(photos, topk=N_SHAPES, prefilter="none")
    for r, f in zip(results, full):
        assert 1 <= len(r.predicted_categories) <= 2
        assert all(h.category in r.predicted_categories for h in r.hits)
        in_categories = [h for h in f.hits if h.category in r.predicted_categories][:len(r.hits)]
        assert [h.shape_id for h in r.hits] == [h.shape_id for h in in_categories]
    with pytest.raises(IbsrError, match="--neighbors"):
        searcher.search(photos, topk=3, neighbors=0)
    with pytest.raises(IbsrError, match="--prefilter"):
        searcher.search(photos, topk=3, prefilter="magic")


def test_stale_prefilter_is_not_used(index_copy, tiny_weights, photos):
    meta_path = index_copy / FAISS_DIR / FAISS_IDS_FILE
    meta = json.loads(meta_path.read_text())
    meta["table_version"] = -1
    meta_path.write_text(json.dumps(meta))
    searcher = Searcher(index_copy, weights=tiny_weights)
    assert searcher.lookup.index.ntotal == N_SHAPES
    assert np.array_equal(searcher.lookup.faiss_rows, np.arange(N_SHAPES))  # built from the snapshot


def test_reindex_faiss_cli(index_copy):
    runner = CliRunner()
    ok = runner.invoke(index_cli.main, ["reindex-faiss", "--index", str(index_copy), "--faiss-factory", "IVF2,Flat",
                                        "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["factory"] == "IVF2,Flat" and read_faiss(index_copy)[1]["factory"] == "IVF2,Flat"
    bad = runner.invoke(index_cli.main, ["reindex-faiss", "--index", str(index_copy), "--faiss-factory", "Nope42"])
    assert bad.exit_code == 1 and bad.output.startswith("error: ") and "Nope42" in bad.output
    assert read_faiss(index_copy)[1]["factory"] == "IVF2,Flat"  # the old prefilter is untouched


def test_an_ivf_prefilter_is_mapped_not_read_into_memory(index_copy):
    """IO_FLAG_MMAP: the lists stay in the file (read-only page cache), answers as a plain read,
    and stay readable after a rewrite unlinks the file."""
    import faiss

    rewrite_derived(index_copy, "IVF2,Flat")
    index, meta = read_faiss(index_copy)
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists) and lists.read_only
    plain = faiss.read_index(str(index_copy / FAISS_DIR / meta["index_file"]))
    faiss.extract_index_ivf(plain).nprobe = faiss.extract_index_ivf(index).nprobe
    q = np.random.default_rng(0).standard_normal((4, index.d)).astype(np.float32)
    want = plain.search(q, 5)
    assert all(np.array_equal(a, b) for a, b in zip(index.search(q, 5), want))
    rewrite_derived(index_copy, "IVF2,Flat")  # a new file; the mapped one is unlinked
    assert not (index_copy / FAISS_DIR / meta["index_file"]).exists()
    assert all(np.array_equal(a, b) for a, b in zip(index.search(q, 5), want))
