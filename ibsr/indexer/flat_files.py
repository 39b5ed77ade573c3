"""The flat sidecar's files and their reader: what its writer (flat.py) and its readers
(store.py's `ShapeReader.snapshot`, verify.py) share.

`flat/flat.json` names the files of the current sidecar and the table version they were
written from; `read_flat` maps them read-only and checks them against it (flat.py's docstring
has the layout and why it is mapped).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

FLAT_DIR = "flat"
META = "flat.json"
ROW_COLUMNS = ["shape_id", "category", "source_path"]
FILES = ("views", "centres", "radii", "rows")


@dataclass
class Flat:
    """One sidecar, mapped: arrays are read-only maps of the files."""

    table_version: int
    rows: pa.Table  # ROW_COLUMNS in row order
    views: np.ndarray  # N x V x D float16
    centres: np.ndarray  # N x D float32
    radii: np.ndarray  # N float32, without the search's SLACK


def _paths(folder: Path, meta: dict) -> dict[str, Path]:
    return {name: folder / meta["files"][name] for name in FILES}


def read_flat(index_dir: Path, table_version: int | None = None) -> Flat | None:
    """The sidecar (of this table version, if given), or None if absent, stale, unreadable or inconsistent."""
    folder = Path(index_dir) / FLAT_DIR
    for _ in range(2):  # a writer may replace flat.json and remove the old files between our reads
        try:
            meta = json.loads((folder / META).read_text())
            if table_version is not None and meta.get("table_version") != table_version:
                return None
            return _open(folder, meta)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, pa.ArrowException):
            continue
    return None


def _open(folder: Path, meta: dict) -> Flat | None:
    paths = _paths(folder, meta)
    views = np.load(paths["views"], mmap_mode="r")
    centres = np.load(paths["centres"], mmap_mode="r")
    radii = np.load(paths["radii"], mmap_mode="r")
    rows = pa.ipc.open_file(pa.memory_map(str(paths["rows"]))).read_all()
    n, v, d = meta["count"], meta["views"], meta["dim"]
    consistent = (views.shape == (n, v, d) and views.dtype == np.float16 and centres.shape == (n, d)
                  and centres.dtype == np.float32 and radii.shape == (n,) and radii.dtype == np.float32
                  and rows.num_rows == n and rows.column_names == ROW_COLUMNS)
    return Flat(meta["table_version"], rows, views, centres, radii) if consistent else None
