"""Faults: SIGKILL during compaction and during FAISS writing, a full disk during a build, a
damaged table file, and searches reading while a compaction removes old versions.

Each test checks what the user is left with: a readable index holding exactly its last
committed state, a one-line error naming the file and the fix, and a rerun (or --repair)
that ends exactly where a clean build does."""

import datetime
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ibsr.cli.index import main as index_cli
from ibsr.errors import IbsrError
from ibsr.index.faiss_index import read_faiss
from ibsr.index.layout import FAISS_DIR, FAISS_IDS_FILE, FLAT_DIR
from ibsr.index.snapshot import IndexSnapshot
from ibsr.index.table import ShapeReader
from ibsr.index.verify import verify_index
from ibsr.indexer import Indexer
from ibsr.searcher import Searcher
from index_helpers import (ENV, assert_one_line_error, assert_same_as_clean, build_cmd, content, index_cmd, python,
                           rewrite_derived, run, table, wait_for_line)

N_SHAPES = 9
KILLS = 5  # SIGKILLs during compaction
EXTRA = 25  # single-row commits added per compaction round: fragments for compaction to merge

COMPACT = """
import sys, time
import pyarrow as pa
from pathlib import Path
from ibsr.index.layout import IndexMeta
from ibsr.index.lock import IndexWriteLock
from ibsr.index.writer import IndexWriter
index, first, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
with IndexWriteLock(index, command="compaction test", quiet=True):
    writer = IndexWriter(index, IndexMeta.read(index))
    source = writer.table.search().where("shape_id NOT LIKE 'extra/%'").limit(None).to_arrow()
    source = source.sort_by("shape_id")
    for i in range(first, first + count):  # one commit each: many small fragments
        row = source.slice(i % source.num_rows, 1).set_column(0, "shape_id", pa.array([f"extra/{i}"]))
        writer.upsert(row.cast(writer.schema))
    print("compacting", flush=True)
    started = time.perf_counter()
    writer.compact()
    print("compacted", time.perf_counter() - started, flush=True)
"""


def row_ok(index, ids_expected):
    """The table holds exactly `ids_expected`, each once, and verify finds no row problem."""
    rows = content(index)
    assert sorted(rows) == sorted(ids_expected)
    problems = [p.line() for p in verify_index(index).problems if p.check not in ("prefilter", "flat")]  # derived
    assert problems == []
    return rows


@pytest.mark.slow
def test_sigkill_during_compaction(index_copy, built_index, catalog, tiny_weights):
    rng = random.Random(11)
    originals = sorted(content(built_index))
    source = {i: originals[i % N_SHAPES] for i in range(100 * EXTRA)}
    # Round 0 runs to the end and measures how long a compaction takes here.
    proc = python(COMPACT, index_copy, 0, EXTRA)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    duration = float(out.split("compacted")[1])
    added, mid_compaction = EXTRA, 0
    for _ in range(KILLS):
        proc = python(COMPACT, index_copy, added, EXTRA)
        wait_for_line(proc, "compacting")
        time.sleep(rng.uniform(0, duration))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
        mid_compaction += "compacted" not in out and proc.returncode == -signal.SIGKILL
        added += EXTRA
        rows = row_ok(index_copy, originals + [f"extra/{i}" for i in range(added)])
        for i in range(added - EXTRA, added):  # the batches committed before the kill, intact
            np.testing.assert_array_equal(rows[f"extra/{i}"]["views"], rows[source[i]]["views"])
    print(f"compaction kills: {KILLS}, inside a compaction: {mid_compaction}")
    assert mid_compaction >= 2, f"only {mid_compaction} of {KILLS} kills landed inside a compaction"
    # The next build takes over the lock, prunes the extra rows, compacts, rebuilds the prefilter.
    report = Indexer(index_copy, weights=tiny_weights).build(catalog, progress=False, prune=True)
    assert report.took_over and report.pruned == added
    assert_same_as_clean(index_copy, built_index)


FAISS_WRITE = """
import os, sys, time
from pathlib import Path
from ibsr.index import faiss_index
from ibsr.index.writer import IndexWriter

index, pause_at = Path(sys.argv[1]), int(sys.argv[2])
events = []

def event(name):
    events.append(name)
    if len(events) == pause_at:
        print("paused", name, flush=True)
        time.sleep(600)

real_write, real_replace = faiss_index._write_synced, os.replace

def write_synced(path, data):
    with open(path, "wb") as f:  # half the file on disk, then the pause (killed mid-write)
        f.write(data[: len(data) // 2])
        f.flush()
        event("half of " + Path(path).name)
    real_write(path, data)
    event("all of " + Path(path).name)

def replace(src, dst):
    if Path(dst).name != "shape_ids.json":  # the write lock's holder file, say
        return real_replace(src, dst)
    event("before replace")
    real_replace(src, dst)
    event("after replace")

faiss_index._write_synced, faiss_index.os.replace = write_synced, replace
with IndexWriter.existing(index) as writer:
    writer.refresh_derived("HNSW8")
print("done", flush=True)
"""


