"""Mesh primitives for procedural shapes: boxes, swept profiles, solids of revolution.

Everything is built from vertex/face arrays directly (no boolean ops, no triangulation library)
so generation is fast, dependency-free and bit-for-bit deterministic. Each primitive is a closed,
outward-facing surface; a shape is a union of overlapping primitives (`Parts`), one part label
per face.
"""

from __future__ import annotations

import math

import numpy as np
import trimesh

SQUARE = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


def circle(sections: int = 12) -> np.ndarray:
    """Unit circle polygon, counter-clockwise, `sections` corners."""
    angles = np.arange(sections) * (2 * math.pi / sections)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def rect(half_u: float, half_v: float) -> np.ndarray:
    return SQUARE * [half_u, half_v]


def rounded_rect(half_u: float, half_v: float, radius: float, corner_sections: int = 3) -> np.ndarray:
    """Convex rectangle with rounded corners, counter-clockwise (screens, suitcases, car bodies).
    `radius` is clipped to the shorter half side."""
    radius = min(radius, half_u, half_v)
    corners = [(half_u - radius, half_v - radius), (-half_u + radius, half_v - radius),
               (-half_u + radius, -half_v + radius), (half_u - radius, -half_v + radius)]
    points = []
    for k, (cu, cv) in enumerate(corners):
        angles = (k + np.linspace(0.0, 1.0, corner_sections + 1)) * (math.pi / 2)
        points.append(np.stack([cu + radius * np.cos(angles), cv + radius * np.sin(angles)], 1))
    return np.concatenate(points)


