"""The flat sidecar (ibsr/index/flat.py): written by every writer, memory-mapped by searches
of its table version, checked by verify, rebuilt by repair; the table answers the same when it
is missing, stale or damaged."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ibsr import kernels
from ibsr.cli.index import main as index_cli
from ibsr.index.flat import read_flat
from ibsr.index.layout import FLAT_DIR, FLAT_META
from ibsr.index.snapshot import IndexSnapshot
from ibsr.index.table import ShapeReader
from ibsr.index.verify import verify_index
from ibsr.indexer import Indexer
from ibsr.searcher import SearchOptions, Searcher
from index_helpers import assert_same_as_clean, replace_row, rewrite_derived
from test_index_search import view_photo

CHAIR = "chair/chair_0000"


def flat_problems(index):
    return [p for p in verify_index(index).problems if p.check == "flat"]


def views_file(index):
    meta = json.loads((index / FLAT_DIR / FLAT_META).read_text())
    return index / FLAT_DIR / meta["files"]["views"]


@pytest.fixture(scope="module")
def photos(catalog, tmp_path_factory):
    folder = tmp_path_factory.mktemp("flat_photos")
    meshes = [sorted((catalog / c).iterdir())[1] for c in ("chair", "table", "lamp")]
    return [view_photo(m, folder / f"q{i}.png", view=2 + i) for i, m in enumerate(meshes)]


def answers(index, weights, photos):
    """Every mode's hits and scored fractions, as plain values, and where the views came from."""
    searcher = Searcher(index, weights=weights)
    out = {}
    for mode in ("category", "ann", "none"):
        for topk in (1, 9):
            results = searcher.search(photos, topk=topk, prefilter=mode, candidates=4)
            out[mode, topk] = [(r.predicted_categories, r.shapes_scored,
                                [(h.shape_id, h.category, h.source_path, h.score, h.best_view) for h in r.hits])
                               for r in results]
    return searcher.shapes.source, out


def test_a_build_writes_the_sidecar_of_its_table_version(built_index):
    reader = ShapeReader(built_index)
    flat = read_flat(built_index, reader.version)
    assert flat is not None
    table = IndexSnapshot.read(reader, flat=False)
    assert flat.rows.equals(table.rows)
    assert np.array_equal(flat.views, table.views)
    assert flat.views.dtype == np.float16 and flat.views.shape == (9, 12, 64)
    assert IndexSnapshot.read(reader).source == "flat"


def test_opening_and_searching_build_no_per_row_python_lists(built_index, tiny_weights, photos):
    searcher = Searcher(built_index, weights=tiny_weights)
    searcher.search(photos, topk=3, prefilter="none")
    searcher.search(photos, topk=3)
    assert isinstance(searcher.shapes.views, np.memmap)  # mapped, not copied
    assert not {"shape_ids", "categories", "source_paths", "vectors"} & set(vars(searcher.shapes))  # never built


