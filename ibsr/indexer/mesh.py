"""Load a mesh from the wild and make it safe to render.

Real catalogs hold multi-part scenes, NaN vertices, degenerate faces, huge coordinates and
z-up files. Each problem either gets repaired here or becomes a `MeshError` that names the
file, so one bad mesh is reported and skipped rather than stopping a build.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import trimesh

from ibsr.errors import IbsrError
from ibsr.indexer.render import UP_AXES, normalize_mesh  # noqa: F401 (UP_AXES re-exported for the CLI)


class MeshError(IbsrError):
    """A mesh that cannot be indexed: skipped (or fatal with --strict)."""


def file_hash(path: Path) -> str:
    """SHA-256 of the file's bytes: the build re-indexes a shape when this changes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_mesh(path: Path, up_axis: str = "y") -> trimesh.Trimesh:
    """Load, clean and normalize (centred, unit bounding sphere, +y up) one mesh file."""
    path = Path(path)
    if not path.is_file():
        raise MeshError("mesh file not found", path)
    if path.stat().st_size == 0:
        raise MeshError("empty file", path)
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types for corrupt input
        raise MeshError(f"cannot load mesh ({_reason(exc)})", path) from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise MeshError("mesh has no faces", path)
    try:
        return normalize_mesh(_clean(mesh, path), up_axis=up_axis)
    except MeshError:
        raise
    except Exception as exc:  # trimesh's processing of a pathological mesh (found by fuzzing)
        raise MeshError(f"cannot clean mesh ({_reason(exc)})", path) from None


def _reason(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc).strip() else type(exc).__name__


def _clean(mesh: trimesh.Trimesh, path: Path) -> trimesh.Trimesh:
    faces = np.asarray(mesh.faces)
    if np.asarray(mesh.vertices).ndim != 2 or np.asarray(mesh.vertices).shape[1] != 3:
        raise MeshError("vertices do not have 3 coordinates each", path)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise MeshError("faces are not triangles", path)
    exists = ((faces >= 0) & (faces < len(mesh.vertices))).all(axis=1)
    if not exists.all():  # indices past the vertex list (e.g. OBJ's 1-based `f 0 ...`): drop those faces
        if not exists.any():
            raise MeshError("every face refers to a vertex the file does not have", path)
        mesh = trimesh.Trimesh(vertices=mesh.vertices, faces=faces[exists], process=False)
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    if not np.isfinite(vertices).all():
        # Drop faces that touch a NaN/inf vertex; a mesh made only of them is unusable.
        bad_vertex = ~np.isfinite(vertices).all(axis=1)
        keep = ~bad_vertex[mesh.faces].any(axis=1)
        if not keep.any():
            raise MeshError("every face has a NaN or infinite vertex", path)
        mesh = trimesh.Trimesh(vertices=np.nan_to_num(vertices), faces=mesh.faces[keep], process=False)
        mesh.remove_unreferenced_vertices()
        vertices = np.asarray(mesh.vertices, dtype=np.float64)
    # Bring huge coordinates (1e9 and up) near 1 before trimesh merges vertices on a grid.
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    scale = np.abs(hi - lo).max()
    if not np.isfinite(scale) or scale == 0:
        raise MeshError("mesh has zero extent", path)
    vertices = (vertices - (lo + hi) / 2) / scale
    mesh = trimesh.Trimesh(vertices=vertices, faces=mesh.faces, process=True)  # merge duplicates
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.remove_unreferenced_vertices()
    if len(mesh.faces) == 0:
        raise MeshError("mesh has only degenerate faces", path)
    return mesh