@pytest.mark.slow
def test_sigkill_during_faiss_writing(index_copy, built_index, tiny_weights, tmp_path):
    """Kill a prefilter rebuild at every step of its write: the stored pair stays consistent
    (the old one until the commit, the new one after), and searches return the same hits."""
    photo = tmp_path / "q.png"
    Image.fromarray(np.dstack([np.full((64, 64), 230, np.uint8)] * 3)).save(photo)
    expected = [h.shape_id for h in Searcher(built_index, weights=tiny_weights)
                .search([photo], topk=5, prefilter="ann", candidates=5)[0].hits]
    steps = ["half of prefilter", "all of prefilter", "half of shape_ids", "all of shape_ids", "before replace",
             "after replace"]
    for pause_at, step in enumerate(steps, start=1):
        proc = python(FAISS_WRITE, index_copy, pause_at)
        line = wait_for_line(proc, "paused")
        assert step in line, line
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stored = read_faiss(index_copy)
        assert stored is not None, step
        index, meta = stored
        committed = step == "after replace"
        assert meta["factory"] == ("HNSW8" if committed else "Flat"), step
        assert index.ntotal == len(meta["shape_ids"]) == N_SHAPES
        assert meta["table_version"] == ShapeReader(index_copy).version
        assert verify_index(index_copy).healthy, step
        hits = Searcher(index_copy, weights=tiny_weights).search(
            [photo], topk=5, prefilter="ann", candidates=5)[0].hits
        assert [h.shape_id for h in hits] == expected, step
    # Leftovers of the killed writes (half files, tmp files) go with the next write.
    rewrite_derived(index_copy, faiss=True)
    files = sorted(p.name for p in (index_copy / FAISS_DIR).iterdir())
    assert len(files) == 2 and FAISS_IDS_FILE in files and files[0].startswith("prefilter-")


def _limited(limit):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


@pytest.mark.slow
@pytest.mark.parametrize("limit, where", [(8_000, "first batch"), (60_000, "compaction")])
def test_disk_full_during_a_build(limit, where, tmp_path, catalog, tiny_weights, built_index):
    """RLIMIT_FSIZE: any file write past `limit` bytes fails as on a full disk (EFBIG). At 8 kB
    the first batch's data file fails; at 60 kB the batches fit and the compaction's merged
    file does not."""
    index = tmp_path / "full"
    proc = subprocess.run(build_cmd(catalog, index, tiny_weights, "--batch-size", 2), capture_output=True,
                          text=True, env=ENV, preexec_fn=_limited(limit), timeout=300)
    assert_one_line_error(proc, str(index), "disk is full", "rerun the same command")
    committed = sorted(content(index))
    assert (committed == []) if where == "first batch" else (len(committed) == N_SHAPES)
    clean, rows = content(built_index), row_ok(index, committed)
    for shape_id in committed:  # what was committed before the disk filled is intact
        np.testing.assert_array_equal(rows[shape_id]["views"], clean[shape_id]["views"])
    report = Indexer(index, weights=tiny_weights, batch_size=2).build(catalog, progress=False)
    assert report.indexed == N_SHAPES - len(committed) and report.took_over is None  # released on the error
    assert_same_as_clean(index, built_index)


def test_disk_full_while_writing_the_prefilter_keeps_the_old_one(index_copy):
    before = read_faiss(index_copy)[1]
    proc = subprocess.run(index_cmd("reindex-faiss", "--index", index_copy, "--faiss-factory", "HNSW8"),
                          capture_output=True, text=True, env=ENV, preexec_fn=_limited(1_500), timeout=300)
    assert_one_line_error(proc, "disk is full")
    assert read_faiss(index_copy)[1] == before and verify_index(index_copy).healthy
    assert len(list((index_copy / FAISS_DIR).iterdir())) == 2  # the failed write left nothing behind


def _data_file(index) -> Path:
    [path] = sorted((index / "shapes.lance" / "data").iterdir())
    return path


