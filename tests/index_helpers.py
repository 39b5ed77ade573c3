"""Helpers shared by the index robustness tests (lock, verify, faults): run the CLI in a real
process, read an index's full content, compare it with a clean build, damage it on purpose."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa

from ibsr.index.faiss_index import read_faiss
from ibsr.index.layout import IndexMeta, shapes_schema
from ibsr.index.verify import verify_index
from ibsr.index.writer import IndexWriter

ENV = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}


def index_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "ibsr.cli.index", *map(str, args)]


def build_cmd(catalog, index, weights, *extra) -> list[str]:
    return index_cmd("build", catalog, "--index", index, "--weights", weights, "--workers", 0, "--quiet", *extra)


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300, **kwargs)


def python(code: str, *args, **kwargs) -> subprocess.Popen:
    """A Python child running `code` (argv[1:] = args), its stdin, stdout and stderr piped."""
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, **kwargs)


def wait_for_line(proc: subprocess.Popen, expected: str, timeout: float = 120.0) -> str:
    """Read the child's stdout until a line starting with `expected` (the child signals a phase)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(expected):
            return line.strip()
        if not line and proc.poll() is not None:
            raise AssertionError(f"child ended ({proc.returncode}) before {expected!r}: {proc.stderr.read()}")
    raise AssertionError(f"no {expected!r} from the child within {timeout} s")


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 1, no Python traceback, and the last stderr line is `error: ...` naming every needle.

    (A Rust panic inside LanceDB prints its own lines to stderr before ours: the panic hook
    of the Rust library writes there directly. The error that ibsr reports is the last line.)"""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in last, (needle, last)
    return last


def rewrite_derived(index: Path, faiss_factory: str | None = None, flat: bool = False, faiss: bool = False) -> dict:
    """Rewrite an index's flat sidecar and FAISS prefilter where stale or asked for, as a
    writer does (`IndexWriter.refresh_derived`, under the write lock)."""
    with IndexWriter.existing(index) as writer:
        return writer.refresh_derived(faiss_factory, rewrite_flat=flat, rewrite_faiss=faiss)


def table(index: Path):
    return lancedb.connect(str(index)).open_table("shapes")


def full_rows(index: Path, where: str | None = None) -> pa.Table:
    query = table(index).search()
    if where:
        query = query.where(where)
    return query.limit(None).to_arrow()


def content(index: Path) -> dict:
    """{shape_id: row as a dict of python values / numpy arrays}; asserts shape ids are unique."""
    rows = full_rows(index).to_pylist()
    ids = [r["shape_id"] for r in rows]
    assert len(ids) == len(set(ids)), f"duplicate shape ids in {index}"
    return {r["shape_id"]: r for r in rows}


def assert_same_as_clean(index: Path, clean: Path) -> None:
    """The index holds exactly what the clean build holds (any row order), its metadata, a
    current prefilter over the same shapes, and verify finds nothing."""
    got, want = content(index), content(clean)
    assert sorted(got) == sorted(want)
    for shape_id, row in want.items():
        other = got[shape_id]
        for key in ("category", "source_path", "mesh_hash", "encoder_id", "thumbnail"):
            assert other[key] == row[key], (shape_id, key)
        # Re-indexed shapes are encoded in other batches: float rounding may differ slightly.
        np.testing.assert_allclose(np.float32(other["views"]), np.float32(row["views"]), atol=2e-3)
        np.testing.assert_allclose(other["vector"], row["vector"], atol=2e-3)
    assert IndexMeta.read(index) == IndexMeta.read(clean)
    stored = read_faiss(index)
    assert stored is not None and sorted(stored[1]["shape_ids"]) == sorted(want)
    result = verify_index(index)
    assert result.healthy, [p.line() for p in result.problems]


def manufacture_duplicates(index: Path, shape_ids: list[str]) -> None:
    """Damage `index` as concurrent builds of older ibsr versions did: rewrite the table as
    they wrote it (no primary key declared), then merge-insert the same rows through two
    table handles opened at one version; LanceDB then commits both inserts."""
    db = lancedb.connect(str(index))
    rows = full_rows(index)
    meta = IndexMeta.read(index)
    db.drop_table("shapes")
    db.create_table("shapes", rows.cast(shapes_schema(meta.views, meta.embed_dim)))  # no primary key
    listed = "shape_id IN (" + ", ".join(f"'{s}'" for s in shape_ids) + ")"
    again = full_rows(index, listed)
    db.open_table("shapes").delete(listed)
    first, second = db.open_table("shapes"), db.open_table("shapes")  # both at the same version
    for handle in (first, second):
        handle.merge_insert("shape_id").when_matched_update_all().when_not_matched_insert_all().execute(again)
    ids = table(index).search().select(["shape_id"]).limit(None).to_arrow().column("shape_id").to_pylist()
    assert all(ids.count(s) == 2 for s in shape_ids), "LanceDB no longer duplicates: this damage needs another recipe"


def replace_row(index: Path, shape_id: str, **changes) -> None:
    """Rewrite one stored row with some columns changed (damage for verify to find)."""
    rows = full_rows(index, f"shape_id = '{shape_id}'")
    assert rows.num_rows == 1
    data = rows.to_pylist()[0]
    data.update(changes)
    new = pa.Table.from_pylist([data], schema=rows.schema)
    table(index).merge_insert("shape_id").when_matched_update_all().when_not_matched_insert_all().execute(new)
