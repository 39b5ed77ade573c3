"""The FAISS prefilter index, always rebuilt from the LanceDB table (never the reverse).

It indexes each shape's pooled `vector` (normalized mean of its views) by inner product.
The type follows the catalog size: exact (`Flat`) below `EXACT_BELOW` shapes, else IVF
with ~4 sqrt(N) lists; any FAISS factory string overrides it (`--faiss-factory HNSW32`).
Beside the index, `faiss/shape_ids.json` records the row order and the table version it
was built from, so a search can tell a stale prefilter from a current one.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import faiss
import numpy as np

from ibsr.errors import IbsrError

FAISS_DIR = "faiss"
INDEX_FILE = "prefilter.faiss"
IDS_FILE = "shape_ids.json"
EXACT_BELOW = 100_000
IVF_PROBE_FRACTION = 1 / 16  # nprobe = nlist / 16: high recall, still far fewer lists than all


def default_factory(n: int) -> str:
    if n < EXACT_BELOW:
        return "Flat"
    return f"IVF{int(4 * math.sqrt(n))},Flat"


def build_faiss(vectors: np.ndarray, factory: str | None = None) -> faiss.Index:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    factory = factory or default_factory(len(vectors))
    try:
        index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise IbsrError(f"FAISS cannot build {factory!r} ({str(exc).splitlines()[0]}); "
                        "pass a factory string such as Flat, IVF1024,Flat or HNSW32") from None
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    _tune(index)
    return index


def _tune(index: faiss.Index) -> None:
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = max(1, int(ivf.nlist * IVF_PROBE_FRACTION))


def write_faiss(index_dir: Path, index: faiss.Index, shape_ids: list[str], table_version: int, factory: str) -> None:
    """Write the index and its id list atomically (tmp + rename each, id list last)."""
    folder = Path(index_dir) / FAISS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (INDEX_FILE + ".tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, folder / INDEX_FILE)
    meta = {"table_version": table_version, "factory": factory, "count": len(shape_ids), "shape_ids": shape_ids}
    tmp = folder / (IDS_FILE + ".tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, folder / IDS_FILE)


def read_faiss(index_dir: Path) -> tuple[faiss.Index, dict] | None:
    """The stored prefilter and its metadata, or None if absent or unreadable."""
    folder = Path(index_dir) / FAISS_DIR
    try:
        meta = json.loads((folder / IDS_FILE).read_text())
        index = faiss.read_index(str(folder / INDEX_FILE))
    except (OSError, ValueError, RuntimeError):
        return None
    if index.ntotal != meta.get("count"):
        return None
    _tune(index)
    return index, meta


def rebuild_faiss(index_dir: Path, factory: str | None = None) -> dict:
    """Build the prefilter from the table's current version and write it beside the table."""
    from ibsr.indexer.store import ShapeReader

    reader = ShapeReader(index_dir)
    shape_ids, vectors = reader.vectors()
    factory = factory or default_factory(len(shape_ids))
    write_faiss(index_dir, build_faiss(vectors, factory), shape_ids, reader.version, factory)
    return {"factory": factory, "count": len(shape_ids), "table_version": reader.version}


def faiss_is_current(index_dir: Path) -> bool:
    from ibsr.indexer.store import ShapeReader

    stored = read_faiss(index_dir)
    return stored is not None and stored[1]["table_version"] == ShapeReader(index_dir).version


def to_gpu_if_available(index: faiss.Index) -> faiss.Index:
    """Move the index to GPU 0 when this FAISS build has GPUs (faiss-gpu)."""
    if getattr(faiss, "get_num_gpus", lambda: 0)() > 0:
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    return index
