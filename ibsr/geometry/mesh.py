"""Load a mesh from the wild and make it safe to render: cleaned, then normalized (its up axis
turned to +y, centred, unit bounding sphere), the frame the renderer's camera rig expects.

Real catalogs hold multi-part scenes, NaN vertices, degenerate faces, huge coordinates and
z-up files. Each problem either gets repaired here or becomes a `MeshError` that names the
file, so one bad mesh is reported and skipped rather than stopping a build.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import trimesh

from ibsr.errors import IbsrError

UP_AXES = ("x", "y", "z", "-x", "-y", "-z")  # what `--up-axis` accepts: the axis that becomes +y


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


def up_axis_rotation(up_axis: str) -> np.ndarray:
    """4x4 rotation taking `up_axis` ("x", "y", "z", "-x", "-y", "-z") to +y.

    Proper rotations only (no mirroring), so a shape's handedness and face winding survive.
    z-up -> y-up is the usual -90 degrees about x (the former -y, often the front, becomes +z).
    """
    axis = up_axis.strip().lower()
    if axis.startswith("+"):
        axis = axis[1:]
    angles = {  # (rotation axis, angle) that takes the named axis onto +y
        "y": ([1, 0, 0], 0.0),
        "-y": ([1, 0, 0], math.pi),
        "z": ([1, 0, 0], -math.pi / 2),
        "-z": ([1, 0, 0], math.pi / 2),
        "x": ([0, 0, 1], math.pi / 2),
        "-x": ([0, 0, 1], -math.pi / 2),
    }
    if axis not in angles:
        raise IbsrError(f"unknown up axis {up_axis!r}: use one of {', '.join(UP_AXES)}")
    direction, angle = angles[axis]
    rotation = trimesh.transformations.rotation_matrix(angle, direction)
    rotation[np.abs(rotation) < 1e-12] = 0.0  # exact zeros: keep vertices bit-stable
    return rotation


def normalize_mesh(mesh: trimesh.Trimesh, up_axis: str = "y") -> trimesh.Trimesh:
    """Copy of `mesh` rotated so `up_axis` becomes +y, its bounding box centred at the origin,
    and scaled so that the farthest vertex is at distance 1 (the unit bounding sphere)."""
    if len(mesh.vertices) == 0 or len(mesh.faces) == 0:
        raise IbsrError("mesh has no faces to render")
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    if not np.isfinite(vertices).all():
        raise IbsrError("mesh has non-finite vertex coordinates")
    rotation = up_axis_rotation(up_axis)[:3, :3]
    vertices = vertices @ rotation.T
    vertices = vertices - (vertices.min(axis=0) + vertices.max(axis=0)) / 2.0
    radius = np.linalg.norm(vertices, axis=1).max()
    if radius <= 0.0:
        raise IbsrError("mesh is degenerate (all vertices at one point)")
    return trimesh.Trimesh(vertices=vertices / radius, faces=np.asarray(mesh.faces).copy(),
                           process=False)
