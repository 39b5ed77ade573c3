"""The index directory: metadata file + LanceDB `shapes` table (+ FAISS files, flat sidecar).

Writers commit one batch per LanceDB transaction (merge-insert on shape_id), so a build
killed at any moment leaves the table at the last committed batch: a rerun skips what is
there and never duplicates a shape. Writers hold the index's write lock (lock.py); besides,
shape_id is declared the table's (unenforced) primary key, which makes LanceDB detect two
concurrent merge-inserts of the same new shape as a commit conflict and retry the later one
instead of inserting the shape twice. Readers pin one table version for a whole search.

LanceDB reports damaged files, a full disk and vanished files as RuntimeError, ValueError,
OSError or a Rust panic; `table_errors` turns them into one-line IbsrErrors that name the
file (when LanceDB does) and say how to recover.
"""

from __future__ import annotations

import datetime
import os
import re
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ibsr.errors import IbsrError
from ibsr.indexer.flat_files import read_flat
from ibsr.schemas import SHAPES_TABLE, IndexMeta, shapes_schema

DEFAULT_INDEX = "ibsr_index"
# Old table versions are deleted after a build only once they are this old, so that a
# search that pinned one moments ago can still finish reading it.
KEEP_OLD_VERSIONS = datetime.timedelta(minutes=5)


def resolve_index_dir(index: str | os.PathLike | None) -> Path:
    """--index, else $IBSR_INDEX, else ./ibsr_index."""
    return Path(index or os.environ.get("IBSR_INDEX") or DEFAULT_INDEX)


PRIMARY_KEY = "shape_id"
# LanceDB's schema metadata key for the primary key (`set_unenforced_primary_key` writes it).
PRIMARY_KEY_METADATA = b"lance-schema:unenforced-primary-key"
REPAIR_HINT = "`ibsr-index verify` lists the damage and `ibsr-index build CATALOG --repair` rebuilds it"
_DISK_FULL = ("no space left on device", "file too large", "disk quota exceeded",
              "os error 28)", "os error 27)", "os error 122)")


class TableFileMissing(IbsrError):
    """A file the pinned table version needs is gone (compaction removed an old version, or damage)."""


def _connect(index_dir: Path):
    return lancedb.connect(str(index_dir))


def _open_table(db, attempts: int = 5):
    """The `shapes` table, or None while it does not exist or has no committed version yet.

    "was not found" means either that the folder exists before its first commit, or that a
    compaction removed the version this open was reading (seen in tests/test_faults.py's
    searches during compaction): the latter goes away on a retry, the former does not."""
    if SHAPES_TABLE not in db.list_tables().tables:
        return None
    for attempt in range(attempts):
        try:
            return db.open_table(SHAPES_TABLE)
        except ValueError as exc:
            if "was not found" not in str(exc):
                raise
            time.sleep(0.02 * (attempt + 1))
    return None  # folder present, first commit not written (yet)


def has_primary_key(table) -> bool:
    metadata = table.schema.field(PRIMARY_KEY).metadata or {}
    return any(key.startswith(PRIMARY_KEY_METADATA) for key in metadata)


def is_lance_error(exc: BaseException) -> bool:
    # Rust panics surface as pyo3's RustPanic / PanicException, whose modules vary by version.
    return isinstance(exc, (OSError, RuntimeError, ValueError)) or type(exc).__name__ in ("RustPanic", "PanicException")


