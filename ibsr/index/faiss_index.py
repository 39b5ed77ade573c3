"""The FAISS prefilter index, always rebuilt from the LanceDB table (never the reverse).

It indexes each shape's pooled `vector` (normalized mean of its views) by inner product.
The type follows the catalog size: exact (`Flat`) below `EXACT_BELOW` shapes, else IVF
with ~4 sqrt(N) lists; any FAISS factory string overrides it (`--faiss-factory HNSW32`).
Beside the index, `faiss/shape_ids.json` records the row order and the table version it
was built from, so a search can tell a stale prefilter from a current one.

Writes are crash-safe: each write puts the index in a new file (`prefilter-<id>.faiss`) and
then atomically replaces `shape_ids.json`, which names that file; the JSON is the commit
point. A writer killed at any moment leaves the previous (index, ids) pair intact and at
worst an unreferenced file, removed by the next write. Readers read the JSON first and then
the file it names, so they never pair an index with another write's id list.
"""

from __future__ import annotations

import errno
import json
import math
import os
import uuid
from pathlib import Path

import faiss
import numpy as np

from ibsr.errors import IbsrError
from ibsr.files import atomic_path
from ibsr.index.layout import FAISS_DIR, FAISS_IDS_FILE, FAISS_INDEX_FILE
from ibsr.index.table import lance_error

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
    """Write a new index file, then commit it by replacing the id list that names it."""
    folder = Path(index_dir) / FAISS_DIR
    name = f"prefilter-{uuid.uuid4().hex[:16]}.faiss"
    meta = {"table_version": table_version, "factory": factory, "count": len(shape_ids), "index_file": name,
            "shape_ids": shape_ids}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Serialized here and written by Python, so a full disk is an OSError with its errno.
        _write_synced(folder / name, faiss.serialize_index(index).tobytes())
        # The commit point: the block's end replaces the id list. Named shape_ids.json.<random>.tmp
        # (tests/test_faults.py tells the steps of a write by the file names).
        with atomic_path(folder / FAISS_IDS_FILE, prefix=f"{FAISS_IDS_FILE}.") as tmp:
            _write_synced(tmp, json.dumps(meta).encode())
    except OSError as exc:
        error = lance_error(exc, folder, writing=True)  # names a full disk as such
        if exc.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            error = IbsrError(f"cannot write the FAISS prefilter ({exc.strerror or exc}); the previous one is kept; "
                              "fix the cause and run `ibsr-index reindex-faiss`", folder)
        (folder / name).unlink(missing_ok=True)
        raise error from None
    _remove_unreferenced(folder, keep=name)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _remove_unreferenced(folder: Path, keep: str) -> None:
    """Index files of earlier writes (and of killed ones). Readers that read the old JSON
    just before may still open the old file: they then find it gone and fall back (read_faiss)."""
    for path in folder.iterdir():
        stale_index = path.name.startswith("prefilter") and path.suffix == ".faiss" and path.name != keep
        if stale_index or path.name.endswith(".tmp"):
            path.unlink(missing_ok=True)


def read_faiss(index_dir: Path) -> tuple[faiss.Index, dict] | None:
    """The stored prefilter and its metadata, or None if absent, unreadable or inconsistent.

    An IVF index's inverted lists (all the vectors: 512 MB at a million shapes) stay in the
    file, mapped read-only (IO_FLAG_MMAP), not read into memory: opening is ~ms, and the pages
    are page cache, shared by processes and by the two versions a hot reload holds for a while
    (each write is a new file, so a mapped one never changes). Same results as a plain read;
    other index types (Flat, HNSW) are read into memory."""
    folder = Path(index_dir) / FAISS_DIR
    for _ in range(2):  # a writer may replace the pair between our two reads: read the new one
        try:
            meta = json.loads((folder / FAISS_IDS_FILE).read_text())
            index = faiss.read_index(str(folder / meta.get("index_file", FAISS_INDEX_FILE)), faiss.IO_FLAG_MMAP)
            break
        except (OSError, ValueError, RuntimeError, AttributeError):
            continue
    else:
        return None
    if index.ntotal != meta.get("count") or len(meta.get("shape_ids", ())) != index.ntotal:
        return None
    _tune(index)
    return index, meta


def faiss_stamp(index_dir: Path) -> int | None:
    """When the prefilter was last committed (its id file's mtime, ns), None without one: a
    rewrite after the table's last commit (a build's end, `reindex-faiss`) changes it."""
    try:
        return (Path(index_dir) / FAISS_DIR / FAISS_IDS_FILE).stat().st_mtime_ns
    except OSError:
        return None


def to_gpu_if_available(index: faiss.Index) -> faiss.Index:
    """Move the index to GPU 0 when this FAISS build has GPUs (faiss-gpu)."""
    if getattr(faiss, "get_num_gpus", lambda: 0)() > 0:
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    return index
