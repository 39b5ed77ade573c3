"""The index directory's layout and formats, defined once: file names, the table's columns,
the metadata file (the directory's map: docs/ARCHITECTURE.md, "The index directory").

Writers and readers import these definitions, so the format lives in one place and is
checked on open. Bump FORMAT_VERSION on any incompatible change; readers refuse other
versions with a message that says to rebuild.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pyarrow as pa

from ibsr.errors import IbsrError
from ibsr.files import atomic_write

FORMAT_VERSION = 1
DEFAULT_INDEX = "ibsr_index"
META_FILE = "ibsr_index.json"
SHAPES_TABLE = "shapes"
TABLE_DIR = f"{SHAPES_TABLE}.lance"
VIEW_DTYPE = "float16"
FAISS_DIR = "faiss"
FAISS_IDS_FILE = "shape_ids.json"  # the commit point: names the index file, stamps the table version
FAISS_INDEX_FILE = "prefilter.faiss"  # the index file of prefilters written before each write had its own
FLAT_DIR = "flat"
FLAT_META = "flat.json"  # the commit point: names the files, stamps the table version
FLAT_FILES = ("views", "centres", "radii", "rows")
LOCK_FILE = ".ibsr-write.lock"
HOLDER_FILE = ".ibsr-write.holder.json"
DAMAGED_DIR = "damaged"  # repair moves an unreadable table / metadata here, never deletes it
DATA_ENTRIES = (META_FILE, TABLE_DIR, FAISS_DIR, FLAT_DIR)  # what repair sets aside to start afresh
INDEX_ENTRIES = {*DATA_ENTRIES, DAMAGED_DIR, LOCK_FILE, HOLDER_FILE}

# The columns a search shows of a hit (and the flat sidecar's rows file holds), in this order.
ROW_COLUMNS = ["shape_id", "category", "source_path"]
# IndexMeta fields an index written by an earlier ibsr may lack (read as their defaults).
OPTIONAL_META = {"extra", "up_axis", "view_dtype", "rendering_id", "catalog_root"}


def resolve_index_dir(index: str | os.PathLike | None) -> Path:
    """--index, else $IBSR_INDEX, else ./ibsr_index."""
    return Path(index or os.environ.get("IBSR_INDEX") or DEFAULT_INDEX)


def holds_index_data(index_dir: Path) -> bool:
    """Whether the directory holds an index's metadata or table (readable or not)."""
    return (Path(index_dir) / META_FILE).exists() or (Path(index_dir) / TABLE_DIR).exists()


@dataclass(frozen=True)
class ShapeEntry:
    """One shape's row of the `shapes` table, but for what the writer adds: its view
    embeddings, their pooled `vector` and the index's encoder id (`IndexWriter.add`)."""

    shape_id: str
    category: str
    source_path: str
    mesh_hash: str
    thumbnail: bytes  # PNG montage of the rendered views


def shapes_schema(views: int, dim: int) -> pa.Schema:
    """The LanceDB `shapes` table: one row per catalog shape.

    `views` holds the V x D view embeddings flattened row-major (float16 halves the
    memory the exact rerank reads); `vector` is the L2-normalized mean of the views, for
    FAISS / vector search; `thumbnail` is a PNG montage of the rendered views so results
    can be shown without the meshes.
    """
    return pa.schema(
        [
            pa.field("shape_id", pa.string(), nullable=False),
            pa.field("category", pa.string(), nullable=False),
            pa.field("source_path", pa.string(), nullable=False),
            pa.field("mesh_hash", pa.string(), nullable=False),
            pa.field("views", pa.list_(pa.float16(), views * dim), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("thumbnail", pa.binary(), nullable=False),
            pa.field("encoder_id", pa.string(), nullable=False),
        ],
        metadata={"ibsr_format_version": str(FORMAT_VERSION)},
    )


@dataclass(frozen=True)
class IndexMeta:
    """Index-level metadata, stored as `ibsr_index.json` beside the table.

    Search refuses an index whose `encoder_id` differs from the query model's, unless the
    query model embeds views exactly as the index's encoder did: its `rendering_id`
    (`ibsr.model.rendering_id`, a hash of the rendering encoder) equals the one recorded here
    (a query-side `ibsr-train adapt` checkpoint). A build refuses to append shapes encoded by
    another model or on another rig. `rendering_id` is optional in the file (indexes written
    before it existed read as ""; search then accepts only an adapted checkpoint whose info
    names this index's encoder as its base): same format version.

    `catalog_root` is the catalog folder (a manifest's folder) of the latest build, as that
    build was given it: shapes' `source_path`s under it are shown relative to it by
    `ibsr-serve`, which never answers with a server's absolute paths. Optional too ("": every
    path shows as its file name).
    """

    encoder_id: str
    model_config: dict
    views: int
    render_size: int
    rig: dict
    embed_dim: int
    up_axis: str = "y"
    view_dtype: str = VIEW_DTYPE
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)
    rendering_id: str = ""
    catalog_root: str = ""

    def write(self, index_dir: Path) -> None:
        """Write atomically: a crash leaves the old file or the new one, never half."""
        atomic_write(index_dir / META_FILE, json.dumps(asdict(self), indent=2, sort_keys=True), fsync=True,
                     mode=0o600)  # a private file (ibsr.files)

    @classmethod
    def read(cls, index_dir: Path) -> "IndexMeta":
        path = index_dir / META_FILE
        if not index_dir.is_dir():
            raise IbsrError("no index here; build one with `ibsr-index build CATALOG --index DIR`", index_dir)
        if not path.is_file():
            raise IbsrError(
                f"not an ibsr index (no {META_FILE}); pass --index with a directory made by `ibsr-index build`",
                index_dir,
            )
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IbsrError(f"unreadable index metadata ({exc}); rebuild the index", path) from None
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            version = data.get("format_version") if isinstance(data, dict) else None
            raise IbsrError(
                f"index format version {version!r}, this ibsr reads version {FORMAT_VERSION}; rebuild the index",
                path,
            )
        known = {f.name for f in fields(cls)}
        missing = {f.name for f in fields(cls) if f.name not in data} - OPTIONAL_META
        if missing:
            raise IbsrError(f"index metadata lacks {sorted(missing)}; rebuild the index", path)
        return cls(**{k: v for k, v in data.items() if k in known})