def mapping_of(address: int) -> tuple[str, str] | None:
    """(file, permissions) of the memory mapping holding `address`, from /proc/self/maps."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, perms, *rest = line.split()
        start, end = (int(x, 16) for x in span.split("-"))
        if start <= address < end:
            return (rest[3] if len(rest) > 3 else ""), perms
    return None


def test_the_rerank_reads_the_sidecars_read_only_map_not_a_copy(built_index, tiny_weights):
    """One copy of the views in a searcher: the tensor the rerank reads is the sidecar's map
    (and the exact search's bounds are too), mapped read-only so no write can make it private."""
    searcher = Searcher(built_index, weights=tiny_weights)
    views = searcher.shapes.views
    assert isinstance(views, np.memmap) and Path(views.filename) == views_file(built_index)
    assert not views.flags.writeable
    assert searcher.views.data_ptr() == views.ctypes.data and searcher.views.shape == views.shape
    centres, radii = searcher.shapes.flat_bounds
    bounds = searcher.shapes.bounds
    assert bounds.centres.data_ptr() == centres.ctypes.data and bounds.radii.data_ptr() == radii.ctypes.data
    if Path("/proc/self/maps").exists():  # Linux: the address lies in a read-only map of the file
        path, perms = mapping_of(searcher.views.data_ptr())
        assert os.path.realpath(path) == os.path.realpath(views_file(built_index)) and perms[:2] == "r-"


def test_without_a_sidecar_the_searcher_keeps_the_tables_views_without_a_copy(index_copy, tiny_weights):
    (index_copy / FLAT_DIR / FLAT_META).unlink()
    searcher = Searcher(index_copy, weights=tiny_weights)
    assert searcher.shapes.source == "table"
    assert searcher.views.data_ptr() == searcher.shapes.views.ctypes.data


def test_scoring_the_map_chunk_by_chunk_equals_scoring_a_full_copy(built_index, tiny_weights, photos):
    """The rerank over the mapped float16 views (each chunk converted, a category's rows gathered
    chunk by chunk) gives the bits the searcher's former writable in-memory copy gave."""
    searcher = Searcher(built_index, weights=tiny_weights)
    queries = searcher.load_queries(photos)
    q, wq = searcher.encode(queries)

    def every_mode():
        hits = {mode: [[(h.shape_id, h.score, h.best_view) for h in r.hits]
                       for r in searcher.search_encoded(queries, q, wq, topk=5, prefilter=mode, candidates=4)]
                for mode in ("category", "ann", "none")}
        return hits, tuple(kernels.rerank(q, wq, searcher.views, 5))

    mapped = every_mode()
    copy = torch.from_numpy(np.array(searcher.shapes.views))  # a copy, as the searcher held before
    searcher.views = copy
    hits, dense = every_mode()
    assert hits == mapped[0] and all(torch.equal(a, b) for a, b in zip(dense, mapped[1]))
    for group in searcher.candidate_sets(q.numpy(), SearchOptions(topk=5)):  # the former whole gather
        rows, members = torch.from_numpy(group.rows), torch.from_numpy(group.queries)
        gathered = kernels.rerank(q[members], wq[members], copy.index_select(0, rows), 5)
        mapped_rows = kernels.rerank(q[members], wq[members], kernels.host_tensor(searcher.shapes.views), 5, rows=rows)
        assert torch.equal(mapped_rows.scores, gathered.scores)
        assert torch.equal(mapped_rows.indices, rows[gathered.indices])
        assert torch.equal(mapped_rows.best_view, gathered.best_view)


def test_search_answers_the_same_from_the_sidecar_as_from_the_table(index_copy, tiny_weights, photos):
    source, mapped = answers(index_copy, tiny_weights, photos)
    assert source == "flat"
    views_file(index_copy).write_bytes(b"\x93NUMPY truncated")  # unreadable: falls back to the table
    source, read = answers(index_copy, tiny_weights, photos)
    assert source == "table" and read == mapped
    assert 0 < mapped["none", 1][0][1] <= 1  # the fraction scored is reported


def test_a_stale_sidecar_is_not_used_and_reindex_rewrites_it(index_copy, tiny_weights, photos):
    before = answers(index_copy, tiny_weights, photos)[1]
    replace_row(index_copy, CHAIR)  # a new table version, same content
    [problem] = flat_problems(index_copy)
    assert "stale" in problem.what and "reindex-faiss" in problem.fix
    source, stale = answers(index_copy, tiny_weights, photos)
    assert source == "table" and stale == before
    result = CliRunner().invoke(index_cli, ["reindex-faiss", "--index", str(index_copy)])
    assert result.exit_code == 0 and "flat sidecar over 9 shapes" in result.output, result.output
    assert verify_index(index_copy).healthy
    assert answers(index_copy, tiny_weights, photos) == ("flat", before)


def test_damaged_or_missing_sidecar_is_found_and_repaired(index_copy, built_index, catalog, tiny_weights):
    path = views_file(index_copy)
    data = bytearray(path.read_bytes())
    data[-2:] = np.float16(0.5).tobytes()  # last view value of the last shape: still a valid file
    path.write_bytes(bytes(data))
    [problem] = flat_problems(index_copy)
    last = IndexSnapshot.open(index_copy, flat=False).row(8)[0]
    assert f"differs from the table (first at shape {last})" in problem.what
    assert problem.where == str(index_copy / FLAT_DIR)
    report = Indexer(index_copy, weights=tiny_weights).build(catalog, progress=False, repair=True)
    assert report.repair["rebuild_flat"] and report.flat is not None and report.indexed == 0
    assert_same_as_clean(index_copy, built_index)
    (index_copy / FLAT_DIR / FLAT_META).unlink()
    [problem] = flat_problems(index_copy)
    assert "missing" in problem.what
    result = CliRunner().invoke(index_cli, ["verify", "--index", str(index_copy), "--quiet"])
    assert result.exit_code == 1 and "flat sidecar is missing" in result.output
    report = Indexer(index_copy, weights=tiny_weights).build(catalog, progress=False)  # a plain rerun rewrites it
    assert report.flat is not None and verify_index(index_copy).healthy


def test_a_rewrite_removes_the_previous_files(index_copy):
    before = set((index_copy / FLAT_DIR).iterdir())
    rewrite_derived(index_copy, flat=True)
    after = set((index_copy / FLAT_DIR).iterdir())
    assert len(after) == len(before) == 5 and (after - before) and read_flat(index_copy) is not None


def test_a_failed_write_keeps_the_previous_sidecar(index_copy, monkeypatch):
    import errno

    import ibsr.index.flat as flat
    from ibsr.errors import IbsrError

    before = sorted((index_copy / FLAT_DIR).iterdir())

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(flat, "_write_rows", full)  # after the three arrays are written
    with pytest.raises(IbsrError, match="disk is full"):
        rewrite_derived(index_copy, flat=True)
    assert sorted((index_copy / FLAT_DIR).iterdir()) == before  # the new files are gone, the old ones kept
    assert read_flat(index_copy, ShapeReader(index_copy).version) is not None
