"""The one commit path into an index: `IndexWriter`.

Builds, local and on Ray (ibsr.indexer), hand it each batch of shapes with their view
embeddings (`add`): the rows are made here and committed as one LanceDB transaction
(merge-insert on shape_id), so a build killed at any moment leaves the table at the last
committed batch: a rerun skips what is there and never duplicates a shape. Writers hold the
index's write lock (lock.py); besides, shape_id is declared the table's (unenforced) primary
key, which makes LanceDB detect two concurrent merge-inserts of the same new shape as a commit
conflict and retry the later one instead of inserting the shape twice.

What is derived from the table, the flat sidecar (flat.py) and the FAISS prefilter
(faiss_index.py), is rewritten by `refresh_derived` from one table version, the sidecar first.
"""

from __future__ import annotations

import datetime
import warnings
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

import numpy as np
import pyarrow as pa

from ibsr.index.faiss_index import build_faiss, default_factory, read_faiss, write_faiss
from ibsr.index.flat import read_flat, write_flat
from ibsr.index.layout import SHAPES_TABLE, IndexMeta, ShapeEntry, shapes_schema
from ibsr.index.lock import IndexWriteLock
from ibsr.index.table import (PRIMARY_KEY, ShapeReader, connect, has_primary_key, open_table, sql_list,
                              table_errors)

# Old table versions are deleted after a build only once they are this old, so that a
# search that pinned one moments ago can still finish reading it.
KEEP_OLD_VERSIONS = datetime.timedelta(minutes=5)


class IndexWriter:
    """Appends/updates shapes of one index; creates the table on first use.

    Callers hold the index's write lock (`IndexWriteLock`), as `Indexer.build` does.
    """

    def __init__(self, index_dir: Path, meta: IndexMeta):
        self.index_dir = Path(index_dir)
        self.meta = meta
        self.schema = shapes_schema(meta.views, meta.embed_dim)
        self.db = connect(self.index_dir)
        with table_errors(self.index_dir, writing=True):
            self.table = self._open_or_create()

    @classmethod
    @contextmanager
    def existing(cls, index_dir: Path, wait: bool = True):
        """The writer of an index that has shapes, holding its write lock: a directory that is
        no index is refused before the lock writes anything into it."""
        ShapeReader(index_dir)
        with IndexWriteLock(index_dir, wait=wait):
            yield cls(index_dir, IndexMeta.read(Path(index_dir)))

    def _open_or_create(self):
        table = open_table(self.db)
        if table is None:  # new index, or a build killed while creating the table
            table = self.db.create_table(SHAPES_TABLE, schema=self.schema, exist_ok=True)
        if not has_primary_key(table):  # new table, or one written before ibsr declared it
            table.set_unenforced_primary_key(PRIMARY_KEY)
        return table

    def indexed_rows(self) -> tuple[list[str], list[str]]:
        """shape_id and mesh_hash of every row (a shape appears twice in a damaged index)."""
        with table_errors(self.index_dir):
            rows = self.table.search().select(["shape_id", "mesh_hash"]).limit(None).to_arrow()
        return rows.column("shape_id").to_pylist(), rows.column("mesh_hash").to_pylist()

    def indexed_hashes(self) -> dict[str, str]:
        return dict(zip(*self.indexed_rows()))

    def add(self, shapes: list[ShapeEntry], views: np.ndarray) -> None:
        """One commit of a batch of shapes: `views` is N x V x D float32, L2-normalized per view."""
        self.upsert(self.rows(shapes, views))

    def rows(self, shapes: list[ShapeEntry], views: np.ndarray) -> pa.Table:
        """The table's rows for a batch: the views stored float16, their pooled `vector`, the encoder id."""
        n, v, d = views.shape
        pooled = views.mean(axis=1)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pa.table(
            {
                **{f.name: [getattr(shape, f.name) for shape in shapes] for f in fields(ShapeEntry)},
                "views": pa.FixedSizeListArray.from_arrays(pa.array(views.astype(np.float16).ravel()), v * d),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(pooled.astype(np.float32).ravel()), d),
                "encoder_id": [self.meta.encoder_id] * n,
            },
            schema=self.schema,
        )

    def upsert(self, rows: pa.Table) -> None:
        """One atomic commit: new shapes inserted, changed shapes replaced."""
        with table_errors(self.index_dir, writing=True):
            (
                self.table.merge_insert(PRIMARY_KEY)
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(rows)
            )

    def delete(self, shape_ids: list[str]) -> None:
        if shape_ids:
            with table_errors(self.index_dir, writing=True):
                self.table.delete(f"shape_id IN {sql_list(shape_ids)}")

    def compact(self) -> None:
        """Merge the many small batch fragments and drop versions older than a few minutes.

        delete_unverified: data files that no version references (a killed or disk-full
        build's uncommitted batch) are removed now rather than after LanceDB's 7-day grace,
        which exists for writers still in flight: the write lock rules those out.
        """
        with warnings.catch_warnings(), table_errors(self.index_dir, writing=True):
            warnings.simplefilter("ignore")
            self.table.optimize(cleanup_older_than=KEEP_OLD_VERSIONS, delete_unverified=True)

    def refresh_derived(self, faiss_factory: str | None = None, rewrite_flat: bool = False,
                        rewrite_faiss: bool = False) -> dict:
        """Rewrite the flat sidecar and the FAISS prefilter from the table's current version, each
        when it is missing, stale or unreadable, or asked for (`rewrite_*`; a `faiss_factory`
        rewrites the prefilter with it). {"flat": ..., "faiss": ...}: what each write reports,
        None where the files were kept. The sidecar goes first: `ibsr-serve` reloads when the
        FAISS files change, and then finds it current. Takes the write lock (held already by a build)."""
        with IndexWriteLock(self.index_dir):
            reader = ShapeReader(self.index_dir)  # the version no other writer can move now
            written = {"flat": None, "faiss": None}
            with table_errors(self.index_dir):
                if rewrite_flat or read_flat(self.index_dir, reader.version) is None:
                    written["flat"] = write_flat(self.index_dir, reader)
            stored = read_faiss(self.index_dir)
            if rewrite_faiss or faiss_factory or stored is None or stored[1]["table_version"] != reader.version:
                written["faiss"] = _write_prefilter(self.index_dir, reader, faiss_factory)
        return written


def _write_prefilter(index_dir: Path, reader: ShapeReader, factory: str | None) -> dict:
    shape_ids, vectors = reader.vectors()
    factory = factory or default_factory(len(shape_ids))
    write_faiss(index_dir, build_faiss(vectors, factory), shape_ids, reader.version, factory)
    return {"factory": factory, "count": len(shape_ids), "table_version": reader.version}
