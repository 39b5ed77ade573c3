"""Find the shapes of a catalog: a folder tree or a manifest file.

Layouts read:
- `catalog/<category>/<name>.<ext>`                    -> shape_id `<category>/<name>`
- `catalog/<category>/<name>/model.<ext>` (Pix3D) or any single mesh below
  `catalog/<category>/<name>/` (ShapeNet's `models/model_normalized.obj`) -> `<category>/<name>`
- a manifest `*.csv` (header shape_id,category,path) or `*.jsonl` (same keys), paths
  relative to the manifest's folder.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePath

from ibsr.errors import IbsrError

# A manifest's columns (CSV header or JSONL keys), for catalogs that are not laid out as folders.
MANIFEST_FIELDS = ("shape_id", "category", "path")
MESH_EXTENSIONS = (".obj", ".off", ".ply", ".stl", ".glb", ".gltf")
# Preferred file names when a shape folder holds several meshes (Pix3D, ShapeNet).
PREFERRED_STEMS = ("model", "model_normalized")


@dataclass(frozen=True)
class CatalogEntry:
    shape_id: str
    category: str
    path: Path


def discover(catalog: Path) -> list[CatalogEntry]:
    """All shapes of a catalog folder or manifest, sorted by shape_id."""
    catalog = Path(catalog)
    if not catalog.exists():
        raise IbsrError("catalog not found; pass a folder of meshes or a manifest (.csv/.jsonl)", catalog)
    if catalog.is_file():
        entries = _read_manifest(catalog)
    else:
        entries = _scan_folder(catalog)
    return _check_unique(entries, catalog)


def catalog_root(catalog: Path) -> str:
    """The folder a catalog's source paths start with: the catalog folder, or a manifest's
    folder, spelled as given (discover builds every path from it, so a prefix test works)."""
    catalog = Path(catalog)
    return str(catalog.parent if catalog.is_file() else catalog)


def catalog_relative(source_path: str, root: str) -> str:
    """`source_path` relative to the catalog root (posix), or only its file name when it is
    not under the root (an absolute manifest path elsewhere, a `..`, no root recorded):
    what a service may show without revealing the server's folders."""
    if root:
        path, base = (PurePath(os.path.normpath(p)) for p in (source_path, root))
        if path.is_absolute() == base.is_absolute() and path.is_relative_to(base):
            relative = path.relative_to(base)
            if relative.parts and ".." not in relative.parts:
                return relative.as_posix()
    return PurePath(source_path).name


def _scan_folder(root: Path) -> list[CatalogEntry]:
    files = [p for p in root.rglob("*") if p.is_file()]
    if not files:
        raise IbsrError("catalog is empty; put meshes in <catalog>/<category>/<name>.obj", root)
    entries = []
    for category_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        category = category_dir.name
        for item in sorted(category_dir.iterdir()):
            if item.is_file() and _is_mesh(item):
                entries.append(CatalogEntry(f"{category}/{item.stem}", category, item))
            elif item.is_dir():
                mesh = _shape_folder_mesh(item)
                if mesh is not None:
                    entries.append(CatalogEntry(f"{category}/{item.name}", category, mesh))
    if not entries:
        found = sorted({p.suffix.lower() or "(no extension)" for p in files})
        raise IbsrError(
            f"no supported meshes ({', '.join(MESH_EXTENSIONS)}) in <category>/ folders; found {', '.join(found)}",
            root,
        )
    return entries


def _shape_folder_mesh(folder: Path) -> Path | None:
    """The mesh of a Pix3D/ShapeNet style shape folder: model.* first, else the only mesh."""
    meshes = sorted(p for p in folder.rglob("*") if p.is_file() and _is_mesh(p))
    preferred = [p for p in meshes if p.stem.lower() in PREFERRED_STEMS]
    if preferred:
        return preferred[0]
    return meshes[0] if len(meshes) == 1 else None


def _is_mesh(path: Path) -> bool:
    return path.suffix.lower() in MESH_EXTENSIONS


def _read_manifest(manifest: Path) -> list[CatalogEntry]:
    suffix = manifest.suffix.lower()
    if suffix == ".csv":
        rows = _manifest_csv(manifest)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _manifest_jsonl(manifest)
    else:
        raise IbsrError("a catalog file must be a manifest (.csv or .jsonl with shape_id,category,path)", manifest)
    if not rows:
        raise IbsrError("manifest lists no shapes", manifest)
    entries = []
    for line_no, row in rows:
        missing = [k for k in MANIFEST_FIELDS if not str(row.get(k) or "").strip()]
        if missing:
            raise IbsrError(f"line {line_no}: missing {', '.join(missing)}", manifest)
        path = Path(row["path"])
        path = path if path.is_absolute() else manifest.parent / path
        entries.append(CatalogEntry(str(row["shape_id"]).strip(), str(row["category"]).strip(), path))
    return entries


def _manifest_csv(manifest: Path) -> list[tuple[int, dict]]:
    try:
        with manifest.open(newline="") as f:
            return [(i + 2, row) for i, row in enumerate(csv.DictReader(f))]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise IbsrError(f"unreadable CSV manifest ({exc})", manifest) from None


def _manifest_jsonl(manifest: Path) -> list[tuple[int, dict]]:
    rows = []
    try:
        lines = manifest.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise IbsrError(f"unreadable manifest ({exc})", manifest) from None
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise IbsrError(f"line {i}: not JSON ({exc.msg})", manifest) from None
        if not isinstance(row, dict):
            raise IbsrError(f"line {i}: expected an object with shape_id, category, path", manifest)
        rows.append((i, row))
    return rows


def _check_unique(entries: list[CatalogEntry], catalog: Path) -> list[CatalogEntry]:
    seen: dict[str, Path] = {}
    for entry in entries:
        if entry.shape_id in seen:
            raise IbsrError(
                f"shape_id {entry.shape_id!r} names two files ({seen[entry.shape_id]} and {entry.path}); rename one",
                catalog,
            )
        seen[entry.shape_id] = entry.path
    return sorted(entries, key=lambda e: e.shape_id)
