"""`IndexSnapshot.open(index_dir)`: everything a search reads, from one pinned table version, opened once.

The rows (shape_id, category, source_path), every shape's view embeddings, their score bounds
and the FAISS prefilter all come from the version the snapshot pins: the flat sidecar when it
was written from that version (memory-mapped, flat.py), else the table; the stored FAISS
prefilter when it was built from that version, else an exact one built in memory from the
snapshot's own pooled vectors. Nothing here is per row in Python: the row columns stay Arrow,
a hit converts its own row (`row`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ibsr.index.bounds import ShapeBounds
from ibsr.index.faiss_index import build_faiss, faiss_stamp, read_faiss, to_gpu_if_available
from ibsr.index.flat import Flat, read_flat
from ibsr.index.layout import ROW_COLUMNS, IndexMeta
from ibsr.index.table import ShapeReader, latest_version, pooled_vectors


@dataclass
class IndexSnapshot:
    """One pinned version of an index: its rows, views, score bounds and FAISS prefilter."""

    reader: ShapeReader  # the table at `version`: thumbnails, and the pooled vectors when first needed
    version: int
    rows: pa.Table  # ROW_COLUMNS, in row order
    views: np.ndarray  # N x V x D float16, read-only: the sidecar's map or the table's Arrow buffer, never copied
    read_vectors: Callable[[], np.ndarray]  # N x D float32 pooled vectors, read when first needed
    flat_bounds: tuple[np.ndarray, np.ndarray] | None = None  # the sidecar's (centres, radii) maps
    source: str = "table"  # or "flat"
    generation: tuple = ()  # what `newer_version_exists` compares with (`index_generation`, read before pinning)
    faiss_index: faiss.Index | None = field(default=None, repr=False)  # over the pooled vectors, by inner product
    faiss_rows: np.ndarray | None = None  # the snapshot row of each FAISS id (-1: not in the snapshot)
    faiss_source: str = "memory"  # or "stored"

    @classmethod
    def open(cls, index_dir: Path, flat: bool = True) -> "IndexSnapshot":
        """The index's latest version. flat=False reads the table even where the sidecar is current."""
        generation = index_generation(index_dir)  # read first: a newer commit is then seen as newer
        return cls.read(ShapeReader(Path(index_dir)), flat, generation)

    @classmethod
    def read(cls, reader: ShapeReader, flat: bool = True, generation: tuple = ()) -> "IndexSnapshot":
        """The version `reader` pinned (the latest one, re-pinned, if a compaction removed it meanwhile)."""
        sidecar = read_flat(reader.index_dir, reader.version) if flat else None
        snapshot = cls._from_flat(reader, sidecar) if sidecar is not None else cls._from_table(reader)
        snapshot.generation = generation
        snapshot.faiss_index, snapshot.faiss_rows, snapshot.faiss_source = snapshot._prefilter()
        return snapshot

    @classmethod
    def _from_flat(cls, reader: ShapeReader, sidecar: Flat) -> "IndexSnapshot":
        return cls(reader, sidecar.table_version, sidecar.rows, sidecar.views, _vectors_for(reader, sidecar),
                   (sidecar.centres, sidecar.radii), source="flat")

    @classmethod
    def _from_table(cls, reader: ShapeReader) -> "IndexSnapshot":
        data = reader.read([*ROW_COLUMNS, "views", "vector"])
        n, v, d = data.num_rows, reader.meta.views, reader.meta.embed_dim
        views = data.column("views").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vectors = data.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return cls(reader, reader.version, data.select(ROW_COLUMNS), views.reshape(n, v, d),
                   lambda: vectors.reshape(n, d))

    def _prefilter(self) -> tuple[faiss.Index, np.ndarray, str]:
        """The stored index if it was built from this table version, else an exact one in memory."""
        stored = read_faiss(self.index_dir)
        if stored is not None and stored[1]["table_version"] == self.version:
            index, meta = stored
            return to_gpu_if_available(index), self._rows_of_ids(meta["shape_ids"]), "stored"
        return to_gpu_if_available(build_faiss(self.vectors, "Flat")), np.arange(len(self)), "memory"

    def _rows_of_ids(self, faiss_ids: list[str]) -> np.ndarray:
        """Snapshot row of each FAISS id (-1 if absent): the identity when both follow the table's
        row order, as they do when written from one version (no per-row Python then)."""
        ids = self.rows.column("shape_id")
        if len(faiss_ids) == len(ids) and pa.chunked_array([pa.array(faiss_ids, ids.type)]).equals(ids):
            return np.arange(len(ids))
        row = {s: i for i, s in enumerate(self.shape_ids)}
        return np.array([row.get(s, -1) for s in faiss_ids], dtype=np.int64)

    @property
    def index_dir(self) -> Path:
        return self.reader.index_dir

    @property
    def meta(self) -> IndexMeta:
        return self.reader.meta

    def __len__(self) -> int:
        return self.rows.num_rows

    def newer_version_exists(self) -> bool:
        """Whether a writer committed since this snapshot was opened (a table version, or a
        rewritten prefilter): cheap enough to poll (`ibsr-serve`'s hot reload)."""
        return index_generation(self.index_dir) != self.generation

    @cached_property
    def bounds(self) -> ShapeBounds:
        """The exact modes' score bounds: the sidecar's maps, used in place, else built from the
        views on first use (seconds at a million shapes: benchmarks/RESULTS.md, "Exact pruned
        rerank")."""
        return ShapeBounds.from_raw(*self.flat_bounds) if self.flat_bounds else ShapeBounds.build(self.views)

    def row(self, i: int) -> tuple[str, str, str]:
        """(shape_id, category, source_path) of one row."""
        return tuple(self.rows.column(c)[i].as_py() for c in ROW_COLUMNS)

    def category_codes(self) -> tuple[np.ndarray, list[str]]:
        """Each row's category as an index into the sorted category names."""
        encoded = pc.dictionary_encode(self.rows.column("category")).combine_chunks()
        names = encoded.dictionary.to_pylist()
        order = np.argsort(names)
        rank = np.empty(len(names), dtype=np.int64)
        rank[order] = np.arange(len(names))
        return rank[encoded.indices.to_numpy()], [names[i] for i in order]

    def thumbnails(self, shape_ids: list[str]) -> dict[str, bytes]:
        return self.reader.thumbnails(shape_ids)

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


def index_generation(index_dir: Path) -> tuple:
    """(latest table version, FAISS commit stamp): changes whenever a writer commits, the
    prefilter rewritten after a build's last table commit included."""
    return latest_version(index_dir), faiss_stamp(index_dir)


def _vectors_for(reader: ShapeReader, sidecar: Flat) -> Callable[[], np.ndarray]:
    """Pooled vectors of the sidecar's rows, in its order (only the in-memory FAISS fallback
    needs them), from the table at the sidecar's version. If a compaction removed that version
    before they were read, they are pooled from the sidecar's own views (within float16 rounding
    of the stored ones): a snapshot never mixes in another version's vectors."""
    rows, version = sidecar.rows, sidecar.table_version

    def read() -> np.ndarray:
        data = reader.read(["shape_id", "vector"])
        if reader.version != version:
            return pooled_vectors(sidecar.views)
        flat = data.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        flat = flat.reshape(data.num_rows, reader.meta.embed_dim)
        if data.column("shape_id").equals(rows.column("shape_id")):
            return flat
        at = {s: i for i, s in enumerate(data.column("shape_id").to_pylist())}
        return flat[[at[s] for s in rows.column("shape_id").to_pylist()]]
    return read
