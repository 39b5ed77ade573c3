"""The flat sidecar: what a search reads, laid out to be memory-mapped (issue 12, "fast open").

Read through LanceDB, opening an index costs a scan of every row's views through Arrow and a
copy of them (N x V x D float16: 3 GB at 1,000,000 shapes), then the exact mode's bounds
computed from all of them. The sidecar holds the same data as flat files in `flat/`:

- `views-<id>.npy`: N x V x D float16, the table's row order;
- `centres-<id>.npy` (N x D float32), `radii-<id>.npy` (N float32): `bounds.view_bounds`;
- `rows-<id>.arrow`: shape_id, category, source_path (an Arrow IPC file, memory-mapped);
- `flat.json`: the commit point, naming the files and stamped with the table version.

This module writes the sidecar; flat_files.py names its files and reads them. A searcher whose
pinned table version equals the stamp maps the files read-only (`read_flat`: `np.load(
mmap_mode="r")`: pages are read when touched, nothing per row in Python); otherwise it reads the
table (store.py `ShapeReader.snapshot`), with the same results. The map is the one copy of the
views a CPU search holds: the rerank reads it through `kernels.host_tensor` and converts chunk
by chunk. Read-only rather than copy-on-write so that no stray write can turn mapped pages into
private memory: they stay page cache, shared by every process and every loaded version that
maps the same files (a hot reload's new version beside the old one). Like the FAISS prefilter
(faiss_index.py), the sidecar is rebuilt from the table, never the reverse, by every writer
under the index's write lock; new files are written and fsynced first, then `flat.json` is
replaced atomically, then older files are removed (a reader that mapped them keeps them).
"""

from __future__ import annotations

import errno
import json
import os
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

from ibsr.errors import IbsrError
from ibsr.files import atomic_write
from ibsr.indexer.flat_files import FILES, FLAT_DIR, META, ROW_COLUMNS, read_flat
from ibsr.indexer.lock import IndexWriteLock
from ibsr.indexer.store import ShapeReader, lance_error, table_errors

SCAN_BATCH = 8192


def write_flat(index_dir: Path, reader) -> dict:
    """Write the sidecar of `reader`'s pinned version (store.ShapeReader), streamed in batches
    (bounded memory), and commit it. The caller holds the write lock."""
    from ibsr.indexer.bounds import view_bounds  # torch, only when the sidecar is written

    folder = Path(index_dir) / FLAT_DIR
    tag = uuid.uuid4().hex[:16]
    names = {name: f"{name}-{tag}.{'arrow' if name == 'rows' else 'npy'}" for name in FILES}
    n, v, d = reader.table.count_rows(), reader.meta.views, reader.meta.embed_dim
    meta = {"table_version": reader.version, "count": n, "views": v, "dim": d, "files": names}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"views": ((n, v, d), np.float16), "centres": ((n, d), np.float32), "radii": ((n,), np.float32)}
        files = {name: _npy(folder / names[name], *spec) for name, spec in arrays.items()}
        rows, start = [], 0
        try:
            for batch in reader.batches([*ROW_COLUMNS, "views"], SCAN_BATCH):
                part = batch.column("views").flatten().to_numpy(zero_copy_only=False).reshape(-1, v, d)
                centres, radii = view_bounds(part)
                for name, data in (("views", part), ("centres", centres.numpy()), ("radii", radii.numpy())):
                    files[name].write(np.ascontiguousarray(data, dtype=arrays[name][1]).tobytes())
                rows.append(batch.select(ROW_COLUMNS))
                start += len(part)
            for f in files.values():
                f.flush()
                os.fsync(f.fileno())
        finally:
            for f in files.values():
                f.close()
        if start != n:
            raise IbsrError("the table changed while its flat sidecar was written; rerun", index_dir)
        _write_rows(folder / names["rows"], rows, reader)
        atomic_write(folder / META, json.dumps(meta), fsync=True)  # the commit point
    except OSError as exc:
        for path in (folder / name for name in names.values()):
            path.unlink(missing_ok=True)
        raise _write_error(exc, folder) from None
    _remove_unreferenced(folder, keep=set(names.values()))
    return {"count": n, "table_version": reader.version}


def _npy(path: Path, shape: tuple, dtype):
    """An open .npy file with its header written: the rows follow in order. Plain writes, not
    a writable memory map, so that a full disk is an OSError rather than a SIGBUS."""
    f = open(path, "wb")
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                             "fortran_order": False, "shape": shape})
    return f


def _write_rows(path: Path, batches: list, reader) -> None:
    schema = pa.schema([reader.table.schema.field(c) for c in ROW_COLUMNS])
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as out:
        for batch in batches:
            out.write_table(pa.Table.from_batches([batch]).cast(schema))
    _fsync(path)


def _fsync(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_error(exc: OSError, folder: Path) -> IbsrError:
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return lance_error(exc, folder, writing=True)  # names a full disk as such
    return IbsrError(f"cannot write the flat sidecar ({exc.strerror or exc}); the previous one is kept (searches "
                     "read the table meanwhile); fix the cause and run `ibsr-index reindex-faiss`", folder)


def _remove_unreferenced(folder: Path, keep: set[str]) -> None:
    """Files of earlier writes and of killed ones (mapped ones stay readable to whoever mapped them)."""
    for path in folder.iterdir():
        if path.name != META and path.name not in keep:
            path.unlink(missing_ok=True)


def rebuild_flat(index_dir: Path, wait: bool = True) -> dict:
    """Write the sidecar of the table's current version, holding the write lock (already
    held when a build calls this)."""
    ShapeReader(index_dir)  # before locking: refuses a directory that is no index
    with IndexWriteLock(index_dir, wait=wait):
        reader = ShapeReader(index_dir)  # the version no other writer can move now
        with table_errors(Path(index_dir)):
            return write_flat(index_dir, reader)


def flat_is_current(index_dir: Path) -> bool:
    """Whether the sidecar was written from the table's current version (and opens)."""
    return read_flat(index_dir, ShapeReader(index_dir).version) is not None
