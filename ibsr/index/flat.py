"""The flat sidecar: what a search reads, laid out to be memory-mapped (a fast open).

Read through LanceDB, opening an index costs a scan of every row's views through Arrow and a
copy of them (N x V x D float16: 3 GB at 1,000,000 shapes), then the exact mode's bounds
computed from all of them (the open times with and without the sidecar: benchmarks/RESULTS.md,
"Scale"). The sidecar holds the same data as flat files in `flat/`:

- `views-<id>.npy`: N x V x D float16, the table's row order;
- `centres-<id>.npy` (N x D float32), `radii-<id>.npy` (N float32): `bounds.view_bounds`;
- `rows-<id>.arrow`: shape_id, category, source_path (an Arrow IPC file, memory-mapped);
- `flat.json`: the commit point, naming the files and stamped with the table version.

A snapshot whose pinned table version equals the stamp maps the files read-only (`read_flat`:
`np.load(mmap_mode="r")`: pages are read when touched, nothing per row in Python); otherwise it
reads the table (snapshot.py), with the same results. The map is the one copy of the
views a CPU search holds: the rerank reads it through `kernels.host_tensor` and converts chunk
by chunk. Read-only rather than copy-on-write so that no stray write can turn mapped pages into
private memory: they stay page cache, shared by every process and every loaded version that
maps the same files (a hot reload's new version beside the old one). Like the FAISS prefilter
(faiss_index.py), the sidecar is rebuilt from the table, never the reverse, by every writer
under the index's write lock (`IndexWriter.refresh_derived`); new files are written and
fsynced first, then `flat.json` is replaced atomically, then older files are removed (a reader
that mapped them keeps them).
"""

from __future__ import annotations

import errno
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ibsr.errors import IbsrError
from ibsr.files import atomic_write
from ibsr.index.layout import FLAT_DIR, FLAT_FILES, FLAT_META, ROW_COLUMNS
from ibsr.index.table import lance_error

SCAN_BATCH = 8192


@dataclass
class Flat:
    """One sidecar, mapped: arrays are read-only maps of the files."""

    table_version: int
    rows: pa.Table  # ROW_COLUMNS in row order
    views: np.ndarray  # N x V x D float16
    centres: np.ndarray  # N x D float32
    radii: np.ndarray  # N float32, without the search's SLACK


def read_flat(index_dir: Path, table_version: int | None = None) -> Flat | None:
    """The sidecar (of this table version, if given), or None if absent, stale, unreadable or inconsistent."""
    folder = Path(index_dir) / FLAT_DIR
    for _ in range(2):  # a writer may replace flat.json and remove the old files between our reads
        try:
            meta = json.loads((folder / FLAT_META).read_text())
            if table_version is not None and meta.get("table_version") != table_version:
                return None
            return _open(folder, meta)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, pa.ArrowException):
            continue
    return None


def flat_stamp(index_dir: Path) -> int | None:
    """The table version the sidecar names (whether or not its files open), None without a readable flat.json."""
    try:
        return json.loads((Path(index_dir) / FLAT_DIR / FLAT_META).read_text()).get("table_version")
    except (OSError, ValueError, AttributeError):
        return None


def _open(folder: Path, meta: dict) -> Flat | None:
    paths = {name: folder / meta["files"][name] for name in FLAT_FILES}
    views = np.load(paths["views"], mmap_mode="r")
    centres = np.load(paths["centres"], mmap_mode="r")
    radii = np.load(paths["radii"], mmap_mode="r")
    rows = pa.ipc.open_file(pa.memory_map(str(paths["rows"]))).read_all()
    n, v, d = meta["count"], meta["views"], meta["dim"]
    consistent = (views.shape == (n, v, d) and views.dtype == np.float16 and centres.shape == (n, d)
                  and centres.dtype == np.float32 and radii.shape == (n,) and radii.dtype == np.float32
                  and rows.num_rows == n and rows.column_names == ROW_COLUMNS)
    return Flat(meta["table_version"], rows, views, centres, radii) if consistent else None


def write_flat(index_dir: Path, reader) -> dict:
    """Write the sidecar of `reader`'s pinned version (table.ShapeReader), streamed in batches
    (bounded memory), and commit it. The caller holds the write lock."""
    from ibsr.index.bounds import view_bounds  # torch, only when the sidecar is written

    folder = Path(index_dir) / FLAT_DIR
    tag = uuid.uuid4().hex[:16]
    names = {name: f"{name}-{tag}.{'arrow' if name == 'rows' else 'npy'}" for name in FLAT_FILES}
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
        atomic_write(folder / FLAT_META, json.dumps(meta), fsync=True)  # the commit point
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
        if path.name != FLAT_META and path.name not in keep:
            path.unlink(missing_ok=True)
