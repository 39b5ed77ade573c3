"""The LanceDB `shapes` table: opening it, reading one pinned version, and its errors.

Writers (writer.py) commit one batch per LanceDB transaction; readers pin one table version
for a whole search (snapshot.py reads through `ShapeReader`).

LanceDB reports damaged files, a full disk and vanished files as RuntimeError, ValueError,
OSError or a Rust panic; `table_errors` turns them into one-line IbsrErrors that name the
file (when LanceDB does) and say how to recover.
"""

from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa

from ibsr.errors import IbsrError
from ibsr.index.layout import SHAPES_TABLE, TABLE_DIR, IndexMeta

PRIMARY_KEY = "shape_id"
# LanceDB's schema metadata key for the primary key (`set_unenforced_primary_key` writes it).
PRIMARY_KEY_METADATA = b"lance-schema:unenforced-primary-key"
REPAIR_HINT = "`ibsr-index verify` lists the damage and `ibsr-index build CATALOG --repair` rebuilds it"
_DISK_FULL = ("no space left on device", "file too large", "disk quota exceeded",
              "os error 28)", "os error 27)", "os error 122)")


class TableFileMissing(IbsrError):
    """A file the pinned table version needs is gone (compaction removed an old version, or damage)."""


def connect(index_dir: Path):
    return lancedb.connect(str(index_dir))


def open_table(db, attempts: int = 5):
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
                     "(the damaged table is kept aside)", Path(index_dir) / TABLE_DIR)


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


def sql_list(values: list[str]) -> str:
    return "(" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + ")"


def pooled_vectors(views: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """The L2-normalized mean of each shape's views (N x V x D -> N x D float32), as `vector`;
    by chunks, so float16 views are never all widened at once."""
    pooled = np.empty((views.shape[0], views.shape[2]), np.float32)
    for start in range(0, len(pooled), chunk):
        pooled[start:start + chunk] = views[start:start + chunk].astype(np.float32).mean(axis=1)
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled


class ShapeReader:
    """Read-only access to an index at one pinned table version.

    A build's compaction deletes versions older than `writer.KEEP_OLD_VERSIONS`, by creation time, so
    a reader that pinned a long-unchanged version can see its files vanish mid-read; reads
    then re-pin the latest version and start over (`retrying`), rather than fail.
    """

    RETRIES = 5

    def __init__(self, index_dir: Path):
        self.index_dir = Path(index_dir)
        self.meta = IndexMeta.read(self.index_dir)
        with table_errors(self.index_dir):
            self.table = open_table(connect(self.index_dir))
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

    def read(self, columns: list[str], where: str | None = None) -> pa.Table:
        """These columns of the pinned version's rows (of the latest one, re-pinned, if its files vanished)."""
        def query() -> pa.Table:
            rows = self.table.search()
            if where is not None:
                rows = rows.where(where)
            return rows.select(columns).limit(None).to_arrow()
        return self.retrying(query)

    def batches(self, columns: list[str], batch_size: int = 4096):
        """Stream the pinned version's rows (bounded memory); errors are the caller's to map."""
        return self.table.search().select(columns).limit(None).to_batches(batch_size)

    def vectors(self) -> tuple[list[str], np.ndarray]:
        """shape_ids and pooled vectors only (what the FAISS prefilter is built from)."""
        data = self.read(["shape_id", "vector"])
        flat = data.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return data.column("shape_id").to_pylist(), flat.reshape(data.num_rows, self.meta.embed_dim)

    def thumbnails(self, shape_ids: list[str]) -> dict[str, bytes]:
        if not shape_ids:
            return {}
        rows = self.read(["shape_id", "thumbnail"], f"shape_id IN {sql_list(shape_ids)}")
        return dict(zip(rows.column("shape_id").to_pylist(), rows.column("thumbnail").to_pylist()))

    def info(self) -> dict:
        data = self.read(["category"])
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


def latest_version(index_dir: Path) -> int | None:
    """The table's latest committed version (reading only its latest manifest: ~ms), or None
    while there is none."""
    if not (Path(index_dir) / TABLE_DIR).is_dir():  # else lancedb.connect would create the folder
        return None
    try:
        return connect(index_dir).open_table(SHAPES_TABLE).version
    except Exception as exc:  # damaged, or being created: the reader that opens it next says which
        if not is_lance_error(exc):
            raise
        return None
