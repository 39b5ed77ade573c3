"""`ibsr-index verify`: check every invariant a search relies on.

The checks, in order (each failure is one `Problem`: what, which shape or file, what to do):

- metadata: `ibsr_index.json` readable, of this ibsr's format version (IndexMeta.read);
- table: the `shapes` table opens and every row of its current version can be read;
- schema: the table's columns are `shapes_schema(V, D)` for the metadata's V and D;
- rows, streamed in batches (bounded memory, a progress bar): each shape_id exactly once
  and non-empty; views finite and unit-norm per view; the pooled `vector` unit-norm and equal
  to the normalized mean of the views; every encoder_id equal to the index's; thumbnails
  decodable PNGs;
- prefilter: the FAISS files readable, built from the table's current version, over exactly
  the table's shape ids in row order;
- flat: the flat sidecar (flat.py) present, readable, of the table's current version, and
  equal to the table: the same shape ids, categories and source paths in row order, the same
  float16 views, and the view bounds those views give (compared while the rows stream by).

The row checks read one pinned table version, so a build running meanwhile cannot make them
see half a batch (its prefilter is stale until it ends, and is reported as such). `repair`
(`Indexer.build(repair=True)`, `ibsr-index build --repair`) acts on what this finds.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow.compute as pc
from tqdm import tqdm

from ibsr.errors import IbsrError
from ibsr.index.faiss_index import read_faiss
from ibsr.index.flat import flat_stamp, read_flat
from ibsr.index.layout import (FAISS_DIR, FAISS_IDS_FILE, FLAT_DIR, FLAT_META, META_FILE, ROW_COLUMNS, TABLE_DIR,
                               IndexMeta, holds_index_data, shapes_schema)
from ibsr.index.lock import read_holder
from ibsr.index.table import ShapeReader, has_primary_key, is_lance_error, lance_error

NORM_TOLERANCE = 5e-3  # float16 views: |norm - 1| measured at 1e-4 on real indexes
POOLED_TOLERANCE = 5e-3  # max |vector - normalize(mean(views))|, measured at 4e-5
SCAN_BATCH = 2048
MAX_LISTED = 10_000  # problems kept per check (the count stays exact)

ROW_CHECKS = ("shape_id", "views", "vector", "encoder", "thumbnail")  # a bad row is deleted and re-indexed
REBUILD_CHECKS = ("metadata", "table", "schema")  # the table cannot be trusted: rebuilt from scratch


@dataclass
class Problem:
    check: str  # metadata, table, schema, shape_id, duplicate, views, vector, encoder, thumbnail, prefilter, flat
    where: str  # a shape id or a file
    what: str
    fix: str

    def line(self) -> str:
        return f"{self.where}: {self.what}; {self.fix}"


@dataclass
class Verification:
    index: str
    shapes: int = 0  # rows read
    table_version: int | None = None
    problems: list[Problem] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # problems per check, including unlisted ones
    notes: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.counts

    @property
    def needs_rebuild(self) -> bool:
        return any(self.counts[c] for c in REBUILD_CHECKS)

    def bad_shape_ids(self) -> set[str]:
        """Shapes whose rows repair deletes (the build then re-indexes them from the catalog)."""
        return {p.where for p in self.problems if p.check in (*ROW_CHECKS, "duplicate")}

    def add(self, check: str, where, what: str, fix: str) -> None:
        self.counts[check] += 1
        if self.counts[check] <= MAX_LISTED:
            self.problems.append(Problem(check, str(where), what, fix))

    def to_dict(self) -> dict:
        return {"index": self.index, "healthy": self.healthy, "shapes": self.shapes,
                "table_version": self.table_version, "problem_counts": dict(self.counts),
                "problems": [asdict(p) for p in self.problems], "notes": self.notes}


def verify_index(index_dir: Path, progress: bool = False) -> Verification:
    index_dir = Path(index_dir)
    result = Verification(index=str(index_dir))
    repair = f"run `ibsr-index build CATALOG --index {index_dir} --repair`"
    try:
        meta = IndexMeta.read(index_dir)
    except IbsrError as exc:
        if not holds_index_data(index_dir):
            raise  # not an index at all: nothing to verify
        result.add("metadata", exc.path or index_dir / META_FILE, exc.message, f"{repair} (rebuilds the index)")
        return result
    try:
        reader = ShapeReader(index_dir)
    except IbsrError as exc:
        result.add("table", exc.path or index_dir, exc.message.split(";")[0], repair)
        return result
    result.table_version = reader.version
    if not _check_schema(reader, meta, result, repair):
        return result
    if not has_primary_key(reader.table):
        result.notes.append("shape_id is not declared the table's primary key (an index written before ibsr "
                            "declared it), so LanceDB alone would not stop concurrent duplicate inserts; the next "
                            "build declares it")
    try:
        ids, flat = reader.retrying(lambda: _scan_rows(reader, meta, result, repair, progress))
    except IbsrError as exc:
        result.add("table", exc.path or index_dir, exc.message.split(";")[0], f"{repair} (rebuilds the table)")
        return result
    for shape_id, count in sorted(Counter(ids).items()):
        if count > 1:
            result.add("duplicate", shape_id, f"appears {count} times in the table (each search would return it "
                       f"{count} times)", repair)
    result.table_version = reader.version  # re-pinned if a compaction removed the first one
    _check_prefilter(index_dir, reader.version, ids, result)
    flat.report(ids, result)
    holder = read_holder(index_dir)
    if holder is not None:
        result.notes.append(f"the write lock is held (or was left) by {holder.describe()}: a build in progress "
                            "leaves the prefilter stale until it ends")
    return result


def _check_schema(reader: ShapeReader, meta: IndexMeta, result: Verification, repair: str) -> bool:
    expected = shapes_schema(meta.views, meta.embed_dim)
    actual = reader.table.schema
    table = reader.index_dir / TABLE_DIR
    for want in expected:
        if want.name not in actual.names:
            result.add("schema", table, f"column {want.name!r} is missing", repair)
        elif actual.field(want.name).type != want.type:
            result.add("schema", table, f"column {want.name!r} is {actual.field(want.name).type}, the index "
                       f"metadata ({meta.views} views x {meta.embed_dim} dims) needs {want.type}", repair)
    return not result.counts["schema"]


def _scan_rows(reader: ShapeReader, meta: IndexMeta, result: Verification, repair: str, progress: bool):
    """Stream every row through the row checks and the sidecar comparison; returns the shape
    ids in row order and the sidecar's comparison."""
    for check in ROW_CHECKS:  # a retry after a re-pin starts over
        result.counts.pop(check, None)
    result.problems = [p for p in result.problems if p.check not in ROW_CHECKS]
    ids: list[str] = []
    columns = list(shapes_schema(meta.views, meta.embed_dim).names)  # every column: every byte a search may read
    total = reader.table.count_rows()
    flat = FlatCheck(reader.index_dir, reader.version)
    with tqdm(total=total, unit="shape", desc="verifying", disable=not progress, file=sys.stderr) as bar:
        for batch in _batches(reader, columns):
            ids.extend(batch.column("shape_id").to_pylist())
            _check_batch(batch, meta, result, repair)
            flat.compare(batch, meta)
            bar.update(batch.num_rows)
    result.shapes = len(ids)
    return ids, flat