def lance_reason(exc: BaseException) -> str:
    """The first line of a LanceDB error without its Rust source locations."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    text = re.sub(r",\s*/(rustc|root/\.cargo|home)/\S+", "", text)
    return text.removeprefix("lance error: ")[:300]


def lance_error(exc: BaseException, index_dir: Path, writing: bool = False) -> IbsrError:
    """A one-line IbsrError for a LanceDB failure on the index at `index_dir`."""
    if isinstance(exc, IbsrError):
        return exc
    reason = lance_reason(exc)
    if any(marker in str(exc).lower() for marker in _DISK_FULL) or \
            getattr(exc, "errno", None) in (28, 27, 122):
        return IbsrError(f"the disk is full (or over quota) while writing the index ({reason}); free space and rerun "
                         "the same command: committed batches are kept and a build resumes after them", index_dir)
    if "no longer exists" in str(exc):  # a version that a compaction removed (lancedb's checkout)
        return TableFileMissing(f"the table version being read was removed ({reason}); retry", index_dir)
    missing = re.search(rf"Not found: .*?(/?[^\s,:]*{SHAPES_TABLE}\.lance/[^\s,]+)", str(exc))
    if missing:
        path = missing.group(1)
        path = path if path.startswith("/") or os.path.exists(path) else "/" + path
        return TableFileMissing(f"a file of the index table is missing ({reason}); {REPAIR_HINT}", path)
    action = "writing" if writing else "reading"
    return IbsrError(f"the index table is damaged or unreadable ({action}: {reason}); {REPAIR_HINT} "
                     "(the damaged table is kept aside)", Path(index_dir) / f"{SHAPES_TABLE}.lance")


@contextmanager
def table_errors(index_dir: Path, writing: bool = False):
    """Turn LanceDB failures inside the block into one-line IbsrErrors (see `lance_error`)."""
    try:
        yield
    except IbsrError:
        raise
    except Exception as exc:
        if not is_lance_error(exc):
            raise
        raise lance_error(exc, index_dir, writing) from None


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() else 0
    except FileNotFoundError:  # removed by a concurrent compaction
        return 0


def _sql_list(values: list[str]) -> str:
    return "(" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + ")"


class ShapeWriter:
    """Appends/updates shapes of one index; creates the table on first use.

    Callers hold the index's write lock (`IndexWriteLock`), as `Indexer.build` does.
    """

    def __init__(self, index_dir: Path, meta: IndexMeta):
        self.index_dir = index_dir
        self.meta = meta
        self.schema = shapes_schema(meta.views, meta.embed_dim)
        self.db = _connect(index_dir)
        with table_errors(index_dir, writing=True):
            self.table = self._open_or_create()

    def _open_or_create(self):
        table = _open_table(self.db)
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
                self.table.delete(f"shape_id IN {_sql_list(shape_ids)}")

    def compact(self) -> None:
        """Merge the many small batch fragments and drop versions older than a few minutes.

        delete_unverified: data files that no version references (a killed or disk-full
        build's uncommitted batch) are removed now rather than after LanceDB's 7-day grace,
        which exists for writers still in flight: the write lock rules those out.
        """
        with warnings.catch_warnings(), table_errors(self.index_dir, writing=True):
            warnings.simplefilter("ignore")
            self.table.optimize(cleanup_older_than=KEEP_OLD_VERSIONS, delete_unverified=True)


def pooled_vectors(views: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """The L2-normalized mean of each shape's views (N x V x D -> N x D float32), as `vector`;
    by chunks, so float16 views are never all widened at once."""
    pooled = np.empty((views.shape[0], views.shape[2]), np.float32)
    for start in range(0, len(pooled), chunk):
        pooled[start:start + chunk] = views[start:start + chunk].astype(np.float32).mean(axis=1)
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled


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
    """Everything a search needs, read from one table version: from the flat sidecar when it
    is current (memory-mapped, flat.py), else from the table. Nothing here is per row in
    Python: the row columns stay Arrow, a hit converts its own row (`row`)."""

    version: int
    rows: pa.Table  # shape_id, category, source_path, in row order
    views: np.ndarray  # N x V x D float16, read-only: the sidecar's map or the table's Arrow buffer, never copied
    read_vectors: Callable[[], np.ndarray]  # N x D float32 pooled vectors, read when first needed
    bounds: tuple[np.ndarray, np.ndarray] | None = None  # the sidecar's (centres, radii), bounds.view_bounds
    source: str = "table"  # or "flat"

    def __len__(self) -> int:
        return self.rows.num_rows

    def row(self, i: int) -> tuple[str, str, str]:
        """(shape_id, category, source_path) of one row."""
        return tuple(self.rows.column(c)[i].as_py() for c in ("shape_id", "category", "source_path"))

    def category_codes(self) -> tuple[np.ndarray, list[str]]:
        """Each row's category as an index into the sorted category names."""
        encoded = pc.dictionary_encode(self.rows.column("category")).combine_chunks()
        names = encoded.dictionary.to_pylist()
        order = np.argsort(names)
        rank = np.empty(len(names), dtype=np.int64)
        rank[order] = np.arange(len(names))
        return rank[encoded.indices.to_numpy()], [names[i] for i in order]

    # Whole columns as Python lists, for callers that need them all (eval, serve's shape pages).
    @cached_property
    def shape_ids(self) -> list[str]:
        return self.rows.column("shape_id").to_pylist()

    @cached_property
    def categories(self) -> list[str]:
        return self.rows.column("category").to_pylist()

    @cached_property
    def source_paths(self) -> list[str]:
        return self.rows.column("source_path").to_pylist()

    @cached_property
    def vectors(self) -> np.ndarray:
        return self.read_vectors()


class ShapeReader:
    """Read-only access to an index at one pinned table version.

    A build's compaction deletes versions older than KEEP_OLD_VERSIONS, by creation time, so
    a reader that pinned a long-unchanged version can see its files vanish mid-read; reads
    then re-pin the latest version and start over (`retrying`), rather than fail.
    """

    RETRIES = 5

    def __init__(self, index_dir: Path):
        self.index_dir = Path(index_dir)
        self.meta = IndexMeta.read(self.index_dir)
        with table_errors(self.index_dir):
            self.table = _open_table(_connect(self.index_dir))
            if self.table is None:
                raise IbsrError("index has no shapes yet; run `ibsr-index build CATALOG` first", self.index_dir)
        self._pinned: int | None = None
        self.retrying(lambda: None)  # pin: a concurrent build cannot shift what we read

    @property
    def version(self) -> int:
        return self.table.version

    def retrying(self, read):
        """`read()` on the pinned version; re-pinned on the latest one if its files vanished."""
        for attempt in range(self.RETRIES):
            try:
                with table_errors(self.index_dir):
                    if attempt or self._pinned is None:
                        self._pin_latest()
                    return read()
            except TableFileMissing:
                if attempt == self.RETRIES - 1:
                    raise
                time.sleep(0.05 * attempt)  # let the compaction that removed it finish

    def _pin_latest(self) -> None:
        self.table.checkout_latest()
        self.table.checkout(self.table.version)  # may be gone already: TableFileMissing, retried
        self._pinned = self.table.version

    def _query(self, columns: list[str], where: str | None = None) -> pa.Table:
        query = self.table.search()
        if where is not None:
            query = query.where(where)
        return query.select(columns).limit(None).to_arrow()

    def batches(self, columns: list[str], batch_size: int = 4096):
        """Stream the pinned version's rows (bounded memory); errors are the caller's to map."""
        return self.table.search().select(columns).limit(None).to_batches(batch_size)

    def snapshot(self, flat: bool = True) -> ShapeSnapshot:
        """The pinned version's search data: the flat sidecar if it is of this version, else the table."""
        sidecar = read_flat(self.index_dir, self.version) if flat else None
        if sidecar is not None:
            return ShapeSnapshot(self.version, sidecar.rows, sidecar.views, self._vectors_for(sidecar, self.version),
                                 (sidecar.centres, sidecar.radii), source="flat")
        columns = ["shape_id", "category", "source_path", "views", "vector"]
        data = self.retrying(lambda: self._query(columns))
        n, v, d = data.num_rows, self.meta.views, self.meta.embed_dim
        views = data.column("views").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vectors = data.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return ShapeSnapshot(self.version, data.select(["shape_id", "category", "source_path"]),
                             views.reshape(n, v, d), lambda: vectors.reshape(n, d))

    def _vectors_for(self, sidecar, version: int) -> Callable[[], np.ndarray]:
        """Pooled vectors of the sidecar's rows, in its order (only the in-memory FAISS fallback
        needs them), from the table at `version`. If a compaction removed that version before
        they were read, they are pooled from the sidecar's own views (within float16 rounding of
        the stored ones): a snapshot never mixes in another version's vectors."""
        rows = sidecar.rows

        def read() -> np.ndarray:
            data = self.retrying(lambda: self._query(["shape_id", "vector"]))
            if self.version != version:
                return pooled_vectors(sidecar.views)
            flat = data.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            flat = flat.reshape(data.num_rows, self.meta.embed_dim)
            if data.column("shape_id").equals(rows.column("shape_id")):
                return flat
            at = {s: i for i, s in enumerate(data.column("shape_id").to_pylist())}
            return flat[[at[s] for s in rows.column("shape_id").to_pylist()]]
        return read

    def vectors(self) -> tuple[list[str], np.ndarray]:
        """shape_ids and pooled vectors only (what the FAISS prefilter is built from)."""
        data = self.retrying(lambda: self._query(["shape_id", "vector"]))
        flat = data.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return data.column("shape_id").to_pylist(), flat.reshape(data.num_rows, self.meta.embed_dim)

    def thumbnails(self, shape_ids: list[str]) -> dict[str, bytes]:
        if not shape_ids:
            return {}
        rows = self.retrying(lambda: self._query(["shape_id", "thumbnail"], f"shape_id IN {_sql_list(shape_ids)}"))
        return dict(zip(rows.column("shape_id").to_pylist(), rows.column("thumbnail").to_pylist()))

    def info(self) -> dict:
        data = self.retrying(lambda: self._query(["category"]))
        per_category: dict[str, int] = {}
        for category in data.column("category").to_pylist():
            per_category[category] = per_category.get(category, 0) + 1
        size = sum(_file_size(p) for p in self.index_dir.rglob("*"))
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
