"""One writer per index: concurrent builds, waiting, --no-wait, locks left by killed writers."""

import json
import os
import socket
import subprocess
import time

import lancedb
import pytest
from click.testing import CliRunner

from ibsr.cli.index import main as index_cli
from ibsr.index.layout import HOLDER_FILE, IndexMeta
from ibsr.index.lock import IndexWriteLock, holds_write_lock, read_holder
from ibsr.index.table import ShapeReader, has_primary_key
from ibsr.index.verify import verify_index
from ibsr.index.writer import IndexWriter
from ibsr.indexer import Indexer
from index_helpers import (ENV, assert_one_line_error, assert_same_as_clean, build_cmd, content, full_rows,
                           index_cmd, python, run, wait_for_line)

N_SHAPES = 9

HOLD = """
import sys, time
from ibsr.index.lock import IndexWriteLock
with IndexWriteLock(sys.argv[1], command="test holder"):
    print("locked", flush=True)
    sys.stdin.readline()  # released when the test writes a line
"""


@pytest.fixture
def holder(index_copy):
    """Another process holding the index's write lock (killed at the end if still running)."""
    proc = python(HOLD, index_copy)
    wait_for_line(proc, "locked")
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_two_concurrent_builds_store_each_shape_once(tmp_path, catalog, tiny_weights, built_index):
    """Two real `ibsr-index build` processes of one catalog into one new index, started together."""
    index = tmp_path / "shared"
    procs = [subprocess.Popen(build_cmd(catalog, index, tiny_weights, "--batch-size", 1, "--json"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(2)]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    reports = sorted((json.loads(out) for out, _ in outputs), key=lambda r: r["indexed"])
    # They ran one after the other: the second found everything indexed by the first.
    assert (reports[0]["indexed"], reports[0]["unchanged"]) == (0, N_SHAPES)
    assert (reports[1]["indexed"], reports[1]["unchanged"]) == (N_SHAPES, 0)
    ids = full_rows(index).column("shape_id").to_pylist()
    assert len(ids) == N_SHAPES and len(set(ids)) == N_SHAPES  # 0 duplicates
    assert_same_as_clean(index, built_index)


def test_second_build_waits_for_the_holder_and_names_it(tmp_path, holder, index_copy, catalog_copy, tiny_weights):
    (catalog_copy / "chair" / sorted(os.listdir(catalog_copy / "chair"))[0]).unlink()
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        build = subprocess.Popen(build_cmd(catalog_copy, index_copy, tiny_weights, "--prune"),
                                 stdout=subprocess.PIPE, stderr=err, text=True, env=ENV)
        deadline = time.monotonic() + 120
        while "waiting for the write lock" not in log.read_text() and time.monotonic() < deadline:
            assert build.poll() is None, log.read_text()
            time.sleep(0.1)
    waiting = log.read_text()
    assert f"pid {holder.pid} on host {socket.gethostname()}" in waiting and "test holder" in waiting
    time.sleep(1.0)
    assert build.poll() is None  # still waiting: nothing written meanwhile
    assert ShapeReader(index_copy).info()["shapes"] == N_SHAPES
    holder.communicate("release\n", timeout=60)
    out, _ = build.communicate(timeout=300)
    assert build.returncode == 0, log.read_text()
    assert "1 pruned" in out
    assert len(content(index_copy)) == N_SHAPES - 1


def test_no_wait_fails_at_once_with_one_line(holder, index_copy, catalog, tiny_weights):
    started = time.monotonic()
    for cmd in (build_cmd(catalog, index_copy, tiny_weights, "--no-wait"),
                index_cmd("reindex-faiss", "--index", index_copy, "--no-wait")):
        assert_one_line_error(run(cmd), "another writer holds this index", f"pid {holder.pid}", "test holder")
    assert time.monotonic() - started < 60  # no waiting (each run is mostly Python start-up)
    assert holder.poll() is None


def test_readers_never_wait_for_the_lock(holder, index_copy, tiny_weights):
    from ibsr.searcher import Searcher

    assert ShapeReader(index_copy).info()["shapes"] == N_SHAPES
    assert len(Searcher(index_copy, weights=tiny_weights)) == N_SHAPES
    result = verify_index(index_copy)
    assert result.healthy
    assert any("test holder" in note for note in result.notes)  # verify says a writer is at work
    assert CliRunner().invoke(index_cli, ["info", "--index", str(index_copy)]).exit_code == 0


def test_lock_of_a_killed_writer_is_taken_over(holder, index_copy, catalog, tiny_weights):
    holder.kill()  # SIGKILL: no chance to release anything
    holder.wait()
    left = read_holder(index_copy)
    assert left is not None and left.pid == holder.pid and left.is_gone()
    report = Indexer(index_copy, weights=tiny_weights).build(catalog, progress=False, wait=False)
    assert report.took_over is not None and f"pid {holder.pid}" in report.took_over
    assert not (index_copy / HOLDER_FILE).exists()  # released cleanly this time
    assert report.unchanged == N_SHAPES and verify_index(index_copy).healthy


def test_lock_is_reentrant_and_exclusive_between_threads(tmp_path):
    import threading

    index = tmp_path / "i"
    order = []
    with IndexWriteLock(index, quiet=True) as outer:
        with IndexWriteLock(index, wait=False):  # same thread: shares the outer hold
            assert holds_write_lock(index)
        assert holds_write_lock(index) and read_holder(index).pid == os.getpid()

        def other_thread():
            with IndexWriteLock(index, quiet=True):
                order.append("other")

        thread = threading.Thread(target=other_thread)
        thread.start()
        time.sleep(0.5)
        order.append("outer releases")
        assert outer.took_over is None
    thread.join(timeout=30)
    assert order == ["outer releases", "other"]
    assert not holds_write_lock(index)


def test_ray_builds_commit_under_the_lock(monkeypatch, index_copy, catalog_copy, tiny_weights):
    """`--ray` replaces only the render/encode/commit loop; it runs inside the build's lock."""
    import ibsr.indexer.ray_backend as ray_backend

    seen = []

    def fake_index_with_ray(indexer, todo, writer, report, strict, progress, address):
        seen.append((address, holds_write_lock(indexer.index_dir), len(todo)))

    monkeypatch.setattr(ray_backend, "index_with_ray", fake_index_with_ray)
    (catalog_copy / "lamp" / sorted(os.listdir(catalog_copy / "lamp"))[0]).write_text("v 0 0 0\n")
    Indexer(index_copy, weights=tiny_weights).build(catalog_copy, progress=False, ray="local")
    assert seen == [("local", True, 1)]


def test_lancedb_itself_refuses_a_concurrent_duplicate_insert(index_copy, built_index):
    """Second line of defence, for writers that bypass the lock: shape_id is the table's
    primary key, so LanceDB detects two merge-inserts of the same new shapes planned on one
    version and retries the later one as an update."""
    meta = IndexMeta.read(index_copy)
    first, second = IndexWriter(index_copy, meta), IndexWriter(index_copy, meta)
    assert has_primary_key(first.table)
    rows = full_rows(index_copy)
    first.delete(rows.column("shape_id").to_pylist())
    first.upsert(rows)
    second.upsert(rows)  # planned on the version before `first`'s insert
    ids = lancedb.connect(str(index_copy)).open_table("shapes").to_arrow().column("shape_id").to_pylist()
    assert sorted(ids) == sorted(set(ids)) and len(ids) == N_SHAPES