def _truncate(index):
    path = _data_file(index)
    os.truncate(path, path.stat().st_size // 2)
    return path


def _flip_bytes(index):
    path = _data_file(index)
    data = bytearray(path.read_bytes())
    for i in range(1000, min(len(data), 20000), 7):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _delete(index):
    path = _data_file(index)
    path.unlink()
    return path


def _truncate_manifest(index):
    path = sorted((index / "shapes.lance" / "_versions").glob("*.manifest"))[0]  # the latest (names count down)
    os.truncate(path, 10)
    return path


DAMAGE = {"truncated-data": _truncate, "flipped-bytes": _flip_bytes, "deleted-data": _delete,
          "truncated-manifest": _truncate_manifest}


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_table_file(kind, index_copy, built_index, catalog, tiny_weights):
    damaged = DAMAGE[kind](index_copy)
    # A search of the version the flat sidecar was written from reads the sidecar, not the
    # table's data files: it still answers (verify flags the damage). Without it, the table:
    if kind != "truncated-manifest":  # the manifest says which version is pinned: no open without it
        assert Searcher(index_copy, weights=tiny_weights).shapes.source == "flat"
    shutil.rmtree(index_copy / FLAT_DIR)
    with pytest.raises(IbsrError) as caught:
        Searcher(index_copy, weights=tiny_weights)
    error = caught.value
    assert "\n" not in str(error) and "--repair" in error.message and "ibsr-index verify" in error.message
    named = str(damaged) if kind == "deleted-data" else str(index_copy / "shapes.lance")  # what LanceDB tells
    assert error.path == named
    problems = verify_index(index_copy).problems
    if kind == "flipped-bytes":  # may read as garbage values rather than fail: flagged either way
        assert problems and all(p.check in ("table", "views", "vector", "thumbnail", "encoder", "shape_id")
                                for p in problems if p.check not in ("prefilter", "flat"))
    else:
        assert [p.check for p in problems] == ["table"] and problems[0].where == named
    report = Indexer(index_copy, weights=tiny_weights).build(catalog, progress=False, repair=True)
    assert report.repair["moved_aside"] and report.indexed == N_SHAPES
    assert_same_as_clean(index_copy, built_index)


@pytest.mark.parametrize("kind", ["truncated-data", "flipped-bytes"])
def test_damaged_table_file_from_the_command_line(kind, index_copy, tiny_weights, tmp_path):
    """The real processes: exit 1, one `error:` line, no Python traceback (a Rust panic's own
    message may precede it)."""
    DAMAGE[kind](index_copy)
    shutil.rmtree(index_copy / FLAT_DIR)  # else the search reads the sidecar, not the damaged file
    photo = tmp_path / "q.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(photo)
    search = run([sys.executable, "-m", "ibsr.cli.search", photo, "--index", index_copy, "--weights", tiny_weights])
    assert_one_line_error(search, str(index_copy / "shapes.lance"), "damaged or unreadable", "--repair")
    verify = CliRunner().invoke(index_cli, ["verify", "--index", str(index_copy), "--quiet"])
    assert verify.exit_code == 1 and f"problem: {index_copy / 'shapes.lance'}: " in verify.output, verify.output


def test_reader_of_a_version_that_compaction_removed(monkeypatch, index_copy, catalog_copy, tiny_weights):
    """A search pins the latest version; a build then commits and compacts, deleting versions
    older than KEEP_OLD_VERSIONS by creation time, so a long-unchanged pinned version goes at
    once. The reader re-pins the latest version instead of failing."""
    import ibsr.index.writer as writer

    reader = ShapeReader(index_copy)
    pinned = reader.version
    monkeypatch.setattr(writer, "KEEP_OLD_VERSIONS", datetime.timedelta(0))  # "older than 5 minutes"
    mesh = sorted((catalog_copy / "chair").iterdir())[0]
    mesh.write_bytes(mesh.read_bytes() + b"\n# edited\n")
    Indexer(index_copy, weights=tiny_weights).build(catalog_copy, progress=False)
    with pytest.raises(ValueError, match="no longer exists"):  # the fault is real: that version is gone
        table(index_copy).checkout(pinned)
    snapshot = IndexSnapshot.read(reader)
    assert reader.version > pinned and len(set(snapshot.shape_ids)) == N_SHAPES
    assert set(reader.thumbnails(snapshot.shape_ids[:3])) == set(snapshot.shape_ids[:3])



def test_a_snapshot_never_mixes_in_the_vectors_of_another_version(monkeypatch, index_copy, catalog_copy,
                                                                   tiny_weights):
    """A snapshot mapped from the flat sidecar reads its pooled vectors (for an in-memory
    prefilter) only when first asked. If a compaction removed its version meanwhile, the reader
    re-pins a newer one, whose vectors it must not hand out: they come from the snapshot's own
    views instead (ibsr-serve's promise: an answer is computed from one version)."""
    import ibsr.index.writer as writer

    reader = ShapeReader(index_copy)
    snapshot = IndexSnapshot.read(reader)
    assert snapshot.source == "flat"
    ids, before = ShapeReader(index_copy).vectors()
    before = before[[ids.index(s) for s in snapshot.shape_ids]]
    monkeypatch.setattr(writer, "KEEP_OLD_VERSIONS", datetime.timedelta(0))
    chair, lamp = (sorted((catalog_copy / c).iterdir())[0] for c in ("chair", "lamp"))
    shutil.copy(lamp, chair)  # another shape: another pooled vector
    Indexer(index_copy, weights=tiny_weights).build(catalog_copy, progress=False)
    ids, after = ShapeReader(index_copy).vectors()
    changed = snapshot.shape_ids.index(f"chair/{chair.stem}")
    assert not np.allclose(after[ids.index(f"chair/{chair.stem}")], before[changed], atol=1e-2)
    vectors = snapshot.vectors
    assert reader.version > snapshot.version  # the read re-pinned: the snapshot's version is gone
    np.testing.assert_allclose(vectors, before, atol=2e-3)  # still the snapshot's own version

CHURN = """
import sys, time, datetime
from pathlib import Path
from ibsr.index.layout import IndexMeta
from ibsr.index.lock import IndexWriteLock
from ibsr.index.writer import IndexWriter
index, seconds = Path(sys.argv[1]), float(sys.argv[2])
rounds, end = 0, time.monotonic() + seconds
with IndexWriteLock(index, command="churn", quiet=True):
    writer = IndexWriter(index, IndexMeta.read(index))
    print("churning", flush=True)
    while time.monotonic() < end:
        rows = writer.table.to_arrow()
        writer.upsert(rows.slice(rounds % rows.num_rows, 1))  # a new version, same content
        writer.table.optimize(cleanup_older_than=datetime.timedelta(0), delete_unverified=True)
        rounds += 1
        time.sleep(0.05)
print("rounds", rounds, flush=True)
"""


def test_searches_while_compaction_removes_old_versions(index_copy, built_index, tiny_weights, tmp_path):
    """A writer commits and compacts, keeping no old version, as fast as it can; meanwhile
    searchers open the index, search and fetch thumbnails, again and again."""
    photo = tmp_path / "q.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(photo)
    expected = [h.shape_id for h in Searcher(built_index, weights=tiny_weights).search(
        [photo], topk=5, prefilter="none")[0].hits]
    churn = python(CHURN, index_copy, 5)
    wait_for_line(churn, "churning")
    searches = 0
    while churn.poll() is None:
        searcher = Searcher(index_copy, weights=tiny_weights)
        assert sorted(searcher.shapes.shape_ids) == sorted(content(built_index))
        result = searcher.search([photo], topk=5, prefilter="none")[0]
        assert [h.shape_id for h in result.hits] == expected
        assert len(searcher.shapes.thumbnails([h.shape_id for h in result.hits])) == 5
        searches += 1
    out, err = churn.communicate()
    assert churn.returncode == 0, err
    rounds = int(out.split("rounds")[1])
    print(f"{rounds} commit+compaction rounds (no old version kept) while {searches} searchers opened and searched")
    assert rounds >= 10 and searches >= 5, (rounds, searches)


def test_open_retries_a_version_that_compaction_removed(built_index, monkeypatch):
    """LanceDB says "was not found" when a compaction deletes the version an open was reading:
    the reader opens again instead of calling the index empty. An index whose table never
    committed still reads as empty (the same message, every time)."""
    import lancedb.db

    real = lancedb.db.LanceDBConnection.open_table
    failures = {"left": 2}

    def racing(self, *args, **kwargs):
        if failures["left"] > 0:
            failures["left"] -= 1
            raise ValueError("Table shapes version 7 was not found")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(lancedb.db.LanceDBConnection, "open_table", racing)
    assert len(IndexSnapshot.read(ShapeReader(built_index))) == len(content(built_index))
    assert failures["left"] == 0
    failures["left"] = 10**6  # never commits
    with pytest.raises(IbsrError, match="no shapes yet"):
        ShapeReader(built_index)