def _batches(reader: ShapeReader, columns: list[str]):
    """Batches of the pinned version, LanceDB errors (raised while iterating) as IbsrErrors."""
    stream = reader.batches(columns, SCAN_BATCH)
    while True:
        try:
            batch = next(stream)
        except StopIteration:
            return
        except Exception as exc:
            if not is_lance_error(exc):
                raise
            raise lance_error(exc, reader.index_dir) from None
        yield batch


def _check_batch(batch, meta: IndexMeta, result: Verification, repair: str) -> None:
    n, v, d = batch.num_rows, meta.views, meta.embed_dim
    ids = batch.column("shape_id").to_pylist()
    categories = batch.column("category").to_pylist()
    views = batch.column("views").flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(n, v, d)
    vectors = batch.column("vector").flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(n, d)
    encoders = batch.column("encoder_id").to_pylist()
    thumbnails = batch.column("thumbnail").to_pylist()
    finite_views = np.isfinite(views).all(axis=(1, 2))
    with np.errstate(all="ignore"):
        view_norm_error = np.abs(np.linalg.norm(views, axis=2) - 1).max(axis=1)
        pooled = views.mean(axis=1)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        vector_error = np.abs(vectors - pooled).max(axis=1)
        vector_norm_error = np.abs(np.linalg.norm(vectors, axis=1) - 1)
    for i, shape_id in enumerate(ids):
        if not shape_id or not categories[i]:
            result.add("shape_id", shape_id, f"empty shape_id or category ({shape_id!r}, {categories[i]!r})", repair)
        if not finite_views[i]:
            result.add("views", shape_id, "view embeddings hold NaN or infinite values", repair)
        elif not view_norm_error[i] <= NORM_TOLERANCE:
            result.add("views", shape_id, f"view embeddings are not unit-norm (off by {view_norm_error[i]:.3g})",
                       repair)
        if not vector_norm_error[i] <= NORM_TOLERANCE:
            result.add("vector", shape_id, f"pooled vector is not unit-norm or not finite "
                       f"(off by {vector_norm_error[i]:.3g})", repair)
        elif finite_views[i] and not vector_error[i] <= POOLED_TOLERANCE:
            result.add("vector", shape_id, f"pooled vector differs from the normalized mean of its views by "
                       f"{vector_error[i]:.3g}", repair)
        if encoders[i] != meta.encoder_id:
            result.add("encoder", shape_id, f"encoded by {encoders[i]!r}, the index's encoder is "
                       f"{meta.encoder_id!r}", repair)
        if not _decodable(thumbnails[i]):
            result.add("thumbnail", shape_id, "thumbnail is not a decodable image", repair)


