"""The index directory: metadata file + LanceDB `shapes` table (+ FAISS files).

Writers commit one batch per LanceDB transaction (merge-insert on shape_id), so a build
killed at any moment leaves the table at the last committed batch: a rerun skips what is
there and never duplicates a shape. Readers pin one table version for a whole search.
"""

from __future__ import annotations

import datetime
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa

from ibsr.errors import IbsrError
from ibsr.schemas import SHAPES_TABLE, IndexMeta, shapes_schema

DEFAULT_INDEX = "ibsr_index"
# Old table versions are deleted after a build only once they are this old, so that a
# search that pinned one moments ago can still finish reading it.
KEEP_OLD_VERSIONS = datetime.timedelta(minutes=5)


def resolve_index_dir(index: str | os.PathLike | None) -> Path:
    """--index, else $IBSR_INDEX, else ./ibsr_index."""
    return Path(index or os.environ.get("IBSR_INDEX") or DEFAULT_INDEX)


def _connect(index_dir: Path):
    return lancedb.connect(str(index_dir))


def _open_table(db):
    """The `shapes` table, or None while it does not exist or has no committed version yet."""
    if SHAPES_TABLE not in db.list_tables().tables:
        return None
    try:
        return db.open_table(SHAPES_TABLE)
    except ValueError:  # folder present, first commit not written (yet)
        return None


def _sql_list(values: list[str]) -> str:
    return "(" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + ")"


class ShapeWriter:
    """Appends/updates shapes of one index; creates the table on first use."""

    def __init__(self, index_dir: Path, meta: IndexMeta):
        self.index_dir = index_dir
        self.meta = meta
        self.schema = shapes_schema(meta.views, meta.embed_dim)
        self.db = _connect(index_dir)
        self.table = self._open_or_create()

    def _open_or_create(self):
        table = _open_table(self.db)
        if table is None:  # new index, or a build killed while creating the table
            table = self.db.create_table(SHAPES_TABLE, schema=self.schema, exist_ok=True)
        return table

    def indexed_hashes(self) -> dict[str, str]:
        rows = self.table.search().select(["shape_id", "mesh_hash"]).limit(None).to_arrow()
        return dict(zip(rows.column("shape_id").to_pylist(), rows.column("mesh_hash").to_pylist()))

    def upsert(self, rows: pa.Table) -> None:
        """One atomic commit: new shapes inserted, changed shapes replaced."""
        (
            self.table.merge_insert("shape_id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(rows)
        )

    def delete(self, shape_ids: list[str]) -> None:
        if shape_ids:
            self.table.delete(f"shape_id IN {_sql_list(shape_ids)}")

    def compact(self) -> None:
        """Merge the many small batch fragments and drop versions older than a few minutes."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.table.optimize(cleanup_older_than=KEEP_OLD_VERSIONS)


def make_rows(schema: pa.Schema, shapes: list[dict], views: np.ndarray) -> pa.Table:
    """Arrow rows for a batch: `views` is N x V x D float32, L2-normalized per view."""
    n, v, d = views.shape
    pooled = views.mean(axis=1)
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pa.table(
        {
            "shape_id": [s["shape_id"] for s in shapes],
            "category": [s["category"] for s in shapes],
            "source_path": [s["source_path"] for s in shapes],
            "mesh_hash": [s["mesh_hash"] for s in shapes],
            "views": pa.FixedSizeListArray.from_arrays(pa.array(views.astype(np.float16).ravel()), v * d),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(pooled.astype(np.float32).ravel()), d),
            "thumbnail": [s["thumbnail"] for s in shapes],
            "encoder_id": [s["encoder_id"] for s in shapes],
        },
        schema=schema,
    )


@dataclass
class ShapeSnapshot:
    """Everything a search needs, read from one table version."""

    version: int
    shape_ids: list[str]
    categories: list[str]
    source_paths: list[str]
    views: np.ndarray  # N x V x D float16
    vectors: np.ndarray  # N x D float32


class ShapeReader:
    """Read-only access to an index at one pinned table version."""

    def __init__(self, index_dir: Path):
        self.index_dir = Path(index_dir)
        self.meta = IndexMeta.read(self.index_dir)
        self.table = _open_table(_connect(self.index_dir))
        if self.table is None:
            raise IbsrError("index has no shapes yet; run `ibsr-index build CATALOG` first", self.index_dir)
        self.table.checkout(self.table.version)  # pin: a concurrent build cannot shift what we read

    @property
    def version(self) -> int:
        return self.table.version

    def snapshot(self) -> ShapeSnapshot:
        columns = ["shape_id", "category", "source_path", "views", "vector"]
        data = self.table.search().select(columns).limit(None).to_arrow()
        n, v, d = data.num_rows, self.meta.views, self.meta.embed_dim
        views = data.column("views").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vectors = data.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return ShapeSnapshot(
            version=self.version,
            shape_ids=data.column("shape_id").to_pylist(),
            categories=data.column("category").to_pylist(),
            source_paths=data.column("source_path").to_pylist(),
            views=views.reshape(n, v, d),
            vectors=vectors.reshape(n, d),
        )

    def vectors(self) -> tuple[list[str], np.ndarray]:
        """shape_ids and pooled vectors only (what the FAISS prefilter is built from)."""
        data = self.table.search().select(["shape_id", "vector"]).limit(None).to_arrow()
        flat = data.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return data.column("shape_id").to_pylist(), flat.reshape(data.num_rows, self.meta.embed_dim)

    def thumbnails(self, shape_ids: list[str]) -> dict[str, bytes]:
        if not shape_ids:
            return {}
        rows = self.table.search().where(f"shape_id IN {_sql_list(shape_ids)}").select(["shape_id", "thumbnail"]).limit(None).to_arrow()
        return dict(zip(rows.column("shape_id").to_pylist(), rows.column("thumbnail").to_pylist()))

    def info(self) -> dict:
        data = self.table.search().select(["category"]).limit(None).to_arrow()
        per_category: dict[str, int] = {}
        for category in data.column("category").to_pylist():
            per_category[category] = per_category.get(category, 0) + 1
        size = sum(p.stat().st_size for p in self.index_dir.rglob("*") if p.is_file())
        return {
            "index": str(self.index_dir),
            "shapes": data.num_rows,
            "categories": dict(sorted(per_category.items())),
            "encoder_id": self.meta.encoder_id,
            "format_version": self.meta.format_version,
            "views": self.meta.views,
            "render_size": self.meta.render_size,
            "embed_dim": self.meta.embed_dim,
            "view_dtype": self.meta.view_dtype,
            "up_axis": self.meta.up_axis,
            "table_version": self.version,
            "size_bytes": size,
        }