def _outward(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Flip all faces if the closed surface's signed volume is negative (inside-out)."""
    tris = vertices[faces]
    signed = np.einsum("ij,ij->i", tris[:, 0], np.cross(tris[:, 1], tris[:, 2])).sum()
    return faces[:, ::-1].copy() if signed < 0 else faces


def box(extents, center=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box: (vertices, faces)."""
    mesh = trimesh.creation.box(extents=np.asarray(extents, float))
    return np.asarray(mesh.vertices) + np.asarray(center, float), np.asarray(mesh.faces)


def box_between(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box spanning the corners `lo` and `hi`."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    return box(np.abs(hi - lo), (lo + hi) / 2)


def smooth_path(points, iterations: int = 2) -> np.ndarray:
    """Chaikin corner cutting: rounds a polyline's corners (bent tubes), keeps its endpoints."""
    path = np.asarray(points, float)
    for _ in range(iterations):
        q = 0.75 * path[:-1] + 0.25 * path[1:]
        r = 0.25 * path[:-1] + 0.75 * path[1:]
        middle = np.empty((2 * len(q), path.shape[1]))  # 2D outlines or 3D paths
        middle[0::2], middle[1::2] = q, r
        path = np.concatenate([path[:1], middle[1:-1], path[-1:]])
    return path


def _tangents(path: np.ndarray) -> np.ndarray:
    tangents = np.gradient(path, axis=0)
    return tangents / np.linalg.norm(tangents, axis=1, keepdims=True)


def _transported_frames(tangents: np.ndarray, reference) -> np.ndarray:
    """Side vectors along the path by parallel transport: no twist around bends."""
    ref = np.asarray(reference, float)
    side = ref - (ref @ tangents[0]) * tangents[0]
    if np.linalg.norm(side) < 1e-6:  # reference along the path: pick any perpendicular
        side = np.cross(tangents[0], [1.0, 0.0, 0.0] if abs(tangents[0][0]) < 0.9 else [0, 1, 0])
    sides = np.empty_like(tangents)
    sides[0] = side / np.linalg.norm(side)
    for i in range(1, len(tangents)):
        s = sides[i - 1] - (sides[i - 1] @ tangents[i]) * tangents[i]
        sides[i] = s / np.linalg.norm(s)
    return sides


def sweep(path, profile, scales=None, reference=(0.0, 1.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Sweep a convex 2D `profile` (k x 2) along a 3D polyline `path` (n x 3), capped at both
    ends. `scales` (n,) tapers the profile along the path; the profile's first axis follows
    `reference` projected off the path (e.g. +y keeps a horizontal slab's height vertical).
    Covers legs (straight, tapered, splayed, turned), bent tubes and curved panels."""
    path = np.asarray(path, float)
    profile = np.asarray(profile, float)
    n, k = len(path), len(profile)
    scales = np.ones(n) if scales is None else np.asarray(scales, float)
    tangents = _tangents(path)
    sides = _transported_frames(tangents, reference)
    normals = np.cross(tangents, sides)
    offsets = (profile[None, :, 0:1] * sides[:, None, :] + profile[None, :, 1:2] * normals[:, None, :])
    rings = path[:, None, :] + scales[:, None, None] * offsets  # n x k x 3
    vertices = rings.reshape(-1, 3)

    i, j = np.meshgrid(np.arange(n - 1), np.arange(k), indexing="ij")
    a, b = i * k + j, i * k + (j + 1) % k
    c, d = a + k, b + k
    walls = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3),
                            np.stack([a, d, c], -1).reshape(-1, 3)])
    fan = np.arange(1, k - 1)
    start = np.stack([np.zeros_like(fan), fan + 1, fan], axis=1)
    end = (n - 1) * k + np.stack([np.zeros_like(fan), fan, fan + 1], axis=1)
    faces = np.concatenate([walls, start, end])
    return vertices, _outward(vertices, faces)


def rod(p0, p1, radius: float, radius_end: float | None = None, sections: int = 10,
        square: bool = False):
    """Straight round (or square) rod from p0 to p1, optionally tapered to `radius_end`."""
    end = radius if radius_end is None else radius_end
    profile = SQUARE if square else circle(sections)
    return sweep([p0, p1], profile * 1.0, scales=[radius, end])


def revolve(profile_ry, sections: int = 16, center=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Solid of revolution about the vertical axis through `center`: `profile_ry` is a closed
    loop of (radius, height) points (radius > 0). Lamp shades, bases, turned feet, tori."""
    profile = np.asarray(profile_ry, float)
    m = len(profile)
    angles = np.arange(sections) * (2 * math.pi / sections)
    x = profile[:, 0:1] * np.cos(angles)[None, :]
    z = profile[:, 0:1] * np.sin(angles)[None, :]
    y = np.broadcast_to(profile[:, 1:2], x.shape)
    vertices = np.stack([x, y, z], -1).reshape(-1, 3) + np.asarray(center, float)
    i, j = np.meshgrid(np.arange(m), np.arange(sections), indexing="ij")
    a, b = i * sections + j, i * sections + (j + 1) % sections
    c, d = ((i + 1) % m) * sections + j, ((i + 1) % m) * sections + (j + 1) % sections
    faces = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3),
                            np.stack([a, d, c], -1).reshape(-1, 3)])
    return vertices, _outward(vertices, faces)


def shell_profile(outline_ry, thickness: float) -> np.ndarray:
    """Closed (radius, height) loop of a thin shell along an open outline (a lampshade wall)."""
    outline = np.asarray(outline_ry, float)
    inner = outline - [thickness, 0.0]
    return np.concatenate([outline, inner[::-1]])


def vessel_profile(outline_ry, wall: float, floor: float) -> np.ndarray:
    """Closed (radius, height) loop of an open-topped vessel for `revolve` (mug, vase, bucket,
    pot): the outer `outline_ry` runs from the bottom edge up to the rim (heights increasing),
    the inner wall is that outline offset `wall` inwards along its normal, and the inside
    bottom is flat at height `floor`."""
    outline = np.asarray(outline_ry, float)
    tangent = np.gradient(outline, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    inner = outline + wall * np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    inner[:, 0] = np.maximum(inner[:, 0], 1e-3)
    above = np.flatnonzero(inner[:, 1] > floor)
    first = above[0]
    if first > 0:  # where the inner wall meets the floor, on the segment that crosses it
        a, b = inner[first - 1], inner[first]
        floor_r = a[0] + (floor - a[1]) / (b[1] - a[1]) * (b[0] - a[0])
    else:
        floor_r = inner[0, 0]
    inside = np.concatenate([inner[above][::-1], [[floor_r, floor], [1e-4, floor]]])
    return np.concatenate([[[1e-4, outline[0, 1]]], outline, inside])


def disk(radius: float, y0: float, y1: float, center_xz=(0.0, 0.0), sections: int = 16,
         scale_xz=(1.0, 1.0)):
    """Vertical cylinder (table top, seat, base) between heights y0 and y1, elliptical if
    `scale_xz` differs."""
    vertices, faces = revolve([[radius, y0], [radius, y1], [1e-4, y1], [1e-4, y0]], sections)
    vertices = vertices * [scale_xz[0], 1.0, scale_xz[1]] + [center_xz[0], 0.0, center_xz[1]]
    return vertices, faces


def torus(major: float, minor: float, y: float, sections: int = 20, tube_sections: int = 8):
    loop = circle(tube_sections) * minor + [major, y]
    return revolve(loop, sections)


def sphere(radius: float, center, subdivisions: int = 1):
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return np.asarray(mesh.vertices) + np.asarray(center, float), np.asarray(mesh.faces)


def transform_points(vertices: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return vertices @ matrix[:3, :3].T + matrix[:3, 3]


def scaling(sx: float, sy: float, sz: float) -> np.ndarray:
    """4x4 axis scaling about the origin (an elliptical basin from a round one)."""
    return np.diag([sx, sy, sz, 1.0])


def translation(x: float, y: float, z: float) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = (x, y, z)
    return matrix


def y_axis_to(axis: str, at=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 that turns a piece built around the y axis (a disk, a revolve) so that its axis runs
    along +x or +z, then moves it to `at`: wheels, knobs and dials on a front, speaker cones."""
    turn = {"x": rotation_z(-math.pi / 2), "z": rotation_x(math.pi / 2)}[axis]
    return translation(*at) @ turn


def rotation_x(angle_rad: float, pivot=(0.0, 0.0, 0.0)) -> np.ndarray:
    return trimesh.transformations.rotation_matrix(angle_rad, [1, 0, 0], point=pivot)


def rotation_y(angle_rad: float, pivot=(0.0, 0.0, 0.0)) -> np.ndarray:
    return trimesh.transformations.rotation_matrix(angle_rad, [0, 1, 0], point=pivot)


def rotation_z(angle_rad: float, pivot=(0.0, 0.0, 0.0)) -> np.ndarray:
    return trimesh.transformations.rotation_matrix(angle_rad, [0, 0, 1], point=pivot)


class Parts:
    """A shape under construction: primitives with a part name each.

    `add(name, (vertices, faces))`; `merge(other, matrix)` adds another Parts moved by a 4x4
    transform (a tilted chair back). `build()` -> (trimesh mesh, per-face part index, names).
    """

    def __init__(self):
        self.pieces: list[tuple[str, np.ndarray, np.ndarray]] = []

    def add(self, name: str, piece, matrix: np.ndarray | None = None) -> None:
        vertices, faces = piece
        vertices = np.asarray(vertices, float)
        if matrix is not None:
            vertices = transform_points(vertices, matrix)
        self.pieces.append((name, vertices, np.asarray(faces, np.int64)))

    def merge(self, other: "Parts", matrix: np.ndarray | None = None) -> None:
        for name, vertices, faces in other.pieces:
            self.add(name, (vertices, faces), matrix)

    def transform(self, matrix: np.ndarray) -> None:
        self.pieces = [(n, transform_points(v, matrix), f) for n, v, f in self.pieces]

    def rest_on_floor(self) -> None:
        """Move the shape up or down so its lowest vertex touches the floor (y = 0)."""
        lowest = min(float(v[:, 1].min()) for _, v, _ in self.pieces)
        self.pieces = [(n, v + [0.0, -lowest, 0.0], f) for n, v, f in self.pieces]

    def build(self) -> tuple[trimesh.Trimesh, np.ndarray, tuple[str, ...]]:
        names: list[str] = []
        all_vertices, all_faces, labels = [], [], []
        offset = 0
        for name, vertices, faces in self.pieces:
            if name not in names:
                names.append(name)
            all_vertices.append(vertices)
            all_faces.append(faces + offset)
            labels.append(np.full(len(faces), names.index(name), dtype=np.int32))
            offset += len(vertices)
        vertices = np.concatenate(all_vertices)
        # cut feet flat at the floor: caps of splayed legs would poke a few mm below y=0
        vertices[:, 1] = np.maximum(vertices[:, 1], 0.0)
        # round so the written text is short and stable; + 0.0 turns -0.0 into 0.0
        vertices = np.round(vertices, 6) + 0.0
        mesh = trimesh.Trimesh(vertices=vertices, faces=np.concatenate(all_faces), process=False)
        return mesh, np.concatenate(labels), tuple(names)