def _decodable(png: bytes | None) -> bool:
    if not png:
        return False
    try:
        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return False
    return image is not None and image.size > 0


def _check_prefilter(index_dir: Path, version: int, ids: list[str], result: Verification) -> None:
    fix = f"run `ibsr-index reindex-faiss --index {index_dir}` (searches meanwhile build an exact one in memory)"
    ids_file = index_dir / FAISS_DIR / FAISS_IDS_FILE
    if not ids:
        return  # an empty table has no prefilter
    if not ids_file.exists():
        result.add("prefilter", index_dir / FAISS_DIR, "the FAISS prefilter is missing", fix)
        return
    stored = read_faiss(index_dir)
    if stored is None:
        result.add("prefilter", ids_file, "the FAISS prefilter is unreadable or its files disagree", fix)
        return
    meta = stored[1]
    if meta.get("table_version") != version:
        result.add("prefilter", ids_file, f"the FAISS prefilter was built from table version "
                   f"{meta.get('table_version')}, the table is at version {version} (stale)", fix)
    elif meta.get("shape_ids") != ids:
        result.add("prefilter", ids_file, "the FAISS prefilter's shape ids differ from the table's rows", fix)


class FlatCheck:
    """The flat sidecar compared with the table's rows, batch by batch, as the scan reads them."""

    def __init__(self, index_dir: Path, version: int):
        self.index_dir, self.version = index_dir, version
        self.flat = read_flat(index_dir, version)
        self.at = 0  # rows compared so far
        self.differs: str | None = None  # the first shape whose sidecar row differs from the table's

    def compare(self, batch, meta: IndexMeta) -> None:
        from ibsr.index.bounds import view_bounds  # torch, only when a sidecar is compared

        if self.flat is None or self.differs is not None:
            return
        n, rows = batch.num_rows, slice(self.at, self.at + batch.num_rows)
        self.at += n
        if rows.stop > len(self.flat.views):  # the table has more rows: the first one the sidecar lacks
            self.differs = batch.column("shape_id")[len(self.flat.views) - rows.start].as_py()
            return
        views = batch.column("views").flatten().to_numpy(zero_copy_only=False).reshape(n, meta.views, meta.embed_dim)
        centres, radii = view_bounds(views)
        stored = self.flat.rows.slice(rows.start, n)
        same = np.ones(n, dtype=bool)
        for column in ROW_COLUMNS:
            equal = pc.equal(stored.column(column).combine_chunks(), batch.column(column))
            same &= pc.fill_null(equal, False).to_numpy(zero_copy_only=False)
        def close(a, b):  # per row
            return np.isclose(a, b, rtol=0, atol=1e-6, equal_nan=True).reshape(n, -1).all(axis=1)

        stored_views = self.flat.views[rows]
        same &= ((stored_views == views) | (np.isnan(stored_views) & np.isnan(views))).reshape(n, -1).all(axis=1)
        same &= close(self.flat.centres[rows], centres.numpy())
        same &= close(self.flat.radii[rows], radii.numpy())
        if not same.all():
            self.differs = batch.column("shape_id")[int(np.argmin(same))].as_py()

    def report(self, ids: list[str], result: Verification) -> None:
        fix = (f"run `ibsr-index reindex-faiss --index {self.index_dir}` (searches meanwhile read the table: "
               "slower to open)")
        folder = self.index_dir / FLAT_DIR
        if not ids:
            return  # an empty table has no sidecar
        if not (folder / FLAT_META).exists():
            result.add("flat", folder, "the flat sidecar is missing", fix)
        elif self.flat is None:
            stamp = flat_stamp(self.index_dir)
            what = (f"the flat sidecar was written from table version {stamp}, the table is at version "
                    f"{self.version} (stale)" if stamp not in (None, self.version)
                    else "the flat sidecar is unreadable or its files disagree")
            result.add("flat", folder / FLAT_META, what, fix)
        elif self.differs is not None or self.at != len(self.flat.views):
            where = f" (first at shape {self.differs})" if self.differs else ""
            result.add("flat", folder, f"the flat sidecar differs from the table{where}", fix)


__all__ = ["Problem", "Verification", "verify_index"]
